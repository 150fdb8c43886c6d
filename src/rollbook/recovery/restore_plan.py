"""Planning a restore: which backup, into a new database or over the database itself, with which pg_restore command."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from rollbook import markdown
from rollbook.errors import BadInput
from rollbook.parent_death import end_with_parent
from rollbook.pg.client_tools import PgTool, find_pg_tool, stderr_tail
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import DatabaseIdentity, read_identity
from rollbook.project.migrations import MigrationProject
from rollbook.recovery.archived_backups import ArchivedBackup
from rollbook.recovery.backup_check import BackupRefused
from rollbook.recovery.restore_tables import SYSTEM_SCHEMAS, revisions_or_none, revisions_text

RESTORE_INTO = ("new", "database")
STDERR_LINES = 12
# Relations pg_restore --clean would leave in place if the backup does not hold them. Sequences owned
# by a column come and go with their table.
_RELATIONS_SQL = f"""
SELECT n.nspname, c.relname, c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {SYSTEM_SCHEMAS}
  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend s
                                       WHERE s.classid = 'pg_class'::regclass AND s.objid = c.oid
                                         AND s.refclassid = 'pg_class'::regclass AND s.deptype IN ('a', 'i')))
ORDER BY 1, 2
"""
_TOC_TYPES = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE",
              "S": "SEQUENCE"}


@dataclass(frozen=True)
class RestorePlan:
    """What a restore would do: which backup, into which database, with which command, over what."""

    into: str
    database: str
    identity: DatabaseIdentity
    backup: ArchivedBackup
    revisions_now: tuple[str, ...]
    destination: str
    created_since: tuple[str, ...]
    pg_restore: PgTool
    arguments: tuple[str, ...]

    @property
    def restore_hash(self) -> str:
        """A digest of the restore (backup, database, its revision now, where to), for approvals to name."""
        shape = {"backup_sha256": self.backup.sha256, "backup_revisions": list(self.backup.revisions),
                 "database": self.identity.database, "system_identifier": self.identity.system_identifier,
                 "revisions_now": list(self.revisions_now), "into": self.into, "destination": self.destination}
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()

    @property
    def command(self) -> str:
        return " ".join([str(self.pg_restore.path), *self.arguments])

    def to_dict(self) -> dict[str, Any]:
        return {"into": self.into, "database": self.database, "destination": self.destination,
                "backup": self.backup.to_dict(), "revisions_now": list(self.revisions_now),
                "revision_after": list(self.backup.revisions), "created_since": list(self.created_since),
                "command": self.command, "restore_hash": self.restore_hash}

    def to_text(self) -> str:
        lines = [f"Restore {self.backup.path} ({self.backup.revision_label}) {self._where()}",
                 f"  the database is at {revisions_text(self.revisions_now)} now; afterwards "
                 f"{self.destination} is at {self.backup.revision_label}",
                 f"  command: {self.command}"]
        if self.created_since:
            lines.append(f"  not in the backup, left in place by --clean: {', '.join(self.created_since)}")
        lines.append(f"Restore hash (for approvals): {self.restore_hash}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        rows = [("Restore", markdown.cell(self._where())),
                ("Backup", markdown.cell(f"{self.backup.path} at revision {self.backup.revision_label}")),
                ("Revision now", markdown.code(revisions_text(self.revisions_now))),
                ("Revision after", markdown.code(self.backup.revision_label)),
                ("Command", markdown.code(self.command))]
        if self.into == "database":
            rows.append(("Not in the backup", markdown.cell(", ".join(self.created_since) or "nothing")))
        return (markdown.table(("Restore plan", ""), rows)
                + f"\n\nRestore hash (approvals name it): `{self.restore_hash}`")

    def _where(self) -> str:
        if self.into == "new":
            jobs = f", by {self.backup.jobs} parallel jobs" if self.backup.jobs else ""
            return (f"into the new database {self.destination}, next to {self.identity.database}, for comparison "
                    f"(nothing existing is changed; dropped again if the restore fails){jobs}")
        return (f"over the database {self.identity.database} itself, in one transaction (pg_restore --clean "
                "--if-exists --single-transaction): all of it or nothing")


def plan_restore(
    target: DatabaseTarget, backup: ArchivedBackup, project: MigrationProject, *, into: str = "new",
    new_database: str = "",
) -> RestorePlan:
    """Plan restoring `backup` into a new database next to `target`, or over `target` itself (into="database")."""
    if into not in RESTORE_INTO:
        raise BadInput(f"restore_into must be 'new' (a new database, for comparison) or 'database' (over the "
                       f"database itself), not {into!r}.")
    with connect(target) as conn:
        identity = read_identity(conn)
        revisions_now = revisions_or_none(conn, project) or ()
        if into == "new":
            destination = new_database or _new_name(identity.database)
            taken = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [destination]).fetchone()
            if taken:
                raise BadInput(f"A database named {destination} already exists on this server: name another with "
                               "new_database (rollbook never restores over a database by that route).")
        elif new_database:
            raise BadInput("new_database names the database a restore into a new database creates; with "
                           "restore_into database the backup goes over the database itself. Leave one of them out.")
        else:
            destination = identity.database
        needed = max(identity.major_version, backup.pg_dump_major or 0, backup.server_major or 0)
        pg_restore = find_pg_tool("pg_restore", needed)
        created = created_since(conn, pg_restore, backup) if into == "database" else ()
    arguments: tuple[str, ...]
    if into == "database":
        arguments = ("--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--no-password",
                     f"--dbname={_dbname(destination)}", str(backup.path))
    else:
        # A copy for comparison: owned by whoever restores it, whatever roles the original had. A failed restore
        # drops the new database, so a directory-format dump may be restored by as many jobs as wrote it (jobs
        # exclude --single-transaction).
        atomicity = (f"--jobs={backup.jobs}",) if backup.jobs else ("--single-transaction",)
        arguments = (*atomicity, "--exit-on-error", "--no-owner", "--no-password",
                     f"--dbname={_dbname(destination)}", str(backup.path))
    return RestorePlan(into, target.redacted, identity, backup, tuple(revisions_now), destination, created,
                       pg_restore, arguments)


def created_since(conn: psycopg.Connection[Any], pg_restore: PgTool, backup: ArchivedBackup) -> tuple[str, ...]:
    """Relations in the database that the backup does not hold: pg_restore --clean would leave them in place."""
    completed = subprocess.run([str(pg_restore.path), "--list", str(backup.path)], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, errors="replace", check=False,
                               preexec_fn=end_with_parent)
    if completed.returncode != 0:
        raise BackupRefused(f"pg_restore --list cannot read {backup.path} (exit code {completed.returncode}): "
                            f"{stderr_tail(completed.stderr, STDERR_LINES) or 'no message'}. The archive is "
                            "damaged: do not restore from it. Nothing was restored; the database was not touched.")
    entries = [line.split(";", 1)[1].strip().split(" ", 2)[-1] for line in completed.stdout.splitlines()
               if ";" in line and not line.startswith(";")]
    created = []
    for schema, name, kind in conn.execute(_RELATIONS_SQL).fetchall():
        prefix = f"{_TOC_TYPES[kind]} {schema} {name}"
        if not any(entry == prefix or entry.startswith(prefix + " ") for entry in entries):
            created.append(f"{_TOC_TYPES[kind].lower()} {schema}.{name}")
    return tuple(created)


def _dbname(name: str) -> str:
    """The --dbname value that names exactly this database: libpq reads a value with '=' as a connection string."""
    if "=" not in name and not name.startswith(("postgresql:", "postgres:")):
        return name
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


def _new_name(database: str) -> str:
    suffix = f"_restored_{datetime.now(UTC):%Y%m%dT%H%M%S}"
    # PostgreSQL cuts names at 63 bytes: shorten the original part, keep the suffix.
    return database.encode()[:63 - len(suffix)].decode(errors="ignore") + suffix
