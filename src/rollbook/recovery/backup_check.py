"""Checking a backup before it is restored: its file against its record (sha256), and that it is of this database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollbook import markdown
from rollbook.errors import BadInput
from rollbook.file_digest import path_sha256
from rollbook.pg.identity import DatabaseIdentity
from rollbook.recovery.archived_backups import ArchivedBackup


class BackupRefused(BadInput):
    """The backup may not be restored here: its file changed since it was taken, or it is of another database."""


@dataclass(frozen=True)
class BackupCheck:
    """The backup file against its record (sha256) and against the database it is to be restored for."""

    backup: ArchivedBackup
    sha256_now: str | None
    database: DatabaseIdentity
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def enforce(self) -> None:
        """Raise BackupRefused naming every problem."""
        if self.problems:
            raise BackupRefused(f"{' '.join(self.problems)} Nothing was restored; the database was not touched.")

    def to_dict(self) -> dict[str, Any]:
        return {"backup": self.backup.to_dict(), "sha256_now": self.sha256_now, "passed": self.passed,
                "problems": list(self.problems)}

    def to_text(self) -> str:
        verdict = "passed" if self.passed else "REFUSED"
        return "\n".join([f"Backup check: {verdict}", f"  {self.backup.to_text()}",
                          *[f"  - {problem}" for problem in self.problems]])

    def _repr_markdown_(self) -> str:
        if self.passed:
            verdict = ("**The file is the one recorded** (sha256 matches) and it is a backup of this database "
                       f"(`{markdown.cell(self.database.database)}`, system identifier "
                       f"`{self.database.system_identifier}`).")
        else:
            verdict = "**REFUSED**\n\n" + "\n".join(f"- {markdown.cell(p)}" for p in self.problems)
        return self.backup._repr_markdown_() + "\n\n" + verdict


def check_backup(backup: ArchivedBackup, database: DatabaseIdentity) -> BackupCheck:
    """Hash the file and compare it with its record; check that it is a backup of `database`."""
    problems = []
    try:
        sha256_now: str | None = path_sha256(backup.path)
    except OSError as exc:
        sha256_now = None
        problems.append(f"The backup file {backup.path} cannot be read ({exc.strerror or exc}), so it cannot be "
                        "restored: find the file (it may have been moved or deleted) or restore another backup.")
    if sha256_now is not None and sha256_now != backup.sha256:
        problems.append(
            f"The backup file {backup.path} has sha256 {sha256_now}, but run {backup.run_id} recorded {backup.sha256} "
            "when it took it: the file was changed since (truncated, corrupted or tampered with). Do not restore from "
            "it; restore an older verified backup, or fix forward.")
    if backup.system_identifier != database.system_identifier:
        problems.append(
            f"The backup is of database {backup.database} on the cluster with system identifier "
            f"{backup.system_identifier or '(not recorded)'}, but this database ({database.database}) is on the "
            f"cluster {database.system_identifier}: it is a backup of another database. Name the database it was "
            "taken of.")
    elif backup.database != database.database:
        problems.append(
            f"The backup is of database {backup.database}, not of {database.database} (on the same server): "
            f"restoring it here would replace {database.database}'s data with {backup.database}'s. Name the "
            "database it was taken of.")
    return BackupCheck(backup, sha256_now, database, tuple(problems))
