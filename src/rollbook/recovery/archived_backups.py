"""Backups as the archive knows them: taken with what a later restore needs, and found again by their records.

Every run that takes a backup files its facts in its record under "backup" (one shape,
rollbook.records.model.BackupFacts): the pre-deploy backup runbook, the rollback runbook (before a
downgrade) and the restore runbook (before it overwrites a database). Those records are the catalogue. A
backup no record names is never offered, because its checksum, its database and its revision could not
be checked.

A backup taken here also records a *write horizon*: the oldest transaction id still running when the
backup started. Any row inserted or updated later carries a newer `xmin`, which is how a restore
finds out whether the database was written to since (see rollbook.recovery.writes_since_backup).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbook import markdown
from rollbook.errors import BadInput
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import DatabaseIdentity
from rollbook.planning.downgrade_path import ancestors
from rollbook.planning.plan import DowngradePlan
from rollbook.project.migrations import MigrationProject
from rollbook.records.archive import Archive
from rollbook.records.archive_files import EXTENSIONS
from rollbook.records.model import BackupFacts, BackupFile, ClientTool, RecordedIdentity, RunRecord, TableRows
from rollbook.recovery.backup import Backup, take_backup
from rollbook.recovery.backup_verification import BackupVerification, verify_backup

# pg_current_snapshot() is PostgreSQL 13+; txid_current_snapshot() is its older spelling.
_HORIZON_SQL = {True: "SELECT pg_snapshot_xmin(pg_current_snapshot())::text",
                False: "SELECT txid_snapshot_xmin(txid_current_snapshot())::text"}


@dataclass(frozen=True)
class RecordedBackup:
    """A backup taken for the archive: the dump with its row counts, its verification and its write horizon."""

    backup: Backup
    verification: BackupVerification
    write_horizon: str

    @property
    def verified(self) -> bool:
        return self.verification.passed

    def record_facts(self) -> BackupFacts:
        """What a run's record keeps under "backup", and what `ArchivedBackup.from_record` reads back."""
        backup, identity = self.backup, self.backup.identity
        return BackupFacts(
            path=str(backup.path), size_bytes=backup.size_bytes, sha256=backup.sha256, seconds=backup.seconds,
            pg_dump=ClientTool(name=backup.pg_dump.name, path=str(backup.pg_dump.path),
                               major_version=backup.pg_dump.major_version, version=backup.pg_dump.version_text),
            identity=RecordedIdentity(database=identity.database, server_version=identity.server_version,
                                      system_identifier=identity.system_identifier,
                                      server_started=identity.server_started, user=identity.user),
            revisions=list(backup.revisions), taken_at=backup.taken_at, rows_counted=backup.rows_counted,
            table_rows=[TableRows(table=table, rows=rows) for table, rows in backup.table_rows],
            verified=self.verified, verification=self.verification.method,
            verification_detail=self.verification.detail, write_horizon=self.write_horizon,
            strategy="parallel" if backup.format == "directory" else "full", format=backup.format, jobs=backup.jobs,
            files=[BackupFile(name=name, size_bytes=size, sha256=digest) for name, size, digest in backup.files])

    def to_dict(self) -> dict[str, Any]:
        return self.record_facts().model_dump(mode="json")

    def to_text(self) -> str:
        return "\n".join([self.backup.to_text(), self.verification.to_text(),
                          f"  write horizon: transaction {self.write_horizon}"])

    def _repr_markdown_(self) -> str:
        return "\n\n".join([self.backup._repr_markdown_(), self.verification._repr_markdown_(),
                            f"Write horizon: transaction `{self.write_horizon}` (a row written after the backup "
                            "has a newer `xmin`; a restore uses this to find writes since the backup)."])


def take_recorded_backup(
    target: DatabaseTarget, backup_dir: Path, *, revisions: tuple[str, ...], verify: str, jobs: int | None = None,
) -> RecordedBackup:
    """Back up `target` with row counts, verify it (`list` or `restore`), and note its write horizon.

    With `jobs`, the backup is a directory-format dump written by that many parallel pg_dump jobs.
    """
    with connect(target) as conn:
        # Read before pg_dump's snapshot: a transaction that commits in between counts as a write since
        # the backup. That errs on the safe side: a restore asks before overwriting it.
        horizon = read_write_horizon(conn)
    backup = take_backup(target, backup_dir, revisions=revisions, count_rows=True, jobs=jobs)
    return RecordedBackup(backup, verify_backup(backup, verify, target), horizon)


