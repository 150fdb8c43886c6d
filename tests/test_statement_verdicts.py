"""Verdicts on shapes found in real histories (Prefect, MLflow and others): each plan says what the step really
does, and where it says LOW or safe, the real downgrade succeeds and loses nothing."""

from __future__ import annotations

import json

import pytest
from alembic import command
from alembic.config import Config
from alembic_projects import write_project
from sqlalchemy.exc import DuplicateColumnError
from test_records import rollbook

from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.operations import Risk
from rollbook.planning.plan import plan_downgrade
from rollbook.project.migrations import MigrationProject, alembic_config_for, load_project

RUNS = "CREATE TABLE runs (id serial PRIMARY KEY, name varchar, flag boolean)"
BASE = ("rrrr00000001", (None, f"op.execute({RUNS!r})", 'op.execute("DROP TABLE runs")'))
ROWS = "INSERT INTO runs (name, flag) VALUES ('alpha', true), ('beta', NULL), (repeat('x', 200), false)"


def project_at_head(root, database_url: str, revisions: dict, rows_sql: str
                    ) -> tuple[MigrationProject, DatabaseTarget, Config]:
    """The project's database with `rows_sql` written at its first revision, then upgraded to head."""
    project = load_project(write_project(root, revisions))
    target = DatabaseTarget.from_url(database_url)
    config = alembic_config_for(project, target)
    command.upgrade(config, BASE[0])
    with connect(target) as conn:
        conn.execute(rows_sql)
    command.upgrade(config, "head")
    return project, target, config


def rows(target, query: str = "SELECT id, name, flag FROM runs ORDER BY id") -> list[tuple]:
    with connect(target) as conn:
        return conn.execute(query).fetchall()


def test_undoing_a_narrowing_to_unbounded_varchar_is_a_low_widening_with_no_count(tmp_path, database_url):
    # MLflow: the upgrade narrowed a column to varchar(255); the downgrade widens it back.
    revisions = dict([BASE, ("rrrr00000002", ("rrrr00000001",
                                              'op.alter_column("runs", "name", type_=sa.String(255))\n    '
                                              'op.alter_column("runs", "id", type_=sa.Integer())',
                                              'op.alter_column("runs", "name", type_=sa.String())\n    '
                                              'op.execute("ALTER TABLE runs ALTER COLUMN id TYPE bigint")'))])
    project, target, config = project_at_head(tmp_path / "project", database_url, _with_sqlalchemy(revisions), ROWS)
    before = rows(target)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    assert [(op.op, op.column, op.risk, op.check, op.rewrites_table) for op in step.operations] == [
        ("alter_column_type", "name", Risk.LOW, None, False), ("alter_column_type", "id", Risk.LOW, None, True)]
    assert step.operations[0].detail == ("changes runs.name to varchar: a widening from character varying(255), every "
                                         "value fits")
    assert step.operations[1].reason == ("A widening type change: every value fits the new type, so it can neither "
                                         "fail nor change a value. It rewrites the table under an ACCESS EXCLUSIVE "
                                         "lock.")
    assert (step.migration_type, step.risk, plan.verdict.code) == ("alter_column", Risk.LOW, "safe")

    command.downgrade(config, "-1")
    assert rows(target) == before
    assert rows(target, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'runs'::regclass "
                        "AND attname IN ('id', 'name') ORDER BY attname") == [("bigint",), ("character varying",)]


def _with_sqlalchemy(revisions: dict) -> dict:
    """The revisions with `sa` available: alembic_projects' files import only `op`."""
    return {rev: (down, f"import sqlalchemy as sa\n    {up}", f"import sqlalchemy as sa\n    {down_line}")
            for rev, (down, up, down_line) in revisions.items()}


def test_an_add_column_then_backfill_step_whose_downgrade_drops_that_column_is_low(tmp_path, database_url):
    revisions = _with_sqlalchemy(dict([BASE, ("rrrr00000002", (
        "rrrr00000001",
        'op.add_column("runs", sa.Column("slug", sa.String(), nullable=True))\n    '
        'op.execute("UPDATE runs SET slug = lower(name)")\n    '
        'op.alter_column("runs", "slug", nullable=False)',
        'op.drop_column("runs", "slug")'))]))
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions, ROWS)
    before = rows(target)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    assert (step.migration_type, step.risk) == ("add_column", Risk.LOW)
    [drop] = step.operations
    assert (drop.op, drop.risk, drop.rows_affected) == ("drop_column", Risk.LOW, 3)
    assert drop.reason == "The column was added by this migration; values written to it since are lost."
    # The only values lost are the ones this migration derived; every older value stays.
    assert plan.verdict.code == "loses_data"

    command.downgrade(config, "-1")
    assert rows(target) == before


