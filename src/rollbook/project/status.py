"""Where the database stands: its current revision(s), the project's heads, and what is pending."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors, sql

from rollbook.errors import BadInput, DatabaseUnreachable
from rollbook.outcomes import ExitCode
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.lock_waits import PLANNING_LOCK_TIMEOUT_MS, access_exclusive_holders
from rollbook.project.migrations import MigrationProject, RevisionInfo


@dataclass(frozen=True)
class VersionTableLock:
    """Another session holds a lock on the version table that kept rollbook from reading it within the timeout."""

    version_table: str
    pids: tuple[int, ...]
    lock_timeout_ms: int

    def described(self) -> str:
        """'alembic_version is locked by pid 4242 (a migration is running?)'."""
        who = f"pid {', '.join(map(str, self.pids))}" if self.pids else "another session"
        return f"{self.version_table} is locked by {who} (a migration is running?)"

    def advice(self) -> str:
        """What to do: see what that session runs, wait for it, look again."""
        which = f" WHERE pid IN ({', '.join(map(str, self.pids))})" if self.pids else ""
        return (f"See what it runs (SELECT pid, state, xact_start, query FROM pg_stat_activity{which}), wait until it "
                "commits or rolls back, then look again (rollbook status); start no rollback while it runs.")


class VersionTableLocked(DatabaseUnreachable):
    """The version table could not be read: another session holds a lock on it (exit 3)."""

    def __init__(self, lock: VersionTableLock) -> None:
        self.lock = lock
        super().__init__(f"{lock.described()}: the database's revision could not be read within "
                         f"{lock.lock_timeout_ms} ms. Nothing was changed. {lock.advice()}")


@dataclass(frozen=True)
class MigrationStatus:
    """The answer to the procedure's first question: which revision is the database at?"""

    database: str
    current: tuple[str, ...]
    heads: tuple[str, ...]
    missing_files: tuple[str, ...]
    pending: tuple[RevisionInfo, ...]
    # Set when the version table could not be read because another session holds a lock on it: the revision is
    # then unknown (`current` is empty, and means nothing).
    locked: VersionTableLock | None = None

    @property
    def at_head(self) -> bool:
        return self.locked is None and bool(self.current) and set(self.current) == set(self.heads)

    @property
    def exit_code(self) -> ExitCode:
        """0, or 3 when the version table was locked: shown, but a script must not take the revision as read."""
        return ExitCode.OK if self.locked is None else ExitCode.DATABASE_UNAVAILABLE

    def to_dict(self) -> dict[str, Any]:
        locked = self.locked
        return {
            "database": self.database,
            "current": list(self.current) if locked is None else None,
            "heads": list(self.heads),
            "at_head": self.at_head,
            "missing_files": list(self.missing_files),
            "pending": [r.to_dict() for r in self.pending] if locked is None else None,
            "locked_by": list(locked.pids) if locked else None,
        }

    def to_text(self) -> str:
        current = ', '.join(self.current) or '(none: nothing applied)'
        if self.locked is not None:
            current = f"unknown: {self.locked.described()}"
        lines = [
            f"Database:                   {self.database}",
            f"Current database revision:  {current}",
            f"Latest migration available: {', '.join(self.heads) or '(no migrations)'}",
        ]
        if self.locked is not None:
            lines.append(self.locked.advice())
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
    name = _version_table_name(project)
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
        return read_revisions_unless_locked(target, project)
    except Exception:
        return None


def read_revisions_unless_locked(target: DatabaseTarget, project: MigrationProject) -> tuple[str, ...]:
    """The version table's rows, read on a connection of its own; raises VersionTableLocked (exit 3) after
    PLANNING_LOCK_TIMEOUT_MS when another session holds a lock on the version table that blocks reading it."""
    with connect(target) as conn:
        # A migration running in a transaction holds ACCESS EXCLUSIVE on the version table until it commits: give up
        # soon rather than hang, and rather than queue behind it and block every session queued after this one.
        conn.execute("SELECT set_config('lock_timeout', %s, false)", [str(PLANNING_LOCK_TIMEOUT_MS)])
        try:
            return read_current_revisions(conn, project)
        except errors.LockNotAvailable:
            holders = access_exclusive_holders(conn, _quoted(project.version_table_schema, project.version_table))
            raise VersionTableLocked(VersionTableLock(_version_table_name(project), holders,
                                                      PLANNING_LOCK_TIMEOUT_MS)) from None


def read_status(target: DatabaseTarget, project: MigrationProject) -> MigrationStatus:
    """Read the database's revision and compare it with the project's migration files.

    Raises VersionTableLocked (exit 3) when another session holds a lock on the version table for too long.
    """
    current = read_revisions_unless_locked(target, project)
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


def look_at_status(target: DatabaseTarget, project: MigrationProject) -> MigrationStatus:
    """The status for a person to look at: as read_status, but a locked version table is an answer (the revision
    unknown, who holds the lock, what to do), not an error."""
    try:
        return read_status(target, project)
    except VersionTableLocked as locked:
        return MigrationStatus(target.redacted, (), project.heads(), (), (), locked=locked.lock)


def _pending(project: MigrationProject, current: tuple[str, ...], heads: tuple[str, ...]) -> tuple[RevisionInfo, ...]:
    """Revisions between the current revision(s) and the heads, oldest first."""
    revisions = project.scripts.iterate_revisions(heads, current or None)
    applied = set(current)
    pending = [project.info(script.revision) for script in revisions if script.revision not in applied]
    return tuple(reversed(pending))


def _version_table_name(project: MigrationProject) -> str:
    """The version table as a reader writes it: `alembic_version`, or `schema.alembic_version`."""
    schema = project.version_table_schema
    return f"{schema}.{project.version_table}" if schema else project.version_table


def _quoted(schema: str | None, table: str) -> str:
    quoted = '"' + table.replace('"', '""') + '"'
    return f'"{schema}".{quoted}' if schema else quoted
