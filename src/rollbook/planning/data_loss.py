"""Live, read-only counts of the rows each downgrade operation would destroy or trip over.

Every affected table is read once: all of its checks are aggregates of a single SELECT, run in a
READ ONLY transaction under statement_timeout and lock_timeout, taking only ACCESS SHARE locks.
Before any table is scanned, every check gets its estimate from the statistics (row_estimates): a
count that is stopped, by statement_timeout or a lock held by another session, leaves that estimate.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import errors, sql

from rollbook.pg.lock_waits import access_exclusive_holders
from rollbook.planning.operations import INTEGER_RANGES, TEXT_TYPES, LiveCheck, TableName
from rollbook.planning.row_estimates import RowEstimate, TableStatistics, estimate_check, tables_statistics

# How long reading the statistics of the plan's tables may take.
STATISTICS_TIMEOUT_MS = 5_000
# Tables whose heap is at least this big get their count's progress reported (a count of one takes a second or more).
PROGRESS_BYTES = 64 * 2**20


@dataclass(frozen=True)
class CheckResult:
    """The count for one check; `rows` is None when it could not be counted, and `note` says why.

    `estimate` is what the statistics said before the count; when `rows` is None it is all the plan has.
    """

    rows: int | None
    note: str | None = None
    estimate: RowEstimate | None = None


@dataclass(frozen=True)
class TableFacts:
    """What the catalog and the scan say about one affected table."""

    table: TableName
    exists: bool
    rows: int | None = None
    total_bytes: int | None = None
    columns: tuple[tuple[str, str], ...] = ()
    # The table's rows according to the statistics, taken before the count.
    estimate: RowEstimate | None = None
    # The heap's size according to the catalog (relpages), None when the statistics could not be read.
    heap_bytes: int | None = None

    @property
    def big(self) -> bool:
        """Whether counting it takes a second or more (PROGRESS_BYTES): its plan shows the estimate beside the count."""
        return self.heap_bytes is not None and self.heap_bytes >= PROGRESS_BYTES

    def to_dict(self) -> dict[str, Any]:
        return {"table": str(self.table), "exists": self.exists, "rows": self.rows, "total_bytes": self.total_bytes,
                "estimate": self.estimate.to_dict() if self.estimate else None, "heap_bytes": self.heap_bytes}


@dataclass(frozen=True)
class CountProgress:
    """An exact count of a big table (PROGRESS_BYTES or more) starting (`seconds` None) or over.

    `counted` says whether it finished; a count stopped by a timeout or a lock leaves `estimate` in the plan.
    """

    table: TableName
    heap_bytes: int
    estimate: RowEstimate
    seconds: float | None = None
    counted: bool = False


@dataclass(frozen=True)
class LiveCounts:
    """Results of all live checks of a plan."""

    checks: dict[LiveCheck, CheckResult]
    tables: dict[TableName, TableFacts]


def count_affected_rows(
    conn: psycopg.Connection, checks: list[LiveCheck], *, statement_timeout_ms: int = 30_000,
    lock_timeout_ms: int = 2_000, progress: Callable[[CountProgress], None] | None = None,
) -> LiveCounts:
    """Estimate every check from the statistics, then count it exactly against the live database, one scan per
    table; `progress` hears when the count of a big table starts and ends."""
    by_table: dict[TableName, list[LiveCheck]] = defaultdict(list)
    for check in dict.fromkeys(checks):
        by_table[check.table].append(check)
    statistics = _statistics(conn, by_table)
    results: dict[LiveCheck, CheckResult] = {}
    tables: dict[TableName, TableFacts] = {}
    server_version = conn.info.server_version
    for table, table_checks in by_table.items():
        stats = statistics.get(table)
        estimates = {c: estimate_check(stats, c) for c in table_checks} if stats else {}
        rows_estimate = estimate_check(stats, LiveCheck("all_rows", table)) if stats else None
        shown = (CountProgress(table, stats.heap_bytes, rows_estimate)
                 if progress and stats and rows_estimate and stats.heap_bytes >= PROGRESS_BYTES else None)
        if progress and shown:
            progress(shown)
        started = time.monotonic()
        facts, table_results = _scan_table(
            conn, table, table_checks, server_version, statement_timeout_ms, lock_timeout_ms
        )
        if progress and shown:
            progress(replace(shown, seconds=time.monotonic() - started, counted=facts.rows is not None))
        tables[table] = replace(facts, estimate=rows_estimate, heap_bytes=stats.heap_bytes if stats else None)
        results.update({c: replace(r, estimate=estimates.get(c)) for c, r in table_results.items()})
    return LiveCounts(results, tables)


def _statistics(
    conn: psycopg.Connection, by_table: dict[TableName, list[LiveCheck]]
) -> dict[TableName, TableStatistics]:
    wanted = [(table, regclass_text(table), list(dict.fromkeys(c for check in checks for c in check.columns[:1])))
              for table, checks in by_table.items()]
    try:
        with conn.transaction():
            # The catalog alone, no table lock; its own timeout, as a tiny one for the counts must not take the
            # estimates away with them.
            conn.execute("SELECT set_config('statement_timeout', %s, true)", [str(STATISTICS_TIMEOUT_MS)])
            return tables_statistics(conn, wanted)
    except psycopg.Error:
        return {}  # no estimates; each exact count says what is wrong with its table


def _scan_table(
    conn: psycopg.Connection, table: TableName, checks: list[LiveCheck], server_version: int,
    statement_timeout_ms: int, lock_timeout_ms: int,
) -> tuple[TableFacts, dict[LiveCheck, CheckResult]]:
    try:
        with read_only_transaction(conn, statement_timeout_ms, lock_timeout_ms):
            facts = table_facts(conn, table)
            if not facts.exists:
                gone = f"table {table} does not exist now: not counted"
                return facts, {c: CheckResult(None, gone) for c in checks}
            columns = dict(facts.columns)
            aggregates: list[sql.Composable] = [sql.SQL("count(*)")]
            counted: list[tuple[LiveCheck, int, str | None]] = []
            skipped: dict[LiveCheck, CheckResult] = {}
            for check in checks:
                missing = [c for c in check.columns if c not in columns]
                if missing and check.kind != "rows_present":
                    skipped[check] = CheckResult(None, f"column {table}.{missing[0]} does not exist now: not counted")
                    continue
                expression, note = check_aggregate(conn, check, columns, server_version)
                if expression is None:
                    skipped[check] = CheckResult(None, note)
                    continue
                counted.append((check, len(aggregates), note))
                aggregates.append(expression)
            # No alias: a migration's predicate may name the table ("WHERE users.status = 'x'").
            query = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(aggregates), table_identifier(table))
            row = conn.execute(query).fetchone()
    except errors.QueryCanceled:
        note = f"counting {table} took longer than statement_timeout ({statement_timeout_ms} ms): not counted"
        return TableFacts(table, True), {c: CheckResult(None, note) for c in checks}
    except errors.LockNotAvailable:
        holders = lock_holders(conn, table)
        who = f"another session, pid {', '.join(map(str, holders))}," if holders else "another session"
        note = (f"{table} is locked by {who} and the count gave up after lock_timeout ({lock_timeout_ms} ms): "
                "not counted; wait until that session commits or rolls back, then plan again")
        return TableFacts(table, True), {c: CheckResult(None, note) for c in checks}
    except psycopg.Error as exc:
        if len(checks) > 1:
            # One failing check (typically a migration's own predicate) must not hide the others' counts.
            return _scan_each(conn, table, checks, server_version, statement_timeout_ms, lock_timeout_ms)
        return TableFacts(table, True), {c: CheckResult(None, count_failure_note(table, exc)) for c in checks}
    assert row is not None
    results = dict(skipped)
    for check, index, note in counted:
        results[check] = CheckResult(int(row[index]), note)
    return TableFacts(table, True, int(row[0]), facts.total_bytes, facts.columns), results


# Why PostgreSQL refused a count, by the class of its SQLSTATE, in a reader's words.
_COUNT_FAILURES = {
    "42": "the migration's condition names a column, table or function that does not exist now, or needs values "
          "that exist only while the migration runs",
    "22": "a value in the table cannot be evaluated by the migration's condition",
    "25": "the migration's condition would write, and live checks only read",
    "08": "the connection was lost",
    "53": "the server ran out of resources",
    "57": "the server cancelled it",
}


def count_failure_note(table: TableName, exc: psycopg.Error) -> str:
    """Why a count of `table` failed, in words; PostgreSQL's own message stays out of the plan."""
    sqlstate = exc.sqlstate or ""
    why = _COUNT_FAILURES.get(sqlstate[:2], "PostgreSQL refused the count")
    return f"{table} could not be counted ({why}): not counted, review by hand"


