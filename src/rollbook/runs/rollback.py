"""One run of the rollback runbook: each method is one section of the team's procedure.

The runbook notebook calls these methods in order, one per cell; each returns a result that renders
itself in the notebook. A refusal or a failure raises `RunbookStopped`, which carries the result to
show, so the executed notebook ends at the step that stopped it and says why and what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.execution.diagnosis import diagnose_failure
from rollbook.execution.diagnosis_model import Diagnosis
from rollbook.execution.downgrade import DowngradeExecution, execute_downgrade
from rollbook.execution.expected_schema import check_schema_matches
from rollbook.execution.health import check_health
from rollbook.execution.step_timings import step_times
from rollbook.execution.verification import (
    RollbackVerification,
    VerificationCheck,
    critical_tables_check,
    health_verification,
    schema_detail,
)
from rollbook.outcomes import Outcome
from rollbook.pg.database import connect
from rollbook.pg.table_counts import TableRowCounts, compare_counts, count_table_rows
from rollbook.planning.downgrade_path import DowngradePath, resolve_downgrade_path
from rollbook.planning.plan import DowngradePlan, plan_downgrade
from rollbook.policy.gate import INSTEAD, PolicyDecision, RollbackRequest, chosen_backup_strategy, evaluate_policy
from rollbook.project.migrations import RevisionInfo
from rollbook.project.status import MigrationStatus, read_current_revisions
from rollbook.records.run_summary import step_times_lines
from rollbook.recovery.archived_backups import RecordedBackup, find_restore_point
from rollbook.recovery.backup import Backup
from rollbook.recovery.backup_strategy import StrategyBackup, take_backup_with
from rollbook.recovery.copy_cost import CopyCost, measure_copy_cost, refuse_impossible_copy
from rollbook.recovery.dress_rehearsal import DressRehearsal, copy_within_budget, not_rehearsed, rehearse_on_copy
from rollbook.runs.parameters import RollbackParameters
from rollbook.runs.plan import plan_facts
from rollbook.runs.runbook import Runbook, RunbookStopped, RunFacts, recorded


@dataclass(frozen=True)
class MigrationFiles:
    """The migration files the downgrade would run, as a reviewer reads them."""

    path: DowngradePath
    files: tuple[tuple[RevisionInfo, str], ...]

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.path.target_label, "files": [info.to_dict() for info, _ in self.files]}

    def _repr_markdown_(self) -> str:
        if not self.files:
            return f"The database is already at `{self.path.target_label}`: no migration file to review."
        parts = [f"The downgrade from `{self.path.start}` to `{self.path.target_label}` runs "
                 f"{len(self.files)} migration file(s), newest first:"]
        for info, source in self.files:
            parts += ["", f"**{info.revision}** {markdown.cell(info.message)}: `{info.file}`, "
                          f"sha256 `{info.sha256}`", "", "```python", source.rstrip(), "```"]
        return "\n".join(parts)


@dataclass(frozen=True)
class BackupReport:
    """The safety net taken before any change, with the strategy the policy chose, and the policy once known."""

    taken: StrategyBackup | None
    policy: PolicyDecision | None
    skipped: str = ""

    @property
    def backup(self) -> Backup | None:
        """The dump a restore puts back (full, parallel); None for a restore point or when nothing was taken."""
        return self.taken.backup if self.taken else None

    def to_dict(self) -> dict[str, Any]:
        dump = self.taken.dump if self.taken else None
        return {
            "skipped": self.skipped,
            "strategy": self.taken.strategy if self.taken else None,
            "backup": dump.record_facts() if dump else None,
            "verification": dump.verification.to_dict() if dump else None,
            "wal_restore_point": self.taken.wal_point.to_dict() if self.taken and self.taken.wal_point else None,
            "at_risk_backup": self.taken.at_risk.to_dict() if self.taken and self.taken.at_risk else None,
            "policy": self.policy.to_dict() if self.policy else None,
        }

    def _repr_markdown_(self) -> str:
        if self.skipped:
            return f"**No backup taken**: {markdown.cell(self.skipped)}"
        parts = [self.taken._repr_markdown_()] if self.taken else []
        if self.policy:
            parts.append(self.policy._repr_markdown_())
        return "\n\n".join(parts)


@dataclass(frozen=True)
class DowngradeReport:
    """The downgrade as executed (or, in a dry run, as it would be), and a diagnosis if it failed."""

    execution: DowngradeExecution | None
    skipped: str = ""
    sql: str = ""
    diagnosis: Diagnosis | None = None
    next_steps: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "execution": self.execution.to_dict() if self.execution else None,
            "skipped": self.skipped,
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
            "next_steps": list(self.next_steps),
        }

    def _repr_markdown_(self) -> str:
        if self.execution is None:
            text = f"**Not executed**: {markdown.prose(self.skipped)}."
            if self.sql:
                text += (" These statements would run, one transaction per revision:"
                         f"\n\n```sql\n{self.sql.rstrip()}\n```")
            return text
        parts = [self.execution._repr_markdown_()]
        if self.diagnosis:
            parts.append(self.diagnosis._repr_markdown_())
        if self.next_steps:
            parts.append("**What to do next**\n\n" + "\n".join(f"- {markdown.cell(s)}" for s in self.next_steps))
        return "\n\n".join(parts)


@dataclass
class RollbackRun(Runbook[RollbackParameters]):
    """The state of one rollback run as its sections execute; created by `RollbackRun.start`."""

    name: ClassVar[str] = "rollback"
    parameters_type: ClassVar[type[RollbackParameters]] = RollbackParameters
    gated: ClassVar[bool] = True
    moves_database: ClassVar[bool] = True

    current: MigrationStatus | None = None
    files: MigrationFiles | None = None
    downgrade_plan: DowngradePlan | None = None
    decision: PolicyDecision | None = None
    counts_before: TableRowCounts | None = None
    backup_report: BackupReport | None = None
    downgrade_report: DowngradeReport | None = None
    verification: RollbackVerification | None = None
    copy_cost: CopyCost | None = None
    rehearsal: DressRehearsal | None = None

    @classmethod
    def mode(cls, parameters: RollbackParameters) -> str:
        if not parameters.execute:
            return "**DRY RUN**: nothing is changed, no backup is written, no lock is taken"
        return "**EXECUTE**: this run changes the database"

    @classmethod
    def makes_scratch_databases(cls, parameters: RollbackParameters) -> bool:
        # An executed run restores its backup (verify_backup restore, rehearse copy) and builds expected schemas.
        return parameters.execute

    @recorded("current revision")
    def status(self) -> MigrationStatus:
        """Check the current revision, read through rollbook's own connection."""
        self.current = self.revision_before()
        return self.current

    @recorded("migration files")
    def migration_files(self) -> MigrationFiles:
        """Resolve the downgrade path and show each migration file it would run, with its sha256."""
        with connect(self.target) as conn:
            current = read_current_revisions(conn, self.project)
        path = resolve_downgrade_path(self.project, current, self.parameters.target_revision)
        files = tuple((self.project.info(rev), Path(self.project.script(rev).path).read_text()) for rev in path.steps)
        self.files = MigrationFiles(path, files)
        self.recorder.update(migration_files=[info.to_dict() for info, _ in files])
        return self.files

    @recorded("plan")
    def plan(self) -> DowngradePlan:
        """Assess the data-loss risk of every step and count, read-only, the rows it would destroy."""
        plan = plan_downgrade(self.target, self.project, self.parameters.target_revision,
                              statement_timeout_ms=self.parameters.statement_timeout_ms)
        self.downgrade_plan = plan
        self.recorder.update(**plan_facts(plan))
        return plan

    @recorded("policy gate")
    def policy_gate(self) -> PolicyDecision:
        """Apply the environment's rollback policy; a failed rule stops the run here."""
        self.decision = evaluate_policy(self.rules, self._request(), self._plan(), backup_verified=None)
        self.recorder.update(policy=self.decision.to_dict())
        self.decision.enforce(instead=self._instead())
        return self.decision

    @recorded("critical tables")
    def count_critical_tables(self) -> TableRowCounts:
        """Count the rows of the critical tables (default: the tables the plan touches) before any change."""
        self.counts_before = count_table_rows(self.target, self._critical_tables(),
                                              statement_timeout_ms=self.parameters.statement_timeout_ms)
        self.recorder.update(critical_tables_before=self.counts_before.to_dict())
        return self.counts_before

    @recorded("backup")
    def backup(self) -> BackupReport:
        """Take the safety net with the chosen backup strategy and verify it; no verified backup, no rollback."""
        plan = self._plan()
        if not self.parameters.execute:
            self.backup_report = BackupReport(None, None, "dry run: no backup is written")
            return self.backup_report
        if not plan.steps:
            self.backup_report = BackupReport(None, None, "nothing to roll back")
            return self.backup_report
        strategy = chosen_backup_strategy(self.rules, self._request(), plan)
        if self.parameters.rehearse == "copy":
            if strategy not in ("full", "parallel"):
                raise BadInput(f"rehearse copy restores this run's dump into a copy, and the {strategy} strategy "
                               "writes no dump: pass -p backup_strategy full (or parallel), or -p rehearse none. "
                               "Nothing was changed.")
            # Refused here, before pg_dump writes anything: a copy the server cannot hold or the role cannot create.
            self.copy_cost = measure_copy_cost(self.target, plan)
            refuse_impossible_copy(self.copy_cost)
        # A dump carries row counts and the write horizon, as the backup runbook records them: restoring it later
        # can then tell whether anything was written since, instead of always asking for accept_writes_since_backup.
        # With a rehearsal the backup is restored into the copy next, its rows compared: not restored twice.
        verify = "list" if self.parameters.rehearse == "copy" else self.parameters.verify_backup
        taken = take_backup_with(
            strategy, self.target, self.parameters.backup_dir, plan=plan, verify=verify, run_id=self.recorder.run_id,
            archive_wait_seconds=self.rules.for_environment(self.parameters.environment).pitr_archive_wait_seconds)
        decision = evaluate_policy(self.rules, self._request(), plan, backup_verified=taken.verified)
        self.decision = decision
        self.backup_report = BackupReport(taken, decision)
        self.recorder.update(**taken.record_facts(), policy=decision.to_dict())
        if not taken.verified:
            raise RunbookStopped(
                f"The {strategy} backup {taken.where()} could not be verified ({taken.detail}). No verified backup, "
                "no rollback: fix the cause and run again. Nothing was changed.",
                outcome=Outcome.FAILED, step="backup", result=self.backup_report)
        if not decision.allowed:
            raise RunbookStopped(decision.refusal_message() or decision.headline(), outcome=Outcome.REFUSED,
                                 step="policy gate", result=self.backup_report)
        return self.backup_report

    @recorded("rehearsal")
    def rehearse(self) -> DressRehearsal:
        """With rehearse copy: run the downgrade first on a copy restored from the backup; a failure stops the run."""
        plan, p = self._plan(), self.parameters
        budget = p.rehearsal_budget_ms / 1000
        if p.rehearse != "copy" or not plan.steps:
            why = ("not asked for (rehearse none): the plan's estimates stand alone" if p.rehearse != "copy"
                   else "nothing to roll back")
            self.rehearsal = not_rehearsed(why, budget)
            self.recorder.update(rehearsal=self.rehearsal.to_dict())
            return self.rehearsal
        if not p.execute:
            # Read-only: what an executed run would find, so the approver sees it before approving.
            cost = measure_copy_cost(self.target, plan)
            within = None if cost.refusal() else copy_within_budget(self.target, self.project, plan, cost, budget)
            would = cost.refusal() or (
                "the copy fits rehearsal_budget" if within is None else
                "the copy would not fit rehearsal_budget: the estimates would stand alone" if isinstance(within, str)
                else f"the whole copy would not fit rehearsal_budget, a tables-only copy would: {within.described()}")
            self.rehearsal = not_rehearsed(f"dry run: no copy is made. An executed run: {would}", budget, cost)
            self.recorder.update(rehearsal=self.rehearsal.to_dict())
            return self.rehearsal
        # The dump this run took (rehearse copy is refused up front for a strategy without one).
        taken = self.backup_report.taken.dump if self.backup_report and self.backup_report.taken else None
        if taken is None or self.copy_cost is None or self.decision is None or not self.decision.allowed:
            raise RunbookStopped("The rehearsal runs only after the policy gate allowed the rollback and the backup "
                                 "was taken; run the notebook's cells in order.", outcome=Outcome.BAD_INPUT,
                                 step="rehearsal")
        self.rehearsal = rehearse_on_copy(self.target, self.project, plan, taken.backup, self.copy_cost,
                                          lock_timeout_ms=p.lock_timeout_ms,
                                          statement_timeout_ms=p.statement_timeout_ms, budget_ms=p.rehearsal_budget_ms)
        rehearsal = self.rehearsal
        timings = step_times(plan, rehearsal=rehearsal.execution)
        facts: dict[str, Any] = {"rehearsal": rehearsal.to_dict(), "step_timings": [t.model_dump() for t in timings]}
        if rehearsal.restore is not None and rehearsal.restore.passed:
            # The rehearsal's restore is the backup's restore test: the record says it was verified that way.
            facts["backup"] = RecordedBackup(taken.backup, rehearsal.restore, taken.write_horizon).record_facts()
        self.recorder.update(**facts)
        if rehearsal.status == "too_big" and self.rules.for_environment(p.environment).require_rehearsal:
            raise RunbookStopped(
                f"The {p.environment} policy requires a rehearsal, but {rehearsal.summary} Nothing was changed.",
                outcome=Outcome.REFUSED, step="rehearsal", result=rehearsal)
        if rehearsal.status in ("failed", "exceeded_budget"):
            diagnosis = f" {rehearsal.diagnosis.summary}" if rehearsal.diagnosis else ""
            copy = ("The copy was dropped." if rehearsal.copy_dropped else
                    "The copy could not be confirmed dropped: look for a rollbook_scratch_ database and drop it.")
            raise RunbookStopped(
                f"The rehearsal on a copy of the database failed: {rehearsal.summary}.{diagnosis} The real downgrade "
                f"was not started: the database is as it was. {copy}",
                outcome=Outcome.FAILED, step="rehearsal", result=rehearsal)
        return rehearsal

    @recorded("downgrade")
    def downgrade(self) -> DowngradeReport:
        """Run the downgrade under the rollback lock, one transaction per migration, every statement timed."""
        plan = self._plan()
        if not plan.steps:
            self.downgrade_report = DowngradeReport(None, f"the database is already at {plan.path.target_label}")
            return self.downgrade_report
        if not self.parameters.execute:
            self.downgrade_report = DowngradeReport(None, "dry run", plan.downgrade_sql_or_why_not())
            return self.downgrade_report
        if self.decision is None or not self.decision.allowed or self.backup_report is None:
            raise RunbookStopped("The downgrade runs only after the policy gate allowed it and the backup was "
                                 "verified; run the notebook's cells in order.", outcome=Outcome.BAD_INPUT,
                                 step="downgrade")
        if self.parameters.rehearse == "copy" and (self.rehearsal is None or self.rehearsal.status
                                                   not in ("passed", "too_big")):
            raise RunbookStopped("With rehearse copy the downgrade runs only after the rehearsal on the copy passed; "
                                 "run the notebook's cells in order.", outcome=Outcome.BAD_INPUT, step="downgrade")
        execution = execute_downgrade(self.target, self.project, plan,
                                      lock_timeout_ms=self.parameters.lock_timeout_ms,
                                      statement_timeout_ms=self.parameters.statement_timeout_ms)
        timings = step_times(plan, rehearsal=self.rehearsal.execution if self.rehearsal else None, real=execution)
        self.recorder.update(revision_after=list(execution.revisions_after), downgrade=execution.to_dict(),
                             step_timings=[t.model_dump() for t in timings])
        if execution.succeeded:
            self.downgrade_report = DowngradeReport(execution)
            return self.downgrade_report
        failed = execution.failed_step
        step = next((s for s in plan.steps if failed and s.revision.revision == failed.revision), None)
        diagnosis = diagnose_failure(self.target, execution.failure or RollbookError("unknown failure"),
                                     step=step, statement=execution.failed_statement, project=self.project,
                                     left_changed=failed.left_changed if failed else None)
        self.downgrade_report = DowngradeReport(execution, diagnosis=diagnosis,
                                                next_steps=self._after_failure(execution))
        self.recorder.update(diagnosis=diagnosis.to_dict())
        raise RunbookStopped(
            f"The downgrade failed at {failed.revision if failed else 'an unknown step'}: "
            f"{failed.error if failed else execution.failure}. {' '.join(self.downgrade_report.next_steps)}",
            outcome=Outcome.FAILED, step="downgrade", result=self.downgrade_report)

    @recorded("verification")
    def verify(self) -> RollbackVerification:
        """Check the revision, the application's health, the schema and the critical tables."""
        plan = self._plan()
        if not self.parameters.execute:
            self.verification = RollbackVerification(tuple(
                VerificationCheck(name, "not_checked", "dry run: nothing was changed")
                for name in ("revision", "application health", "schema", "critical tables")))
            return self.verification
        with connect(self.target) as conn:
            now = read_current_revisions(conn, self.project)
        expected = () if plan.path.target is None else (plan.path.target,)
        revision = VerificationCheck(
            "revision", "passed" if set(now) == set(expected) else "failed",
            f"the database is at {', '.join(now) or 'base'}; the target is {plan.path.target_label}")
        health = health_verification(check_health(self.parameters.health_url))
        execution = self.downgrade_report.execution if self.downgrade_report else None
        # Against the schema before the rollback: drift that was already there is named, not blamed on it.
        schema = check_schema_matches(self.target, self.project, plan.path.target,
                                      before=execution.schema_before if execution else None,
                                      start=plan.path.start)
        after = count_table_rows(self.target, self._critical_tables(),
                                 statement_timeout_ms=self.parameters.statement_timeout_ms)
        tables = critical_tables_check(self.counts_before, after, plan)
        self.verification = RollbackVerification(
            (revision, health, VerificationCheck("schema", schema.status, schema_detail(schema)), tables),
            compare_counts(self.counts_before, after) if self.counts_before else "", schema)
        self.recorder.update(revision_after=list(now), verification=self.verification.to_dict(),
                             critical_tables_after=after.to_dict())
        if self.verification.failed:
            names = ", ".join(c.name for c in self.verification.failed)
            raise RunbookStopped(
                f"The downgrade ran, but verification failed ({names}). If the application is broken, restore "
                f"the backup taken in this run ({self._restore_hint()}) now, then fix forward with a new "
                "migration instead of rolling back again.",
                outcome=Outcome.FAILED, step="verification", result=self.verification)
        return self.verification

    def facts(self) -> RunFacts:
        """How the rollback ended: succeeded (verified or not), a dry run, or nothing to do."""
        plan = self._plan()
        execution = self.downgrade_report.execution if self.downgrade_report else None
        if not plan.steps:
            outcome = Outcome.DRY_RUN if not self.parameters.execute else Outcome.SUCCEEDED
            headline = f"Nothing to do: the database is already at {plan.path.target_label}."
        elif not self.parameters.execute:
            # In a dry run the backup rule stays pending: no rule failed, but the gate has not allowed anything.
            outcome, headline = Outcome.DRY_RUN, (f"Dry run complete: a rollback to {plan.path.target_label} was "
                                            "planned and no rule of the policy gate failed (the backup rule is checked "
                                            "only when a run executes); nothing was changed.")
        elif self.verification is not None and not self.verification.passed:
            outcome, headline = Outcome.SUCCEEDED_UNVERIFIED, (
                f"Rolled back {plan.path.start} -> {plan.path.target_label}, not fully verified: "
                f"{self.verification.unverified_text()}.")
        else:
            outcome, headline = Outcome.SUCCEEDED, (
                f"Rolled back {plan.path.start} -> {plan.path.target_label} and verified.")
        taken = self.backup_report.taken if self.backup_report else None
        shown = {
            "database": self.context.database,
            "environment": self.context.environment,
            "operator": self.context.operator,
            "approved by": self.parameters.approved_by,
            "ticket": self.parameters.ticket,
            "revision before": ", ".join(plan.path.current),
            "revision after": ", ".join(execution.revisions_after) if execution else ", ".join(plan.path.current),
            "plan": f"{plan.plan_hash[:12]} ({plan.verdict.code})",
            "policy": self.decision.status if self.decision else "",
            "backup": f"{taken.strategy}: {taken.where()}" if taken else "",
            "verification": ", ".join(f"{c.name} {c.status}" for c in self.verification.checks)
            if self.verification else "",
            "rehearsal": f"{self.rehearsal.status}: {self.rehearsal.summary}" if self.rehearsal else "",
            "step times": "; ".join(step_times_lines(step_times(
                plan, rehearsal=self.rehearsal.execution if self.rehearsal else None, real=execution))),
            "started": self.context.started_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
        return RunFacts(outcome, headline, shown)

    def _plan(self) -> DowngradePlan:
        if self.downgrade_plan is None:
            raise RollbookError("No plan yet: run the notebook's cells in order (the plan comes first).")
        return self.downgrade_plan

    def _request(self) -> RollbackRequest:
        p = self.parameters
        return RollbackRequest(environment=p.environment, operator=p.operator, approved_by=p.approved_by,
                               approved_plan=p.approved_plan, deployed_at=p.deployed_at,
                               accept_data_loss=p.accept_data_loss, execute=p.execute,
                               backup_strategy=p.backup_strategy, rehearse=p.rehearse)

    def _instead(self) -> str:
        """What to do instead of a refused rollback; a plan that says "restore from backup" names the backup."""
        plan = self._plan()
        if not self.decision or not self.decision.refused or plan.verdict.code != "do_not_downgrade":
            return INSTEAD
        try:
            point = find_restore_point(self.recorder.archive, plan, self.project, self.context.identity)
        except RollbookError:
            return INSTEAD  # an unreadable archive must not hide the refusal itself
        self.recorder.update(restore_point=point.to_dict())
        return point.advice()

    def _critical_tables(self) -> tuple[str, ...]:
        if self.parameters.critical_tables:
            return self.parameters.critical_tables
        plan = self._plan()
        return tuple(dict.fromkeys(str(t.table) for t in plan.tables if t.exists))

    def _restore_hint(self) -> str:
        taken = self.backup_report.taken if self.backup_report else None
        point = taken.wal_point if taken else None
        if point is not None:
            settings = ", ".join(f"{k} = '{v}'" for k, v in point.recovery_settings().items())
            return (f"restore the cluster to the restore point {point.name} with your archiving tool: a base backup "
                    f"taken before it, your restore_command, recovery.signal and {settings} (this run's record "
                    "keeps them under wal_restore_point)")
        backup = taken.backup if taken else None
        if backup is None:
            return "no backup was taken"
        libpq_url = self.target.libpq_url_without_secrets
        # No opt-in is pre-filled: the restore runbook refuses to undo rows written since the backup unless the
        # person restoring decides that losing them is intended.
        return (f"rollbook run restore -r backup {self.recorder.run_id} -p restore_into database --execute (it "
                "refuses if rows were written since the backup; accept_writes_since_backup overrides that, and "
                "undoes those writes), or by hand: pg_restore --clean --if-exists "
                f"--single-transaction -d '{libpq_url}' {backup.path}")

    def _after_failure(self, execution: DowngradeExecution) -> tuple[str, ...]:
        at = ", ".join(execution.revisions_after) or "base"
        failed = execution.failed_step
        left = failed.left_changed if failed else None
        if left is None:
            state = ("rollbook could not tell what the failed step left changed: check by hand before anything "
                     "else; earlier steps stay done.")
        else:
            state = f"{left.describe()} Earlier steps stay done."
        return (
            f"The database is at {at} (its version table says so). {state}",
            "Retry: fix the cause named above, plan again from here and re-run" + (
                "." if left is not None and left.rolled_back else
                ", but only once what the failed step left changed is restored or finished by hand."),
            f"Restore: put the database back as it was before this run: {self._restore_hint()}.",
            "Fix forward: leave the database at this revision and ship a new migration that repairs the problem.",
        )
