"""One run of the pre-deploy backup runbook: the revision, a verified backup with row counts, and its record.

The record's summary carries every fact a later restore checks (file, sha256, database and cluster,
revision, row counts, write horizon), so the archive can name this backup when a plan says "do not
downgrade: restore from backup", and the restore runbook can refuse a file that changed since.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rollbook import markdown
from rollbook.outcomes import Outcome
from rollbook.project.status import MigrationStatus, read_status
from rollbook.recovery.archived_backups import RecordedBackup, take_recorded_backup
from rollbook.runs.parameters import BackupParameters
from rollbook.runs.runbook import Runbook, RunbookStopped, RunFacts, recorded


@dataclass
class BackupRun(Runbook[BackupParameters]):
    """The state of one backup run as its sections execute; created by `BackupRun.start`."""

    name: ClassVar[str] = "backup"
    parameters_type: ClassVar[type[BackupParameters]] = BackupParameters
    moves_database: ClassVar[bool] = True

    current: MigrationStatus | None = None
    taken: RecordedBackup | None = None

    @classmethod
    def mode(cls, parameters: BackupParameters) -> str:
        return "a backup is written; the database is only read"

    @classmethod
    def makes_scratch_databases(cls, parameters: BackupParameters) -> bool:
        return parameters.verify_backup == "restore"

    @recorded("current revision")
    def status(self) -> MigrationStatus:
        """The revision the backup will be taken at, read through rollbook's own connection."""
        self.current = self.revision_before()
        return self.current

    @recorded("backup")
    def backup(self) -> RecordedBackup:
        """pg_dump with exact row counts in the same snapshot, then verify it; an unverified backup fails the run."""
        revisions = self.current.current if self.current else read_status(self.target, self.project).current
        self.taken = take_recorded_backup(self.target, self.parameters.backup_dir, revisions=revisions,
                                          verify=self.parameters.verify_backup)
        self.recorder.update(backup=self.taken.record_facts())
        if not self.taken.verified:
            raise RunbookStopped(
                f"The backup {self.taken.backup.path} could not be verified ({self.taken.verification.detail}). Do "
                "not deploy on the strength of it: fix the cause and take the backup again. The archive will not "
                "offer it for a restore.", outcome=Outcome.FAILED, step="backup", result=self.taken)
        return self.taken

    def facts(self) -> RunFacts:
        """The backup taken: where, at which revision, how many rows, and how to restore it."""
        if self.taken is None:
            raise RunbookStopped("No backup was taken: run the notebook's cells in order.", outcome=Outcome.BAD_INPUT,
                                 step="summary")
        backup = self.taken.backup
        revision = ", ".join(backup.revisions) or "base"
        headline = (f"Backed up {backup.identity.database} at revision {revision} to {backup.path}, verified by "
                    f"{self.taken.verification.method}.")
        shown = {
            "database": self.context.database,
            "operator": self.context.operator,
            "ticket": self.parameters.ticket,
            "revision": revision,
            "backup": f"{backup.path} ({backup.size_bytes} bytes, sha256 {backup.sha256[:12]})",
            "rows": ", ".join(f"{table} {rows}" for table, rows in backup.table_rows) or "(no tables)",
            "write horizon": self.taken.write_horizon,
            "restore it with": markdown.code(f"rollbook run restore -r backup {self.recorder.run_id}"),
        }
        return RunFacts(Outcome.SUCCEEDED, headline, shown)
