"""Why a rollback failed, in the terms of the team's recovery procedures, and what to do next.

The diagnosis reads the catalog through its own short, read-only connection. It names objects,
sessions, settings and primary keys, but never a data value: a failing row's DETAIL and a value
echoed in an error message stay out of it, and the target's password is scrubbed from every line.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import psycopg
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from psycopg import errors, sql

from rollbook import markdown
from rollbook.errors import RollbookError
from rollbook.execution.downgrade import LeftChanged
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.data_loss import (
    check_aggregate,
    column_reference,
    count_affected_rows,
    read_only_transaction,
    regclass_text,
    table_facts,
    table_identifier,
)
from rollbook.planning.dependent_objects import DEPENDENCY_OPS, DependentObject, find_dependent_objects
from rollbook.planning.operations import LiveCheck, Operation, TableName
from rollbook.planning.plan import PlanStep
from rollbook.planning.sql_operations import operations_from_sql
from rollbook.project.migrations import MigrationProject

Scenario = Literal[
    "dependent_objects",
    "data_does_not_fit",
    "constraint_violation",
    "missing_migration_file",
    "lock_timeout",
    "statement_timeout",
    "unknown",
]

CATALOG_TIMEOUT_MS = 5_000
COUNT_TIMEOUT_MS = 10_000
LOCK_TIMEOUT_MS = 1_000
GIT_TIMEOUT_SECONDS = 5.0
SHOWN_KEYS = 5
SHOWN_SESSIONS = 10
STATEMENT_CHARS = 300

# SQLSTATEs whose rows can be counted with a planner check, and the check kinds that count them.
_DOES_NOT_FIT = {
    errors.StringDataRightTruncation.sqlstate: ("not_fitting",),
    errors.NumericValueOutOfRange.sqlstate: ("not_fitting",),
    errors.InvalidTextRepresentation.sqlstate: ("not_fitting",),
}
_CONSTRAINTS = {
    errors.NotNullViolation.sqlstate: ("nulls", "primary_key"),
    errors.UniqueViolation.sqlstate: ("duplicates", "primary_key", "conflicting_inserts"),
    # A new key finds orphans; a DELETE finds rows still referencing what it removes.
    errors.ForeignKeyViolation.sqlstate: ("orphans", "referencing"),
    errors.CheckViolation.sqlstate: ("violating",),
}
_DEPENDENT_OBJECTS = errors.DependentObjectsStillExist.sqlstate
_FEATURE_NOT_SUPPORTED = errors.FeatureNotSupported.sqlstate
_LOCK_NOT_AVAILABLE = errors.LockNotAvailable.sqlstate
_QUERY_CANCELED = errors.QueryCanceled.sqlstate
_NOT_FOUND = ("No such revision", "No such branch")
_MISSING_REVISION = re.compile(r"Can't locate revision identified by '([^']+)'")
_PASSWORD_LITERAL = re.compile(r"(PASSWORD\s+)'(?:[^']|'')*'", re.IGNORECASE)

_RESTORE = ("Or restore the backup taken in this run (pg_restore), which is safer when you are unsure, and fix "
            "forward with a new migration instead of rolling back.")
# What to check before a retry depends on what the failed step left behind (downgrade_execution.LeftChanged).
_CHECK_ROLLED_BACK = ("Before retrying, check where the database is now (rollbook status): the failed step's "
                      "transaction was rolled back, but revisions before it may already be undone.")
_CHECK_UNKNOWN = ("Before retrying, check where the database is now (rollbook status) and whether the failed step "
                  "left changes: a step that does not run as one transaction keeps what it committed, and "
                  "revisions before it may already be undone.")
_DO_NOT_RETRY = ("Do not simply retry: the failed step may have left changes (see above) while the version table "
                 "still names its revision, so a retry would run its whole downgrade() again over them. Restore the "
                 "backup taken in this run, or finish or undo those changes by hand after a review; then check "
                 "where the database is (rollbook status).")


@dataclass(frozen=True)
class Diagnosis:
    """What went wrong in a failed rollback, the facts that show it, and what to do next."""

    scenario: Scenario
    summary: str
    facts: tuple[str, ...] = ()
    advice: tuple[str, ...] = ()
    sqlstate: str | None = None
    revision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "summary": self.summary,
            "facts": list(self.facts),
            "advice": list(self.advice),
            "sqlstate": self.sqlstate,
            "revision": self.revision,
        }

    def to_text(self) -> str:
        lines = [f"Rollback failed ({self.scenario.replace('_', ' ')}): {self.summary}"]
        if self.facts:
            lines += ["", "What rollbook found:"] + [f"  - {fact}" for fact in self.facts]
        if self.advice:
            lines += ["", "What to do next:"] + [f"  {n}. {item}" for n, item in enumerate(self.advice, 1)]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        lines = [f"**Rollback failed ({self.scenario.replace('_', ' ')})**: {markdown.prose(self.summary)}"]
        if self.facts:
            lines += ["", "**What rollbook found**", ""] + [f"- {markdown.prose(fact)}" for fact in self.facts]
        if self.advice:
            lines += ["", "**What to do next**", ""]
            lines += [f"{n}. {markdown.prose(item)}" for n, item in enumerate(self.advice, 1)]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Failure:
    """The failed statement as far as the error, the plan step and the statement tell."""

    error: psycopg.Error
    sqlstate: str
    statement: str | None
    step: PlanStep | None
    statement_operations: tuple[Operation, ...]

    @property
    def revision(self) -> str | None:
        return self.step.revision.revision if self.step else None


def diagnose_failure(
    target: DatabaseTarget, error: BaseException, *, step: PlanStep | None, statement: str | None,
    project: MigrationProject | None = None, left_changed: LeftChanged | None = None,
) -> Diagnosis:
    """Explain a failed rollback step: which recovery scenario it is, the facts, and what to do next.

    `left_changed` is what the step left behind, from the execution; without it the diagnosis does not
    claim that the step was rolled back.
    """
    try:
        diagnosis = _diagnose(target, error, step, statement, project)
    except Exception as exc:  # noqa: BLE001 - a diagnosis must never hide the failure it explains
        diagnosis = _unknown_error(target, error, step, statement, f"rollbook's diagnosis itself failed "
                                   f"({type(exc).__name__}): the facts below come from the error alone")
    return _scrubbed(target, _with_what_the_step_left(diagnosis, left_changed))


def _with_what_the_step_left(diagnosis: Diagnosis, left_changed: LeftChanged | None) -> Diagnosis:
    """The state the failed step left goes first among the facts; what to check before a retry goes last."""
    if left_changed is None:
        return replace(diagnosis, advice=(*diagnosis.advice, _CHECK_UNKNOWN))
    check = _CHECK_ROLLED_BACK if left_changed.rolled_back else _DO_NOT_RETRY
    return replace(diagnosis, facts=(left_changed.describe(), *diagnosis.facts), advice=(*diagnosis.advice, check))


def _diagnose(
    target: DatabaseTarget, error: BaseException, step: PlanStep | None, statement: str | None,
    project: MigrationProject | None,
) -> Diagnosis:
    missing = _missing_revision(error)
    if missing is not None:
        return _missing_migration_file(target, missing, project)
    db_error = _database_error(error)
    statement = statement or _sqlalchemy_statement(error)
    if db_error is None or not db_error.sqlstate:
        return _unknown_error(target, error, step, statement)
    failure = _Failure(db_error, db_error.sqlstate, statement, step,
                       tuple(operations_from_sql(statement)) if statement else ())
    if failure.sqlstate == _DEPENDENT_OBJECTS:
        return _dependent_objects(target, failure) or _unknown_error(target, error, step, statement)
    if failure.sqlstate == _FEATURE_NOT_SUPPORTED and _dependency_targets(failure):
        # ALTER COLUMN TYPE on a column a view uses fails with 0A000, not 2BP01: the catalog decides.
        diagnosis = _dependent_objects(target, failure, require_dependents=True)
        if diagnosis is not None:
            return diagnosis
    if failure.sqlstate in _DOES_NOT_FIT or failure.sqlstate in _CONSTRAINTS:
        return _rows_in_the_way(target, failure)
    if failure.sqlstate == _LOCK_NOT_AVAILABLE:
        return _lock_timeout(target, failure)
    if failure.sqlstate == _QUERY_CANCELED and "user request" not in (db_error.diag.message_primary or ""):
        return _statement_timeout(target, failure)
    return _unknown_error(target, error, step, statement)


# --- errors -------------------------------------------------------------------------------------------


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, what it wraps (`.orig`) and what caused it, nearest first."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [e for e in (getattr(current, "orig", None), current.__cause__, current.__context__)
                    if isinstance(e, BaseException)]


def _database_error(error: BaseException) -> psycopg.Error | None:
    return next((e for e in _chain(error) if isinstance(e, psycopg.Error)), None)


def _sqlalchemy_statement(error: BaseException) -> str | None:
    # SQLAlchemy's StatementError carries the statement; never its parameters, which hold data.
    statements = (getattr(e, "statement", None) for e in _chain(error))
    return next((statement for statement in statements if isinstance(statement, str)), None)


def _missing_revision(error: BaseException) -> str | None:
    for exc in _chain(error):
        # ResolutionError also reports an ambiguous prefix or a revision off a branch: files that do exist.
        if isinstance(exc, ResolutionError) and exc.argument and str(exc).startswith(_NOT_FOUND):
            return str(exc.argument)
    for exc in _chain(error):
        # Alembic words some resolution failures only in the CommandError it raises.
        match = _MISSING_REVISION.search(str(exc)) if isinstance(exc, CommandError) else None
        if match:
            return match.group(1)
    return None


def _message(failure_error: psycopg.Error) -> str:
    """The primary message; for data exceptions (class 22) without the value it may quote."""
    message = failure_error.diag.message_primary or type(failure_error).__name__
    if (failure_error.sqlstate or "").startswith("22") and ":" in message:
        message = message.split(":", 1)[0] + ": (value not shown)"
    return message


def _condition(sqlstate: str) -> str:
    return errors.lookup(sqlstate).__name__ if _known_sqlstate(sqlstate) else "unknown condition"


def _known_sqlstate(sqlstate: str) -> bool:
    try:
        errors.lookup(sqlstate)
    except KeyError:
        return False
    return True


# --- dependent objects ----------------------------------------------------------------------------------


def _dependency_targets(failure: _Failure) -> list[Operation]:
    """The drops and type changes the failing statement makes, else those of the step."""
    ops = [op for op in failure.statement_operations if op.op in DEPENDENCY_OPS and op.table]
    if not ops and failure.step:
        ops = [op for op in failure.step.operations if op.op in DEPENDENCY_OPS and op.table]
    return ops


def _dependent_objects(
    target: DatabaseTarget, failure: _Failure, *, require_dependents: bool = False
) -> Diagnosis | None:
    facts = _step_facts(failure)
    dependents: list[DependentObject] = []
    targets = _dependency_targets(failure)

    def read(conn: psycopg.Connection) -> None:
        for op in targets:
            assert op.table is not None
            column = op.column if op.op != "drop_table" else None
            with read_only_transaction(conn, CATALOG_TIMEOUT_MS, LOCK_TIMEOUT_MS):
                found = find_dependent_objects(conn, op.table, column)
            what = f"{op.table}.{column}" if column else f"table {op.table}"
            dependents.extend(found)
            if found:
                facts.append(f"Objects that depend on {what}: " + ", ".join(d.description for d in found) + ".")
            else:
                facts.append(f"No object depends directly on {what} now.")

    _with_catalog(target, facts, read)
    if require_dependents and not dependents:
        return None
    detail = failure.error.diag.message_detail or ""
    if detail:
        # PostgreSQL's own list follows chains (a view on a view) and names objects only.
        facts.append("PostgreSQL's detail: " + "; ".join(line.strip() for line in detail.splitlines() if line.strip()))
    names = ", ".join(dict.fromkeys(d.description for d in dependents)) or "the objects named in the detail"
    advice = [
        f"Drop or change {names} first, in a new migration (preferred, it is reviewed and recorded) or by hand, "
        "then retry the rollback. Re-create them afterwards if the application still needs them."
    ]
    advice += [f"Keep the definition first: `{d.keep}`, then `{d.drop}`." if d.keep else f"`{d.drop}`"
               for d in dict.fromkeys(dependents) if d.drop]
    advice.append(_RESTORE)
    summary = (f"The downgrade cannot drop or change {_targets_text(targets)} because other objects depend on it."
               if targets else "The downgrade cannot drop an object because other objects depend on it.")
    return Diagnosis("dependent_objects", summary, tuple(facts), tuple(advice), failure.sqlstate, failure.revision)


def _targets_text(ops: list[Operation]) -> str:
    return ", ".join(dict.fromkeys(f"{op.table}.{op.column}" if op.column and op.op != "drop_table"
                                   else f"table {op.table}" for op in ops))




# --- rows that do not fit or break a constraint -------------------------------------------------------------


def _rows_in_the_way(target: DatabaseTarget, failure: _Failure) -> Diagnosis:
    fits = failure.sqlstate in _DOES_NOT_FIT
    kinds = _DOES_NOT_FIT.get(failure.sqlstate) or _CONSTRAINTS[failure.sqlstate]
    facts = _step_facts(failure)
    facts.append(f"PostgreSQL: {_message(failure.error)} (SQLSTATE {failure.sqlstate}); the failing row's "
                 "values are not shown.")
    op = _failing_operation(failure, kinds)
    advice: list[str] = []
    if op is None or op.check is None:
        facts.append("rollbook could not tell which operation of the step failed, so the rows were not counted.")
    else:
        check = op.check
        facts.append(f"Failing operation: {op.detail}.")
        keys: list[tuple[Any, ...]] = []
        key_columns: list[str] = []

        def read(conn: psycopg.Connection) -> None:
            result = count_affected_rows(conn, [check], statement_timeout_ms=COUNT_TIMEOUT_MS,
                                         lock_timeout_ms=LOCK_TIMEOUT_MS).checks[check]
            if result.rows is None:
                facts.append(f"The offending rows could not be counted: {result.note}.")
                return
            facts.append(f"{result.rows} row(s) of {check.table} {_kind_words(check)}"
                         + (f" ({result.note})" if result.note else "") + ".")
            if result.rows:
                found_columns, found = _offending_keys(conn, check, facts)
                key_columns.extend(found_columns)
                keys.extend(found)

        _with_catalog(target, facts, read)
        template = _fix_template(check, key_columns, keys)
        advice.append(f"Option A: fix the data first, then retry the rollback. A template to adapt (rollbook never "
                      f"runs it; it changes data, so take a backup and have it reviewed): `{template}`")
    advice.append("Option B (safer): restore from the backup taken in this run, and fix forward with a new "
                  "migration instead of rolling back.")
    what = "Data in the database does not fit the schema the downgrade restores" if fits else (
        "Data in the database breaks a constraint the downgrade restores")
    summary = f"{what}" + (f": {op.detail}." if op else ".")
    scenario: Scenario = "data_does_not_fit" if fits else "constraint_violation"
    return Diagnosis(scenario, summary, tuple(facts), tuple(advice), failure.sqlstate, failure.revision)


def _failing_operation(failure: _Failure, kinds: tuple[str, ...]) -> Operation | None:
    """The step's operation the failing statement performs, or the statement's own when there is no step."""
    diag = failure.error.diag
    where: list[tuple[TableName, str | None]] = [(op.table, op.column) for op in failure.statement_operations
                                                if op.table is not None]
    if diag.table_name:
        where.append((TableName(diag.schema_name, diag.table_name), diag.column_name))
    candidates = [op for op in (failure.step.operations if failure.step else ()) if op.check and op.check.kind in kinds]
    for table, column in where:
        for op in candidates:
            assert op.check is not None
            if _same_table(op.check.table, table) and (column is None or column in op.check.columns
                                                        or column == op.column or not op.check.columns):
                return op
    own = [op for op in failure.statement_operations if op.check and op.check.kind in kinds]
    if own:
        return own[0]
    # Without a statement, a single candidate in the step can only be the one that failed.
    return candidates[0] if len(candidates) == 1 and not where else None


def _same_table(a: TableName, b: TableName) -> bool:
    return a.name == b.name and (a.schema is None or b.schema is None or a.schema == b.schema)


def _kind_words(check: LiveCheck) -> str:
    columns = ", ".join(check.columns)
    if check.kind == "not_fitting":
        declared = f"{check.type_name}({','.join(map(str, check.type_modifiers))})" if check.type_modifiers else (
            check.type_name)
        return f"have a value in {columns} that does not fit {declared}"
    return {
        "nulls": f"have NULL in {columns}",
        "duplicates": f"repeat a ({columns or ', '.join(check.keys)}) key another row already has",
        "primary_key": f"have a NULL in ({columns}) or repeat a key another row already has",
        "conflicting_inserts": "would be inserted with a key a row of the table already has",
        "orphans": f"have a ({columns}) key missing from {check.referenced_table}",
        "violating": f"break the check ({check.predicate})",
        "referencing": "still reference rows the DELETE removes",
    }.get(check.kind, "are in the way")


def _offending_keys(
    conn: psycopg.Connection, check: LiveCheck, facts: list[str]
) -> tuple[list[str], list[tuple[Any, ...]]]:
    """The primary key columns and up to SHOWN_KEYS keys of the counted rows; never the values in the way."""
    if check.kind == "conflicting_inserts":
        # The counted rows are the INSERT's own, not yet in the table: there are no keys to show.
        return [], []
    with read_only_transaction(conn, COUNT_TIMEOUT_MS, LOCK_TIMEOUT_MS):
        key = _primary_key(conn, check.table)
        if not key:
            facts.append(f"{check.table} has no primary key: its rows cannot be named, only counted.")
            return [], []
        key_cols = sql.SQL(", ").join(column_reference(check.table, c) for c in key)
        if check.kind == "duplicates" and check.columns and not check.predicate:
            plain = sql.SQL(", ").join(sql.Identifier(c) for c in check.columns)
            query = sql.SQL(
                "SELECT {key} FROM {table} WHERE ({cols}) IN (SELECT {plain} FROM {table} WHERE {set} "
                "GROUP BY {plain} HAVING count(*) > 1) ORDER BY {key} LIMIT {n}"
            ).format(key=key_cols, table=table_identifier(check.table), plain=plain, n=sql.Literal(SHOWN_KEYS),
                     cols=sql.SQL(", ").join(column_reference(check.table, c) for c in check.columns),
                     set=sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(sql.Identifier(c))
                                               for c in check.columns))
        else:
            columns = dict(table_facts(conn, check.table).columns)
            aggregate, _ = check_aggregate(conn, check, columns, conn.info.server_version)
            if aggregate is None:
                return key, []
            # Grouping by the primary key makes the planner's aggregate count each row on its own.
            query = sql.SQL("SELECT {key} FROM {table} GROUP BY {key} HAVING {agg} > 0 ORDER BY {key} LIMIT {n}"
                            ).format(key=key_cols, table=table_identifier(check.table), agg=aggregate,
                                     n=sql.Literal(SHOWN_KEYS))
        rows = [tuple(row) for row in conn.execute(query).fetchall()]
    shown = [str(row[0]) if len(row) == 1 else "(" + ", ".join(map(str, row)) + ")" for row in rows]
    if shown:
        facts.append(f"Primary keys ({', '.join(key)}) of the first {len(shown)} of them: {', '.join(shown)}.")
    return key, rows


def _primary_key(conn: psycopg.Connection, table: TableName) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary "
        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
        [regclass_text(table)],
    ).fetchall()
    return [r[0] for r in rows]


def _fix_template(check: LiveCheck, key_columns: list[str], keys: list[tuple[Any, ...]]) -> str:
    """The seed's repair statement for this kind of check, with real identifiers and placeholders for values."""
    table = table_identifier(check.table)
    column = sql.Identifier(check.columns[0]) if check.columns else sql.SQL("<column>")
    if check.kind == "not_fitting" and (check.type_name or "").lower() in ("varchar", "character varying") and (
            check.type_modifiers):
        limit = sql.Literal(check.type_modifiers[0])
        return sql.SQL("UPDATE {t} SET {c} = LEFT({c}, {n}) WHERE LENGTH({c}) > {n};").format(
            t=table, c=column, n=limit).as_string()
    if check.kind == "nulls":
        return sql.SQL("UPDATE {t} SET {c} = <value> WHERE {c} IS NULL;").format(t=table, c=column).as_string()
    if check.kind == "orphans" and check.referenced_table is not None:
        referenced = sql.Identifier(check.referenced_columns[0]) if check.referenced_columns else sql.SQL("<key>")
        return sql.SQL("UPDATE {t} SET {c} = NULL WHERE {c} IS NOT NULL AND NOT EXISTS "
                       "(SELECT 1 FROM {r} AS r WHERE r.{rc} = {t}.{c});").format(
            t=table, c=column, r=table_identifier(check.referenced_table), rc=referenced).as_string()
    if check.kind == "violating" and check.predicate:
        return sql.SQL("UPDATE {t} SET <column> = <value> WHERE NOT ({p});").format(
            t=table, p=sql.SQL(check.predicate)).as_string()
    if check.kind in ("duplicates", "primary_key"):
        grouped: list[sql.Composable] = [sql.Identifier(c) for c in check.columns] or [sql.SQL(k) for k in check.keys]
        filtered = sql.SQL(" WHERE {}").format(sql.SQL(check.predicate)) if check.predicate else sql.SQL("")
        return sql.SQL("SELECT {c}, count(*) FROM {t}{w} GROUP BY {c} HAVING count(*) > 1; -- then update or delete "
                       "all but one row of each").format(t=table, w=filtered, c=sql.SQL(", ").join(grouped)).as_string()
    where: sql.Composable = sql.SQL("<the rows counted above>")
    if keys:
        # Only the keys shown above: the template says so with a trailing "...".
        where = sql.SQL("{} IN ({}, ...)").format(_row(sql.Identifier(c) for c in key_columns),
                                                  sql.SQL(", ").join(_row(map(sql.Literal, k)) for k in keys))
    return sql.SQL("UPDATE {t} SET {c} = <a value that fits> WHERE {w};").format(t=table, c=column, w=where).as_string()