def test_a_downgrade_that_only_relaxes_not_null_after_a_backfill_is_safe(tmp_path, database_url):
    revisions = dict([BASE, ("rrrr00000002", (
        "rrrr00000001",
        "op.execute(\"UPDATE runs SET flag = false WHERE flag IS NULL\")\n    "
        'op.alter_column("runs", "flag", nullable=False)',
        'op.alter_column("runs", "flag", nullable=True)'))])
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions, ROWS)
    before = rows(target)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    assert (step.migration_type, step.risk, plan.verdict.code) == ("data_migration", Risk.LOW, "safe")
    assert [op.op for op in step.operations] == ["drop_not_null"]

    command.downgrade(config, "-1")
    assert rows(target) == before


def test_a_data_only_backfill_with_an_empty_downgrade_is_low_and_says_the_rows_stay(tmp_path, database_url):
    revisions = dict([BASE, ("rrrr00000002", (
        "rrrr00000001", "op.execute(\"UPDATE runs SET flag = true WHERE flag IS NULL\")", "pass"))])
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions, ROWS)
    before = rows(target)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    [empty] = step.operations
    assert (empty.op, empty.risk) == ("no_op_downgrade", Risk.LOW)
    assert "changes the schema" not in empty.detail
    assert empty.reason == "A data-only migration with an empty downgrade: nothing is removed; what upgrade() wrote stays."
    assert (step.risk, plan.verdict.code) == (Risk.LOW, "safe")

    command.downgrade(config, "-1")
    assert rows(target) == before


def test_an_empty_downgrade_of_a_column_drop_never_says_the_column_comes_back(tmp_path, database_url):
    revisions = dict([BASE, ("rrrr00000002", ("rrrr00000001", 'op.drop_column("runs", "flag")', "pass"))])
    project, target, _ = project_at_head(tmp_path / "project", database_url, revisions, ROWS)

    plan = plan_downgrade(target, project, "-1")

    assert plan.steps[0].risk == Risk.HIGH
    reasons = "\n".join(plan.verdict.reasons)
    assert "EMPTY" not in reasons
    assert ("rrrr00000002 (drop_column) is HIGH risk: downgrade() does nothing: what upgrade() dropped (runs.flag) "
            "does not come back") in reasons


SCHEMA_OBJECTS = (
    "CREATE SEQUENCE run_number START 100; "
    "CREATE EXTENSION IF NOT EXISTS plpgsql; "
    "COMMENT ON TABLE runs IS 'one row per flow run'; "
    "ALTER TABLE runs ENABLE ROW LEVEL SECURITY; "
    "CREATE POLICY every_row ON runs USING (true); "
    "GRANT SELECT ON runs TO PUBLIC; "
    "CREATE FUNCTION runs_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; "
    "CREATE TRIGGER runs_touch BEFORE UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION runs_touch(); "
    "SELECT setval('runs_id_seq', (SELECT max(id) FROM runs) + 10)"
)
DROP_SCHEMA_OBJECTS = ("DROP TRIGGER runs_touch ON runs; DROP FUNCTION runs_touch(); REVOKE SELECT ON runs FROM PUBLIC; "
                       "DROP POLICY every_row ON runs; ALTER TABLE runs DISABLE ROW LEVEL SECURITY; "
                       "COMMENT ON TABLE runs IS NULL; DROP SEQUENCE run_number")


def test_sequences_comments_extensions_policies_grants_functions_and_triggers_are_understood(tmp_path, database_url):
    # The downgrade puts back what the upgrade removed, and moves the id sequence as Prefect's histories do.
    revisions = dict([BASE, ("rrrr00000002", ("rrrr00000001", f"op.execute({SCHEMA_OBJECTS!r})",
                                              f"op.execute({DROP_SCHEMA_OBJECTS!r})")),
                      ("rrrr00000003", ("rrrr00000002", f"op.execute({DROP_SCHEMA_OBJECTS!r})",
                                        f"op.execute({SCHEMA_OBJECTS!r})"))])
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions, ROWS)
    before = rows(target)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    assert [op.op for op in step.operations] == [
        "create_sequence", "create_extension", "comment", "policy", "policy", "privileges", "create_function",
        "create_trigger", "set_sequence"]
    assert {op.risk for op in step.operations} == {Risk.LOW}
    assert step.operations[-1].detail == ("moves sequence runs_id_seq: no table row changes; new rows take their ids "
                                          "from where it then stands")
    assert (step.risk, plan.verdict.code) == (Risk.LOW, "safe")

    command.downgrade(config, "-1")
    assert rows(target) == before
    assert rows(target, "SELECT last_value FROM runs_id_seq") == [(13,)]


