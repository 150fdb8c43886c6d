"""A migration holding ACCESS EXCLUSIVE on alembic_version: status says who holds it instead of hanging, and the
rollback runbook stops at its status step with the same words, the database untouched."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from pg import fingerprint, psycopg_kwargs
from test_records import STAGING, notebook_records, record_summary, rollbook

from rollbook.pg.lock_waits import PLANNING_LOCK_TIMEOUT_MS


@contextmanager
def migration_holding_the_version_table(url: str) -> Iterator[psycopg.Connection]:
    """A second session in the middle of a migration's transaction: ACCESS EXCLUSIVE on alembic_version."""
    with psycopg.connect(**psycopg_kwargs(url)) as migration:
        migration.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        yield migration


def nothing_queued(migration: psycopg.Connection) -> bool:
    """No session is left waiting for the lock (one that did would block every session queued after it)."""
    return migration.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone() == (0,)


def test_status_names_the_pid_holding_the_version_table_and_exits_3_instead_of_hanging(tmp_path: Path, demo_url):
    before = fingerprint(demo_url)
    with migration_holding_the_version_table(demo_url) as migration:
        pid = migration.info.backend_pid
        started = time.monotonic()
        text = rollbook(tmp_path, "status", url=demo_url)
        seconds = time.monotonic() - started
        as_json = rollbook(tmp_path, "status", "--json", url=demo_url)
        assert nothing_queued(migration)

    assert text.returncode == 3, text.stderr
    assert seconds < 30  # PLANNING_LOCK_TIMEOUT_MS plus the start of a Python process, not a hang
    assert "Traceback" not in text.stderr + text.stdout
    assert (f"Current database revision:  unknown: alembic_version is locked by pid {pid} (a migration is running?)"
            in text.stdout)
    assert "Latest migration available: 0607bc5b8536" in text.stdout
    assert f"pg_stat_activity WHERE pid IN ({pid})" in text.stdout and "start no rollback while it runs" in text.stdout
    assert "The database is at head" not in text.stdout and "nothing applied" not in text.stdout

    assert as_json.returncode == 3, as_json.stderr
    status = json.loads(as_json.stdout)
    assert status["locked_by"] == [pid]
    assert status["current"] is None and status["pending"] is None and status["at_head"] is False
    assert status["heads"] == ["0607bc5b8536"]
    assert fingerprint(demo_url) == before


def test_status_reads_the_revision_once_the_migration_commits(tmp_path: Path, demo_url):
    with migration_holding_the_version_table(demo_url):
        pass
    result = rollbook(tmp_path, "status", "--json", url=demo_url)

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["current"] == ["0607bc5b8536"] and status["locked_by"] is None and status["at_head"]


def test_the_status_runbook_records_the_revision_as_unknown_and_who_locks_it(tmp_path: Path, demo_url):
    archive = tmp_path / "archive"
    with migration_holding_the_version_table(demo_url) as migration:
        pid = migration.info.backend_pid
        result = rollbook(tmp_path, "run", "status", url=demo_url, archive=archive)
        assert nothing_queued(migration)

    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    [notebook] = notebook_records(archive)
    record = record_summary(notebook)
    assert record.outcome == "unavailable"
    assert record.message == f"Revision unknown: alembic_version is locked by pid {pid} (a migration is running?)."
    assert record.revision_before is None  # never recorded as a revision it could not read
    assert f"unknown: alembic_version is locked by pid {pid}" in notebook.read_text()


def test_the_rollback_runbook_stops_at_its_status_step_with_the_pid_and_changes_nothing(tmp_path: Path, demo_url):
    before = fingerprint(demo_url)
    archive = tmp_path / "archive"
    with migration_holding_the_version_table(demo_url) as migration:
        pid = migration.info.backend_pid
        result = rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "backup_dir", str(tmp_path / "backups"),
                          "--execute", url=demo_url, archive=archive)
        assert nothing_queued(migration)

    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    said = (f"alembic_version is locked by pid {pid} (a migration is running?): the database's revision could not "
            f"be read within {PLANNING_LOCK_TIMEOUT_MS} ms. Nothing was changed.")
    assert said in result.stdout + result.stderr, result.stdout
    record = record_summary(notebook_records(archive)[0])
    assert record.outcome == "unavailable"
    assert said in (record.message or "")
    assert not (tmp_path / "backups").exists()
    assert fingerprint(demo_url) == before