def _row(items: Iterable[sql.Composable]) -> sql.Composable:
    parts = list(items)
    return parts[0] if len(parts) == 1 else sql.SQL("({})").format(sql.SQL(", ").join(parts))


# --- locks and timeouts ---------------------------------------------------------------------------------------


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


def _lock_timeout(target: DatabaseTarget, failure: _Failure) -> Diagnosis:
    facts = _step_facts(failure)
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

    _with_catalog(target, facts, read)
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
    advice.append(_RESTORE)
    summary = (f"The downgrade could not lock {', '.join(map(str, tables)) or 'a table'} in time: "
               "another session holds a conflicting lock.")
    return Diagnosis("lock_timeout", summary, tuple(facts), tuple(advice), failure.sqlstate, failure.revision)


def _statement_timeout(target: DatabaseTarget, failure: _Failure) -> Diagnosis:
    facts = _step_facts(failure)
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

    _with_catalog(target, facts, read)
    advice = [
        "Retry when the database is quiet with a longer statement_timeout for the rollback session only (for example "
        "PGOPTIONS='-c statement_timeout=30min'), knowing it holds its lock for as long as it runs.",
        _RESTORE,
    ]
    summary = "A downgrade statement took longer than statement_timeout and was cancelled."
    return Diagnosis("statement_timeout", summary, tuple(facts), tuple(advice), failure.sqlstate, failure.revision)


