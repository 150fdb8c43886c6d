"""One run of the restore-lost-data runbook: put back, from an at-risk backup, what a downgrade destroyed.

A dry run unless `execute`: the backup's files are checked against its manifest, the database must be
the one it was taken of, every table and column it fills must exist again (re-created by a fix-forward
upgrade) with the saved types, and the environment's policy must allow it
(rollbook.recovery.lost_data_restore_policy); only then, with `execute`, are the values written back and
verified (rollbook.recovery.lost_data_restore), all in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rollbook import markdown
from rollbook.outcomes import Outcome
from rollbook.pg.database import connect
from rollbook.policy.gate import SHORT_HASH, RollbackRequest
from rollbook.project.status import MigrationStatus
from rollbook.recovery.at_risk_backup import AtRiskBackup, load_at_risk_backup
from rollbook.recovery.lost_data_restore import (
    LostDataNotVerified,
    LostDataRestore,
    check_lost_data_targets,
    restore_lost_data,
)
from rollbook.recovery.lost_data_restore_policy import (
    LostDataRestoreDecision,
    evaluate_lost_data_restore_policy,
)
from rollbook.runs.parameters import LostDataRestoreParameters
from rollbook.runs.runbook import Runbook, RunbookStopped, RunFacts, recorded


@dataclass(frozen=True)
class TargetsReady:
    """Every table and column the backup fills exists with the saved type."""

    files: int

    def to_dict(self) -> dict[str, Any]:
        return {"ready": True, "files": self.files}

    def _repr_markdown_(self) -> str:
        return markdown.prose(f"Every table and column of the {self.files} saved file(s) exists with the saved type.")


@dataclass
class LostDataRestoreRun(Runbook[LostDataRestoreParameters]):
    """The state of one restore-lost-data run as its sections execute."""

    name: ClassVar[str] = "restore-lost-data"
    parameters_type: ClassVar[type[LostDataRestoreParameters]] = LostDataRestoreParameters
    gated: ClassVar[bool] = True

    backup: AtRiskBackup | None = None
    current: MigrationStatus | None = None
    decision: LostDataRestoreDecision | None = None
    restored: LostDataRestore | None = None

    @classmethod
    def mode(cls, parameters: LostDataRestoreParameters) -> str:
        if not parameters.execute:
            return "**DRY RUN**: the backup and the targets are checked; nothing is written"
        return "**EXECUTE**: this run writes the saved rows and values back into the database"

    @recorded("at-risk backup")
    def check_backup(self) -> AtRiskBackup:
        """Read the backup's manifest; every file must have its recorded size and sha256, and be of this database."""
        self.backup = load_at_risk_backup(self.parameters.at_risk_backup)
        self.recorder.update(at_risk_backup=self.backup.to_dict())
        identity = self.context.identity
        if (identity.database, identity.system_identifier) != (self.backup.database, self.backup.system_identifier):
            raise RunbookStopped(
                f"The at-risk backup {self.backup.folder} is of database {self.backup.database} (system identifier "
                f"{self.backup.system_identifier}), not of {identity.database} on this server: run this runbook "
                "against the database it was taken of. Nothing was written.", outcome=Outcome.BAD_INPUT,
                step="at-risk backup", result=self.backup)
        return self.backup

    @recorded("current revision")
    def status(self) -> MigrationStatus:
        """Where the database stands now: after a fix-forward, at or past the revision the backup was taken at."""
        self.current = self.revision_before()
        return self.current

    @recorded("targets")
    def check_targets(self) -> TargetsReady:
        """Every table and column the backup fills must exist again, with the type its saved values have."""
        backup = self._backup()
        with connect(self.target) as conn:
            problems = check_lost_data_targets(conn, backup)
        if problems:
            raise RunbookStopped(f"The lost data cannot be put back yet: {'; '.join(problems)}. Nothing was written.",
                                 outcome=Outcome.BAD_INPUT, step="targets")
        return TargetsReady(len(backup.files))

    @recorded("policy gate")
    def policy_gate(self) -> LostDataRestoreDecision:
        """The environment's rules (operator, approver, approved restore hash); a failed rule stops the run here."""
        p = self.parameters
        request = RollbackRequest(environment=p.environment, operator=p.operator, approved_by=p.approved_by,
                                  approved_plan=p.approved_plan, execute=p.execute, action="lost-data restore")
        revisions = self.current.current if self.current else ()
        self.decision = evaluate_lost_data_restore_policy(self.rules, request, self._backup(), revisions)
        self.recorder.update(policy=self.decision.to_dict())
        self.decision.enforce()
        return self.decision

    @recorded("restore")
    def restore(self) -> LostDataRestore:
        """Write the saved data back and compare it with the saved values (counts and checksums), in one transaction."""
        if self.parameters.execute and (self.decision is None or not self.decision.allowed):
            raise RunbookStopped("The lost data is written back only after the policy gate allowed it: run the "
                                 "notebook's cells in order. Nothing was written.", outcome=Outcome.BAD_INPUT,
                                 step="restore")
        try:
            self.restored = restore_lost_data(self.target, self._backup(), execute=self.parameters.execute,
                                              lock_timeout_ms=self.parameters.lock_timeout_ms)
        except LostDataNotVerified as failed:
            raise RunbookStopped(str(failed), outcome=Outcome.FAILED, step="restore") from None
        self.recorder.update(lost_data_restore=self.restored.to_dict())
        return self.restored

    def facts(self) -> RunFacts:
        """How the run ended: the data written back and verified, or a dry run."""
        backup = self._backup()
        restore_hash = self.decision.plan_hash if self.decision else ""
        if self.restored is None or not self.restored.executed:
            outcome, headline = Outcome.DRY_RUN, (f"Dry run complete: the {backup.rows} saved rows of {backup.folder} "
                                                  "can be put back; nothing was written. Restore hash (for approvals): "
                                                  f"{restore_hash}")
        else:
            outcome, headline = Outcome.SUCCEEDED, (f"Put back the data of {backup.folder} and verified it (counts "
                                                    "and checksums equal the saved values).")
        shown = {
            "database": self.context.database,
            "environment": self.context.environment,
            "operator": self.context.operator,
            "approved by": self.parameters.approved_by,
            "ticket": self.parameters.ticket,
            "at-risk backup": f"{backup.folder} (taken {backup.taken_at}, before the downgrade to {backup.target})",
            "revision": ", ".join(self.current.current) if self.current else "",
            "restore hash": restore_hash[:SHORT_HASH],
            "policy": self.decision.status if self.decision else "",
            "restored": "; ".join(f.described() for f in self.restored.files)
            if self.restored and self.restored.executed else "",
        }
        return RunFacts(outcome, headline, shown)

    def _backup(self) -> AtRiskBackup:
        if self.backup is None:
            raise RunbookStopped("No at-risk backup checked yet: run the notebook's cells in order.",
                                 outcome=Outcome.BAD_INPUT, step="at-risk backup")
        return self.backup