def read_write_horizon(conn: Any) -> str:
    """The oldest transaction id still in progress now: every later write has an xmin at or after it."""
    row = conn.execute(_HORIZON_SQL[conn.info.server_version >= 130000]).fetchone()
    return str(row[0])


@dataclass(frozen=True)
class ArchivedBackup:
    """A backup file as a run's record describes it."""

    run_id: str
    runbook: str
    record: str
    path: Path
    sha256: str
    size_bytes: int | None
    taken_at: str
    revisions: tuple[str, ...]
    database: str
    system_identifier: str
    server_major: int | None
    pg_dump_major: int | None
    verified: bool
    verification: str
    # None when the run did not record them (records filed before every runbook kept row counts).
    table_rows: tuple[tuple[str, int], ...] | None
    write_horizon: str | None
    # The parallel pg_dump jobs that wrote a directory-format dump; None for a one-file (custom-format) dump.
    jobs: int | None = None

    @classmethod
    def from_record(cls, record: RunRecord, file: str = "") -> ArchivedBackup | None:
        """The backup a run's record describes, or None if the run took none."""
        facts = record.backup
        if facts is None or not facts.path or not facts.sha256:
            return None
        identity = facts.identity
        major = identity.server_version.split(".")[0] if identity else ""
        return cls(
            run_id=record.run_id, runbook=record.runbook, record=file, path=Path(facts.path), sha256=facts.sha256,
            size_bytes=facts.size_bytes, taken_at=facts.taken_at, revisions=tuple(facts.revisions),
            database=identity.database if identity else "",
            system_identifier=identity.system_identifier if identity else "",
            server_major=int(major) if major.isdigit() else None,
            pg_dump_major=facts.pg_dump.major_version if facts.pg_dump else None,
            verified=facts.verified, verification=facts.verification,
            table_rows=tuple((r.table, r.rows) for r in facts.table_rows) if facts.rows_counted else None,
            write_horizon=facts.write_horizon,
            jobs=facts.jobs if facts.format == "directory" else None,
        )

    @property
    def revision_label(self) -> str:
        return ", ".join(self.revisions) or "base"

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id, "runbook": self.runbook, "record": self.record, "path": str(self.path),
            "sha256": self.sha256, "size_bytes": self.size_bytes, "taken_at": self.taken_at,
            "revisions": list(self.revisions), "database": self.database,
            "system_identifier": self.system_identifier, "verified": self.verified,
            "verification": self.verification, "rows_recorded": self.table_rows is not None,
            "write_horizon": self.write_horizon, "jobs": self.jobs,
        }

    def to_text(self) -> str:
        return (f"{self.path} (sha256 {self.sha256[:12]}, taken {self.taken_at} at revision {self.revision_label} "
                f"of database {self.database} by {self.runbook} run {self.run_id}, "
                f"{'verified by ' + self.verification if self.verified else 'NOT verified'})")

    def _repr_markdown_(self) -> str:
        rows = [
            ("File", markdown.code(str(self.path))),
            ("sha256 (recorded)", markdown.code(self.sha256)),
            ("Taken", markdown.cell(f"{self.taken_at} by the {self.runbook} runbook, run {self.run_id}")),
            ("Database", markdown.cell(f"{self.database} (system identifier {self.system_identifier})")),
            ("Revision", markdown.code(self.revision_label)),
            ("Verified", markdown.cell(f"yes ({self.verification})" if self.verified else "no")),
            ("Row counts", "recorded" if self.table_rows is not None else "not recorded"),
        ]
        return markdown.table(("Backup to restore", ""), rows)


def archived_backups(archive: Archive) -> tuple[ArchivedBackup, ...]:
    """Every backup named by a filed record of the archive, oldest first."""
    found = []
    for record in archive.records():
        if record.kind != "summary":
            continue
        try:
            loaded = archive.load_record(record)
        except BadInput:
            continue  # a damaged record: `rollbook archive verify` reports it
        backup = ArchivedBackup.from_record(loaded, record.file)
        if backup is not None:
            found.append(backup)
    return tuple(sorted(found, key=lambda b: b.taken_at))


