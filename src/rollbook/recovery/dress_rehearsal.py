"""The dress rehearsal of a rollback: the exact downgrade run first on a copy restored from the run's backup.

The backup is restored into a new database on the same server (its rows compared with the counts taken
at backup time: the rehearsal is also the backup's restore test), then the plan's downgrade runs there
through the same code as the real one (`execute_downgrade`: the project's env.py, the advisory lock,
the timeouts). What it shows: each step's measured time against the plan's estimate, the rows actually
lost or changed against the plan's counts (the rollback test's check, rollbook.recovery.rehearsal_rows),
and the schema after it against the target's. A rehearsal that fails carries the diagnosis of the
failure, made on the copy, where the real run would have failed the same way.

The copy is dropped in every outcome: on success, on failure, and when the run is stopped (the
kernel's KeyboardInterrupt unwinds through `scratch_database`, whose DROP ... WITH (FORCE) ends the
copy's sessions). Only a kernel killed outright (SIGKILL) leaves it; the next run that makes scratch databases
drops it (rollbook.pg.stale_scratch).

No other session connects to the copy, so its steps never wait for a lock: the rehearsal measures the
work; the real run's measured time adds any wait for the locks production's sessions hold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Literal

import psycopg

from rollbook import markdown
from rollbook.durations import duration_text
from rollbook.errors import RollbookError
from rollbook.execution.diagnosis import diagnose_failure
from rollbook.execution.diagnosis_model import Diagnosis
from rollbook.execution.downgrade import DowngradeExecution, execute_downgrade
from rollbook.execution.expected_schema import SchemaCheck, check_schema_matches
from rollbook.execution.step_timings import step_times, step_times_table
from rollbook.execution.verification import schema_detail
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.scratch import scratch_database
from rollbook.planning.plan import DowngradePlan
from rollbook.project.migrations import MigrationProject
from rollbook.recovery.backup import Backup
from rollbook.recovery.backup_verification import BackupVerification, verify_by_restore_into
from rollbook.recovery.copy_cost import CopyCost
from rollbook.recovery.rehearsal_report import StepResult
from rollbook.recovery.rehearsal_rows import check_predictions, table_data
from rollbook.recovery.tables_only_copy import CANNOT_PROVE, TablesOnlyCopy, plan_tables_only_copy

RehearsalStatus = Literal["passed", "failed", "exceeded_budget", "too_big", "not_run"]


@dataclass(frozen=True)
class DressRehearsal:
    """How the downgrade went on a restored copy, or why it was not rehearsed; `passed` lets the real one run."""

    status: RehearsalStatus
    summary: str
    budget_seconds: float
    cost: CopyCost | None = None
    restore: BackupVerification | None = None
    execution: DowngradeExecution | None = None
    rows: StepResult | None = None
    schema: SchemaCheck | None = None
    diagnosis: Diagnosis | None = None
    seconds: float = 0.0
    # Whether the copy is known gone: checked in pg_database after it was dropped (None: no copy was made).
    copy_dropped: bool | None = None
    plan: DowngradePlan | None = None
    # The whole copy did not fit the budget: the rows of only these tables were restored (None: the whole copy).
    tables_only: TablesOnlyCopy | None = None

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status, "summary": self.summary, "budget_seconds": self.budget_seconds,
            "seconds": round(self.seconds, 3), "copy_dropped": self.copy_dropped,
            "copy": "tables-only" if self.tables_only else "whole",
            "tables_only": self.tables_only.to_dict() if self.tables_only else None,
            "cost": self.cost.to_dict() if self.cost else None,
            "restore": self.restore.to_dict() if self.restore else None,
            "downgrade": self.execution.to_dict() if self.execution else None,
            "rows": self.rows.to_dict() if self.rows else None,
            "schema": self.schema.to_dict() if self.schema else None,
            "diagnosis": self.diagnosis.to_dict() if self.diagnosis else None,
        }

    def _repr_markdown_(self) -> str:
        word = {"passed": "passed", "failed": "FAILED", "exceeded_budget": "STOPPED (over budget)",
                "too_big": "not made", "not_run": "not run"}[self.status]
        parts = [f"**Dress rehearsal {word}**: {markdown.prose(self.summary)}"]
        if self.cost:
            parts.append(f"Copy: {markdown.prose(self.cost.described())}.")
        if self.plan is not None and self.execution is not None:
            parts.append("Each step on the copy against the plan's estimate, with the part of it spent waiting for "
                         "locks (no other session should use the copy):\n\n" + step_times_table(step_times(self.plan,
                                                                                          rehearsal=self.execution)))
        if self.rows:
            parts.append(f"Rows against the plan's counts: **{self.rows.status}**, {markdown.prose(self.rows.detail)}"
                         + "".join(f"\n- {markdown.prose(line)}" for line in self.rows.differences))
        if self.schema:
            parts.append(f"Schema after it against the target's: **{self.schema.status}**, "
                         f"{markdown.prose(schema_detail(self.schema))}")
        if self.diagnosis:
            parts.append(self.diagnosis._repr_markdown_())
        if self.copy_dropped is not None:
            parts.append("The copy was dropped afterwards." if self.copy_dropped
                         else "**The copy could not be confirmed dropped**: look for a `rollbook_scratch_` database.")
        return "\n\n".join(parts)


def not_rehearsed(why: str, budget_seconds: float, cost: CopyCost | None = None,
                  status: RehearsalStatus = "not_run") -> DressRehearsal:
    """No rehearsal, and why: not asked for, a dry run, nothing to undo, or a copy too big for the budget."""
    return DressRehearsal(status, why, budget_seconds, cost)


def copy_within_budget(target: DatabaseTarget, project: MigrationProject, plan: DowngradePlan, cost: CopyCost,
                       budget_seconds: float) -> TablesOnlyCopy | str | None:
    """The copy a rehearsal makes within the budget: None for the whole one, else a tables-only one (read-only);
    a str says why neither fits."""
    if cost.fits_in(budget_seconds):
        return None
    smaller = plan_tables_only_copy(target, project, plan, cost)
    if isinstance(smaller, TablesOnlyCopy) and smaller.fits_in(budget_seconds):
        return smaller
    why = smaller if isinstance(smaller, str) else f"nor would a tables-only copy ({smaller.described()})"
    return (f"the copy ({cost.described()}) would take longer to restore than rehearsal_budget "
            f"({duration_text(budget_seconds)}) allows, {why}: not rehearsed, and the plan's estimates stand alone. "
            "Raise rehearsal_budget to rehearse anyway.")


def rehearse_on_copy(
    target: DatabaseTarget, project: MigrationProject, plan: DowngradePlan, backup: Backup, cost: CopyCost, *,
    lock_timeout_ms: int, statement_timeout_ms: int, budget_ms: int,
) -> DressRehearsal:
    """Restore `backup` into a new database next to `target`, run the plan's downgrade there, check it, drop it.

    The whole rehearsal must end within `budget_ms`: pg_restore is stopped when it runs out, and every
    statement of the downgrade is given at most what is left of it.
    """
    budget = budget_ms / 1000
    tables_only = copy_within_budget(target, project, plan, cost, budget)
    if isinstance(tables_only, str):
        return not_rehearsed(tables_only, budget, cost, "too_big")
    started = time.monotonic()
    with scratch_database(target) as copy:
        rehearsal = _rehearse(copy, project, plan, backup, cost, started, budget, tables_only,
                              lock_timeout_ms=lock_timeout_ms, statement_timeout_ms=statement_timeout_ms)
    return replace(rehearsal, seconds=time.monotonic() - started, copy_dropped=_gone(target, copy.database))


def _rehearse(copy: DatabaseTarget, project: MigrationProject, plan: DowngradePlan, backup: Backup, cost: CopyCost,
              started: float, budget: float, tables_only: TablesOnlyCopy | None, *, lock_timeout_ms: int,
              statement_timeout_ms: int) -> DressRehearsal:
    def ended(status: RehearsalStatus, summary: str, **found: Any) -> DressRehearsal:
        if tables_only:
            summary = (f"{summary}. On a tables-only copy (the whole copy would not fit rehearsal_budget): "
                       f"{tables_only.described()}; it cannot show {CANNOT_PROVE}")
        return DressRehearsal(status, summary, budget, cost, plan=plan, tables_only=tables_only, **found)

    restore = verify_by_restore_into(backup, copy, timeout_seconds=budget,
                                     rows_of=frozenset(tables_only.tables) if tables_only else None)
    if not restore.passed:
        over = time.monotonic() - started >= budget
        return ended("exceeded_budget" if over else "failed",
                     f"the backup could not be restored into the copy: {restore.detail}", restore=restore)
    left_ms = int((budget - (time.monotonic() - started)) * 1000)
    if left_ms <= 0:
        return ended("exceeded_budget", f"restoring the copy used up rehearsal_budget ({duration_text(budget)}); "
                                        "the downgrade was not rehearsed", restore=restore)
    with connect(copy) as conn:
        _settle(conn)
        before = table_data(conn, project)
    execution = execute_downgrade(copy, project, plan, lock_timeout_ms=lock_timeout_ms,
                                  statement_timeout_ms=min(statement_timeout_ms, left_ms))
    if not execution.succeeded:
        failed = execution.failed_step
        at = failed.revision if failed else "a step"
        step = next((s for s in plan.steps if failed and s.revision.revision == failed.revision), None)
        diagnosis = diagnose_failure(copy, execution.failure or RollbookError("unknown failure"), step=step,
                                     statement=execution.failed_statement, project=project,
                                     left_changed=failed.left_changed if failed else None)
        cancelled = isinstance(getattr(execution.failure, "orig", None), psycopg.errors.QueryCanceled)
        if cancelled and left_ms < statement_timeout_ms:
            return ended("exceeded_budget", f"the downgrade on the copy was stopped at {at} "
                                            f"when rehearsal_budget ({duration_text(budget)}) ran out",
                         restore=restore, execution=execution, diagnosis=diagnosis)
        return ended("failed", f"the downgrade failed on the copy at {at}: "
                               f"{failed.error if failed else execution.failure}. The real downgrade would fail the "
                               "same way", restore=restore, execution=execution, diagnosis=diagnosis)
    with connect(copy) as conn:
        after = table_data(conn, project)
    # The plan counts every step against the database as it is before the first, so the whole downgrade's
    # operations are checked together, in order.
    whole = replace(plan.steps[0], operations=tuple(op for s in plan.steps for op in s.operations))
    rows = check_predictions(whole, before, after)
    schema = check_schema_matches(copy, project, plan.path.target, before=execution.schema_before,
                                  start=plan.path.start)
    if time.monotonic() - started > budget:
        return ended("exceeded_budget", f"the rehearsal took longer than rehearsal_budget ({duration_text(budget)})",
                     restore=restore, execution=execution, rows=rows, schema=schema)
    problems = [what for what, bad in (("rows", rows.status == "failed"), ("schema", schema.status == "failed"))
                if bad]
    if problems:
        return ended("failed", f"the downgrade ran on the copy, but its {' and '.join(problems)} did not come out as "
                               "the plan says: plan again and review what differs", restore=restore,
                     execution=execution, rows=rows, schema=schema)
    return ended("passed", f"the downgrade ran on a copy restored from the backup in {execution.seconds:.2f} s; "
                           "rows and schema came out as the plan says", restore=restore, execution=execution,
                 rows=rows, schema=schema)


def _settle(conn: psycopg.Connection[Any]) -> None:
    """Make the fresh copy behave as production does before its downgrade is timed.

    A restored table's rows are read for the first time by the downgrade, which would then also write their hint
    bits: vacuumed first, the copy is read as production (long since vacuumed) is. The restore's WAL would make
    the checkpointer write gigabytes while the downgrade runs: a checkpoint first, where the role may ask for one.
    """
    conn.execute("VACUUM")
    try:
        conn.execute("CHECKPOINT")
    except psycopg.errors.InsufficientPrivilege:
        pass  # superuser or pg_checkpoint only; the rehearsal's times may then run a little long


def _gone(target: DatabaseTarget, name: str) -> bool:
    with connect(target) as conn:
        return conn.execute("SELECT NOT EXISTS (SELECT FROM pg_database WHERE datname = %s)", [name]).fetchone() == (
            True,)
