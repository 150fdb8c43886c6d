"""Objects in the way of a drop or type change are named by the plan, unless the downgrade drops them first."""

from __future__ import annotations

import pytest
import sqlalchemy.exc
from alembic import command
from alembic_projects import project_at_head

from rollbook.planning.plan import DowngradePlan, plan_downgrade

REVISIONS = {
    "cccc00000001": (None, 'op.execute("CREATE TABLE teams (id int PRIMARY KEY)")', 'op.execute("DROP TABLE teams")'),
    "cccc00000002": ("cccc00000001", 'op.execute("ALTER TABLE teams ADD COLUMN motto text")',
                     'op.execute("ALTER TABLE teams DROP COLUMN motto")'),
    "cccc00000003": ("cccc00000002", 'op.execute("CREATE VIEW team_mottos AS SELECT id, motto FROM teams")',
                     'op.execute("DROP VIEW team_mottos")'),
}


def blockers(plan: DowngradePlan) -> list[str]:
    return [op.detail for step in plan.steps for op in step.operations if op.op == "dependent_object"]


def test_a_view_the_downgrade_does_not_drop_is_named_and_the_downgrade_really_fails(tmp_path, database_url):
    project, target, config = project_at_head(tmp_path / "project", database_url, REVISIONS, (
        "CREATE VIEW motto_report AS SELECT motto FROM teams"))
    command.downgrade(config, "cccc00000002")  # the project's own view goes; the one added by hand stays

    plan = plan_downgrade(target, project, "-1")

    assert blockers(plan) == ["fails: view motto_report depends on teams.motto; drop or change it first"]
    assert plan.verdict.code == "do_not_downgrade"
    assert "it would fail part-way" in plan.verdict.advice
    with pytest.raises(sqlalchemy.exc.InternalError, match="other objects depend on it"):
        command.downgrade(config, "-1")


def test_a_view_an_earlier_step_drops_is_not_in_the_way(tmp_path, database_url):
    project, target, config = project_at_head(tmp_path / "project", database_url, REVISIONS)

    plan = plan_downgrade(target, project, "cccc00000001")

    assert blockers(plan) == []
    assert plan.verdict.code == "safe"
    command.downgrade(config, "cccc00000001")


def test_another_tables_foreign_key_blocks_a_table_drop_unless_dropped_first(tmp_path, database_url):
    revisions = {
        **REVISIONS,
        "cccc00000004": ("cccc00000003",
                         'op.execute("CREATE TABLE players (id int PRIMARY KEY, team_id int '
                         'CONSTRAINT players_team_fk REFERENCES teams)")',
                         'op.execute("DROP TABLE players")'),
    }
    project, target, _ = project_at_head(tmp_path / "project", database_url, revisions, (
        "CREATE TABLE fans (team_id int CONSTRAINT fans_team_fk REFERENCES teams)"))

    plan = plan_downgrade(target, project, "base")

    assert blockers(plan) == [
        "fails: constraint fans_team_fk on table fans depends on table teams; drop or change it first"]


def test_drop_cascade_names_what_it_drops_too_without_calling_it_a_failure(tmp_path, database_url):
    revisions = {
        "cccc00000001": (None, 'op.execute("CREATE TABLE teams (id int PRIMARY KEY, motto text)")',
                         'op.execute("DROP TABLE teams CASCADE")'),
    }
    project, target, _ = project_at_head(tmp_path / "project", database_url, revisions, (
        "CREATE VIEW motto_report AS SELECT motto FROM teams"))

    plan = plan_downgrade(target, project, "base")

    [cascade] = [op for op in plan.steps[0].operations if op.op == "cascade_drop"]
    assert cascade.detail == ("also drops view motto_report, which depends on table teams (CASCADE); "
                              "the downgrade does not re-create it")
    assert blockers(plan) == []


# A shape from real histories (MLflow's spans.duration_ns; any table with a CHECK): the table's own
# CHECK constraints, generated columns, defaults, indexes and serial sequence depend on it in the
# catalog, and DROP TABLE drops them all with it.
OWN_OBJECTS = {
    "dddd00000001": (None, 'op.execute("CREATE TABLE spans (id serial PRIMARY KEY, start_ns bigint NOT NULL, '
                     "end_ns bigint, a int, b int, created timestamptz DEFAULT now(), "
                     "duration_ns bigint GENERATED ALWAYS AS (end_ns - start_ns) STORED, "
                     "CONSTRAINT ck_spans_a_ne_b CHECK (a <> b)); "
                     'CREATE INDEX ix_spans_start ON spans (start_ns)")',
                     'op.execute("DROP TABLE spans")'),
}


