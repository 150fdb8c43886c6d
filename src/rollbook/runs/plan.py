"""One run of the plan runbook: the downgrade plan of a database, read-only, and its record.

The record keeps what an approver names and a reader checks later: the plan hash, the verdict, the
path and each step's risk (the same facts the rollback runbook records for its own plan).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from rollbook.errors import RollbookError
from rollbook.outcomes import Outcome
from rollbook.planning.plan import DowngradePlan, plan_downgrade
from rollbook.runs.parameters import PlanParameters
from rollbook.runs.runbook import Runbook, RunFacts, recorded


def plan_facts(plan: DowngradePlan) -> dict[str, Any]:
    """What a run's record keeps of a plan: where it starts and goes, its hash, its verdict, each step's risk."""
    return {"revision_before": list(plan.path.current), "target": plan.path.target_label,
            "plan_hash": plan.plan_hash, "plan_verdict": plan.verdict.code,
            "plan_steps": [{"revision": s.revision.revision, "migration_type": s.migration_type,
                            "risk": s.risk.value, "atomic": s.atomic,
                            "estimated_lock_seconds": s.estimated_lock_seconds} for s in plan.steps]}


@dataclass
class PlanRun(Runbook[PlanParameters]):
    """The state of one plan run; created by `PlanRun.start`."""

    name: ClassVar[str] = "plan"
    parameters_type: ClassVar[type[PlanParameters]] = PlanParameters

    downgrade_plan: DowngradePlan | None = None

    @recorded("plan")
    def plan(self) -> DowngradePlan:
        """Assess the data-loss risk of every step and count, read-only, the rows it would destroy."""
        p = self.parameters
        self.downgrade_plan = plan_downgrade(self.target, self.project, p.target_revision, live_checks=p.live_checks,
                                             statement_timeout_ms=p.statement_timeout_ms)
        # A plan changes nothing: the database is where it was.
        self.recorder.update(**plan_facts(self.downgrade_plan), revision_after=list(self.downgrade_plan.path.current))
        return self.downgrade_plan

    def facts(self) -> RunFacts:
        """The plan's verdict and hash, as an approver names it."""
        plan = self.downgrade_plan
        if plan is None:
            raise RollbookError("No plan yet: run the notebook's cells in order (the plan comes first).")
        headline = (f"Plan {plan.plan_hash[:12]} from {', '.join(plan.path.current) or 'base'} to "
                    f"{plan.path.target_label}: {plan.verdict.code}.")
        return RunFacts(Outcome.SUCCEEDED, headline, {
            "database": self.context.database, "revision": ", ".join(plan.path.current) or "base",
            "target": plan.path.target_label, "plan hash": plan.plan_hash, "verdict": plan.verdict.code,
            "steps": str(len(plan.steps))})
