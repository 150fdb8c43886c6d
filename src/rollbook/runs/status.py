"""One run of the status runbook: where the database stands, read through rollbook's own connection, and its record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rollbook.errors import RollbookError
from rollbook.outcomes import Outcome
from rollbook.project.status import MigrationStatus, look_at_status
from rollbook.runs.parameters import StatusParameters
from rollbook.runs.runbook import Runbook, RunFacts, recorded


@dataclass
class StatusRun(Runbook[StatusParameters]):
    """The state of one status run; created by `StatusRun.start`."""

    name: ClassVar[str] = "status"
    parameters_type: ClassVar[type[StatusParameters]] = StatusParameters

    current: MigrationStatus | None = None

    @recorded("current revision")
    def status(self) -> MigrationStatus:
        """The revision(s) in the version table, the heads, pending revisions and missing files."""
        self.current = look_at_status(self.target, self.project)
        if self.current.locked is None:
            # A status run changes nothing: the database is where it was.
            revisions = list(self.current.current)
            self.recorder.update(revision_before=revisions, revision_after=revisions)
        return self.current

    def facts(self) -> RunFacts:
        """Where the database stands, in a line."""
        if self.current is None:
            raise RollbookError("No status yet: run the notebook's cells in order.")
        if self.current.locked is not None:
            return RunFacts(Outcome.UNAVAILABLE, f"Revision unknown: {self.current.locked.described()}.", {
                "database": self.context.database, "revision": "unknown (version table locked)",
                "heads": ", ".join(self.current.heads) or "none"})
        revision = ", ".join(self.current.current) or "base"
        return RunFacts(Outcome.SUCCEEDED, f"The database is at {revision}.", {
            "database": self.context.database, "revision": revision,
            "heads": ", ".join(self.current.heads) or "none"})
