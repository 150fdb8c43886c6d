"""Each downgrade step's time three ways, side by side: the plan's estimate, the rehearsal on a copy, the real run.

The estimate is how long the step is expected to hold its locks (rollbook.planning.lock_time). The
measured time is what the step's statements took, from the downgrade's timed statement log: the time
its locks were held, a wait for a lock included, without Alembic's start-up (the whole step's time is
in the downgrade's record). That is the figure the estimate predicts, and the one an operator compares
with it to judge the next estimate. Beside it, the part of it spent waiting for a lock another session
held (rollbook.execution.lock_wait_sampler): a long wait means the lock queue, not the step, took the time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rollbook import markdown
from rollbook.durations import duration_text, lock_wait_text
from rollbook.execution.lock_wait_sampler import LockWaits
from rollbook.records.model import StepTiming

if TYPE_CHECKING:  # the site draws step tables from records: it need not import Alembic to do it
    from rollbook.execution.downgrade import DowngradeExecution, StepExecution
    from rollbook.planning.plan import DowngradePlan


def step_times(plan: DowngradePlan, *, rehearsal: DowngradeExecution | None = None,
               real: DowngradeExecution | None = None) -> tuple[StepTiming, ...]:
    """The plan's steps with their estimate and, where the step ran, its measured seconds on the copy and for real."""
    timings = []
    for planned in plan.steps:
        on_copy, for_real = _ran(rehearsal, planned.revision.revision), _ran(real, planned.revision.revision)
        copy_waits, real_waits = _lock_waits_of(on_copy), _lock_waits_of(for_real)
        rehearsal_seconds, real_seconds = _statement_seconds(on_copy), _statement_seconds(for_real)
        timings.append(StepTiming(
            revision=planned.revision.revision, estimated_seconds=planned.estimated_lock_seconds,
            rehearsal_seconds=rehearsal_seconds, real_seconds=real_seconds,
            rehearsal_lock_wait_seconds=_within(copy_waits.seconds, rehearsal_seconds),
            rehearsal_lock_waits_not_measured=copy_waits.not_measured,
            real_lock_wait_seconds=_within(real_waits.seconds, real_seconds),
            real_lock_waits_not_measured=real_waits.not_measured))
    return tuple(timings)


def step_times_table(times: Sequence[StepTiming]) -> str:
    """The Markdown table of the three figures per step, the lock waits in each measured one, and the
    measured-over-estimate ratio."""
    rows = [(markdown.code(t.revision), _seconds(t.estimated_seconds, "not estimated"),
             _seconds(t.rehearsal_seconds, "—"),
             _lock_waits(t.rehearsal_lock_wait_seconds, t.rehearsal_lock_waits_not_measured),
             _seconds(t.real_seconds, "—"), _lock_waits(t.real_lock_wait_seconds, t.real_lock_waits_not_measured),
             _ratio(t.estimated_seconds, t.real_seconds if t.real_seconds is not None else t.rehearsal_seconds))
            for t in times]
    return markdown.table(["step", "estimate (lock time)", "rehearsal (on the copy)", "of it lock waits", "real",
                           "of it lock waits", "measured / estimate"], rows)


def _ran(execution: DowngradeExecution | None, revision: str) -> StepExecution | None:
    if execution is None:
        return None
    return next((s for s in execution.steps if s.revision == revision and s.outcome != "not run"), None)


def _lock_waits_of(step: StepExecution | None) -> LockWaits:
    # A step that did not run has neither a figure nor a reason.
    return step.lock_waits if step and step.lock_waits else LockWaits(None)


def _within(waited: float | None, statements: float | None) -> float | None:
    # Sampling counts whole intervals, so a wait can come out a little longer than the statements that waited.
    return None if waited is None else min(waited, statements) if statements is not None else waited


def _statement_seconds(step: StepExecution | None) -> float | None:
    return round(sum(statement.seconds for statement in step.statements), 3) if step else None


def _lock_waits(seconds: float | None, not_measured: str | None) -> str:
    if seconds is not None:
        return lock_wait_text(seconds)
    return markdown.cell(f"not measured: {not_measured}") if not_measured else "—"


def _seconds(value: float | None, absent: str) -> str:
    return absent if value is None else duration_text(value)


def _ratio(estimate: float | None, measured: float | None) -> str:
    if estimate is None or measured is None or estimate <= 0:
        return "—"
    return f"{measured / estimate:.2f}"
