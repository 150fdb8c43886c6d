"""The verdict on a whole downgrade path: safe, loses data, review by hand, or do not downgrade, and why."""

from __future__ import annotations

from dataclasses import dataclass

from rollbook.planning.operations import (
    CERTAIN_FAILURES,
    Risk,
)
from rollbook.planning.risk import MIGRATION_TYPES
from rollbook.planning.step import PlanStep

VERDICT_ORDER = ("safe", "loses_data", "review_by_hand", "do_not_downgrade")


@dataclass(frozen=True)
class Verdict:
    """The answer for the whole path, with the reasons behind it and what to do."""

    code: str
    headline: str
    reasons: tuple[str, ...]
    advice: str


def judge(steps: tuple[PlanStep, ...], live_checks: bool) -> Verdict:
    """The verdict for the whole path; anything not understood or not counted is never called safe."""
    if not steps:
        return Verdict("safe", "Nothing to do: the database is already at the target.", (), "No downgrade needed.")
    high: list[str] = []
    blocking: list[str] = []
    unclear: list[str] = []
    lost: list[str] = []
    # Not a verdict of its own: a step that is not atomic loses nothing by itself, but the policy gate treats
    # it like a HIGH-risk step, and every verdict says so.
    not_atomic = [f"{step.revision.revision} is {step.atomicity_text()}" for step in steps if not step.atomic]
    for step in steps:
        rev = step.revision.revision
        if step.risk == Risk.HIGH:
            empty = next((op for op in step.operations if op.op == "no_op_downgrade"), None)
            guidance = MIGRATION_TYPES.get(step.migration_type)
            if empty is not None:
                # The procedures' words for the type describe what a downgrade does; this one does nothing.
                why = f"{empty.detail}. {empty.reason}"
            elif guidance and guidance.risk == Risk.HIGH:
                why = f"{guidance.rollback_safety} {guidance.mitigation}"
            else:
                why = next((op.reason for op in step.operations if op.risk == Risk.HIGH), "")
            high.append(f"{rev} ({step.migration_type}) is HIGH risk: {why}")
        for op in step.operations:
            if op.risk == Risk.UNKNOWN:
                unclear.append(f"{rev}: {op.detail}")
            if op.op in CERTAIN_FAILURES:
                blocking.append(f"{rev}: {op.detail}")
            if op.check is None:
                continue
            if op.rows_affected is None:
                why = op.count_note or "live checks were not run"
                unclear.append(f"{rev}: {op.detail}: not counted ({why})")
                if op.estimate_only and (op.rows_counted_or_estimated or 0) > 0:
                    # Uncounted is never safer than the statistics say: their estimate keeps its weight.
                    (blocking if op.check.effect == "blocks" else lost).append(f"{rev}: {op.detail}: {op.count_text()}")
            elif op.rows_affected == 0 and op.changed_earlier_by:
                unclear.append(f"{rev}: {op.detail}: 0 counted on today's data, but step {op.changed_earlier_by} "
                               f"changes {op.table} first")
            elif op.rows_affected > 0:
                estimate = f" (on today's data; step {op.changed_earlier_by} changes it first)" if (
                    op.changed_earlier_by) else ""
                (blocking if op.check.effect == "blocks" else lost).append(
                    f"{rev}: {op.detail}: {op.count_text()}{estimate}")
    if high or blocking:
        advice = ("Do not run this downgrade. Restore from a backup taken before the migration, or fix forward "
                  "with a new migration.")
        if blocking and not high:
            advice = ("Do not run this downgrade as it stands: it would fail part-way. Fix the rows or objects "
                      "named above first, or restore from backup.")
        return Verdict("do_not_downgrade", "DO NOT DOWNGRADE: restore from backup or fix forward.",
                       tuple(high + blocking + unclear + not_atomic + lost), advice)
    if unclear:
        return Verdict("review_by_hand", "REVIEW BY HAND: rollbook could not understand or count everything.",
                       tuple(unclear + not_atomic + lost), "Read the migration files named above and count the data "
                       "by hand before deciding; until then treat this downgrade as destructive.")
    if lost:
        total = sum(op.rows_affected or 0 for s in steps for op in s.operations
                    if op.check and op.check.effect == "lost")
        return Verdict("loses_data", f"DOWNGRADE LOSES DATA: {total} row(s) or value(s) would be destroyed.",
                       tuple(not_atomic + lost), "Downgrade only if this loss is acceptable, with a verified backup "
                       "taken first; otherwise fix forward.")
    return Verdict("safe", "SAFE TO DOWNGRADE: no step destroys data according to the live counts.", tuple(not_atomic),
                   "Take and verify a backup anyway, then run the downgrade.")