def test_a_tables_own_check_generated_column_default_and_index_never_block_dropping_it(tmp_path, database_url):
    project, target, config = project_at_head(tmp_path / "project", database_url, OWN_OBJECTS, (
        "INSERT INTO spans (start_ns, end_ns, a, b) VALUES (1, 5, 1, 2)"))

    plan = plan_downgrade(target, project, "base")

    assert blockers(plan) == []
    assert plan.verdict.code == "loses_data"
    command.downgrade(config, "base")


def test_dropping_a_column_its_own_tables_check_and_index_use_is_not_blocked(tmp_path, database_url):
    revisions = {
        **OWN_OBJECTS,
        "dddd00000002": ("dddd00000001", 'op.execute("ALTER TABLE spans ADD COLUMN c int CHECK (c > 0); '
                         'CREATE INDEX ix_spans_c ON spans (c)")',
                         'op.execute("ALTER TABLE spans DROP COLUMN c")'),
    }
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions)

    plan = plan_downgrade(target, project, "-1")

    assert blockers(plan) == []
    command.downgrade(config, "-1")


def test_a_generated_column_reading_a_dropped_column_is_named_and_the_drop_really_fails(tmp_path, database_url):
    revisions = {
        **OWN_OBJECTS,
        "dddd00000002": ("dddd00000001", 'op.execute("SELECT 1")',
                         'op.execute("ALTER TABLE spans DROP COLUMN start_ns")'),
    }
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions)

    plan = plan_downgrade(target, project, "-1")

    assert blockers(plan) == ["fails: generated column duration_ns of table spans depends on spans.start_ns; "
                              "drop or change it first"]
    with pytest.raises(sqlalchemy.exc.InternalError, match="other objects depend on it"):
        command.downgrade(config, "-1")


def test_a_foreign_key_a_python_read_step_drops_is_not_in_the_way_whatever_the_source_order(tmp_path, database_url):
    """MLflow's shape: a SQLite-only branch drops the column before the PostgreSQL path drops the foreign key."""
    downgrade = (
        "bind = op.get_bind()\n"
        "    bind.execute(sa.text('SELECT 1')).fetchall()  # reads the database: rendered from its source\n"
        "    if bind.dialect.name == 'sqlite':\n"
        "        with op.batch_alter_table('teams') as batch_op:\n"
        "            batch_op.drop_column('code')\n"
        "        return\n"
        "    op.drop_constraint('fk_players_team_code', 'players', type_='foreignkey')\n"
        "    op.drop_column('teams', 'code')"
    )
    revisions = {
        "gggg00000001": (None, 'op.execute("CREATE TABLE teams (id int PRIMARY KEY)")',
                         'op.execute("DROP TABLE teams")'),
        "gggg00000002": ("gggg00000001",
                         'op.execute("ALTER TABLE teams ADD COLUMN code text UNIQUE; CREATE TABLE players (id int, '
                         'team_code text CONSTRAINT fk_players_team_code REFERENCES teams (code))")',
                         f"import sqlalchemy as sa\n    {downgrade}"),
    }
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions)

    plan = plan_downgrade(target, project, "-1")

    assert plan.steps[0].operations[0].source == "python"
    assert blockers(plan) == []
    command.downgrade(config, "-1")


def test_a_foreign_key_whose_column_the_same_step_drops_first_is_not_in_the_way(tmp_path, database_url):
    """Dagster's c63a27054f08: the downgrade drops runs.snapshot_id (and with it its foreign key), then snapshots."""
    revisions = {
        "dddd00000001": (None, 'op.execute("CREATE TABLE runs (id int PRIMARY KEY)")', 'op.execute("DROP TABLE runs")'),
        "dddd00000002": ("dddd00000001",
                         'op.execute("CREATE TABLE snapshots (snapshot_id text PRIMARY KEY); ALTER TABLE runs ADD COLUMN '
                         'snapshot_id text CONSTRAINT fk_runs_snapshot REFERENCES snapshots")',
                         'op.execute("ALTER TABLE runs DROP COLUMN snapshot_id; DROP TABLE snapshots")'),
    }
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions)

    plan = plan_downgrade(target, project, "-1")

    assert blockers(plan) == []
    assert plan.verdict.code == "safe"
    command.downgrade(config, "-1")  # and PostgreSQL agrees


