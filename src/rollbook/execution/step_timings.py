"""Each downgrade step's time three ways, side by side: the plan's estimate, the rehearsal on a copy, the real run.

The estimate is how long the step is expected to hold its locks (rollbook.planning.lock_time). The
measured time is what the step's statements took, from the downgrade's timed statement log: the time
its locks were held, a wait for a lock included, without Alembic's start-up (the whole step's time is
in the downgrade's record). That is the figure the estimate predicts, and the one an operator compares
with it to judge the next estimate.
"""

from __future__ import annotations

from collections.abc import Sequence

from rollbook import markdown
from rollbook.durations import duration_text
from rollbook.execution.downgrade import DowngradeExecution
from rollbook.planning.plan import DowngradePlan
from rollbook.records.model import StepTiming


def step_times(plan: DowngradePlan, *, rehearsal: DowngradeExecution | None = None,
               real: DowngradeExecution | None = None) -> tuple[StepTiming, ...]:
    """The plan's steps with their estimate and, where the step ran, its measured seconds on the copy and for real."""
    return tuple(StepTiming(revision=step.revision.revision, estimated_seconds=step.estimated_lock_seconds,
                            rehearsal_seconds=_measured(rehearsal, step.revision.revision),
                            real_seconds=_measured(real, step.revision.revision))
                 for step in plan.steps)


def step_times_table(times: Sequence[StepTiming]) -> str:
    """The Markdown table of the three figures per step, with the measured-over-estimate ratio."""
    rows = [(markdown.code(t.revision), _seconds(t.estimated_seconds, "not estimated"),
             _seconds(t.rehearsal_seconds, "—"), _seconds(t.real_seconds, "—"),
             _ratio(t.estimated_seconds, t.real_seconds if t.real_seconds is not None else t.rehearsal_seconds))
            for t in times]
    return markdown.table(["step", "estimate (lock time)", "rehearsal (on the copy)", "real", "measured / estimate"],
                          rows)


def _measured(execution: DowngradeExecution | None, revision: str) -> float | None:
    if execution is None:
        return None
    step = next((s for s in execution.steps if s.revision == revision and s.outcome != "not run"), None)
    return round(sum(statement.seconds for statement in step.statements), 3) if step else None


def _seconds(value: float | None, absent: str) -> str:
    return absent if value is None else duration_text(value)


def _ratio(estimate: float | None, measured: float | None) -> str:
    if estimate is None or measured is None or estimate <= 0:
        return "—"
    return f"{measured / estimate:.2f}"
