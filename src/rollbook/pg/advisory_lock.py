"""The rollback lock: one session advisory lock per database, so two runs that change it never interleave."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg

from rollbook.errors import RollbookError
from rollbook.outcomes import Outcome

# "rollbook" in ASCII: the session advisory lock every executing rollback run takes on its database.
ROLLBACK_LOCK_KEY = 0x726F6C6C626F6F6B


class ConcurrentRollback(RollbookError):
    """Another rollback run holds the database's rollback lock."""

    outcome = Outcome.UNAVAILABLE



@contextmanager
def rollback_lock(conn: psycopg.Connection[Any], wait_ms: int) -> Iterator[None]:
    """Hold the database's rollback lock; wait at most `wait_ms` for another run to release it."""
    conn.execute("SELECT set_config('lock_timeout', %s, false)", [str(wait_ms)])
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", [ROLLBACK_LOCK_KEY])
    except psycopg.errors.LockNotAvailable:
        holder = rollback_lock_holder(conn)
        raise ConcurrentRollback(
            f"Another rollback run is in progress on database {conn.info.dbname}"
            f"{f' ({holder})' if holder else ''}; this run waited {wait_ms} ms for it and gave up. Let that run "
            "finish and check its record, then plan again: the database may have moved. Nothing was changed."
        ) from None
    finally:
        conn.execute("SELECT set_config('lock_timeout', '0', false)")
    try:
        yield
    finally:
        if not conn.closed:
            conn.execute("SELECT pg_advisory_unlock(%s)", [ROLLBACK_LOCK_KEY])


def rollback_lock_holder(conn: psycopg.Connection[Any]) -> str | None:
    """Who holds the rollback lock on this database (pid, user, application, since when), if anyone."""
    row = conn.execute(
        "SELECT a.pid, a.usename, a.application_name, a.backend_start FROM pg_locks l "
        "JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND l.classid = %s AND l.objid = %s AND l.objsubid = 1",
        [ROLLBACK_LOCK_KEY >> 32, ROLLBACK_LOCK_KEY & 0xFFFFFFFF],
    ).fetchone()
    if row is None:
        return None
    pid, user, application, since = row
    return f"pid {pid}, user {user}, application {application or '-'}, connected since {since:%Y-%m-%d %H:%M:%S %Z}"
