"""The SQL and Python readers on their own, without a database: every statement kind real histories use is
understood or honestly named, dialect branches for other databases are skipped, and the migration type
and risk follow what a step really does."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from alembic_projects import write_project

from rollbook.planning.operations import RENDER_FALLBACK, Operation, Risk, type_widening
from rollbook.planning.python_operations import LOOP_NOTE, operations_from_python
from rollbook.planning.risk import assess_downgrade_operations, migration_type, step_risk
from rollbook.planning.sql_operations import operations_from_sql
from rollbook.project.migrations import load_project


def read(sql_text: str) -> list[tuple[str, str]]:
    return [(op.op, op.detail) for op in operations_from_sql(sql_text)]


@pytest.mark.parametrize(("statement", "expected"), [
    ("SELECT setval('flow_id_seq', (SELECT max(id) FROM flow))",
     ("set_sequence", "moves sequence flow_id_seq: no table row changes; new rows take their ids from where it then "
                      "stands")),
    ("SELECT setval(pg_get_serial_sequence('runs', 'id'), 7)", ("set_sequence", "moves sequence of runs.id: no table "
                                                                 "row changes; new rows take their ids from where it "
                                                                 "then stands")),
    ("CREATE SEQUENCE run_number START 100", ("create_sequence", "creates sequence run_number (no table rows)")),
    ("ALTER SEQUENCE run_number OWNED BY runs.number",
     ("alter_sequence", "changes sequence run_number (its next values or owner; no table rows)")),
    ("DROP SEQUENCE run_number", ("drop_sequence", "drops sequence run_number")),
    ("COMMENT ON COLUMN runs.state IS 'lifecycle'", ("comment", "changes a comment (no effect on stored data)")),
    ("CREATE EXTENSION IF NOT EXISTS pg_trgm",
     ("create_extension", "creates extension pg_trgm (adds types and functions; no table rows)")),
    ("DROP EXTENSION pg_trgm", ("drop_extension", "drops extension pg_trgm")),
    ("CREATE POLICY tenant_rows ON runs USING (tenant = current_user)",
     ("policy", "creates row-level security policy tenant_rows on runs: changes which rows a role sees or writes, "
                "not the rows stored")),
    ("ALTER TABLE runs ENABLE ROW LEVEL SECURITY",
     ("policy", "enables row-level security on runs: changes which rows a role sees or writes, not the rows stored")),
    ("DROP POLICY tenant_rows ON runs", ("drop_policy", "drops policy runs.tenant_rows")),
    ("GRANT SELECT ON runs TO reporting", ("privileges", "grants privileges (who may read or write; no stored data "
                                                         "changes)")),
    ("REVOKE ALL ON runs FROM reporting", ("privileges", "revokes privileges (who may read or write; no stored data "
                                                         "changes)")),
    ("CREATE OR REPLACE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.updated = now(); "
     "RETURN NEW; END $$",
     ("create_function", "creates or replaces function touch (its body runs only when something calls it)")),
    ("CREATE TRIGGER runs_touch BEFORE UPDATE ON runs FOR EACH ROW EXECUTE FUNCTION touch()",
     ("create_trigger", "creates trigger runs_touch on runs: later writes to runs run touch()")),
    ("DROP TRIGGER runs_touch ON runs", ("drop_trigger", "drops trigger runs.runs_touch")),
    ("DROP FUNCTION touch()", ("drop_function", "drops function touch")),
    ("ALTER TABLE runs DISABLE TRIGGER runs_touch", ("trigger_switch", "disables trigger(s) runs_touch on runs")),
    ("SELECT count(*) FROM runs WHERE split_part(name, '-', 1) = 'x'", ("select", "reads data, changes nothing")),
    # A call made for what it does, not for what it returns: named, never called harmless.
    ("SELECT backfill_runs()", ("unknown", "a SELECT that calls backfill_runs(): what that function changes is known "
                                          "only when it runs, review by hand")),
    ("DO $$ BEGIN UPDATE runs SET state = 'x'; END $$",
     ("unknown", "runs a DO block of procedural code: what it changes is known only when it runs, review by hand")),
])
def test_each_statement_kind_is_understood_or_named(statement, expected):
    assert read(statement) == [expected]


def test_sequence_grant_policy_function_and_trigger_statements_are_low_risk():
    sql_text = ("SELECT setval('s', 1); CREATE SEQUENCE s2; COMMENT ON TABLE t IS 'x'; CREATE EXTENSION plpgsql; "
                "CREATE POLICY p ON t USING (true); GRANT SELECT ON t TO PUBLIC; "
                "CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$; "
                "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()")
    assessed = assess_downgrade_operations([], operations_from_sql(sql_text))
    assert {op.risk for op in assessed} == {Risk.LOW}
    assert assessed[0].reason == ("Moves a sequence: no stored row changes; ids handed out later follow from where it "
                                  "stands.")


def test_an_insert_with_bound_values_claims_no_row_count_and_no_check():
    [insert] = operations_from_sql("INSERT INTO concurrency_limit (id, name) VALUES ($1, $2)")
    assert insert.detail == ("inserts rows into concurrency_limit with values bound at run time (how many is known "
                             "only then)")
    assert insert.check is None


def test_an_update_records_the_columns_it_sets():
    [update] = operations_from_sql("UPDATE runs SET state = 'done', note = NULL WHERE state = 'ok'")
    assert update.extra["set_columns"] == ("state", "note")


def migration_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.py"
    path.write_text(textwrap.dedent(body))
    return path


def test_the_python_reader_follows_only_the_postgresql_branch_of_a_dialect_test(tmp_path):
    path = migration_file(tmp_path, '''
        from alembic import context, op

        def downgrade():
            bind = op.get_bind()
            dialect = bind.dialect.name
            is_postgres = dialect == "postgresql"
            if op.get_bind().dialect.name == "mysql":
                op.drop_column("runs", "mysql_only")
            elif context.get_context().dialect.name == "sqlite":
                op.drop_column("runs", "sqlite_only")
            else:
                op.drop_column("runs", "everywhere_else")
            if not is_postgres:
                op.drop_table("not_on_postgres")
            if dialect in ("mysql", "mssql"):
                op.drop_table("not_on_postgres_either")
            if dialect != "sqlite":
                op.drop_column("runs", "postgres_too")
        ''')
    operations = operations_from_python(path, "downgrade", "offline")
    assert [(op.op, op.column) for op in operations[1:]] == [("drop_column", "everywhere_else"),
                                                             ("drop_column", "postgres_too")]


def test_the_python_reader_lists_what_the_files_own_helpers_do(tmp_path):
    path = migration_file(tmp_path, '''
        from alembic import op

        def _drop_old_columns(table):
            for column in ("a", "b"):
                pass
            op.drop_column("experiments", "artifact_location")
            op.execute("DELETE FROM experiments WHERE lifecycle_stage = 'deleted'")
            _drop_old_columns(table)  # calls itself: read once

        def downgrade():
            _drop_old_columns("experiments")
            op.drop_column("experiments", "creation_time")
        ''')
    operations = operations_from_python(path, "downgrade", "offline")
    assert [(op.op, op.column) for op in operations[1:]] == [
        ("drop_column", "artifact_location"), ("delete", None), ("drop_column", "creation_time")]


def test_statements_in_a_python_loop_say_so_and_carry_no_count(tmp_path):
    path = migration_file(tmp_path, '''
        import sqlalchemy as sa
        from alembic import op

        def upgrade():
            bind = op.get_bind()
            for row in bind.execute(sa.text("SELECT id, name FROM concurrency_limit")).fetchall():
                bind.execute(sa.text("INSERT INTO concurrency_limit_v2 (id, name) VALUES (:id, :name)"),
                             {"id": row.id, "name": row.name})
                bind.execute(sa.text("UPDATE concurrency_limit SET migrated = true WHERE name = 'x'"))
        ''')
    _, select, insert, update = operations_from_python(path, "upgrade", "offline")
    assert select.op == "select" and LOOP_NOTE not in select.detail
    assert insert.detail == ("inserts rows into concurrency_limit_v2 with values bound at run time (how many is known "
                             f"only then) ({LOOP_NOTE})")
    assert update.detail.endswith(f"({LOOP_NOTE})") and update.check is None


@pytest.mark.parametrize(("current", "new_type", "modifiers", "expected"), [
    ("character varying(255)", "varchar", (), "in_place"),
    ("character varying(255)", "text", (), "in_place"),
    ("character varying(64)", "varchar", (255,), "in_place"),
    ("character varying(255)", "varchar", (64,), None),
    ("text", "varchar", (255,), None),
    ("numeric(10,2)", "numeric", (12, 2), "in_place"),
    ("numeric(10,2)", "numeric", (12, 1), None),
    ("integer", "int8", (), "rewrites"),
    ("bigint", "int4", (), None),
    ("integer", "text", (), None),
])
def test_a_widening_is_told_from_a_narrowing(current, new_type, modifiers, expected):
    assert type_widening(current, new_type, modifiers) == expected


def sql_ops(sql_text: str) -> list[Operation]:
    return operations_from_sql(sql_text)


def test_a_backfill_of_a_column_the_upgrade_adds_is_an_add_column():
    upgrade = sql_ops("ALTER TABLE runs ADD COLUMN slug varchar; UPDATE runs SET slug = lower(name); "
                      "ALTER TABLE runs ALTER COLUMN slug SET NOT NULL")
    assert migration_type(upgrade) == "add_column"
    downgrade = assess_downgrade_operations(upgrade, sql_ops("ALTER TABLE runs DROP COLUMN slug"))
    assert step_risk("add_column", downgrade) == Risk.LOW


def test_a_downgrade_that_only_relaxes_not_null_after_a_backfill_is_low():
    upgrade = sql_ops("UPDATE runs SET flag = false WHERE flag IS NULL; ALTER TABLE runs ALTER COLUMN flag SET NOT NULL")
    assert migration_type(upgrade) == "data_migration"
    downgrade = assess_downgrade_operations(upgrade, sql_ops("ALTER TABLE runs ALTER COLUMN flag DROP NOT NULL"))
    assert step_risk("data_migration", downgrade) == Risk.LOW


def test_a_data_migration_whose_downgrade_rewrites_rows_stays_high():
    upgrade = sql_ops("UPDATE runs SET state = 'archived' WHERE state = 'old'")
    downgrade = assess_downgrade_operations(upgrade, sql_ops("UPDATE runs SET state = 'old' WHERE state = 'archived'"))
    assert step_risk("data_migration", downgrade) == Risk.HIGH


def test_an_empty_downgrade_says_what_it_leaves_by_what_the_upgrade_did():
    [data_only] = assess_downgrade_operations(sql_ops("UPDATE runs SET state = 'done' WHERE state = 'ok'"), [])
    assert (data_only.risk, data_only.detail) == (Risk.LOW, (
        "downgrade() does nothing: upgrade() changes only rows, so the schema is already right for the older "
        "revision, and the rows stay as upgrade() left them"))
    [dropped] = assess_downgrade_operations(sql_ops("ALTER TABLE runs DROP COLUMN legacy"), [])
    assert "EMPTY" not in dropped.detail + dropped.reason
    assert dropped.detail.startswith("downgrade() does nothing: what upgrade() dropped (runs.legacy) does not come back")
    [schema] = assess_downgrade_operations(sql_ops("CREATE INDEX ix ON runs (state)"), [])
    assert schema.risk == Risk.UNKNOWN and "changes the schema" in schema.detail


def test_a_table_the_upgrade_creates_is_recognised_with_or_without_its_public_schema():
    upgrade = sql_ops("CREATE TABLE public.spans (id int)")
    [drop] = assess_downgrade_operations(upgrade, sql_ops("DROP TABLE spans"))
    assert drop.risk == Risk.LOW
    assert drop.reason == "The table was created by this migration; rows written to it since are lost."


def test_a_loop_over_names_the_source_spells_lists_each_operation(tmp_path):
    path = migration_file(tmp_path, '''
        from alembic import op

        OLD_COLUMNS = ("source_type", "source")

        def downgrade():
            for column in OLD_COLUMNS:
                op.drop_column("model_versions", column)
            for table, column in [("runs", "lifecycle"), ("experiments", "lifecycle")]:
                with op.batch_alter_table(table) as batch_op:
                    batch_op.drop_column(column)
            for column in computed_columns():
                op.drop_column("runs", column)
        ''')
    operations = operations_from_python(path, "downgrade", "offline")
    assert [(op.op, str(op.table), op.column) for op in operations[1:]] == [
        ("drop_column", "model_versions", "source_type"), ("drop_column", "model_versions", "source"),
        ("drop_column", "runs", "lifecycle"), ("drop_column", "experiments", "lifecycle"),
        ("unknown", "runs", None)]
    assert operations[-1].detail.startswith("drops a column of runs whose name is computed at run time")


def test_a_loop_over_a_dict_the_function_spells_lists_every_column_it_drops(tmp_path):
    # MLflow's shape: about twenty columns dropped through nested loops over a dict, on PostgreSQL's branch.
    path = migration_file(tmp_path, '''
        from alembic import op

        def downgrade():
            columns_by_table = {"spans": ["model_name", "total_cost"], "trace_info": ["session_id"]}
            if op.get_bind().dialect.name == "sqlite":
                pass
            else:
                for table_name, columns in columns_by_table.items():
                    for column in columns:
                        op.drop_column(table_name, column)
        ''')
    operations = operations_from_python(path, "downgrade", "offline")
    assert [(op.op, str(op.table), op.column) for op in operations[1:]] == [
        ("drop_column", "spans", "model_name"), ("drop_column", "spans", "total_cost"),
        ("drop_column", "trace_info", "session_id")]


def test_helpers_that_return_a_column_or_a_batch_are_read_in_place(tmp_path):
    path = migration_file(tmp_path, '''
        import sqlalchemy as sa
        from alembic import op

        def _workspace_column():
            """The column every table gets."""
            return sa.Column("workspace", sa.String(63), nullable=False, server_default="default")

        def _with_batch(table_name):
            return op.batch_alter_table(table_name, recreate="auto")

        def upgrade():
            with _with_batch("experiments") as batch_op:
                batch_op.add_column(_workspace_column())
        ''')
    operations = operations_from_python(path, "upgrade", "offline")
    assert [(op.op, str(op.table), op.column) for op in operations[1:]] == [("add_column", "experiments", "workspace")]


def test_a_table_named_by_an_imported_models_attribute_is_read_from_the_module(tmp_path):
    class SqlLatestMetric:  # stands for MLflow's model class, imported by the migration
        __tablename__ = "latest_metrics"

    path = migration_file(tmp_path, '''
        from alembic import op

        def upgrade():
            op.create_table(SqlLatestMetric.__tablename__)
        ''')
    operations = operations_from_python(path, "upgrade", "offline", {"SqlLatestMetric": SqlLatestMetric, "op": None})
    assert [(op.op, str(op.table)) for op in operations[1:]] == [("create_table", "latest_metrics")]


def test_a_drop_is_not_said_to_destroy_older_data_when_the_upgrade_could_not_be_read_in_full():
    upgrade = [Operation("unknown", None, None, "executes SQL built at run time: review by hand", "")]
    [drop] = assess_downgrade_operations(upgrade, sql_ops("ALTER TABLE spans DROP COLUMN total_cost"))
    assert drop.risk == Risk.UNKNOWN
    assert drop.reason.startswith("upgrade() could not be read in full, so whether it created this column is not known")
    [known] = assess_downgrade_operations(sql_ops("SELECT 1"), sql_ops("ALTER TABLE spans DROP COLUMN total_cost"))
    assert known.risk == Risk.HIGH


def test_an_empty_downgrade_after_an_upgrade_read_from_source_or_seen_doing_nothing_is_for_review():
    fallback = Operation("unknown", None, None, "upgrade() cannot be rendered offline", "",
                         extra={RENDER_FALLBACK: True})
    [read_from_source] = assess_downgrade_operations([fallback, *sql_ops("UPDATE runs SET a = 1 WHERE b")], [])
    assert read_from_source.risk == Risk.UNKNOWN
    assert read_from_source.detail.startswith("downgrade() does nothing; upgrade(), read from its Python source, "
                                              "appears to change only rows")
    # Nothing but a COMMIT was seen (an ORM session does the work): nothing is claimed about it.
    [unseen] = assess_downgrade_operations([fallback, *sql_ops("COMMIT")], [])
    assert unseen.risk == Risk.UNKNOWN and "could not be read" in unseen.detail


def test_a_column_built_first_and_added_after_keeps_its_name(tmp_path):
    path = migration_file(tmp_path, '''
        import sqlalchemy as sa
        from alembic import op

        def downgrade():
            column = sa.Column("dimension_attributes", sa.JSON(), nullable=True)
            op.add_column("spans", column)
            op.add_column("spans", make_column())
        ''')
    _, named, computed = operations_from_python(path, "downgrade", "offline")
    assert (named.op, named.column) == ("add_column", "dimension_attributes")
    assert computed.detail == "adds a column to spans whose definition is computed at run time: it comes back EMPTY"


def test_sql_held_by_a_name_or_an_f_string_of_constants_is_read(tmp_path):
    path = migration_file(tmp_path, '''
        import sqlalchemy as sa
        from alembic import op

        INDEX_NAME = "ix_flow_run__state_type"

        def upgrade():
            conn = op.get_bind()
            backfill = "UPDATE flow_run SET state_name = 'Done' WHERE state_name IS NULL"
            conn.execute(sa.text(backfill))
            op.execute(f"CREATE INDEX {INDEX_NAME} ON flow_run (state_type)")
            op.execute(f"REINDEX INDEX {computed()}")
        ''')
    _, update, index, unknown = operations_from_python(path, "upgrade", "offline")
    assert (update.op, str(update.table)) == ("update", "flow_run")
    assert index.detail == "creates index ix_flow_run__state_type on flow_run (blocks writes while it builds)"
    assert unknown.op == "unknown"


def test_why_a_migration_cannot_be_rendered_offline_is_said_in_words():
    from sqlalchemy.exc import NoInspectionAvailable

    from rollbook.project.offline_sql import offline_failure_in_words

    reads = AttributeError("'NoneType' object has no attribute 'fetchall'")
    assert offline_failure_in_words(reads) == "it reads the result of a query (.fetchall), which needs the live database"
    inspects = NoInspectionAvailable("No inspection system is available for object of type MockConnection")
    assert offline_failure_in_words(inspects) == "it inspects the live database (sqlalchemy.inspect on its connection)"


def test_a_migration_that_opens_an_orm_session_on_its_connection_is_named_in_words(tmp_path: Path) -> None:
    # Optuna's data migrations query and close a Session(bind=op.get_bind()): offline, that connection is
    # Alembic's MockConnection, and the plan says why in words, not with the AttributeError it raises.
    from rollbook.project.offline_sql import OfflineRenderer

    ini = write_project(tmp_path / "orm", {"a1": (None, "op.create_table('trials', sa.Column('id', sa.Integer))",
                                                  "op.drop_table('trials')")})
    migration = tmp_path / "orm" / "versions" / "a1.py"
    migration.write_text(migration.read_text().replace("from alembic import op", "from alembic import op\n"
                         "import sqlalchemy as sa\nfrom sqlalchemy import orm").replace(
                         "    op.drop_table('trials')", "    session = orm.Session(bind=op.get_bind())\n"
                         "    try:\n        session.execute(sa.text('SELECT 1')).all()\n    finally:\n"
                         "        session.close()\n    op.drop_table('trials')"))
    rendered = OfflineRenderer(load_project(ini)).render("a1", "downgrade")
    assert rendered.sql is None
    assert rendered.error is not None and rendered.error.startswith("it uses its connection as a live one (.")
    assert "Error" not in rendered.error
def test_a_constraint_dropped_without_a_name_is_said_in_words(tmp_path):
    """Zou's a0f668430352: an autogenerated downgrade calls batch_op.drop_constraint(None, type_="foreignkey")."""
    from alembic_projects import write_project

    from rollbook.project.migrations import load_project
    from rollbook.project.offline_sql import OfflineRenderer

    config = write_project(tmp_path / "project", {
        "z1": (None, "op.execute('CREATE TABLE playlist (id int)')", "op.execute('DROP TABLE playlist')"),
        "z2": ("z1", "op.execute('SELECT 1')",
               "with op.batch_alter_table('playlist') as batch: batch.drop_constraint(None, type_='foreignkey')"),
    })

    rendered = OfflineRenderer(load_project(config)).render("z2", "downgrade")

    assert rendered.error == ("drops a foreign key of table playlist without naming it (drop_constraint(None, "
                              "...)), which SQLAlchemy cannot emit online either: the downgrade fails when it runs")
    assert rendered.fails_everywhere  # a certain failure, not a step for review by hand
