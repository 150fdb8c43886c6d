"""Where the database stands: its current revision(s), the project's heads, and what is pending."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, sql

from rollbook.errors import BadInput, DatabaseUnreachable
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.project.migrations import MigrationProject, RevisionInfo


@dataclass(frozen=True)
class MigrationStatus:
    """The answer to the procedure's first question: which revision is the database at?"""

    database: str
    current: tuple[str, ...]
    heads: tuple[str, ...]
    missing_files: tuple[str, ...]
    pending: tuple[RevisionInfo, ...]

    @property
    def at_head(self) -> bool:
        return bool(self.current) and set(self.current) == set(self.heads)

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "current": list(self.current),
            "heads": list(self.heads),
            "at_head": self.at_head,
            "missing_files": list(self.missing_files),
            "pending": [r.to_dict() for r in self.pending],
        }

    def to_text(self) -> str:
        lines = [
            f"Database:                   {self.database}",
            f"Current database revision:  {', '.join(self.current) or '(none: nothing applied)'}",
            f"Latest migration available: {', '.join(self.heads) or '(no migrations)'}",
        ]
        for revision in self.missing_files:
            lines.append(
                f"MISSING FILE: no migration file for current revision {revision}. Restore it from version control "
                f"(git log --all -- '*{revision}*', then git checkout) before any rollback."
            )
        if self.pending:
            lines.append(f"Pending (not applied), {len(self.pending)}:")
            lines.extend(f"  {r.revision}  {r.message}" for r in self.pending)
        elif self.at_head:
            lines.append("The database is at head.")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        return "\n".join(f"    {line}" for line in self.to_text().splitlines())


def read_current_revisions(conn: psycopg.Connection, project: MigrationProject) -> tuple[str, ...]:
    """The rows of the version table, read through rollbook's own connection (never through env.py)."""
    schema = project.version_table_schema
    name = f"{schema}.{project.version_table}" if schema else project.version_table
    exists = conn.execute("SELECT to_regclass(%s)", [_quoted(schema, project.version_table)]).fetchone()
    if exists is None or exists[0] is None:
        raise BadInput(
            f"The database has no {name} table: Alembic has never migrated it, or its env.py uses another "
            "version table. Check that the URL names the right database; if env.py names its version table "
            "in a way rollbook cannot read, put `version_table = <name>` in alembic.ini's [alembic] section. "
            "Nothing was changed."
        )
    table = sql.Identifier(schema, project.version_table) if schema else sql.Identifier(project.version_table)
    try:
        rows = conn.execute(sql.SQL("SELECT version_num FROM {} ORDER BY version_num").format(table)).fetchall()
    except errors.InsufficientPrivilege:
        raise DatabaseUnreachable(
            f"The role {conn.info.user} may not read {name} (permission denied). Connect as a role that may read "
            "the version table and the tables the downgrade touches, usually the role that runs the migrations. "
            "Nothing was changed."
        ) from None
    return tuple(row[0] for row in rows)


def read_revisions_or_none(target: DatabaseTarget, project: MigrationProject) -> tuple[str, ...] | None:
    """The database's revision(s) right now, or None if they cannot be read (for the record of a stopped run)."""
    try:
        with connect(target) as conn:
            return read_current_revisions(conn, project)
    except Exception:
        return None


def read_status(target: DatabaseTarget, project: MigrationProject) -> MigrationStatus:
    """Read the database's revision and compare it with the project's migration files."""
    with connect(target) as conn:
        current = read_current_revisions(conn, project)
    project.refuse_if_no_migrations(current)
    missing = tuple(rev for rev in current if not project.has_file(rev))
    heads = project.heads()
    return MigrationStatus(
        database=target.redacted,
        current=current,
        heads=heads,
        missing_files=missing,
        pending=_pending(project, current, heads) if not missing else (),
    )


def _pending(project: MigrationProject, current: tuple[str, ...], heads: tuple[str, ...]) -> tuple[RevisionInfo, ...]:
    """Revisions between the current revision(s) and the heads, oldest first."""
    revisions = project.scripts.iterate_revisions(heads, current or None)
    applied = set(current)
    pending = [project.info(script.revision) for script in revisions if script.revision not in applied]
    return tuple(reversed(pending))


def _quoted(schema: str | None, table: str) -> str:
    quoted = '"' + table.replace('"', '""') + '"'
    return f'"{schema}".{quoted}' if schema else quoted