def _tables_of(failure: _Failure) -> list[TableName]:
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


# --- missing migration file -------------------------------------------------------------------------------------


def _missing_migration_file(target: DatabaseTarget, revision: str, project: MigrationProject | None) -> Diagnosis:
    facts = [f"Alembic cannot find a migration file for revision {revision}."]
    advice: list[str] = []
    if project is None:
        advice += [
            f"Check whether the file exists: `ls alembic/versions/{revision}_*.py`.",
            f"Restore it from git if it is missing: `git checkout alembic/versions/{revision}_*.py`, then retry.",
        ]
    else:
        facts += _database_revision_facts(target, project, revision)
        for folder in _versions_folders(project):
            advice += _file_history(folder, revision, facts)
    advice += [
        "Retry the rollback once the file is back (rollbook plan first, to see what it will do).",
        "Never write a replacement downgrade by guesswork: if the file cannot be found, restore the backup taken "
        "in this run or fix forward with a new migration.",
    ]
    summary = f"The migration file of revision {revision} is missing, so Alembic cannot run its downgrade."
    return Diagnosis("missing_migration_file", summary, tuple(facts), tuple(advice), None, revision)


def _versions_folders(project: MigrationProject) -> list[Path]:
    scripts = project.scripts
    return [Path(p) for p in scripts.version_locations] or [Path(scripts.dir) / "versions"]


