"""Estimated lock time in the plan: what each step blocks, for about how long, and how it compares to a real run."""

from __future__ import annotations

import json
import time

from alembic import command
from alembic_projects import project_at_head
from click.testing import CliRunner

from rollbook.cli import main
from rollbook.demo.project import sample_data
from rollbook.durations import duration_text
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.lock_time import METADATA_SECONDS, NO_LIVE_CHECKS, LockEstimate, step_blocking
from rollbook.planning.operations import Operation, TableName
from rollbook.planning.plan import DowngradePlan, plan_downgrade
from rollbook.project.migrations import MigrationProject

# accounts.email is varchar(100) at first; the head widens it, so undoing the head narrows it with a rewrite.
REWRITING = {
    "a1": (None, ('op.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, email varchar(100) NOT NULL, '
                  'note text NOT NULL); CREATE INDEX ix_accounts_email ON accounts (email)")'),
           'op.execute("DROP TABLE accounts")'),
    "b2": ("a1", 'op.execute("ALTER TABLE accounts ALTER COLUMN email TYPE varchar(255)")',
           'op.execute("ALTER TABLE accounts ALTER COLUMN email TYPE varchar(100)")'),
}
# About 60 MB of table and indexes: a rewrite long enough to time well above Alembic's own start-up.
ROWS = ("INSERT INTO accounts SELECT i, 'user' || i || '@example.com', repeat('n', 60) "
        "FROM generate_series(1, 500000) i; VACUUM ANALYZE accounts")


def test_a_rewriting_step_is_estimated_within_half_to_twice_the_real_downgrade(tmp_path, database_url):
    project, target, config = project_at_head(tmp_path / "project", database_url, REWRITING)
    with connect(target) as conn:
        for statement in ROWS.split("; "):
            conn.execute(statement)

    plan = plan_downgrade(target, project, "-1")
    step = plan.steps[0]
    narrowing = next(op for op in step.operations if op.op == "alter_column_type")
    assert narrowing.rewrites_table
    assert narrowing.lock_estimate is not None and narrowing.lock_estimate.work == "rewrite"
    assert "estimate" in narrowing.lock_estimate.basis and "calibrated on this server" in narrowing.lock_estimate.basis
    estimated = step.estimated_lock_seconds
    assert estimated is not None

    started = time.perf_counter()
    command.downgrade(config, "-1")
    measured = time.perf_counter() - started

    assert 0.5 <= estimated / measured <= 2.0, (estimated, measured)
    assert step.blocking.tables[0].table == "accounts" and step.blocking.tables[0].blocks_reads


def test_metadata_only_steps_are_estimated_as_milliseconds(demo_url, demo_project):
    plan = _plan(demo_url, demo_project, "0607bc5b8530")

    step = next(s for s in plan.steps if s.revision.revision == "0607bc5b8531")
    drop = next(op for op in step.operations if op.op == "drop_column")
    assert drop.lock_estimate is not None
    assert (drop.lock_estimate.work, drop.lock_estimate.seconds) == ("metadata", METADATA_SECONDS)
    assert "milliseconds" in drop.lock_estimate.basis and "lock_timeout" in drop.lock_estimate.basis
    five_ms = duration_text(METADATA_SECONDS)
    assert step.blocking.described() == f"blocks writes to users for about {five_ms}, reads for about {five_ms}"
    assert "blocks writes to users for about" in plan.to_text()
    assert "Estimated blocked time while it runs" in plan._repr_markdown_()


def test_plan_json_carries_estimated_lock_seconds_per_operation_and_step(demo_url, demo_project):
    result = CliRunner().invoke(main, ["plan", "0607bc5b8530", "--json"], env={
        "DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(demo_project.config_path)}, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)

    for step in plan["steps"]:
        assert isinstance(step["estimated_lock_seconds"], float)
        assert {"estimated", "basis", "tables"} <= set(step["blocking"])
        for op in step["operations"]:
            assert "estimated_lock_seconds" in op
            assert {"blocks_writes", "blocks_reads", "basis", "work"} <= set(op["lock_estimate"])
    data_change = plan["steps"][0]
    assert data_change["blocking"]["tables"] == []
    assert [(r["table"], r["rows"]) for r in data_change["blocking"]["row_locks"]] == [
        ("users", sample_data.ACTIVE_BEFORE_BACKFILL + sample_data.NULL_STATUS_BEFORE_BACKFILL)]
    summary = plan["lock_estimates"]
    assert summary["estimated"] is True
    assert summary["calibration"]["scan"]["table"] == "users"
    assert {t["table"] for t in summary["tables"]} >= {"users"}


def test_without_live_checks_nothing_is_estimated_and_the_plan_says_so(demo_url, demo_project):
    plan = plan_downgrade(DatabaseTarget.from_url(demo_url), demo_project, "0607bc5b8530", live_checks=False)

    assert all(op.lock_estimate is None or op.lock_estimate.seconds is None
               for step in plan.steps for op in step.operations)
    assert all(step.estimated_lock_seconds is None for step in plan.steps if step.blocking.tables)
    assert plan.to_dict()["lock_estimates"]["estimated"] is False
    assert NO_LIVE_CHECKS in plan.to_text()


def test_a_lock_is_held_to_the_step_commit_and_a_commit_inside_the_step_releases_it():
    users = TableName(None, "users")

    def locking(op: str, lock: str, seconds: float, reads: bool) -> Operation:
        blocked = ("users",)
        return Operation(op, users, None, op, op, lock=lock,
                         lock_estimate=LockEstimate(lock, seconds, blocked, blocked if reads else (), "estimate"))

    index = locking("create_index", "SHARE", 2.0, reads=False)
    rewrite = locking("alter_column_type", "ACCESS EXCLUSIVE", 3.0, reads=True)
    commit = Operation("commit", None, None, "commit", "COMMIT")

    held = step_blocking([index, rewrite]).tables[0]
    assert (held.writes_seconds, held.reads_seconds, held.blocks_reads) == (5.0, 3.0, True)
    # Held to the commit, the rewrite's ACCESS EXCLUSIVE lock also blocks reads while the index builds.
    together = step_blocking([rewrite, index]).tables[0]
    assert (together.writes_seconds, together.reads_seconds) == (5.0, 5.0)
    split = step_blocking([rewrite, commit, index]).tables[0]
    assert (split.writes_seconds, split.reads_seconds) == (5.0, 3.0)


def _plan(url: str, project: MigrationProject, target: str) -> DowngradePlan:
    return plan_downgrade(DatabaseTarget.from_url(url), project, target)