LOOP_DOWNGRADE = (
    "bind = op.get_bind()\n"
    "    for row in bind.execute(sa.text('SELECT id, name FROM runs')).fetchall():\n"
    "        bind.execute(sa.text('INSERT INTO runs_log (run_id, name) VALUES (:id, :name)'), "
    "{'id': row.id, 'name': row.name})"
)


def test_an_insert_run_once_per_row_in_a_loop_claims_no_count_and_no_internal_error(tmp_path, database_url):
    revisions = _with_sqlalchemy(dict([BASE, ("rrrr00000002", (
        "rrrr00000001", 'op.execute("DROP TABLE IF EXISTS runs_log")',
        'op.execute("CREATE TABLE runs_log (run_id int PRIMARY KEY, name varchar)")\n    ' + LOOP_DOWNGRADE))]))
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions, ROWS)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    insert = next(op for op in step.operations if op.op == "insert")
    assert insert.check is None and insert.rows_affected is None
    assert insert.detail.startswith("inserts rows into runs_log with values bound at run time")
    assert "runs once per pass of a Python loop" in insert.detail
    shown = json.dumps(plan.to_dict()) + plan._repr_markdown_()
    assert "1 row(s)" not in shown and "no parameter" not in shown

    command.downgrade(config, "-1")
    assert rows(target, "SELECT count(*) FROM runs_log") == [(3,)]


def test_a_count_that_fails_says_why_in_words(tmp_path, database_url):
    # The predicate names a column the table does not have today (a later step of the real history adds it).
    revisions = dict([BASE, ("rrrr00000002", (
        "rrrr00000001", "pass", "op.execute(\"DELETE FROM runs WHERE archived_at IS NOT NULL\")"))])
    project, target, _ = project_at_head(tmp_path / "project", database_url, revisions, ROWS)

    plan = plan_downgrade(target, project, "-1")

    [delete] = plan.steps[0].operations
    assert delete.rows_affected is None
    assert delete.count_note == (
        "runs could not be counted (the migration's condition names a column, table or function that does not exist "
        "now, or needs values that exist only while the migration runs): not counted, review by hand")
    assert "does not exist" not in json.dumps(plan.to_dict()).replace(delete.count_note, "")


DIALECT_DOWNGRADE = (
    "if op.get_bind().dialect.name == 'mysql':\n"
    "        op.drop_column('runs', 'name')\n"
    "    elif context.get_context().dialect.name == 'sqlite':\n"
    "        op.drop_table('runs')\n"
    "    else:\n"
    "        op.alter_column('runs', 'flag', nullable=True)"
)


def test_a_dialect_conditional_downgrade_is_read_on_its_postgresql_path_only(tmp_path, database_url):
    revisions = dict([BASE, ("rrrr00000002", (
        "rrrr00000001", "from alembic import context\n    op.execute(\"UPDATE runs SET flag = false WHERE flag IS "
        "NULL\")\n    op.alter_column('runs', 'flag', nullable=False)",
        f"from alembic import context\n    {DIALECT_DOWNGRADE}"))])
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions, ROWS)
    before = rows(target)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    assert [(op.op, op.column) for op in step.operations if op.op != "unknown"] == [("drop_not_null", "flag")]
    assert not any(op.op in ("drop_column", "drop_table") for op in step.operations)

    command.downgrade(config, "-1")
    assert rows(target) == before


def test_a_migration_reading_alembic_context_while_it_renders_is_rendered_offline(tmp_path, database_url):
    revisions = dict([BASE, ("rrrr00000002", (
        "rrrr00000001", "pass",
        "from alembic import context\n    if context.get_context().dialect.name == 'postgresql':\n"
        "        op.execute('COMMENT ON TABLE runs IS NULL')"))])
    project, target, _ = project_at_head(tmp_path / "project", database_url, revisions, ROWS)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    assert step.render_error is None
    assert [op.op for op in step.operations] == ["comment"]
    assert plan.verdict.code == "safe"


# Airflow's shape (cc92b33c6709, 8812eb67b63c): offline, the downgrade prints what to do by hand and returns;
# against a database it rewrites rows. Its offline rendering is empty, which must never read as LOW.
OFFLINE_BRANCH_DOWNGRADE = (
    "from alembic import context\n"
    "    if context.is_offline_mode():\n"
    "        print('-- Manual step required: UPDATE runs SET name = NULL WHERE flag')\n"
    "        return\n"
    "    dialect = op.get_bind().dialect.name\n"
    "    if dialect == 'postgresql':\n"
    "        op.execute('UPDATE runs SET name = NULL WHERE flag')"
)