def _database_revision_facts(target: DatabaseTarget, project: MigrationProject, revision: str) -> list[str]:
    facts: list[str] = []

    def read(conn: psycopg.Connection) -> None:
        table = sql.Identifier(*filter(None, (project.version_table_schema, project.version_table)))
        with read_only_transaction(conn, CATALOG_TIMEOUT_MS, LOCK_TIMEOUT_MS):
            versions = [r[0] for r in conn.execute(sql.SQL("SELECT version_num FROM {}").format(table)).fetchall()]
        if revision in versions:
            facts.append(f"The database records revision {revision} in {project.version_table}: it was migrated "
                         "with a file that is not in this project now.")
        else:
            facts.append(f"The database is at {', '.join(versions) or 'base'}; {revision} is not recorded there "
                         "(was the revision id typed right?).")

    _with_catalog(target, facts, read)
    return facts


def _file_history(folder: Path, revision: str, facts: list[str]) -> list[str]:
    """Facts about the file in `folder` and its git history; returns the advice to get it back."""
    pattern = f"{revision}_*.py"
    present = sorted(folder.glob(pattern)) if folder.is_dir() else []
    facts.append(f"Versions folder: {folder}" + ("" if folder.is_dir() else " (does not exist)") + ".")
    if present:
        facts.append(f"A file named like it is there ({present[0].name}) but Alembic does not read it as revision "
                     f"{revision}: check its `revision =` line and that it imports.")
        return []
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None:
        facts.append("The folder is not in a git work tree (or git is not installed): its history cannot be read.")
        return [f"Check whether the file exists: `ls {folder}/{pattern}`; restore it from version control or a "
                "colleague's copy of the project."]
    root = top.strip()
    deleted_here = [p for p in (_git(folder, "ls-files", "--deleted", "--full-name", "--", pattern) or "").splitlines()
                    if p]
    if deleted_here:
        facts.append(f"git: {deleted_here[0]} is deleted in the work tree at {root} but not yet committed.")
        return [f"In {root}: `git checkout -- {deleted_here[0]}`, then retry."]
    log = _git(folder, "log", "--all", "--diff-filter=D", "--name-only", "--format=@@%h%x09%cs%x09%s", "--", pattern)
    commit, path = _first_deletion(log or "")
    if commit:
        facts.append(f"git: {path} was deleted in commit {commit[0]} ({commit[1]}, \"{commit[2]}\") in {root}.")
        return [f"In {root}: `git checkout {commit[0]}^ -- {path}` brings it back from the commit before; then retry."]
    facts.append(f"git has no file matching {pattern} in the history of {root}: it was never committed here.")
    return [f"Check other branches, clones or the deploy artifact for {pattern}; check the revision id."]


