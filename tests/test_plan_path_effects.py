"""Multi-step downgrades: a later step runs on the data an earlier step left, not on today's data."""

from __future__ import annotations

from alembic import command
from alembic_projects import write_project

from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.plan import plan_downgrade
from rollbook.project.migrations import alembic_config_for, load_project

REVISIONS = {
    "aaaa00000001": (None, 'op.execute("CREATE TABLE accounts (id int PRIMARY KEY, flag text NOT NULL)")',
                     'op.execute("DROP TABLE accounts")'),
    "aaaa00000002": ("aaaa00000001", 'op.alter_column("accounts", "flag", nullable=True)',
                     'op.alter_column("accounts", "flag", nullable=False)'),
    "aaaa00000003": ("aaaa00000002", "op.execute(\"UPDATE accounts SET flag = 'x' WHERE flag IS NULL\")",
                     "op.execute(\"UPDATE accounts SET flag = NULL WHERE flag = 'x'\")"),
}


def test_a_count_an_earlier_step_invalidates_is_never_taken_at_face_value(tmp_path, database_url):
    project = load_project(write_project(tmp_path / "project", REVISIONS))
    target = DatabaseTarget.from_url(database_url)
    command.upgrade(alembic_config_for(project, target), "aaaa00000002")
    with connect(target) as conn:
        conn.execute("INSERT INTO accounts VALUES (1, NULL), (2, 'y')")
    command.upgrade(alembic_config_for(project, target), "head")

    plan = plan_downgrade(target, project, "aaaa00000001")

    set_not_null = next(op for op in plan.steps[1].operations if op.op == "set_not_null")
    # Today no flag is NULL, but the data migration's downgrade nulls one before NOT NULL is set.
    assert set_not_null.rows_affected == 0
    assert set_not_null.changed_earlier_by == "aaaa00000003"
    assert any("0 counted on today's data, but step aaaa00000003 changes accounts first" in reason
               for reason in plan.verdict.reasons)
    assert plan.verdict.code != "safe"
