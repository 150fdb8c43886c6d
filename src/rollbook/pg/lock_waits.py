"""How long a read-only look waits for a lock another session holds, and who holds it when it gives up."""

from __future__ import annotations

import psycopg

# Planning and status may run while a migration holds ACCESS EXCLUSIVE on a table: no query of theirs waits longer
# than this for a lock, so that they neither hang nor, queued behind that lock, block everyone queued after them.
PLANNING_LOCK_TIMEOUT_MS = 2_000


def access_exclusive_holders(conn: psycopg.Connection, regclass: str) -> tuple[int, ...]:
    """The pids of the other sessions holding ACCESS EXCLUSIVE (the lock that blocks a read) on `regclass`."""
    rows = conn.execute(
        "SELECT DISTINCT pid FROM pg_locks WHERE locktype = 'relation' AND relation = to_regclass(%s) AND granted "
        "AND mode = 'AccessExclusiveLock' AND pid <> pg_backend_pid() ORDER BY pid",
        [regclass],
    ).fetchall()
    return tuple(int(r[0]) for r in rows)