# Airflow's a3c7f2b18d4e and b12d4f98a91e: the newer step's downgrade (read from its Python source, as it reads the
# team table) drops connection_team_name_fkey in a loop, with names built by f-strings inside op.f(), and makes
# connection_team_id_fkey again; the older step drops that key and then the team table.
TEAM_KEYS_DOWNGRADE = (
    "import sqlalchemy as sa\n"
    "    for table in ('connection',):\n"
    "        with op.batch_alter_table(table) as batch_op:\n"
    "            batch_op.drop_constraint(batch_op.f(f'{table}_team_name_fkey'), type_='foreignkey')\n"
    "    teams = op.get_bind().execute(sa.text('SELECT name FROM team')).fetchall()\n"
    "    op.execute('ALTER TABLE connection ALTER COLUMN team_name TYPE int USING NULL')\n"
    "    op.alter_column('connection', 'team_name', new_column_name='team_id')\n"
    "    for table in ('connection',):\n"
    "        with op.batch_alter_table(table) as batch_op:\n"
    "            batch_op.create_foreign_key(batch_op.f(f'{table}_team_id_fkey'), 'team', ['team_id'], ['id'])"
)
TEAM_REVISIONS = {
    "tttt00000001": (None, 'op.execute("CREATE TABLE team (id int PRIMARY KEY, name text UNIQUE); CREATE TABLE '
                     'connection (id int PRIMARY KEY, team_id int CONSTRAINT connection_team_id_fkey REFERENCES team)")',
                     'op.execute("ALTER TABLE connection DROP CONSTRAINT connection_team_id_fkey; DROP TABLE team")'),
    "tttt00000002": ("tttt00000001",
                     'op.execute("ALTER TABLE connection DROP CONSTRAINT connection_team_id_fkey; ALTER TABLE connection '
                     'RENAME team_id TO team_name; ALTER TABLE connection ALTER team_name TYPE text; ALTER TABLE '
                     'connection ADD CONSTRAINT connection_team_name_fkey FOREIGN KEY (team_name) REFERENCES team (name)")',
                     TEAM_KEYS_DOWNGRADE),
}


def test_foreign_keys_follow_the_downgrade_in_order_across_steps(tmp_path, database_url):
    project, target, config = project_at_head(tmp_path / "project", database_url, TEAM_REVISIONS)

    plan = plan_downgrade(target, project, "base")

    assert plan.steps[0].render_error is not None  # read from its source
    assert blockers(plan) == []
    command.downgrade(config, "base")  # and PostgreSQL agrees


def test_a_foreign_key_an_earlier_step_creates_blocks_dropping_the_table_it_references(tmp_path, database_url):
    revisions = {**TEAM_REVISIONS, "tttt00000001": (
        None, TEAM_REVISIONS["tttt00000001"][1], 'op.execute("DROP TABLE team")')}
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions)

    plan = plan_downgrade(target, project, "base")

    assert blockers(plan) == ["fails: constraint connection_team_id_fkey on table connection (created earlier in "
                              "this downgrade) depends on table team; drop or change it first"]
    assert plan.verdict.code == "do_not_downgrade"
    with pytest.raises(sqlalchemy.exc.InternalError, match="other objects depend on it"):
        command.downgrade(config, "base")


def test_a_foreign_key_on_a_table_a_later_step_renamed_is_followed_to_the_table_the_downgrade_drops(
        tmp_path, database_url):
    """Airflow's 05234396c6fc renames asset tables back to dataset ones; the squashed first step then drops
    dagrun_dataset_event before dag_run, so dagrun_asset_event's key on dag_run (as the catalog names it) goes.
    And b87d2135fa50 drops callback's key on trigger, then renames callback back to callback_request."""
    revisions = {
        "uuuu00000001": (None, 'op.execute("CREATE TABLE dag_run (id int PRIMARY KEY); CREATE TABLE dagrun_dataset_event '
                         '(dag_run_id int CONSTRAINT dagrun_event_run_fkey REFERENCES dag_run); CREATE TABLE trigger '
                         '(id int PRIMARY KEY); CREATE TABLE callback_request (trigger_id int)")',
                         'op.execute("DROP TABLE dagrun_dataset_event; DROP TABLE dag_run; DROP TABLE trigger; '
                         'DROP TABLE callback_request")'),
        "uuuu00000002": ("uuuu00000001",
                         'op.rename_table("dagrun_dataset_event", "dagrun_asset_event")\n'
                         '    op.rename_table("callback_request", "callback")\n'
                         '    op.create_foreign_key("callback_trigger_id_fkey", "callback", "trigger", ["trigger_id"], '
                         '["id"])',
                         'op.drop_constraint("callback_trigger_id_fkey", "callback", type_="foreignkey")\n'
                         '    op.rename_table("callback", "callback_request")\n'
                         '    op.rename_table("dagrun_asset_event", "dagrun_dataset_event")'),
    }
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions)

    plan = plan_downgrade(target, project, "base")

    assert blockers(plan) == []
    command.downgrade(config, "base")
