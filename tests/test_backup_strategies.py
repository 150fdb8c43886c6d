"""Backup strategies through the rollback runbook, against real servers: parallel, pitr, and the refusals.

The pitr tests run their own embedded server with WAL archiving to a folder, and restore a base backup of
it to the restore point a rollback recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pg import PgServer, database_name, fingerprint, psycopg_kwargs, url_with
from psycopg import sql
from runbook_runs import current_revision, demo_at
from test_records import rollbook

from rollbook.demo.server import DEMO_CONFIG, install_demo
from rollbook.errors import BadInput
from rollbook.pg.database import DatabaseTarget
from rollbook.pg.embedded_cluster import prepare_runtime_dirs
from rollbook.pg.embedded_install import as_account, server_account
from rollbook.pg.embedded_server import EmbeddedServer, start_embedded_server
from rollbook.records.model import RunRecord, read_record
from rollbook.recovery.wal_restore_point import create_wal_restore_point

# Undoing this revision drops users.preferences: data is lost, but no row is inserted, updated or deleted.
DROPS_A_COLUMN = "0607bc5b8531"
STAGING = ("-p", "environment", "staging", "-p", "operator", "alice")


def rolled_back_record(archive: Path) -> RunRecord:
    [summary] = archive.glob("*_rollback_succeeded_*.json")
    return read_record(json.loads(summary.read_text()))


def rollback_with(tmp_path: Path, url: str, strategy: str, *args: str,
                  config: Path | str = DEMO_CONFIG) -> subprocess.CompletedProcess[str]:
    return rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "accept_data_loss", "True",
                    "-p", "backup_strategy", strategy, "-p", "backup_dir", str(tmp_path / "backups"), *args,
                    "--execute", url=url, config=config)


def test_a_parallel_backup_is_a_hashed_directory_dump_that_the_restore_runbook_puts_back(
        demo_url: str, tmp_path: Path, pg_server: PgServer) -> None:
    demo_at(demo_url, DROPS_A_COLUMN)
    before = fingerprint(demo_url)

    run = rollback_with(tmp_path, demo_url, "parallel", "-p", "verify_backup", "restore")

    assert run.returncode == 0, run.stdout + run.stderr
    record = rolled_back_record(tmp_path / "archive")
    backup = record.backup
    assert record.backup_strategy == "parallel" and backup is not None
    assert (backup.strategy, backup.format, backup.verified, backup.verification) == (
        "parallel", "directory", True, "restore")
    assert backup.jobs >= 2
    folder = Path(backup.path)
    assert folder.is_dir() and folder.name.endswith(".dumpdir") and (folder / "toc.dat").is_file()
    assert sorted(p.name for p in (tmp_path / "backups").iterdir()) == [folder.name]  # no .partial left
    # The manifest names every file with its sha256; the recorded sha256 is that of its sha256sum lines.
    assert {f.name: f.sha256 for f in backup.files} == {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}
    lines = "".join(f"{f.sha256}  {f.name}\n" for f in backup.files)
    assert hashlib.sha256(lines.encode()).hexdigest() == backup.sha256
    assert current_revision(demo_url) == ["0607bc5b8530"] and fingerprint(demo_url) != before

    # Into a new database (dropped again if it fails), as many jobs restore it as wrote it.
    copy = f"{database_name(demo_url)}_copy"
    try:
        copied = rollbook(tmp_path, "run", "restore", "-r", "backup", record.run_id, "-p", "new_database", copy,
                          "--execute", url=demo_url)
        assert copied.returncode == 0, copied.stdout + copied.stderr
        [restore_summary] = (tmp_path / "archive").glob("*_restore_*.json")
        plan = read_record(json.loads(restore_summary.read_text())).restore_plan
        assert plan is not None and f" --jobs={backup.jobs} --exit-on-error " in plan["command"]
        assert "--single-transaction" not in plan["command"]
        assert fingerprint(url_with(demo_url, database=copy)) == before
    finally:
        pg_server.drop_database(copy)

    restored = rollbook(tmp_path, "run", "restore", "-r", "backup", record.run_id, "-p", "restore_into", "database",
                        *STAGING, "--execute", url=demo_url)

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert current_revision(demo_url) == [DROPS_A_COLUMN]
    assert fingerprint(demo_url) == before

    # One changed byte in one file of the folder: the restore refuses it before touching the database.
    data_file = next(p for p in sorted(folder.iterdir()) if p.name != "toc.dat")
    data_file.write_bytes(data_file.read_bytes() + b"\0")
    tampered = rollbook(tmp_path, "run", "restore", "-r", "backup", record.run_id, "-p", "restore_into", "database",
                        *STAGING, "--execute", url=demo_url)
    assert tampered.returncode == 2 and "was changed since" in tampered.stdout
    assert fingerprint(demo_url) == before


def test_a_strategy_the_environment_does_not_accept_is_refused_by_the_gate_before_any_change(demo_url, tmp_path):
    before = fingerprint(demo_url)

    run = rollbook(tmp_path, "run", "rollback", "-p", "environment", "production", "-p", "operator", "alice",
                   "-p", "approved_by", "bob", "-p", "backup_strategy", "parallel",
                   "-p", "backup_dir", str(tmp_path / "backups"), "--execute", url=demo_url)

    assert run.returncode != 0
    assert ("Rule 'backup strategy' fails: the parallel strategy is not accepted in production (accepted: full, "
            "pitr); pass -p backup_strategy full") in run.stdout
    assert fingerprint(demo_url) == before
    assert not (tmp_path / "backups").exists()


def test_a_policy_file_sets_the_accepted_strategies_and_the_first_is_the_default(demo_url, tmp_path):
    project = tmp_path / "project"
    shutil.copytree(Path(DEMO_CONFIG).parent, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "rollbook.toml").write_text('[policy.staging]\nbackup_strategies = ["pitr", "full"]\n')
    config = project / "alembic.ini"
    before = fingerprint(demo_url)

    refused = rollback_with(tmp_path, demo_url, "parallel", config=config)
    defaulted = rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "accept_data_loss", "True", "--execute",
                         url=demo_url, config=config)

    assert refused.returncode != 0 and "pass -p backup_strategy pitr" in refused.stdout
    # The default is pitr, which this server (no WAL archiving) cannot do: refused as bad input, unchanged.
    assert defaulted.returncode == 2 and "archive_mode = off" in defaulted.stdout
    assert fingerprint(demo_url) == before


@pytest.mark.parametrize(("strategy", "words"), [
    ("nope", "backup_strategy must be one of full, parallel, at-risk, pitr"),
    ("pitr", "The pitr strategy needs continuous archiving, but this server has archive_mode = off: set "
             "archive_mode = on and an archive_command"),
])
def test_a_strategy_that_cannot_run_here_is_bad_input_and_changes_nothing(demo_url, tmp_path, strategy, words):
    before = fingerprint(demo_url)

    run = rollback_with(tmp_path, demo_url, strategy)

    assert run.returncode == 2, run.stdout + run.stderr
    assert words in run.stdout and "Traceback" not in run.stdout + run.stderr
    assert fingerprint(demo_url) == before
    assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").iterdir())



def test_a_rehearsal_on_a_copy_needs_a_dump_and_a_restore_point_is_refused_before_anything_changes(demo_url, tmp_path):
    before = fingerprint(demo_url)

    run = rollback_with(tmp_path, demo_url, "pitr", "-p", "rehearse", "copy")

    assert run.returncode == 2, run.stdout + run.stderr
    assert ("rehearse copy restores this run's dump into a copy, and the pitr strategy writes no dump: pass "
            "-p backup_strategy full (or parallel), or -p rehearse none") in " ".join(run.stdout.split())
    assert "Traceback" not in run.stdout + run.stderr
    assert fingerprint(demo_url) == before


# --------------------------------------------------------------------------------------------- pitr


@pytest.fixture(scope="module")
def archiving_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedServer, Path]]:
    """An embedded server that archives every WAL segment into a folder, as a team's archive_command would."""
    server = start_embedded_server(tmp_path_factory.mktemp("archiving"), settings={"archive_mode": "on"})
    archive = server.data_dir.parent / "wal-archive"
    archive.mkdir(mode=0o700)
    account = server_account()
    if account is not None:
        os.chown(archive, account.uid, account.gid)
    folder = shlex.quote(str(archive))
    try:
        set_archive_command(server, f"test ! -f {folder}/%f && cp %p {folder}/%f")
        yield server, archive
    finally:
        server.stop(delete_data=True)
        shutil.rmtree(archive, ignore_errors=True)


