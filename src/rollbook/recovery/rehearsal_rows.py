"""Checking a plan's predictions in a rehearsal: were rows lost exactly where the plan said, and kept elsewhere?"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from rollbook.planning.operations import ROW_CHANGES, Operation
from rollbook.planning.step import PlanStep
from rollbook.project.migrations import MigrationProject
from rollbook.recovery.rehearsal_report import StepResult
from rollbook.recovery.rehearsal_tables import TABLES_SQL, display, version_keys

# Value comparison reads whole tables into memory: beyond this, only row counts are compared.
MAX_ROWS_COMPARED = 20_000


@dataclass(frozen=True)
class TableData:
    """A table's columns and rows (as text), or only its row count when it is too big to compare."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str | None, ...], ...]
    count: int

    def values(self, column: str) -> int:
        index = self.columns.index(column)
        return sum(1 for row in self.rows if row[index] is not None)

    def projected(self, columns: list[str]) -> Counter[tuple[str | None, ...]]:
        indexes = [self.columns.index(c) for c in columns]
        return Counter(tuple(row[i] for i in indexes) for row in self.rows)


@dataclass
class _ColumnNames:
    """A table's columns as a downgrade's statements leave them, in order: each name now in use, mapped to the
    column it had before the downgrade (None for one the downgrade adds). A name not mapped is untouched.

    Followed in order, a column dropped and then replaced by a rename (Airflow's e39a26ac59f6 drops `conf`,
    then renames `conf_pickle` to `conf`) is read as dropped, and the `conf` that is left as `conf_pickle`.
    """

    current: dict[str, str | None] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)

    def original(self, name: str) -> str | None:
        """The name the column now called `name` had before the downgrade; None if the downgrade added it."""
        return self.current.get(name) if name in self.current else None if name in self.gone else name

    def drop(self, name: str) -> str | None:
        """Drop the column now called `name`; the name it had before the downgrade (None if the downgrade added it)."""
        original = self.original(name)
        self.current.pop(name, None)
        self.gone.add(name)
        return original

    def add(self, name: str) -> None:
        self.current[name] = None
        self.gone.discard(name)

    def rename(self, old: str, new: str) -> None:
        original = self.original(old)
        self.current.pop(old, None)
        self.gone.add(old)
        self.current[new] = original
        self.gone.discard(new)

    def final(self, original: str) -> str | None:
        """The name the column called `original` before the downgrade has after it; None if it is gone."""
        if original in self.current.values():
            return next(name for name, was in self.current.items() if was == original)
        return None if original in self.gone or original in self.current else original

    def reused(self, name: str) -> bool:
        """Whether another column (renamed or added) carries `name` after the downgrade."""
        return name in self.current

    def added(self, name: str) -> bool:
        """Whether `name` is, after the downgrade, a column the downgrade adds (CKAN's 008 drops and adds again)."""
        return name in self.current and self.current[name] is None


def table_data(conn: psycopg.Connection[Any], project: MigrationProject) -> dict[tuple[str, str], TableData]:
    """Every table's rows as text, keyed by (schema, name); the version table left out."""
    data = {}
    versions = version_keys(project, conn)
    for oid, schema, name in conn.execute(TABLES_SQL).fetchall():
        if (schema, name) in versions:
            continue
        described = conn.execute(
            "SELECT attname, atttypid::regtype::text FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum", [oid]).fetchall()
        columns = [row[0] for row in described]
        table = sql.Identifier(schema, name)
        counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        assert counted is not None  # count(*) always returns one row
        count = counted[0]
        rows: list[tuple[str | None, ...]] = []
        if count <= MAX_ROWS_COMPARED and columns:
            # A numeric's text carries its scale (5.0000 in numeric(12,4), 5.00 in numeric(10,2)): compared
            # without trailing zeros, a type change shows only the values it really changed. A timestamptz's text
            # carries the session's offset: read as the timestamp it converts to in this session (as ALTER TYPE
            # timestamp converts it), a change to or from timestamp shows only values it really changed.
            as_text = {"numeric": "trim_scale({})::text" if conn.info.server_version >= 130000 else "{}::text",
                       "timestamp with time zone": "{}::timestamp::text"}
            listed = sql.SQL(", ").join(sql.SQL(as_text.get(type_name, "{}::text")).format(sql.Identifier(c))
                                        for c, type_name in described)
            rows = [tuple(row) for row in conn.execute(sql.SQL("SELECT {} FROM {}").format(listed, table)).fetchall()]
        data[(schema, name)] = TableData(tuple(columns), tuple(rows), int(count))
    return data