def _scan_each(
    conn: psycopg.Connection, table: TableName, checks: list[LiveCheck], server_version: int,
    statement_timeout_ms: int, lock_timeout_ms: int,
) -> tuple[TableFacts, dict[LiveCheck, CheckResult]]:
    facts, results = TableFacts(table, True), {}
    for check in checks:
        check_facts, result = _scan_table(conn, table, [check], server_version, statement_timeout_ms, lock_timeout_ms)
        facts = check_facts if check_facts.rows is not None else facts
        results.update(result)
    return facts, results


@contextmanager
def read_only_transaction(conn: psycopg.Connection, statement_timeout_ms: int, lock_timeout_ms: int) -> Iterator[None]:
    """A READ ONLY transaction with timeouts: live checks can neither write nor wait forever."""
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute(
            "SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true)",
            [str(statement_timeout_ms), str(lock_timeout_ms)],
        )
        yield


def lock_holders(conn: psycopg.Connection, table: TableName) -> tuple[int, ...]:
    """The pids of the other sessions holding a lock on `table` that blocks a read (ACCESS EXCLUSIVE)."""
    return access_exclusive_holders(conn, regclass_text(table))


def table_identifier(table: TableName) -> sql.Identifier:
    return sql.Identifier(table.schema, table.name) if table.schema else sql.Identifier(table.name)


