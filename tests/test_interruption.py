"""Stopping a run stops it: signals to `rollbook run` (and a plain papermill run) during the backup and the downgrade.

Each case sends a real signal to a real `rollbook run` process while pg_dump or the downgrade's
pg_sleep is running, then checks what an operator cares about: the database is at the revision it
started from, nothing the run started is still running a few seconds later, no partial backup file
is left, and (except after SIGKILL of `rollbook run`) the record is filed as interrupted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pg import PgServer, database_name, psycopg_kwargs
from runbook_runs import RUNBOOKS, SLOW_REVISION, current_revision, slow_project
from test_cli import ROLLBOOK

from rollbook.demo.server import install_demo
from rollbook.pg.database import DatabaseTarget
from rollbook.records.model import read_record

# Random text compresses badly: pg_dump takes seconds over it, long enough to be stopped mid-dump.
BULK_ROWS = 400_000


@pytest.fixture(scope="module")
def slow_database(pg_server: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The demo at a head revision whose downgrade sleeps, plus a bulk table that makes pg_dump slow.

    Shared by every case: a stopped run must leave it exactly as it was, which each case checks.
    """
    url = pg_server.create_database()
    install_demo(DatabaseTarget.from_url(url))
    config = slow_project(tmp_path_factory.mktemp("slow"), url)
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE bulk AS SELECT g AS id, md5(random()::text) || md5(random()::text) || "
                     "md5(random()::text) || md5(random()::text) AS payload FROM generate_series(1, %s) g",
                     [BULK_ROWS])
    try:
        yield url, config
    finally:
        pg_server.drop_database(database_name(url))


def _run_environment(tmp_path: Path, url: str, config: Path) -> dict[str, str]:
    return {**os.environ, "DATABASE_URL": url, "ALEMBIC_CONFIG": str(config),
            "ROLLBOOK_ARCHIVE": str(tmp_path / "archive")}


def _activity(url: str, condition: str) -> bool:
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        return conn.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {condition} AND state = 'active' "
                            "AND pid <> pg_backend_pid()").fetchone()[0] > 0


PHASES = {
    "backup": "query LIKE 'COPY public.bulk %%'",  # pg_dump reading the bulk table
    "downgrade": "query LIKE 'SELECT pg_sleep%%'",
}


def _wait_for(url: str, phase: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while not _activity(url, PHASES[phase]):
        assert process.poll() is None, f"the run ended before its {phase}: {process.communicate()}"
        assert time.monotonic() < deadline, f"the {phase} never started"
        time.sleep(0.05)


def _processes_of(marker: str) -> list[str]:
    """Every live process whose environment holds `marker` (the run's unique archive path), by command line."""
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker.encode() in environ.read_bytes():
                cmdline = (environ.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if (environ.parent / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(cmdline)
        except OSError:
            continue
    return found


def _none_left(marker: str, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while (left := _processes_of(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"still running after {seconds} s: {left}"


# A script's `rollbook run ... &` starts it with SIGINT ignored, as every background command; Ctrl-C must still stop it.
STARTED_IGNORING_SIGINT = "SIGINT to the group of a run started with SIGINT ignored"
SIGNALS = {
    "SIGINT to the group (Ctrl-C)": lambda pid: os.killpg(pid, signal.SIGINT),
    STARTED_IGNORING_SIGINT: lambda pid: os.killpg(pid, signal.SIGINT),
    "SIGTERM": lambda pid: os.kill(pid, signal.SIGTERM),
    "SIGKILL of rollbook run alone": lambda pid: os.kill(pid, signal.SIGKILL),
    "SIGKILL of the group": lambda pid: os.killpg(pid, signal.SIGKILL),
}


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("phase", PHASES)
@pytest.mark.parametrize("how", SIGNALS)
def test_a_stopped_run_leaves_the_database_where_it_was_and_nothing_running(tmp_path, slow_database, phase, how):
    url, config = slow_database
    backups = tmp_path / "backups"
    process = subprocess.Popen(
        [ROLLBOOK, "run", "rollback", "-p", "environment", "staging", "-p", "operator", "alice",
         "-p", "accept_data_loss", "True", "-p", "backup_dir", str(backups), "--execute"],
        env=_run_environment(tmp_path, url, config), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
        preexec_fn=_ignore_sigint if how == STARTED_IGNORING_SIGINT else None,
    )
    try:
        _wait_for(url, phase, process)
        SIGNALS[how](process.pid)
        stdout, stderr = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()

    _none_left(str(tmp_path / "archive"))
    assert not _activity(url, PHASES["downgrade"]) and not _activity(url, PHASES["backup"])
    assert current_revision(url) == [SLOW_REVISION]
    assert not list(backups.glob("*.partial")), "a partial backup file was left"
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        assert conn.execute("SELECT to_regclass('audit_trail') IS NOT NULL").fetchone()[0], "the dropped table is gone"
    if "SIGKILL" in how:
        return
    assert process.returncode == 1, stderr
    assert stdout.startswith(f"interrupted in step {phase}"), stdout
    assert f"the database is at {SLOW_REVISION}" in stdout
    [summary_file] = (tmp_path / "archive").glob("*.json")
    summary = read_record(json.loads(summary_file.read_text()))
    assert summary.outcome == "interrupted"
    assert summary.failed_step == phase
    assert summary.revision_after == [SLOW_REVISION]
    assert len(list((tmp_path / "archive").glob("*.ipynb"))) == 1


def test_a_plain_papermill_run_stopped_with_ctrl_c_leaves_a_known_revision_and_says_where_it_stopped(
        tmp_path, slow_database):
    url, config = slow_database
    out = tmp_path / "out.ipynb"
    process = subprocess.Popen(
        [sys.executable, "-m", "papermill", str(RUNBOOKS / "rollback.ipynb"), str(out), "--no-progress-bar",
         "-p", "environment", "staging", "-p", "operator", "alice", "-p", "accept_data_loss", "True",
         "-p", "backup_dir", str(tmp_path / "backups"), "-p", "execute", "True"],
        env=_run_environment(tmp_path, url, config), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    try:
        _wait_for(url, "downgrade", process)
        os.killpg(process.pid, signal.SIGINT)
        process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()

    _none_left(str(tmp_path / "archive"))
    assert current_revision(url) == [SLOW_REVISION]
    [summary] = [read_record(json.loads(p.read_text())) for p in (tmp_path / "archive").glob("**/*.json")]
    stopped = [s for s in summary.steps if s.status != "done"]
    assert [s.step for s in stopped] == ["downgrade"], summary.steps
    assert summary.outcome in ("running", "interrupted")


def test_a_run_stopped_while_its_kernel_starts_is_recorded_as_interrupted_without_a_traceback(tmp_path, slow_database):
    url, config = slow_database
    process = subprocess.Popen(
        [ROLLBOOK, "run", "rollback", "-p", "environment", "staging", "-p", "operator", "alice", "--execute"],
        env=_run_environment(tmp_path, url, config), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )
    marker = str(tmp_path / "archive")
    deadline = time.monotonic() + 60
    while not any("ipykernel" in command for command in _processes_of(marker)):
        assert time.monotonic() < deadline and process.poll() is None, "no kernel started"
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)
    stdout, stderr = process.communicate(timeout=90)

    _none_left(marker)
    assert process.returncode == 1, stderr
    assert stdout.startswith("interrupted in step parameters: the operator stopped the run"), stdout
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert current_revision(url) == [SLOW_REVISION]
