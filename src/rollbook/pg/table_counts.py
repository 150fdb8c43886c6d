"""Exact row counts of the tables a team calls critical, taken before and after a rollback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import sql

from rollbook import markdown
from rollbook.pg.database import DatabaseTarget, connect


@dataclass(frozen=True)
class TableRowCounts:
    """`rows[table]` is the count, or None when the table does not exist."""

    rows: dict[str, int | None]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.rows)

    def _repr_markdown_(self) -> str:
        if not self.rows:
            return "No critical tables named, and the plan touches no existing table."
        return markdown.table(["table", "rows"], [(markdown.code(t), _count(n)) for t, n in self.rows.items()])


def count_table_rows(target: DatabaseTarget, tables: tuple[str, ...], *, statement_timeout_ms: int) -> TableRowCounts:
    """`SELECT count(*)` of each table (a name may be schema-qualified), read-only, under the timeout."""
    rows: dict[str, int | None] = {}
    with connect(target) as conn, conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute("SELECT set_config('statement_timeout', %s, true)", [str(statement_timeout_ms)])
        for table in tables:
            found = conn.execute("SELECT to_regclass(%s)", [_quoted(table)]).fetchone()
            if found is None or found[0] is None:
                rows[table] = None
                continue
            count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_identifier(table))).fetchone()
            rows[table] = int(count[0]) if count else None
    return TableRowCounts(rows)


def compare_counts(before: TableRowCounts, after: TableRowCounts) -> str:
    """A Markdown table of each critical table's rows before and after."""
    rows = []
    for table, was in before.rows.items():
        now = after.rows.get(table)
        change = "" if was is None or now is None else f"{now - was:+d}"
        rows.append((markdown.code(table), _count(was), _count(now), change))
    return markdown.table(["table", "before", "after", "change"], rows)


def _count(value: int | None) -> str:
    return "missing" if value is None else str(value)


def _identifier(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split(".", 1))


def _quoted(table: str) -> str:
    return ".".join('"' + part.replace('"', '""') + '"' for part in table.split(".", 1))