def column_reference(table: TableName, column: str) -> sql.Identifier:
    """`table.column` for a query that reads `table` without an alias, as the live checks do."""
    return sql.Identifier(table.name, column)


def regclass_text(table: TableName) -> str:
    """The table's name as `to_regclass` and `::regclass` read it (quoted, schema-qualified if given)."""
    return table_identifier(table).as_string()


def table_facts(conn: psycopg.Connection, table: TableName) -> TableFacts:
    """The table's size and columns; the size takes an ACCESS SHARE lock, so call it under lock_timeout."""
    row = conn.execute(
        "SELECT c.oid, pg_total_relation_size(c.oid) FROM pg_class c WHERE c.oid = to_regclass(%s)",
        [regclass_text(table)],
    ).fetchone()
    if row is None:
        return TableFacts(table, False)
    return TableFacts(table, True, total_bytes=int(row[1]), columns=table_columns(conn, table))


def table_columns(conn: psycopg.Connection, table: TableName) -> tuple[tuple[str, str], ...]:
    """Each column's name and type, from the catalog alone: no lock on the table, so never a wait."""
    columns = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [regclass_text(table)],
    ).fetchall()
    return tuple((c[0], c[1]) for c in columns)


def check_aggregate(
    conn: psycopg.Connection, check: LiveCheck, columns: dict[str, str], server_version: int
) -> tuple[sql.Composable | None, str | None]:
    cols = [column_reference(check.table, c) for c in check.columns]
    if check.kind in ("all_rows", "rows_present"):
        return sql.SQL("count(*)"), None
    # Plain count(col) skips NULLs without evaluating a FILTER per row: cheaper on big tables.
    if check.kind == "non_null_values":
        return sql.SQL("count({})").format(cols[0]), None
    if check.kind == "nulls":
        return sql.SQL("count(*) - count({})").format(cols[0]), None
    if check.kind in ("matching_rows", "referencing", "violating"):
        # The predicate is the migration's own SQL, deparsed by PostgreSQL's parser; the READ ONLY
        # transaction guarantees that evaluating it cannot write.
        predicate = sql.SQL(check.predicate or "true")
        template = "count(*) FILTER (WHERE NOT ({}))" if check.kind == "violating" else "count(*) FILTER (WHERE ({}))"
        return sql.SQL(template).format(predicate), None
    if check.kind in ("duplicates", "primary_key"):
        keys = [sql.SQL("({})").format(sql.SQL(k)) for k in check.keys] or cols
        # NULLs never collide in a unique index (a key with one is not compared); a primary key refuses them.
        counted = [sql.SQL("{} IS NOT NULL").format(k) for k in keys]
        if check.predicate:
            counted.append(sql.SQL("({})").format(sql.SQL(check.predicate)))
        where = sql.SQL(" AND ").join(counted)
        duplicates = sql.SQL(
            "count(*) FILTER (WHERE {where}) - count(DISTINCT ({tuple})) FILTER (WHERE {where})").format(
            where=where, tuple=sql.SQL(", ").join(keys))
        if check.kind == "primary_key":
            return sql.SQL("{} + count(*) FILTER (WHERE NOT ({}))").format(duplicates, where), None
        return duplicates, None
    if check.kind == "orphans":
        return _orphans(conn, check, cols)
    if check.kind == "not_fitting":
        return _not_fitting(check, cols[0], columns[check.columns[0]], server_version)
    if check.kind == "converted":
        return _converted(check, cols[0], columns[check.columns[0]])
    if check.kind == "conflicting_inserts":
        return _conflicting_inserts(conn, check, columns)
    return None, f"no live check for {check.kind}"


