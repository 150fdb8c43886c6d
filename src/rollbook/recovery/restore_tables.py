"""What a restore reads of the database at each step: its tables as take_backup names them, their rows, its revision."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from rollbook.errors import BadInput
from rollbook.project.migrations import MigrationProject
from rollbook.project.status import read_current_revisions

SYSTEM_SCHEMAS = r"""
  n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
# The tables take_backup counts, named the same way (format('%I.%I')), so counts compare by name.
TABLES_SQL = f"""
SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {SYSTEM_SCHEMAS}
ORDER BY 1
"""


def scan_table(conn: psycopg.Connection[Any], schema: str, name: str, horizon: int | None) -> tuple[int, int | None]:
    """A table's rows, and (given a write horizon) how many of them were inserted or updated at or after it."""
    table = sql.Identifier(schema, name)
    if horizon is None:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        assert row is not None  # an aggregate returns one row
        return int(row[0]), None
    # age() measures from the same reference for both: a row is newer than the horizon iff its age is smaller.
    row = conn.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE age(xmin) <= age(%s::text::xid)) FROM {}")
                       .format(table), [str(horizon)]).fetchone()
    assert row is not None  # an aggregate returns one row
    return int(row[0]), int(row[1])


def revisions_or_none(conn: psycopg.Connection[Any], project: MigrationProject) -> tuple[str, ...] | None:
    try:
        return read_current_revisions(conn, project)
    except BadInput:
        return None  # no version table (yet, or any more)


def is_version_table(project: MigrationProject, schema: str, name: str) -> bool:
    if name != project.version_table:
        return False
    # Without a configured schema Alembic puts it first on the search path, wherever that is.
    return project.version_table_schema in (None, schema)


def split_qualified(qualified: str) -> tuple[str, str]:
    """Undo format('%I.%I') for names that needed no quotes; quoted ones are never the version table."""
    schema, _, name = qualified.partition(".")
    return schema, name


def revisions_text(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "base"


def count_text(value: int | None) -> str:
    return "-" if value is None else str(value)