def check_predictions(step: PlanStep, before: dict[tuple[str, str], TableData],
                      after: dict[tuple[str, str], TableData]) -> StepResult:
    """Were rows lost exactly where the plan said, and kept everywhere else?"""
    dropped_tables: dict[tuple[str, str], int | None] = {}
    dropped_columns: dict[tuple[tuple[str, str], str], int | None] = {}
    rewritten: dict[tuple[str, str], int] = {}
    unsure: set[tuple[str, str]] = set()
    # Renames keep their rows: a table or column is followed to its new name, not counted as lost.
    renamed_tables: dict[tuple[str, str], tuple[str, str]] = {}
    columns: dict[tuple[str, str], _ColumnNames] = {}
    recreated: set[tuple[str, str]] = set()
    # A column the downgrade drops and then adds again (CKAN's 008 restores old key types that way) comes
    # back empty: its values are the ones lost, and it takes no part in comparing the rows kept.
    for op in step.operations:
        if op.table is None:
            if op.op == "unknown":
                return StepResult("not_checked", f"the plan could not tell which tables it touches: {op.detail}")
            continue
        key = (op.table.schema or "public", op.table.name)
        # A statement after a table rename may name the table by its new name.
        key = next((old for old, new in renamed_tables.items() if new == key), key)
        names = columns.setdefault(key, _ColumnNames())
        lossy = op.op in ("drop_table", "drop_column") or op.op in ROW_CHANGES
        if op.op == "unknown" or (lossy or op.check is not None) and op.rows_affected is None:
            unsure.add(key)
        elif op.op == "drop_table":
            dropped_tables[key] = op.rows_affected
        elif op.op == "create_table" and key in dropped_tables:
            recreated.add(key)
        elif op.op == "drop_column" and op.column:
            original = names.drop(op.column)
            if original is not None:
                dropped_columns[(key, original)] = op.rows_affected
        elif op.op == "add_column" and op.column:
            names.add(op.column)
        elif op.op in ROW_CHANGES and not _fills_only_added_columns(op, names):
            rewritten[key] = rewritten.get(key, 0) + (op.rows_affected or 0)
        elif op.op == "rename_table" and op.extra.get("new_name"):
            renamed_tables[key] = (key[0], str(op.extra["new_name"]))
        elif op.op == "rename_column" and op.column and op.extra.get("new_name"):
            names.rename(op.column, str(op.extra["new_name"]))
    findings, mismatches = [], []
    for key, was in sorted(before.items()):
        table = display(*key)
        now = after.get(key)
        if key in renamed_tables:
            table, now = f"{table} (renamed to {display(*renamed_tables[key])})", after.get(renamed_tables[key])
        if key in unsure:
            findings.append(f"{table}: not checked (the plan did not count it)")
            continue
        if key in dropped_tables:
            if now is not None and key not in recreated:
                mismatches.append(f"{table}: the plan said the downgrade drops it, but it is still there")
            elif dropped_tables[key] != was.count:
                mismatches.append(f"{table}: dropped with {was.count} rows; the plan predicted "
                                  f"{dropped_tables[key]} lost")
            elif key in recreated:
                findings.append(f"{table}: dropped and re-created, {was.count} rows lost as predicted "
                                f"({now.count if now else 0} rows in the new table)")
            else:
                findings.append(f"{table}: dropped, {was.count} rows lost as predicted")
            continue
        if now is None:
            if was.count:
                mismatches.append(f"{table}: dropped with {was.count} rows, which the plan did not predict")
            continue
        names = columns.get(key, _ColumnNames())
        for column in was.columns:
            planned = dropped_columns.get((key, column), "kept")
            if planned != "kept":
                if column in now.columns and not names.reused(column):
                    mismatches.append(f"{table}.{column}: the plan said the downgrade drops it, but it is still there")
                    continue
            elif names.final(column) in now.columns:
                continue
            dropped = "dropped and added again" if names.added(column) else "dropped"
            if was.count and not was.rows:
                findings.append(f"{table}.{column}: {dropped}; values not compared ({was.count} rows)")
                continue
            lost = was.values(column)
            if planned == "kept":
                if lost:
                    mismatches.append(f"{table}.{column}: dropped with {lost} values, which the plan did not predict")
            elif planned != lost:
                mismatches.append(f"{table}.{column}: {dropped} with {lost} values; the plan predicted {planned} lost")
            else:
                findings.append(f"{table}.{column}: {dropped}, {lost} values lost as predicted")
        expected = rewritten.get(key, 0)
        if (was.count and not was.rows) or (now.count and not now.rows):
            if now.count < was.count - expected:
                mismatches.append(f"{table}: {was.count} rows before, {now.count} after; the plan predicted at most "
                                  f"{expected} changed")
            else:
                findings.append(f"{table}: {was.count} rows before, {now.count} after (too many rows to compare "
                                "values: counts only)")
            continue
        kept = [(c, names.final(c)) for c in was.columns if (key, c) not in dropped_columns]
        common = [(c, final) for c, final in kept if final in now.columns]
        changed = sum((was.projected([c for c, _ in common]) - now.projected([f for _, f in common])).values())
        if changed != expected:
            mismatches.append(f"{table}: {changed} of its {was.count} rows changed or lost; the plan predicted "
                              f"{expected}")
        elif changed:
            findings.append(f"{table}: {changed} rows rewritten or deleted as predicted")
        else:
            findings.append(f"{table}: all {was.count} rows kept")
    if mismatches:
        return StepResult("failed", "the plan's predictions did not hold", tuple(mismatches))
    return StepResult("passed", "; ".join(findings) if findings else "no tables")


def _fills_only_added_columns(op: Operation, names: _ColumnNames) -> bool:
    """An UPDATE that sets only columns the same downgrade adds (Airflow's e00344393f31 brings back
    dag_run.external_trigger and fills it): no value that was there before changes."""
    set_columns = op.extra.get("set_columns") or ()
    return op.op == "update" and bool(set_columns) and all(names.original(c) is None for c in set_columns)