def _orphans(
    conn: psycopg.Connection, check: LiveCheck, cols: Sequence[sql.Composable]
) -> tuple[sql.Composable | None, str | None]:
    assert check.referenced_table is not None
    referenced = list(check.referenced_columns)
    if not referenced:
        rows = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = to_regclass(%s) AND i.indisprimary",
            [regclass_text(check.referenced_table)],
        ).fetchall()
        referenced = [r[0] for r in rows]
    if len(referenced) != len(cols):
        return None, f"cannot match the columns of {check.referenced_table}: not counted"
    exists = conn.execute("SELECT to_regclass(%s)", [regclass_text(check.referenced_table)]).fetchone()
    if exists is None or exists[0] is None:
        return None, f"referenced table {check.referenced_table} does not exist now: not counted"
    all_set = sql.SQL(" AND ").join(sql.SQL("{} IS NOT NULL").format(c) for c in cols)
    match = sql.SQL(" AND ").join(
        sql.SQL("r.{} = {}").format(sql.Identifier(ref), col) for ref, col in zip(referenced, cols)
    )
    return sql.SQL("count(*) FILTER (WHERE {} AND NOT EXISTS (SELECT 1 FROM {} AS r WHERE {}))").format(
        all_set, table_identifier(check.referenced_table), match
    ), None


def _conflicting_inserts(
    conn: psycopg.Connection, check: LiveCheck, columns: dict[str, str]
) -> tuple[sql.Composable | None, str | None]:
    """Rows of the INSERT's VALUES whose key, under a unique index of the table, an existing row already has."""
    inserted = list(check.columns) or list(columns)  # INSERT without a column list fills them in table order
    keys = [tuple(row[0]) for row in conn.execute(
        "SELECT ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.n)"
        " FROM pg_index i WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL"
        " AND NOT 0 = ANY(i.indkey::int2[])", [regclass_text(check.table)]).fetchall()]
    # A unique column the INSERT leaves out gets its default (usually a fresh sequence value): no clash there.
    keys = [key for key in keys if set(key) <= set(inserted)]
    if not keys:
        return sql.SQL("0"), None
    values = sql.SQL("({}) AS v({})").format(
        sql.SQL(check.predicate or ""), sql.SQL(", ").join(sql.Identifier(f"v{i}") for i in range(len(inserted))))
    clashes = sql.SQL(" OR ").join(
        sql.SQL("EXISTS (SELECT 1 FROM {t} AS existing WHERE {match})").format(
            t=table_identifier(check.table), match=sql.SQL(" AND ").join(
                sql.SQL("existing.{c} = v.{v}::{type}").format(
                    c=sql.Identifier(c), v=sql.Identifier(f"v{inserted.index(c)}"), type=sql.SQL(columns[c]))
                for c in key))
        for key in keys)
    return sql.SQL("(SELECT count(*) FROM {} WHERE {})").format(values, clashes), None


