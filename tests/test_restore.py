"""Restoring rollbook's backups against the real server: what a restore refuses, finds and guarantees."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import psycopg
import pytest
from alembic import command
from pg import fingerprint, psycopg_kwargs
from runbook_runs import current_revision, demo_at

from rollbook.errors import BadInput
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import read_identity
from rollbook.planning.plan import plan_downgrade
from rollbook.policy.gate import RollbackRequest
from rollbook.policy.rules import default_policy
from rollbook.project.migrations import alembic_config_for
from rollbook.records.archive import Archive
from rollbook.records.model import RunRecord
from rollbook.recovery.archived_backups import (
    ArchivedBackup,
    RecordedBackup,
    find_backup,
    find_restore_point,
    take_recorded_backup,
)
from rollbook.recovery.backup_check import BackupRefused, check_backup
from rollbook.recovery.restore import RestoreRefused, restore_backup
from rollbook.recovery.restore_plan import plan_restore
from rollbook.recovery.restore_policy import evaluate_restore_policy
from rollbook.recovery.restore_verification import verify_restore
from rollbook.recovery.writes_since_backup import writes_since_backup

BEFORE_BACKFILL = "0607bc5b8535"
BEFORE_USER_PREFERENCES = "0607bc5b8533"


def archived(taken: RecordedBackup, run_id: str = "20260113T140500Z-aaaaaa") -> ArchivedBackup:
    """The backup as the archive gives it back, from the summary a run files."""
    backup = ArchivedBackup.from_record(RunRecord(run_id=run_id, runbook="backup", backup=taken.record_facts()))
    assert backup is not None
    return backup


def backed_up_then_deployed(url: str, project, folder: Path, revision: str):
    """The demo at `revision`, backed up (its fingerprint then), then deployed to head: (target, backup, fingerprint)."""
    demo_at(url, revision)
    target = DatabaseTarget.from_url(url)
    at_backup = fingerprint(url)
    backup = archived(take_recorded_backup(target, folder, revisions=(revision,), verify="list"))
    command.upgrade(alembic_config_for(project, target), "head")
    return target, backup, at_backup


def identity(url: str):
    with connect(DatabaseTarget.from_url(url)) as conn:
        return read_identity(conn)


def sql(url: str, *statements: str) -> None:
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def test_writes_since_the_backup_are_found_in_the_rows_themselves(demo_url, demo_project, tmp_path):
    target = DatabaseTarget.from_url(demo_url)
    backup = archived(take_recorded_backup(target, tmp_path, revisions=("0607bc5b8536",), verify="list"))
    assert writes_since_backup(target, backup, demo_project).status == "none"

    sql(demo_url, "UPDATE users SET name = 'renamed' WHERE id = 1", "DELETE FROM content_jobs WHERE id = 2",
        "INSERT INTO user_preferences (user_id, key, value) VALUES (3, 'tz', 'UTC')",
        "CREATE TABLE audit (id int)", "INSERT INTO audit VALUES (1), (2)")
    writes = writes_since_backup(target, backup, demo_project)

    assert writes.status == "found"
    changed = {t.table: (t.written, t.gone) for t in writes.changed}
    assert changed == {"public.users": (1, 1), "public.content_jobs": (0, 1), "public.user_preferences": (1, 0),
                       "public.audit": (2, 0)}
    assert "public.alembic_version" not in {t.table for t in writes.tables}
    # A record without a write horizon (the rollback runbook's) cannot see updates: never reported as "none".
    blind = dataclasses.replace(backup, write_horizon=None)
    sql(demo_url, "DROP TABLE audit", "DELETE FROM user_preferences WHERE key = 'tz'",
        "INSERT INTO content_jobs (id, user_id, title) VALUES (2, 2, 'Job 2')")
    assert writes_since_backup(target, blind, demo_project).status == "unknown"
    uncounted = dataclasses.replace(blind, table_rows=None)  # the shape of a rollback run's backup record
    assert writes_since_backup(target, uncounted, demo_project).status == "unknown"
    assert writes_since_backup(target, backup, demo_project).status == "found"  # the update to users is still seen


def test_a_changed_file_or_a_backup_of_another_database_is_refused_before_anything_runs(
    pg_server, demo_url, demo_project, tmp_path
):
    target = DatabaseTarget.from_url(demo_url)
    backup = archived(take_recorded_backup(target, tmp_path, revisions=("0607bc5b8536",), verify="list"))
    mine = identity(demo_url)
    assert check_backup(backup, mine).passed

    other_cluster = check_backup(dataclasses.replace(backup, system_identifier="6999999999999999999"), mine)
    assert not other_cluster.passed and "backup of another database" in other_cluster.problems[0]
    other_url = pg_server.create_database()
    try:
        other = check_backup(backup, identity(other_url))
        assert not other.passed and f"replace {identity(other_url).database}'s data" in other.problems[0]
    finally:
        pg_server.drop_database(DatabaseTarget.from_url(other_url).database)

    plan = plan_restore(target, backup, demo_project, into="database")
    sql(demo_url, "UPDATE users SET name = 'changed since'")
    before = fingerprint(demo_url)
    data = backup.path.read_bytes()
    for damaged in (data[: len(data) // 2], data[:100] + bytes([data[100] ^ 1]) + data[101:]):
        backup.path.write_bytes(damaged)
        problems = check_backup(backup, mine).problems
        assert len(problems) == 1 and "the file was changed since" in problems[0] and backup.sha256 in problems[0]
        with pytest.raises(BackupRefused, match="sha256"):
            restore_backup(target, plan, demo_project, accept_writes_since_backup=True)
    assert fingerprint(demo_url) == before


def test_a_restore_over_the_database_undoes_the_deploy_and_is_verified(demo_url, demo_project, tmp_path):
    target, backup, before = backed_up_then_deployed(demo_url, demo_project, tmp_path, BEFORE_BACKFILL)

    plan = plan_restore(target, backup, demo_project, into="database")
    assert plan.created_since == () and plan.revisions_now == ("0607bc5b8536",)
    writes = writes_since_backup(target, backup, demo_project)
    assert [t.table for t in writes.changed] == ["public.users"]  # the data migration's 9 rows
    with pytest.raises(RestoreRefused, match="accept_writes_since_backup"):
        restore_backup(target, plan, demo_project, writes=writes)
    execution = restore_backup(target, plan, demo_project, writes=writes, accept_writes_since_backup=True)

    assert execution.succeeded, execution.detail
    assert fingerprint(demo_url) == before
    assert current_revision(demo_url) == [BEFORE_BACKFILL]
    verification = verify_restore(target, backup, demo_project)
    assert verification.passed and [c.status for c in verification.checks] == ["passed"] * 3


def test_a_restore_into_a_new_database_leaves_the_original_alone_and_holds_the_backup(
    pg_server, demo_url, demo_project, tmp_path
):
    target, backup, at_backup = backed_up_then_deployed(demo_url, demo_project, tmp_path, BEFORE_BACKFILL)
    deployed = fingerprint(demo_url)

    assert plan_restore(target, backup, demo_project).destination.startswith(f"{target.database}_restored_")
    # A name with '=' would be read by pg_restore as a connection string, to another database.
    plan = plan_restore(target, backup, demo_project, into="new", new_database=f"{target.database} copy=1")
    try:
        execution = restore_backup(target, plan, demo_project)
        assert execution.succeeded, execution.detail
        assert execution.revisions_after == (BEFORE_BACKFILL,)
        assert fingerprint(pg_server.url(plan.destination)) == at_backup
        assert verify_restore(execution.restored, backup, demo_project).passed
        with pytest.raises(BadInput, match="already exists"):
            plan_restore(target, backup, demo_project, into="new", new_database=plan.destination)
    finally:
        pg_server.drop_database(plan.destination)
    assert fingerprint(demo_url) == deployed


def test_objects_created_since_the_backup_are_refused_before_pg_restore_runs(demo_url, demo_project, tmp_path):
    target, backup, _ = backed_up_then_deployed(demo_url, demo_project, tmp_path, BEFORE_USER_PREFERENCES)
    after_deploy = fingerprint(demo_url)

    plan = plan_restore(target, backup, demo_project, into="database")

    # user_preferences (with its foreign key to users) came with 0607bc5b8534; --clean would leave it.
    assert plan.created_since == ("table public.user_preferences",)
    with pytest.raises(RestoreRefused, match="user_preferences"):
        restore_backup(target, plan, demo_project, accept_writes_since_backup=True)
    assert fingerprint(demo_url) == after_deploy


def _pg_restore_of(path: Path) -> int | None:
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            arguments = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if arguments and arguments[0].endswith(b"pg_restore") and str(path).encode() in arguments:
            return int(cmdline.parent.name)
    return None


def test_a_restore_killed_halfway_leaves_the_database_as_it_was(demo_url, demo_project, tmp_path):
    target, backup, _ = backed_up_then_deployed(demo_url, demo_project, tmp_path, BEFORE_BACKFILL)
    deployed = fingerprint(demo_url)
    plan = plan_restore(target, backup, demo_project, into="database")
    result = {}

    with psycopg.connect(**psycopg_kwargs(demo_url)) as holder:
        # pg_restore --clean reaches the version table after the other tables' constraints: it stops there.
        holder.execute("LOCK TABLE alembic_version IN ACCESS SHARE MODE")
        restore = threading.Thread(target=lambda: result.update(execution=restore_backup(
            target, plan, demo_project, accept_writes_since_backup=True, lock_timeout_ms=60_000)))
        restore.start()
        with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as watcher:
            deadline = time.monotonic() + 30
            while (waiting := watcher.execute(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE '%public.alembic_version%'").fetchone()) is None:
                assert time.monotonic() < deadline and restore.is_alive(), "pg_restore never reached the version table"
                time.sleep(0.05)
            changed = watcher.execute("SELECT count(*) FROM pg_locks WHERE pid = %s AND granted "
                                      "AND mode = 'AccessExclusiveLock' AND locktype = 'relation'", waiting).fetchone()
            assert changed[0] >= 3  # halfway: it has already dropped constraints of other tables in its transaction
            pid = _pg_restore_of(backup.path)
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            restore.join(timeout=30)
        holder.rollback()

    execution = result["execution"]
    assert not execution.succeeded
    assert "stopped by signal 9" in execution.detail and "the database is unchanged" in execution.detail
    assert fingerprint(demo_url) == deployed
    assert current_revision(demo_url) == ["0607bc5b8536"]


def test_the_newest_verified_backup_taken_at_or_below_the_target_is_named(demo_url, demo_project, tmp_path):
    target = DatabaseTarget.from_url(demo_url)
    archive = Archive(tmp_path / "archive")
    mine = identity(demo_url)

    def file(taken: RecordedBackup, run_id: str) -> None:
        archive.file_summary({"run_id": run_id, "runbook": "backup", "started_at": taken.backup.taken_at,
                              "outcome": "succeeded", "identity": mine.to_dict(), "backup": taken.record_facts()})

    demo_at(demo_url, "0607bc5b8534")
    file(take_recorded_backup(target, tmp_path, revisions=("0607bc5b8534",), verify="list"), "run-older")
    command.upgrade(alembic_config_for(demo_project, target), BEFORE_BACKFILL)
    at_target = take_recorded_backup(target, tmp_path, revisions=(BEFORE_BACKFILL,), verify="list")
    file(at_target, "run-at-target")
    unverified = take_recorded_backup(target, tmp_path, revisions=(BEFORE_BACKFILL,), verify="list")
    file(dataclasses.replace(unverified, verification=dataclasses.replace(unverified.verification, passed=False)),
         "run-unverified")
    command.upgrade(alembic_config_for(demo_project, target), "head")
    file(take_recorded_backup(target, tmp_path, revisions=("0607bc5b8536",), verify="list"), "run-after")

    plan = plan_downgrade(target, demo_project, "-1")
    assert plan.verdict.code == "do_not_downgrade"
    point = find_restore_point(archive, plan, demo_project, mine)
    assert point.backup is not None and point.backup.run_id == "run-at-target"
    assert str(at_target.backup.path) in point.advice()
    assert "rollbook run restore -r backup run-at-target" in point.advice()

    at_target.backup.path.unlink()
    assert find_restore_point(archive, plan, demo_project, mine).backup.run_id == "run-older"
    too_far = find_restore_point(archive, plan_downgrade(target, demo_project, "base"), demo_project, mine)
    assert too_far.backup is None and "all taken after revision base" in too_far.advice()
    assert find_backup(archive, "run-after").revisions == ("0607bc5b8536",)
    assert find_backup(archive, str(at_target.backup.path)).run_id == "run-at-target"
    # A run is named by its record's file name too, with or without the archive's folder.
    [after_record] = archive.records_of("run-after")
    for ref in (after_record.file, str(after_record.path), f"archive/{after_record.file}"):
        assert find_backup(archive, ref).run_id == "run-after", ref


def test_a_restore_over_a_production_database_needs_a_second_person_and_the_approved_hash(
    demo_url, demo_project, tmp_path
):
    target = DatabaseTarget.from_url(demo_url)
    backup = archived(take_recorded_backup(target, tmp_path, revisions=("0607bc5b8536",), verify="list"))
    plan = plan_restore(target, backup, demo_project, into="database")
    writes = writes_since_backup(target, backup, demo_project)

    def decide(approved_by: str = "", approved_plan: str = "", verified: bool | None = True):
        request = RollbackRequest(environment="production", operator="alice", approved_by=approved_by,
                                  approved_plan=approved_plan, execute=True, action="restore")
        return evaluate_restore_policy(default_policy(), request, plan, writes, accept_writes_since_backup=False,
                                       backup_verified=verified)

    alone = decide()
    assert [r.rule for r in alone.failed] == ["approver"]
    assert "refuses this restore of restore plan" in alone.refusal_message()
    assert "restore into a new database" in alone.refusal_message()
    [self_approved] = decide("alice").failed
    assert (self_approved.rule, self_approved.reason) == ("approver", "alice would approve their own restore")
    assert [r.rule for r in decide("bob", "0" * 12).failed] == ["approved restore"]
    assert decide("bob", plan.restore_hash[:12]).allowed
    assert decide("bob", verified=None).status == "pending"
    # The window and risk rules of a rollback are not a restore's: restoring is what they recommend.
    assert {r.rule for r in decide("bob").results} == {
        "operator", "approver", "approved restore", "objects created since the backup", "writes since the backup",
        "backup"}
