"""The rows-in-the-way scenarios of a diagnosis: data that does not fit the restored schema, or breaks a constraint
it restores; the rows are counted, named by primary key (never by value), and a repair template is given.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import errors, sql

from rollbook.execution.diagnosis_model import (
    LOCK_TIMEOUT_MS,
    Diagnosis,
    Failure,
    Scenario,
    message,
    step_facts,
    with_catalog,
)
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.data_loss import (
    check_aggregate,
    column_reference,
    count_affected_rows,
    read_only_transaction,
    regclass_text,
    table_facts,
    table_identifier,
)
from rollbook.planning.operations import LiveCheck, Operation, TableName

COUNT_TIMEOUT_MS = 10_000
SHOWN_KEYS = 5

# SQLSTATEs whose rows can be counted with a planner check, and the check kinds that count them.
DOES_NOT_FIT = {
    errors.StringDataRightTruncation.sqlstate: ("not_fitting",),
    errors.NumericValueOutOfRange.sqlstate: ("not_fitting",),
    errors.InvalidTextRepresentation.sqlstate: ("not_fitting",),
}
CONSTRAINTS = {
    errors.NotNullViolation.sqlstate: ("nulls", "primary_key"),
    errors.UniqueViolation.sqlstate: ("duplicates", "primary_key", "conflicting_inserts"),
    # A new key finds orphans; a DELETE finds rows still referencing what it removes.
    errors.ForeignKeyViolation.sqlstate: ("orphans", "referencing"),
    errors.CheckViolation.sqlstate: ("violating",),
}


def rows_in_the_way(target: DatabaseTarget, failure: Failure) -> Diagnosis:
    """Rows that do not fit the restored schema or break a constraint it restores: counted, keys named, a template."""
    fits = failure.sqlstate in DOES_NOT_FIT
    kinds = DOES_NOT_FIT.get(failure.sqlstate) or CONSTRAINTS[failure.sqlstate]
    facts = step_facts(failure)
    facts.append(f"PostgreSQL: {message(failure.error)} (SQLSTATE {failure.sqlstate}); the failing row's "
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

        with_catalog(target, facts, read)
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


def _failing_operation(failure: Failure, kinds: tuple[str, ...]) -> Operation | None:
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