def _not_fitting(
    check: LiveCheck, col: sql.Composable, current_type: str, server_version: int
) -> tuple[sql.Composable | None, str | None]:
    type_name = (check.type_name or "").lower()
    mods = check.type_modifiers
    # With USING, the new type receives what the expression makes of each value, of a type only the
    # server knows: only the checks that work on any type apply.
    value = sql.SQL("({})").format(sql.SQL(check.predicate)) if check.predicate else col
    numeric = _is_numeric(current_type) and not check.predicate
    if check.allowed_values:
        return sql.SQL("count(*) FILTER (WHERE {v} IS NOT NULL AND {v}::text NOT IN ({labels}))").format(
            v=value, labels=sql.SQL(", ").join(map(sql.Literal, check.allowed_values))
        ), f"checked against the labels of {type_name} as this downgrade creates it"
    if type_name in TEXT_TYPES and mods:
        # octet_length reads only the stored length; char_length (never larger) decodes the value, so it
        # runs only for the few values long enough in bytes.
        return sql.SQL("count(*) FILTER (WHERE octet_length({c}::text) > {n} AND char_length({c}::text) > {n})").format(
            c=value, n=sql.Literal(mods[0])
        ), None
    if type_name == "numeric" and mods and numeric:
        return sql.SQL("count(*) FILTER (WHERE NOT {})").format(_fits_numeric(value, mods)), None
    if type_name in INTEGER_RANGES and numeric:
        return sql.SQL("count(*) FILTER (WHERE NOT {})").format(_fits_integer(value, type_name, current_type)), None
    if server_version >= 160000:
        declared = f"{type_name}({','.join(map(str, mods))})" if mods else type_name
        return sql.SQL("count(*) FILTER (WHERE {c} IS NOT NULL AND NOT pg_input_is_valid({c}::text, {t}))").format(
            c=value, t=sql.Literal(declared)
        ), f"checked with the input function of {declared}"
    return None, f"no live check for a change from {current_type} to {type_name} before PostgreSQL 16: review by hand"


def _fits_numeric(value: sql.Composable, mods: tuple[int, ...]) -> sql.Composable:
    """True where `value`, rounded to the new scale, stays below 10^(precision - scale)."""
    precision, scale = mods[0], mods[1] if len(mods) > 1 else 0
    return sql.SQL("(abs({}) < {} - 0.5 * 10 ^ (-{}))").format(
        value, sql.Literal(10 ** (precision - scale)), sql.Literal(scale))


def _fits_integer(value: sql.Composable, type_name: str, current_type: str) -> sql.Composable:
    """True where `value`, rounded as the cast to an integer type rounds it, is in that type's range."""
    low, high = INTEGER_RANGES[type_name]
    rounded = value if current_type in INTEGER_RANGES else sql.SQL("round({}::numeric)").format(value)
    return sql.SQL("({} BETWEEN {} AND {})").format(rounded, sql.Literal(low), sql.Literal(high))


def _converted(
    check: LiveCheck, col: sql.Composable, current_type: str
) -> tuple[sql.Composable | None, str | None]:
    """Values the type change keeps, but not as they were: rewritten by USING, or rounded to fit."""
    type_name = (check.type_name or "").lower()
    value = sql.SQL("({})").format(sql.SQL(check.predicate)) if check.predicate else col
    changed: list[sql.Composable] = []
    if check.predicate:
        changed.append(sql.SQL("{} IS DISTINCT FROM {}").format(value, col))
    rounds = (type_name == "numeric" and check.type_modifiers) or type_name in INTEGER_RANGES
    if rounds:
        if not check.predicate and not _is_numeric(current_type):
            return None, f"no live check for how {current_type} values become {type_name}: review by hand"
        if type_name == "numeric":
            scale = check.type_modifiers[1] if len(check.type_modifiers) > 1 else 0
            fits = _fits_numeric(value, check.type_modifiers)
        else:
            scale, fits = 0, _fits_integer(value, type_name, "" if check.predicate else current_type)
        changed.append(sql.SQL("({fits} AND {v}::numeric <> round({v}::numeric, {s}))").format(
            fits=fits, v=value, s=sql.Literal(scale)))
    # A cast to a text type or an enum fails rather than change a value; others (a timestamp's precision) may round.
    note = None if rounds or type_name in TEXT_TYPES or type_name == "text" or check.allowed_values else (
        f"values the USING expression changes; rounding by {type_name} afterwards is not counted")
    return sql.SQL("count(*) FILTER (WHERE {})").format(sql.SQL(" OR ").join(changed)), note


def _is_numeric(type_text: str) -> bool:
    return type_text.split("(")[0] in ("smallint", "integer", "bigint", "numeric", "real", "double precision")
