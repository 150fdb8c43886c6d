"""The backup and restore runbooks as a team runs them, with `rollbook run`, against the real server."""

from __future__ import annotations

import json

from alembic import command
from pg import fingerprint
from runbook_runs import current_revision, demo_at
from test_records import notebook_records, record_summary, rollbook

from rollbook.demo.server import DEMO_CONFIG
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import read_identity
from rollbook.project.migrations import alembic_config_for, load_project
from rollbook.records.archive import Archive
from rollbook.records.model import read_record
from rollbook.recovery.archived_backups import take_recorded_backup

BEFORE_BACKFILL = "0607bc5b8535"
HEAD = "0607bc5b8536"
STAGING = ("-p", "environment", "staging", "-p", "operator", "alice")


def test_a_pre_deploy_backup_is_named_by_the_refusal_and_restoring_it_undoes_the_deploy(demo_url, tmp_path):
    demo_at(demo_url, BEFORE_BACKFILL)
    before_deploy = fingerprint(demo_url)

    backup_run = rollbook(tmp_path, "run", "backup", "-p", "operator", "alice", "-p", "ticket", "DEP-1", url=demo_url)
    assert backup_run.returncode == 0, backup_run.stdout + backup_run.stderr
    [summary_file] = (tmp_path / "archive").glob("*_backup_succeeded_*.json")
    recorded = read_record(json.loads(summary_file.read_text()))
    backup, run_id = recorded.backup, recorded.run_id
    assert backup.verified is True and backup.verification == "restore"
    assert backup.revisions == [BEFORE_BACKFILL] and backup.write_horizon.isdigit()
    assert {r.table: r.rows for r in backup.table_rows}["public.users"] == 12
    assert backup.identity.system_identifier == recorded.identity.system_identifier

    # The deploy: the data migration rewrites 9 users. Production refuses to roll it back, and says what instead.
    command.upgrade(alembic_config_for(load_project(DEMO_CONFIG), DatabaseTarget.from_url(demo_url)), "head")
    deployed = fingerprint(demo_url)
    refused = rollbook(tmp_path, "run", "rollback", "-p", "environment", "production", "-p", "operator", "alice",
                       "--execute", url=demo_url)
    assert refused.returncode == 4
    assert f"restore the newest verified backup taken before the migration: {backup.path}" in refused.stdout
    assert f"rollbook run restore -r backup {run_id}" in refused.stdout

    # Over the database: refused (already in the dry run) while the data migration's writes would be undone
    # unasked; then accepted.
    over = ("-r", "backup", run_id[-6:], "-p", "restore_into", "database", *STAGING)
    unasked = rollbook(tmp_path, "run", "restore", *over, url=demo_url)
    assert unasked.returncode == 4
    assert "Rule 'writes since the backup' fails" in unasked.stdout and "public.users: 9 rows" in unasked.stdout
    assert fingerprint(demo_url) == deployed
    restored = rollbook(tmp_path, "run", "restore", *over, "-p", "accept_writes_since_backup", "True", "--execute",
                        url=demo_url)
    assert restored.returncode == 0, restored.stdout
    assert fingerprint(demo_url) == before_deploy
    assert current_revision(demo_url) == [BEFORE_BACKFILL]
    summary = record_summary(notebook_records(tmp_path / "archive")[-1])
    assert summary.outcome == "succeeded" and summary.revision_after == [BEFORE_BACKFILL]
    assert summary.verification["passed"] and summary.backup.revisions == [HEAD]  # the safety backup

    outcomes = [record_summary(path).outcome for path in notebook_records(tmp_path / "archive")]
    assert outcomes == ["succeeded", "refused", "refused", "succeeded"]
    assert rollbook(tmp_path, "archive", "verify", url=demo_url).returncode == 0
    archived = b"".join(p.read_bytes() for p in (tmp_path / "archive").iterdir() if p.is_file())
    password = DatabaseTarget.from_url(demo_url).url.password
    assert password and password.encode() not in archived


def test_a_dry_run_plans_the_restore_and_a_truncated_backup_is_refused(demo_url, tmp_path):
    target = DatabaseTarget.from_url(demo_url)
    taken = take_recorded_backup(target, tmp_path / "backups", revisions=(HEAD,), verify="list")
    with connect(target) as conn:
        identity = read_identity(conn).to_dict()
    Archive(tmp_path / "archive").file_summary({"run_id": "20260113T140500Z-a1b2c3", "runbook": "backup",
                                                "identity": identity, "backup": taken.record_facts()})
    before = fingerprint(demo_url)

    dry = rollbook(tmp_path, "run", "restore", "-r", "backup", "a1b2c3", "-p", "new_database", "compare", url=demo_url)
    assert dry.returncode == 0, dry.stdout
    summary = record_summary(notebook_records(tmp_path / "archive")[-1])
    assert summary.outcome == "dry_run" and summary.writes_since_backup["status"] == "not_checked"
    assert summary.restore_plan["command"].endswith(f"--no-owner --no-password --dbname=compare {taken.backup.path}")
    assert "No policy gate: a restore into a new database changes nothing" in notebook_records(
        tmp_path / "archive")[-1].read_text()

    with taken.backup.path.open("r+b") as damaged:
        damaged.truncate(1000)
    over = ("-r", "backup", "a1b2c3", "-p", "restore_into", "database", *STAGING)
    truncated = rollbook(tmp_path, "run", "restore", *over, "-p", "accept_writes_since_backup", "True", "--execute",
                         url=demo_url)
    assert truncated.returncode == 2  # the backup named cannot be used: bad input, not a policy refusal
    assert truncated.stdout.startswith("refused (bad input) at backup to restore") and "was changed since" in truncated.stdout
    assert fingerprint(demo_url) == before
    assert len(list((tmp_path / "backups").iterdir())) == 1  # no backup of the database was taken either


def test_a_backup_the_rollback_runbook_took_restores_without_the_opt_in_when_nothing_was_written(demo_url, tmp_path):
    # Undoing 0607bc5b8531 drops users.preferences: no row is inserted, updated or deleted.
    demo_at(demo_url, "0607bc5b8531")
    rolled_back = rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "accept_data_loss", "True", "--execute",
                           url=demo_url)
    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    [summary_file] = (tmp_path / "archive").glob("*_rollback_succeeded_*.json")
    recorded = read_record(json.loads(summary_file.read_text()))
    backup, run_id = recorded.backup, recorded.run_id
    # Recorded as the backup runbook records a backup: every table's rows, and the write horizon.
    assert backup.rows_counted and {r.table: r.rows for r in backup.table_rows}["public.users"] == 12
    assert backup.write_horizon.isdigit() and backup.verified is True

    dry = rollbook(tmp_path, "run", "restore", "-r", "backup", run_id, "-p", "restore_into", "database", *STAGING,
                   url=demo_url)

    assert dry.returncode == 0, dry.stdout + dry.stderr
    summary = record_summary(notebook_records(tmp_path / "archive")[-1])
    assert summary.outcome == "dry_run" and summary.writes_since_backup["status"] == "none"
    writes = next(r for r in summary.policy["results"] if r["rule"] == "writes since the backup")
    assert writes["outcome"] == "pass"
