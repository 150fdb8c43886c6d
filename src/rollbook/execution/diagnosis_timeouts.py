"""The timeout scenarios of a diagnosis: lock_timeout (which sessions hold or wait for locks on the step's tables)
and statement_timeout (the setting, and how big the tables are by the planner's statistics).
"""

from __future__ import annotations

from typing import Any

import psycopg

from rollbook.execution.diagnosis_model import (
    CATALOG_TIMEOUT_MS,
    LOCK_TIMEOUT_MS,
    RESTORE,
    Diagnosis,
    Failure,
    step_facts,
    with_catalog,
)
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.data_loss import read_only_transaction, regclass_text
from rollbook.planning.operations import Operation, TableName
from rollbook.planning.step import PlanStep

SHOWN_SESSIONS = 10

_LOCKS_QUERY = """
SELECT l.pid, a.usename, a.application_name, a.state,
       extract(epoch FROM now() - a.xact_start)::float8, a.wait_event_type, a.wait_event,
       l.mode, l.granted, l.relation::regclass::text
FROM pg_locks l
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'relation' AND l.pid <> pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND (cardinality(%(tables)s::text[]) = 0 AND l.relation >= 16384
       OR l.relation = ANY (SELECT to_regclass(t) FROM unnest(%(tables)s::text[]) AS t))
ORDER BY l.granted DESC, a.xact_start NULLS LAST, l.pid
"""


def lock_timeout(target: DatabaseTarget, failure: Failure) -> Diagnosis:
    """A lock the step waited for too long: the sessions holding or waiting for locks on its tables."""
    facts = step_facts(failure)
    tables = _tables_of(failure)
    facts.append(f"The statement waited longer than lock_timeout for a lock on "
                 f"{', '.join(map(str, tables)) or 'a table'}, and was cancelled.")
    holders: list[int] = []

    def read(conn: psycopg.Connection) -> None:
        with read_only_transaction(conn, CATALOG_TIMEOUT_MS, LOCK_TIMEOUT_MS):
            rows = conn.execute(_LOCKS_QUERY, {"tables": [regclass_text(t) for t in tables]}).fetchall()
        sessions: dict[int, list[Any]] = {}
        for row in rows:
            sessions.setdefault(row[0], []).append(row)
        for pid, locks in list(sessions.items())[:SHOWN_SESSIONS]:
            pid_, user, app, state, age, wait_type, wait, _, granted, _ = locks[0]
            held = "; ".join(f"{'holds' if lock[8] else 'waits for'} {lock[7]} on {lock[9]}" for lock in locks)
            if granted:
                holders.append(pid)
            about = (f"user {user}, application_name '{app or ''}', state {state}, transaction open for "
                     f"{_duration(age)}, wait_event {wait_type + ':' + wait if wait else 'none'}") if state else (
                f"user {user}, application_name '{app or ''}'; its state is hidden from this role "
                "(grant pg_read_all_stats to see it)")
            facts.append(f"Session pid {pid_} ({about}) {held}.")
        if not sessions:
            facts.append("No other session holds a lock on those tables now: the holder has finished.")

    with_catalog(target, facts, read)
    advice = []
    if holders:
        pids = ", ".join(map(str, holders))
        advice.append(f"Wait for session(s) {pids} to finish, or ask their owner to commit or roll back: a session "
                      "'idle in transaction' holds its locks until it ends. Then retry the rollback.")
        advice.append(f"As a last resort: `SELECT pg_cancel_backend({holders[0]})` cancels its running statement; "
                      f"an idle transaction only ends with `SELECT pg_terminate_backend({holders[0]})`, which rolls "
                      "back its work.")
    else:
        advice.append("Retry the rollback: nobody holds the lock now. Run it when the application is quiet.")
    advice.append(RESTORE)
    summary = (f"The downgrade could not lock {', '.join(map(str, tables)) or 'a table'} in time: "
               "another session holds a conflicting lock.")
    return Diagnosis("lock_timeout", summary, tuple(facts), tuple(advice), failure.sqlstate, failure.revision)


def statement_timeout(target: DatabaseTarget, failure: Failure) -> Diagnosis:
    """A statement cancelled by statement_timeout: the setting and the size of the tables it works on."""
    facts = step_facts(failure)
    op = next((op for op in failure.statement_operations if op.table), None) or _only_operation(failure.step)
    facts.append("The statement ran longer than statement_timeout and was cancelled.")
    if op is not None:
        lock = f"; it holds {op.lock} while it runs" if op.lock else ""
        facts.append(f"It {op.detail.removeprefix('it ')}{', rewriting the table' if op.rewrites_table else ''}{lock}.")

    def read(conn: psycopg.Connection) -> None:
        # Read before _read_only sets rollbook's own statement_timeout for this transaction.
        setting = conn.execute("SELECT current_setting('statement_timeout'), source FROM pg_settings "
                               "WHERE name = 'statement_timeout'").fetchone()
        if setting:
            facts.append(f"statement_timeout for a new session of this role and database: {setting[0]} (set by: "
                         f"{setting[1]}); the failing session may have set its own (SET, env.py, PGOPTIONS).")
        with read_only_transaction(conn, CATALOG_TIMEOUT_MS, LOCK_TIMEOUT_MS):
            for table in _tables_of(failure):
                # Planner estimates from pg_class: they need no lock on the table, a size function would.
                size = conn.execute(
                    "SELECT reltuples::bigint, pg_size_pretty(relpages::bigint * current_setting('block_size')::bigint)"
                    " FROM pg_class WHERE oid = to_regclass(%s)", [regclass_text(table)]).fetchone()
                if size:
                    rows = f"about {size[0]} rows" if size[0] >= 0 else "row count unknown (never analyzed)"
                    facts.append(f"{table}: {rows}, {size[1]} on disk (planner statistics).")

    with_catalog(target, facts, read)
    advice = [
        "Retry when the database is quiet with a longer statement_timeout for the rollback session only (for example "
        "PGOPTIONS='-c statement_timeout=30min'), knowing it holds its lock for as long as it runs.",
        RESTORE,
    ]
    summary = "A downgrade statement took longer than statement_timeout and was cancelled."
    return Diagnosis("statement_timeout", summary, tuple(facts), tuple(advice), failure.sqlstate, failure.revision)


def _tables_of(failure: Failure) -> list[TableName]:
    ops = [op for op in failure.statement_operations if op.table]
    if not ops and failure.step:
        ops = [op for op in failure.step.operations if op.table]
    return list(dict.fromkeys(op.table for op in ops if op.table))


def _only_operation(step: PlanStep | None) -> Operation | None:
    return step.operations[0] if step and len(step.operations) == 1 else None


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
