"""Scratch databases left by a killed process: dropped by the next sweep only when their creator is provably gone.

Real processes, really SIGKILLed, on the real server: a live creator's database is never touched, one
still connected to is kept, one whose creator cannot be checked from here (another host) is kept, and a
database that merely looks like a scratch database (prefix without marker) is not rollbook's to drop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from pg import psycopg_kwargs
from psycopg import sql

from rollbook.pg.database import DatabaseTarget
from rollbook.pg.process_identity import current_process
from rollbook.pg.scratch import SCRATCH_MARKER, SCRATCH_PREFIX
from rollbook.pg.stale_scratch import drop_stale_scratch_databases

# A process that makes a scratch database, says its name, and waits to be killed without dropping it.
CREATOR = """
import sys, time
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.scratch import create_scratch_database
with connect(DatabaseTarget.from_url(sys.argv[1])) as conn:
    print(create_scratch_database(conn), flush=True)
time.sleep(600)
"""


@contextmanager
def _creator(url: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen([sys.executable, "-c", CREATOR, url], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert process.stdout is not None
        yield process, process.stdout.readline().strip()
    finally:
        process.kill()
        process.wait()


def _databases(url: str) -> set[str]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return {row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE starts_with(datname, %s)",
                                               [SCRATCH_PREFIX])}


def _made_by(url: str, name: str, comment: str | None) -> None:
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if comment is not None:
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(comment)))


def _drop(url: str, *names: str) -> None:
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_a_killed_creators_database_is_dropped_and_a_live_ones_is_left_alone(database_url):
    with _creator(database_url) as (killed, stale), _creator(database_url) as (_, live):
        killed.send_signal(signal.SIGKILL)
        killed.wait()

        sweep = drop_stale_scratch_databases(DatabaseTarget.from_url(database_url))

        assert [s.name for s in sweep.dropped] == [stale] and not sweep.kept
        assert sweep.dropped[0].why == f"pid {killed.pid} on {current_process().host} is gone"
        assert live in _databases(database_url) and stale not in _databases(database_url)
    _drop(database_url, live)


def test_a_database_someone_is_connected_to_is_kept_until_they_leave(database_url):
    with _creator(database_url) as (killed, stale):
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        target = DatabaseTarget.from_url(database_url)
        with psycopg.connect(**{**psycopg_kwargs(database_url), "dbname": stale}):
            sweep = drop_stale_scratch_databases(target)
            assert not sweep.dropped and [s.name for s in sweep.kept] == [stale]
            assert "1 session(s) are still connected to it" in sweep.kept[0].why
            assert stale in _databases(database_url)

        assert [s.name for s in drop_stale_scratch_databases(target).dropped] == [stale]


def test_a_reused_pid_does_not_keep_a_database_and_another_hosts_database_is_kept(database_url):
    here = current_process().to_dict()
    reused = {**here, "start_ticks": here["start_ticks"] + 1}  # this pid now, but started at another time
    elsewhere = {**here, "host": "another-host"}
    _made_by(database_url, f"{SCRATCH_PREFIX}reused", SCRATCH_MARKER + json.dumps(reused))
    _made_by(database_url, f"{SCRATCH_PREFIX}elsewhere", SCRATCH_MARKER + json.dumps(elsewhere))
    _made_by(database_url, f"{SCRATCH_PREFIX}unmarked", None)
    _made_by(database_url, f"{SCRATCH_PREFIX}mine", SCRATCH_MARKER + json.dumps(here))
    try:
        sweep = drop_stale_scratch_databases(DatabaseTarget.from_url(database_url))

        assert [s.name for s in sweep.dropped] == [f"{SCRATCH_PREFIX}reused"]
        assert [s.name for s in sweep.kept] == [f"{SCRATCH_PREFIX}elsewhere"]
        assert "cannot be checked from this machine" in sweep.kept[0].why
        assert _databases(database_url) >= {f"{SCRATCH_PREFIX}{n}" for n in ("elsewhere", "unmarked", "mine")}
    finally:
        _drop(database_url, *(f"{SCRATCH_PREFIX}{n}" for n in ("reused", "elsewhere", "unmarked", "mine")))