def set_archive_command(server: EmbeddedServer, command: str) -> None:
    with psycopg.connect(**psycopg_kwargs(server.url()), autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER SYSTEM SET archive_command = {}").format(sql.Literal(command)))
        conn.execute("SELECT pg_reload_conf()")


def archiving_works_again(server: EmbeddedServer) -> None:
    """Archive with `true` and wait until a success is newer than the last failure (the next test's check)."""
    set_archive_command(server, "true")
    with psycopg.connect(**psycopg_kwargs(server.url()), autocommit=True) as conn:
        deadline = time.monotonic() + 90
        while True:
            conn.execute("SELECT pg_stat_clear_snapshot()")
            archived_at, failed_at = conn.execute(
                "SELECT last_archived_time, last_failed_time FROM pg_stat_archiver").fetchone()  # type: ignore[misc]
            if archived_at is not None and (failed_at is None or archived_at > failed_at):
                return
            assert time.monotonic() < deadline, "archiving did not recover"
            time.sleep(0.2)


def demo_database(server: EmbeddedServer, name: str) -> str:
    with psycopg.connect(**psycopg_kwargs(server.url()), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = server.url(database=name)
    install_demo(DatabaseTarget.from_url(url))
    return url


def base_backup(server: EmbeddedServer, base_dir: Path) -> Path:
    """pg_basebackup of the whole cluster into a new embedded-server folder; returns its data directory."""
    account = server_account()
    base_dir.mkdir()
    data_dir, _ = prepare_runtime_dirs(base_dir, account)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    subprocess.run([str(server.bin_dir / "pg_basebackup"), "-D", str(data_dir), "-h", str(server.socket_dir),
                    "-p", str(server.port), "-U", "postgres", "--checkpoint=fast", "--no-sync"],
                   env=env, cwd="/", check=True, capture_output=True, **as_account(account))
    return data_dir


def test_pitr_records_an_archived_restore_point_and_a_restore_to_it_brings_the_data_back(archiving_server, tmp_path):
    server, archive = archiving_server
    url = demo_database(server, "pitr_demo")
    demo_at(url, DROPS_A_COLUMN)
    copy_data = base_backup(server, tmp_path / "restored")
    before = fingerprint(url)

    run = rollback_with(tmp_path, url, "pitr")

    assert run.returncode == 0, run.stdout + run.stderr
    record = rolled_back_record(tmp_path / "archive")
    point = record.wal_restore_point
    assert record.backup_strategy == "pitr" and record.backup is None and point is not None
    assert point.name == f"rollbook-{record.run_id}" and point.archived
    assert (archive / point.segment).is_file()
    assert point.timeline == int(point.segment[:8], 16) and "/" in point.lsn
    assert point.recovery_settings["recovery_target_name"] == point.name
    # Changes after the point: the downgrade itself, and a write after it.
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        conn.execute("UPDATE users SET email = 'changed' || id || '@example.com'")
    assert fingerprint(url) != before

    (copy_data / "recovery.signal").touch()
    recovery = {**point.recovery_settings, "recovery_target_action": "promote", "hot_standby": "off",
                "restore_command": f"cp {shlex.quote(str(archive))}/%f %p"}
    started = time.monotonic()
    restored = start_embedded_server(tmp_path / "restored", settings=recovery)
    try:
        restored_url = restored.url(database="pitr_demo")
        assert current_revision(restored_url) == [DROPS_A_COLUMN]
        assert fingerprint(restored_url) == before
    finally:
        restored.stop(delete_data=True)
    assert time.monotonic() - started < 30


def test_pitr_is_refused_before_anything_changes_while_archiving_fails(archiving_server, tmp_path):
    server, _ = archiving_server
    url = demo_database(server, "pitr_failing")
    before = fingerprint(url)
    set_archive_command(server, "false")
    try:
        with psycopg.connect(**psycopg_kwargs(server.url()), autocommit=True) as conn:
            conn.execute("SELECT pg_switch_wal()")
            deadline = time.monotonic() + 20
            while conn.execute("SELECT failed_count FROM pg_stat_archiver").fetchone()[0] == 0:  # type: ignore[index]
                assert time.monotonic() < deadline, "archive_command = false never failed"
                time.sleep(0.1)
                conn.execute("SELECT pg_stat_clear_snapshot()")

        run = rollback_with(tmp_path, url, "pitr")
    finally:
        archiving_works_again(server)

    assert run.returncode == 2, run.stdout + run.stderr
    assert "WAL archiving is failing on this server: pg_stat_archiver shows" in run.stdout
    assert "Fix the archive_command" in run.stdout and "-p backup_strategy full" in run.stdout
    assert fingerprint(url) == before and current_revision(url) == ["0607bc5b8536"]


def test_a_segment_not_archived_within_the_environments_wait_stops_the_rollback_before_any_change(
        archiving_server: tuple[EmbeddedServer, Path], tmp_path: Path) -> None:
    server, _ = archiving_server
    url = demo_database(server, "pitr_slow")
    project = tmp_path / "project"
    shutil.copytree(Path(DEMO_CONFIG).parent, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "rollbook.toml").write_text("[policy.staging]\npitr_archive_wait_seconds = 0.5\n")
    before = fingerprint(url)
    # An archive_command that has not failed yet but takes longer than the environment waits.
    set_archive_command(server, "sleep 3")
    try:
        run = rollback_with(tmp_path, url, "pitr", config=project / "alembic.ini")
    finally:
        set_archive_command(server, "true")

    assert run.returncode == 1, run.stdout + run.stderr
    assert "holding the point was not archived within 0.5 s" in run.stdout
    assert "check the archive_command and the server log" in run.stdout
    assert fingerprint(url) == before and current_revision(url) == ["0607bc5b8536"]


def test_a_role_that_may_not_create_restore_points_is_refused_with_the_grant_to_run(archiving_server):
    server, _ = archiving_server
    demo_database(server, "pitr_unprivileged")
    password = secrets.token_urlsafe(12)
    with psycopg.connect(**psycopg_kwargs(server.url()), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE pitr_app LOGIN PASSWORD {}").format(sql.Literal(password)))
    app_url = server.url(database="pitr_unprivileged", user="pitr_app", password=password)

    with pytest.raises(BadInput) as refused:
        create_wal_restore_point(DatabaseTarget.from_url(app_url), "denied", revisions=())

    assert str(refused.value).startswith("The role pitr_app may not create restore points or switch WAL: as a "
                                         "superuser, run GRANT EXECUTE ON FUNCTION pg_create_restore_point(text), "
                                         "pg_switch_wal() TO that role")
    assert "-p backup_strategy full" in str(refused.value) and password not in str(refused.value)
