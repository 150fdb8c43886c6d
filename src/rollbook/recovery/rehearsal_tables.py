"""The tables a rehearsal seeds and compares: every user table of a scratch database, the version table left out."""

from __future__ import annotations

from typing import Any

import psycopg

from rollbook.project.migrations import MigrationProject

TABLES_SQL = r"""
SELECT c.oid, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 2, 3
"""


def version_keys(project: MigrationProject, conn: psycopg.Connection[Any]) -> set[tuple[str, str]]:
    """The (schema, name) of the project's version table; every schema's table of that name without a schema set."""
    if project.version_table_schema:
        return {(project.version_table_schema, project.version_table)}
    # Alembic puts it first on the search path; any schema's table of that name is taken for it.
    rows = conn.execute("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relname = %s", [project.version_table]).fetchall()
    return {(row[0], project.version_table) for row in rows}


def display(schema: str, name: str) -> str:
    """A table's name as the rehearsal shows it: the schema only when it is not public."""
    return name if schema == "public" else f"{schema}.{name}"
