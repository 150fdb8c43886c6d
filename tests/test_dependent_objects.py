"""Objects in the way of a drop or type change are named by the plan, unless the downgrade drops them first."""

from __future__ import annotations

import pytest
import sqlalchemy.exc
from alembic import command
from alembic_projects import project_at_head

from rollbook.plan import DowngradePlan, plan_downgrade

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