def find_backup(archive: Archive, ref: str) -> ArchivedBackup:
    """The backup taken by run `ref` (a run id, a unique prefix or tail of one, a record's file name), or recorded
    at path `ref`."""
    ref = ref.strip()
    if not ref:
        raise BadInput("No backup named: pass backup, the run id of the run that took it (the backup runbook "
                       "prints it; `rollbook archive list` lists runs) or the path of its .dump file.")
    backups = archived_backups(archive)
    by_path = [b for b in backups if _same_file(b.path, Path(ref).expanduser())]
    if by_path:
        return by_path[-1]
    # A path that is not a record's (a .json or .ipynb of the archive, named with its folder) names a backup file.
    if ref.endswith(".dump") or ("/" in ref and not ref.endswith(tuple(EXTENSIONS.values()))):
        raise BadInput(f"No record in the archive {archive.root} names the backup file {ref}: rollbook restores only "
                       "backups whose checksum, database and revision it recorded. Give the run id of the run "
                       "that took it, or set ROLLBOOK_ARCHIVE to the archive that holds its record.")
    record = archive.find(ref)
    filed = archive.filed_record(record.run_id)
    backup = ArchivedBackup.from_record(filed, record.file) if filed else None
    if backup is None:
        raise BadInput(f"Run {record.run_id} ({record.runbook}, {record.outcome}) took no backup. Name the run of a "
                       "backup runbook (or of a rollback that backed up); `rollbook archive list` shows them.")
    return backup


@dataclass(frozen=True)
class RestorePoint:
    """The newest verified backup taken before the migrations a plan would undo, or why there is none."""

    database: str
    target: str | None
    backup: ArchivedBackup | None
    reason: str

    def advice(self) -> str:
        """What to do instead of the downgrade, naming the backup."""
        if self.backup is None:
            return (f"Instead of rolling back, restore from a backup taken before the migration ({self.reason}), "
                    "or fix forward with a new migration.")
        return (f"Instead of rolling back, restore the newest verified backup taken before the migration: "
                f"{self.backup.path}, taken {self.backup.taken_at} at revision {self.backup.revision_label} by run "
                f"{self.backup.run_id}. Use the restore runbook (rollbook run restore -r backup {self.backup.run_id}: "
                "first into a new database to compare, then into the database with execute), or fix forward with "
                "a new migration.")

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "target": self.target,
                "backup": self.backup.to_dict() if self.backup else None, "reason": self.reason}

    def to_text(self) -> str:
        return self.advice()

    def _repr_markdown_(self) -> str:
        return markdown.prose(self.advice())


def find_restore_point(
    archive: Archive, plan: DowngradePlan, project: MigrationProject, identity: DatabaseIdentity,
) -> RestorePoint:
    """The newest verified backup of this database whose revision is the plan's target or older.

    "Before the migration" is judged by revision, not by time: a backup at the target (or an ancestor
    of it) holds the data as it was before every migration the plan would undo.
    """
    target = plan.path.target
    mine = [b for b in archived_backups(archive)
            if (b.system_identifier, b.database) == (identity.system_identifier, identity.database)]
    below = [b for b in mine if _at_or_below(project, b.revisions, target)]
    usable = [b for b in below if b.verified and b.path.exists()]  # a file, or a directory-format dump
    where = f"revision {target or 'base'}"
    if usable:
        return RestorePoint(identity.database, target, usable[-1], "")
    if below:
        reason = (f"the archive {archive.root} has {len(below)} backup(s) of {identity.database} at or below {where}, "
                  "but none is both verified and still on disk")
    elif mine:
        reason = (f"the archive {archive.root} has {len(mine)} backup(s) of {identity.database}, all taken after "
                  f"{where}; take one with the backup runbook before each deploy")
    else:
        reason = (f"the archive {archive.root} has no backup of {identity.database}; take one with the backup "
                  "runbook before each deploy")
    return RestorePoint(identity.database, target, None, reason)


def _at_or_below(project: MigrationProject, revisions: tuple[str, ...], target: str | None) -> bool:
    if target is None:
        return not revisions
    if not revisions or not project.has_file(target):
        return False
    below = ancestors(project, target) | {target}
    return all(revision in below for revision in revisions)


def _same_file(recorded: Path, given: Path) -> bool:
    try:
        return recorded.resolve() == given.resolve()
    except OSError:
        return False