def test_a_downgrade_that_works_only_online_is_read_on_its_online_path_and_never_low(tmp_path, database_url):
    revisions = dict([BASE, ("rrrr00000002", ("rrrr00000001", "pass", OFFLINE_BRANCH_DOWNGRADE))])
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions, ROWS)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    assert step.risk == Risk.HIGH  # the online path rewrites rows
    [unknown, update] = step.operations
    assert "does work only online that the offline render cannot show" in unknown.detail
    assert (update.op, update.rows_affected) == ("update", 1)
    assert plan.verdict.code == "do_not_downgrade"
    assert "No SQL script" in plan.downgrade_sql_or_why_not()
    command.downgrade(config, "-1")
    assert rows(target, "SELECT count(*) FROM runs WHERE name IS NULL") == [(1,)]


def test_a_downgrade_that_defines_a_column_twice_is_planned_to_fail_on_every_database(tmp_path, database_url):
    """CKAN's 038: downgrade() re-creates a dropped table listing `created` twice, which SQLAlchemy refuses."""
    revisions = dict([BASE, ("rrrr00000002", (
        "rrrr00000001", "op.drop_table('runs')",
        "import sqlalchemy as sa\n    op.create_table('runs', sa.Column('id', sa.Integer, primary_key=True), "
        "sa.Column('name', sa.String), sa.Column('created', sa.DateTime), sa.Column('created', sa.TIMESTAMP))"))])
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions, ROWS)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    [raises] = [op for op in step.operations if op.fails]
    assert raises.detail.startswith("fails: downgrade() raises DuplicateColumnError")
    assert "on every database" in raises.detail and "depends on live data" not in raises.detail
    assert plan.verdict.code != "safe"
    assert "fails on every database" in plan.downgrade_sql_or_why_not()
    # As the plan says: the real downgrade fails, and the database stays where it was.
    with pytest.raises(DuplicateColumnError):
        command.downgrade(config, "-1")
    with connect(target) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchall() == [("rrrr00000002",)]
    # The rehearsal holds the prediction against the real failure.
    rehearsal = rollbook(tmp_path, "test-rollback", "--config", str(project.config_path), "--json",
                         url=database_url)
    [trip] = [t for t in json.loads(rehearsal.stdout)["revisions"] if t["revision"] == "rrrr00000002"]
    assert trip["rows_as_planned"]["status"] == "passed"
    assert trip["rows_as_planned"]["detail"].startswith("the plan predicted that the downgrade fails (fails: "
                                                        "downgrade() raises DuplicateColumnError")


@pytest.mark.parametrize(("downgrade", "words"), [
    # Dagster's base revision: its downgrade raises on purpose.
    ("raise Exception('Base revision, no downgrade is possible')",
     "fails: downgrade() raises Exception: Base revision, no downgrade is possible unconditionally, on every "
     "database"),
    # Zou's a0f668430352: an autogenerated downgrade drops a constraint without naming it.
    ("with op.batch_alter_table('runs') as batch: batch.drop_constraint(None, type_='foreignkey')",
     "fails: downgrade() drops a foreign key of table runs without naming it (drop_constraint(None, ...)), which "
     "SQLAlchemy cannot emit online either: the downgrade fails when it runs, on every database"),
])
def test_a_downgrade_that_fails_wherever_it_runs_is_a_certain_failure_not_a_review(tmp_path, database_url,
                                                                                   downgrade, words):
    revisions = dict([BASE, ("rrrr00000002", ("rrrr00000001", "op.execute('SELECT 1')", downgrade))])
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions, ROWS)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    [fails] = [op for op in step.operations if op.fails]
    assert fails.detail.startswith(words), fails.detail
    assert plan.verdict.code == "do_not_downgrade"
    assert "fails on every database" in plan.downgrade_sql_or_why_not()
    rehearsal = rollbook(tmp_path, "test-rollback", "--config", str(project.config_path), "--json",
                         url=database_url)
    [trip] = [t for t in json.loads(rehearsal.stdout)["revisions"] if t["revision"] == "rrrr00000002"]
    assert trip["rows_as_planned"]["detail"].startswith("the plan predicted that the downgrade fails"), trip
    assert "object at 0x" not in rehearsal.stdout  # SQLAlchemy's reprs never reach the report
