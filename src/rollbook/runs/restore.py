"""One run of the restore runbook: each method is one section of the recovery procedure.

Like the rollback runbook: a dry run unless `execute`, every step recorded as it goes, and a refusal
or failure raises `RunbookStopped` with the result to show. Restoring over the database goes through
the environment's policy (rollbook.recovery.restore_policy.evaluate_restore_policy) and a verified backup of the
database as it is; restoring into a new database changes nothing that exists and needs neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rollbook import markdown
from rollbook.errors import BadInput
from rollbook.outcomes import Outcome
from rollbook.policy.gate import RollbackRequest
from rollbook.project.status import MigrationStatus, read_status
from rollbook.recovery.archived_backups import ArchivedBackup, RecordedBackup, find_backup, take_recorded_backup
from rollbook.recovery.backup_check import BackupCheck, check_backup
from rollbook.recovery.restore import RestoreExecution, restore_backup
from rollbook.recovery.restore_plan import RestorePlan, plan_restore
from rollbook.recovery.restore_policy import RestoreDecision, evaluate_restore_policy
from rollbook.recovery.restore_verification import RestoreVerification, verify_restore
from rollbook.recovery.writes_since_backup import WritesSinceBackup, writes_since_backup
from rollbook.runs.parameters import RestoreParameters
from rollbook.runs.runbook import Runbook, RunbookStopped, RunFacts, recorded


@dataclass(frozen=True)
class StepNote:
    """A step that had nothing to do, and why."""

    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"note": self.text}

    def _repr_markdown_(self) -> str:
        return markdown.prose(self.text)


@dataclass
class RestoreRun(Runbook[RestoreParameters]):
    """The state of one restore run as its sections execute; created by `RestoreRun.start`."""

    name: ClassVar[str] = "restore"
    parameters_type: ClassVar[type[RestoreParameters]] = RestoreParameters
    gated: ClassVar[bool] = True
    moves_database: ClassVar[bool] = True

    source: ArchivedBackup | None = None
    current: MigrationStatus | None = None
    writes: WritesSinceBackup | None = None
    restore_plan: RestorePlan | None = None
    decision: RestoreDecision | None = None
    safety_backup: RecordedBackup | None = None
    execution: RestoreExecution | None = None
    verification: RestoreVerification | None = None

    @classmethod
    def mode(cls, parameters: RestoreParameters) -> str:
        if not parameters.execute:
            return "**DRY RUN**: nothing is restored, no backup is written, no database is created"
        if parameters.restore_into == "database":
            return "**EXECUTE**: this run replaces the database's contents with the backup's"
        return "**EXECUTE**: this run creates a new database from the backup; nothing existing is changed"

    @recorded("backup to restore")
    def check_backup(self) -> BackupCheck:
        """Find the backup's record in the archive; its sha256 must match, and it must be of this database."""
        self.source = find_backup(self.recorder.archive, self.parameters.backup)
        self.recorder.update(restored_backup=self.source.to_dict())
        check = check_backup(self.source, self.context.identity)
        self.recorder.update(backup_check=check.to_dict())
        if not check.passed:
            raise RunbookStopped(f"{' '.join(check.problems)} Nothing was restored; the database was not touched.",
                                 outcome=Outcome.BAD_INPUT, step="backup to restore", result=check)
        return check

    @recorded("current revision")
    def status(self) -> MigrationStatus:
        """Where the database stands now (a database without a version table is shown at no revision)."""
        try:
            self.current = read_status(self.target, self.project)
        except BadInput:
            self.current = MigrationStatus(self.target.redacted, (), self.project.heads(), (), ())
        self.recorder.update(revision_before=list(self.current.current))
        return self.current

    @recorded("writes since the backup")
    def writes_since_backup(self) -> WritesSinceBackup:
        """What changed since the backup: rows written after its write horizon, rows gone, tables added or gone."""
        if self.parameters.restore_into == "new":
            self.writes = WritesSinceBackup("not_checked", "Restoring into a new database overwrites nothing, so "
                                            "nothing written since the backup can be lost.")
        else:
            self.writes = writes_since_backup(self.target, self._source(), self.project)
        self.recorder.update(writes_since_backup=self.writes.to_dict())
        return self.writes

    @recorded("restore plan")
    def plan(self) -> RestorePlan:
        """Where the backup goes, the command, and what the backup does not hold; its hash is what an approver names."""
        self.restore_plan = plan_restore(self.target, self._source(), self.project,
                                         into=self.parameters.restore_into, new_database=self.parameters.new_database)
        self.recorder.update(restore_plan=self.restore_plan.to_dict(), restore_hash=self.restore_plan.restore_hash)
        return self.restore_plan

    @recorded("policy gate")
    def policy_gate(self) -> RestoreDecision | StepNote:
        """Over the database: the environment's rules, each passed, failed or pending; a failed rule stops here."""
        if self.parameters.restore_into == "new":
            return StepNote("No policy gate: a restore into a new database changes nothing that exists.")
        self.decision = self._decide(backup_verified=None)
        self.recorder.update(policy=self.decision.to_dict())
        self.decision.enforce()
        return self.decision

    @recorded("safety backup")
    def backup(self) -> RecordedBackup | StepNote:
        """Over the database: back up the database as it is and verify it, so the restore itself can be undone."""
        if self.parameters.restore_into == "new":
            return StepNote("No backup needed: a restore into a new database overwrites nothing.")
        if not self.parameters.execute:
            return StepNote("Dry run: no backup is written.")
        revisions = self.current.current if self.current else ()
        taken = take_recorded_backup(self.target, self.parameters.backup_dir, revisions=revisions,
                                     verify=self.parameters.verify_backup)
        self.safety_backup = taken
        self.recorder.update(backup=taken.record_facts())
        self.decision = self._decide(backup_verified=taken.verified)
        self.recorder.update(policy=self.decision.to_dict())
        if not taken.verified:
            raise RunbookStopped(
                f"The backup of the database as it is ({taken.backup.path}) could not be verified "
                f"({taken.verification.detail}). No verified backup, no restore over the database: fix the cause and "
                "run again. Nothing was restored.", outcome=Outcome.FAILED, step="safety backup", result=taken)
        self.decision.enforce(final=True)
        return taken

    @recorded("restore")
    def restore(self) -> RestoreExecution | StepNote:
        """pg_restore the backup: into the new database, or over the database in a single transaction."""
        plan = self._plan()
        if not self.parameters.execute:
            return StepNote(f"Dry run: nothing was restored. With execute, this runs: `{plan.command}`")
        if plan.into == "database" and (self.decision is None or not self.decision.allowed
                                        or self.safety_backup is None):
            raise RunbookStopped("A restore over the database runs only after the policy gate allowed it and the "
                                 "safety backup was verified: run the notebook's cells in order.",
                                 outcome=Outcome.BAD_INPUT,
                                 step="restore")
        self.execution = restore_backup(self.target, plan, self.project, writes=self.writes,
                                        accept_writes_since_backup=self.parameters.accept_writes_since_backup,
                                        lock_timeout_ms=self.parameters.lock_timeout_ms)
        self.recorder.update(restore=self.execution.to_dict())
        if plan.into == "database" and self.execution.revisions_after is not None:
            self.recorder.update(revision_after=list(self.execution.revisions_after))
        if not self.execution.succeeded:
            raise RunbookStopped(f"The restore failed: {self.execution.detail}", outcome=Outcome.FAILED, step="restore",
                                 result=self.execution)
        return self.execution

    @recorded("verification")
    def verify(self) -> RestoreVerification | StepNote:
        """The restored database's revision and row counts against those recorded when the backup was taken."""
        if self.execution is None:
            return StepNote("Dry run: nothing was restored, so nothing is verified.")
        self.verification = verify_restore(self.execution.restored, self._source(), self.project)
        self.recorder.update(verification=self.verification.to_dict())
        if not self.verification.passed:
            names = ", ".join(c.name for c in self.verification.failed)
            raise RunbookStopped(
                f"The restore ran, but verification failed ({names}): the restored database does not hold what the "
                "backup's record says it held. Check it before the application uses it.", outcome=Outcome.FAILED,
                step="verification", result=self.verification)
        return self.verification

    def facts(self) -> RunFacts:
        """How the restore ended: restored and verified, or a dry run."""
        plan, source = self._plan(), self._source()
        if self.execution is None:
            outcome, headline = Outcome.DRY_RUN, (f"Dry run complete: restoring {source.path} {_where(plan)} was "
                                            "planned; nothing was changed.")
        else:
            outcome, headline = Outcome.SUCCEEDED, (f"Restored {source.path} (revision {source.revision_label}) "
                                              f"{_where(plan)} and verified.")
        shown = {
            "database": self.context.database,
            "environment": self.context.environment,
            "operator": self.context.operator,
            "approved by": self.parameters.approved_by,
            "ticket": self.parameters.ticket,
            "backup restored": source.to_text(),
            "restored into": plan.destination if plan.into == "database" else
            f"the new database {plan.destination} (at {source.revision_label})",
            "revision before": ", ".join(plan.revisions_now) or "base",
            "revision after": ", ".join(self.execution.revisions_after or ()) or "base"
            if self.execution and plan.into == "database" else ", ".join(plan.revisions_now) or "base",
            "restore hash": plan.restore_hash[:12],
            "policy": self.decision.status if self.decision else "",
            "safety backup": str(self.safety_backup.backup.path) if self.safety_backup else "",
            "verification": ", ".join(f"{c.name} {c.status}" for c in self.verification.checks)
            if self.verification else "",
        }
        return RunFacts(outcome, headline, shown)

    def _decide(self, *, backup_verified: bool | None) -> RestoreDecision:
        p = self.parameters
        request = RollbackRequest(environment=p.environment, operator=p.operator, approved_by=p.approved_by,
                                  approved_plan=p.approved_plan, execute=p.execute, action="restore")
        writes = self.writes or WritesSinceBackup("unknown", "writes since the backup were not checked")
        return evaluate_restore_policy(self.rules, request, self._plan(), writes,
                                       accept_writes_since_backup=p.accept_writes_since_backup,
                                       backup_verified=backup_verified)

    def _source(self) -> ArchivedBackup:
        if self.source is None:
            raise RunbookStopped("No backup checked yet: run the notebook's cells in order.", outcome=Outcome.BAD_INPUT,
                                 step="backup to restore")
        return self.source

    def _plan(self) -> RestorePlan:
        if self.restore_plan is None:
            raise RunbookStopped("No restore plan yet: run the notebook's cells in order.", outcome=Outcome.BAD_INPUT,
                                 step="restore plan")
        return self.restore_plan


def _where(plan: RestorePlan) -> str:
    return f"into the new database {plan.destination}" if plan.into == "new" else f"over {plan.destination}"