def _first_deletion(log: str) -> tuple[tuple[str, str, str] | None, str]:
    commit: tuple[str, str, str] | None = None
    for line in log.splitlines():
        if line.startswith("@@"):
            if commit is not None:
                break
            parts = (line[2:].split("\t") + ["", ""])[:3]
            commit = (parts[0], parts[1], parts[2])
        elif line.strip() and commit is not None:
            return commit, line.strip()
    return None, ""


def _git(folder: Path, *args: str) -> str | None:
    """git's output in `folder`, or None when git is missing, fails or is slow."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        result = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, env=env,
                                timeout=GIT_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


# --- anything else ------------------------------------------------------------------------------------------


def _unknown_error(
    target: DatabaseTarget, error: BaseException, step: PlanStep | None, statement: str | None,
    note: str | None = None,
) -> Diagnosis:
    db_error = _database_error(error)
    facts = [f"Failing step: downgrade of {step.revision.revision} ({step.revision.file})."] if step else []
    if db_error is not None and db_error.sqlstate:
        facts.append(f"SQLSTATE {db_error.sqlstate} ({_condition(db_error.sqlstate)}): {_message(db_error)}.")
    else:
        first_line = (str(error).strip().splitlines() or [""])[0]
        facts.append(f"{type(error).__name__}: {first_line}")
    if statement:
        facts.append(f"Statement: `{_statement_text(statement)}`")
    if note:
        facts.append(note)
    advice = (
        "Read the error and the failing statement above; fix the cause and retry the rollback.",
        _RESTORE,
    )
    return Diagnosis("unknown", "The rollback failed for a reason rollbook does not recognise.", tuple(facts), advice,
                     db_error.sqlstate if db_error is not None else None, step.revision.revision if step else None)


# --- shared helpers -------------------------------------------------------------------------------------------


def _step_facts(failure: _Failure) -> list[str]:
    facts = []
    if failure.step:
        info = failure.step.revision
        facts.append(f"Failing step: downgrade of {info.revision} ({info.message or info.file}), file {info.file}.")
    if failure.statement:
        facts.append(f"Statement: `{_statement_text(failure.statement)}`")
    return facts


def _with_catalog(target: DatabaseTarget, facts: list[str], read: Callable[[psycopg.Connection], None]) -> None:
    """Run reads on rollbook's own short connection; a failure becomes a fact, never an exception.

    Each read runs in data_loss's READ ONLY transaction under statement_timeout and lock_timeout.
    """
    try:
        with connect(target) as conn:
            read(conn)
    except errors.LockNotAvailable:
        facts.append("The catalog lookup gave up waiting for a lock (is the failed transaction still open? roll it "
                     "back first).")
    except errors.QueryCanceled:
        facts.append(f"The catalog lookup took longer than {CATALOG_TIMEOUT_MS} ms and was stopped.")
    except (RollbookError, psycopg.Error) as exc:
        reason = exc.diag.message_primary if isinstance(exc, psycopg.Error) and exc.diag.message_primary else str(exc)
        facts.append(f"The catalog could not be read ({type(exc).__name__}): {reason}")


def _statement_text(statement: str | None) -> str:
    text = " ".join((statement or "").split())
    text = _PASSWORD_LITERAL.sub(r"\1'***'", text)
    return text if len(text) <= STATEMENT_CHARS else text[: STATEMENT_CHARS - 3] + "..."


def _scrubbed(target: DatabaseTarget, diagnosis: Diagnosis) -> Diagnosis:
    """The diagnosis with the target's password removed from every line."""
    scrub = target.scrub
    return Diagnosis(
        diagnosis.scenario, scrub(diagnosis.summary), tuple(map(scrub, diagnosis.facts)),
        tuple(map(scrub, diagnosis.advice)), diagnosis.sqlstate,
        scrub(diagnosis.revision) if diagnosis.revision else None,
    )
