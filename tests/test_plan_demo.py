"""Planning rollbacks of the bundled demo: every migration type of the procedures, counted on its sample data."""

from __future__ import annotations

import pytest
from pg import fingerprint

from rollbook.demo.project import sample_data
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.plan import DowngradePlan, plan_downgrade
from rollbook.project.migrations import MigrationProject


def plan(url: str, project: MigrationProject, target: str) -> DowngradePlan:
    return plan_downgrade(DatabaseTarget.from_url(url), project, target)


def only_operation(plan: DowngradePlan, revision: str, op: str):
    step = next(s for s in plan.steps if s.revision.revision == revision)
    matches = [o for o in step.operations if o.op == op]
    assert len(matches) == 1, [o.op for o in step.operations]
    return step, matches[0]


def test_data_migration_at_head_is_high_risk_and_counts_the_rows_it_rewrites(demo_url, demo_project):
    result = plan(demo_url, demo_project, "-1")

    assert [s.revision.revision for s in result.steps] == ["0607bc5b8536"]
    step, update = only_operation(result, "0607bc5b8536", "update")
    assert step.migration_type == "data_migration"
    assert step.risk.value == "high"
    # Every 'active' row is nulled: the backfilled ones and those that were active before the migration.
    assert update.rows_affected == sample_data.ACTIVE_BEFORE_BACKFILL + sample_data.NULL_STATUS_BEFORE_BACKFILL
    assert str(update.table) == "users"
    assert result.verdict.code == "do_not_downgrade"


@pytest.mark.parametrize(
    ("revision", "migration_type", "risk", "op", "table", "column", "rows"),
    [
        ("0607bc5b8535", "drop_table", "high", "create_table", "old_sessions", None, None),
        ("0607bc5b8534", "add_table", "low", "drop_table", "user_preferences", None,
         sample_data.USER_PREFERENCE_ROWS),
        ("0607bc5b8533", "alter_column", "medium", "alter_column_type", "users", "email", sample_data.LONG_EMAILS),
        ("0607bc5b8532", "drop_column", "high", "add_column", "users", "old_preferences", None),
        ("0607bc5b8531", "add_column", "low", "drop_column", "users", "preferences", sample_data.PREFERENCES),
    ],
)
def test_each_migration_type_is_classified_and_counted(
    demo_url, demo_project, revision, migration_type, risk, op, table, column, rows
):
    result = plan(demo_url, demo_project, "0607bc5b8530")

    step, operation = only_operation(result, revision, op)
    assert step.migration_type == migration_type
    assert step.risk.value == risk
    assert (str(operation.table), operation.column) == (table, column)
    assert operation.rows_affected == rows


def test_dropped_column_and_table_come_back_empty_and_are_never_safe(demo_url, demo_project):
    result = plan(demo_url, demo_project, "0607bc5b8531")

    _, column = only_operation(result, "0607bc5b8532", "add_column")
    _, table = only_operation(result, "0607bc5b8535", "create_table")
    assert "EMPTY" in column.detail and column.risk.value == "high"
    assert "EMPTY" in table.reason and table.risk.value == "high"
    assert result.verdict.code == "do_not_downgrade"
    assert any("restore from backup" in reason.lower() for reason in result.verdict.reasons)


def test_narrowing_that_would_fail_names_the_rows_and_blocks(demo_url, demo_project):
    result = plan(demo_url, demo_project, "0607bc5b8532")

    _, alter = only_operation(result, "0607bc5b8533", "alter_column_type")
    assert alter.check.effect == "blocks"
    assert alter.lock == "ACCESS EXCLUSIVE" and alter.rewrites_table
    assert any(f"{sample_data.LONG_EMAILS} rows that would make it fail" in r for r in result.verdict.reasons)


def test_plan_to_base_covers_every_revision_in_order_and_counts_rows_once(demo_url, demo_project):
    result = plan(demo_url, demo_project, "base")

    assert [s.revision.revision for s in result.steps] == [f"0607bc5b853{n}" for n in range(6, -1, -1)]
    assert result.path.target is None
    _, old_sessions = next(
        (s, o) for s in result.steps if s.revision.revision == "0607bc5b8530"
        for o in s.operations if str(o.table) == "old_sessions"
    )
    # Recreated empty by 0607bc5b8535 earlier in the same downgrade: nothing left to lose.
    assert old_sessions.rows_affected == 0
    users = next(t for t in result.tables if str(t.table) == "users")
    assert users.rows == sample_data.USERS and users.total_bytes > 0


def test_safe_only_when_nothing_is_lost(database_url, demo_project):
    from alembic import command

    from rollbook.project.migrations import alembic_config_for

    target = DatabaseTarget.from_url(database_url)
    command.upgrade(alembic_config_for(demo_project, target), "0607bc5b8531")

    result = plan(database_url, demo_project, "-1")

    _, drop = only_operation(result, "0607bc5b8531", "drop_column")
    assert drop.rows_affected == 0
    assert result.verdict.code == "safe"


def test_planning_changes_nothing(demo_url, demo_project, pg_server):
    before = fingerprint(demo_url)
    plan(demo_url, demo_project, "base")
    assert fingerprint(demo_url) == before


def test_plan_hash_is_stable_and_names_the_path(demo_url, demo_project):
    first = plan(demo_url, demo_project, "-1")
    again = plan(demo_url, demo_project, "-1")
    other = plan(demo_url, demo_project, "-2")
    assert first.plan_hash == again.plan_hash != other.plan_hash
