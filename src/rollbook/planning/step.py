"""One step of a downgrade plan: a revision undone, its operations, its risk and what it blocks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollbook.planning.lock_time import (
    Blocking,
    step_blocking,
)
from rollbook.planning.operations import (
    Operation,
    Risk,
)
from rollbook.planning.risk import MIGRATION_TYPES
from rollbook.project.migrations import RevisionInfo


@dataclass(frozen=True)
class PlanStep:
    """Undoing one revision: what its upgrade did, what its downgrade will do, and the risk."""

    revision: RevisionInfo
    migration_type: str
    risk: Risk
    operations: tuple[Operation, ...]
    upgrade_operations: tuple[Operation, ...]
    downgrade_sql: str | None
    render_error: str | None

    @property
    def not_atomic_reasons(self) -> tuple[str, ...]:
        """Why the downgrade does not run as one transaction, one reason per kind of statement; empty if it does."""
        return tuple(dict.fromkeys(op.not_atomic_reason for op in self.operations if op.not_atomic_reason))

    @property
    def atomic(self) -> bool:
        """Whether the whole downgrade() runs in one transaction, so that a failure undoes all of it."""
        return not self.not_atomic_reasons

    @property
    def blocking(self) -> Blocking:
        """The tables this step blocks, and for about how long (estimates)."""
        return step_blocking(self.operations)

    @property
    def estimated_lock_seconds(self) -> float | None:
        """The longest any table (or row it changes) is expected to stay locked during this step; None when not
        estimated."""
        return self.blocking.longest_seconds

    def atomicity_text(self) -> str:
        """'NOT ATOMIC: why; what a failure leaves', or '' for an atomic step."""
        if self.atomic:
            return ""
        return (f"NOT ATOMIC: {'; '.join(self.not_atomic_reasons)}. If this step fails part-way, what ran before "
                f"the failure stays done while the version table still names {self.revision.revision}.")

    def to_dict(self) -> dict[str, Any]:
        seed = MIGRATION_TYPES.get(self.migration_type)
        return {
            **self.revision.to_dict(),
            "migration_type": self.migration_type,
            "risk": self.risk.value,
            "atomic": self.atomic,
            "not_atomic_reasons": list(self.not_atomic_reasons),
            "estimated_lock_seconds": self.estimated_lock_seconds,
            "blocking": self.blocking.to_dict(),
            "seed_guidance": None if seed is None else {
                "data_loss": seed.data_loss, "rollback_safety": seed.rollback_safety, "mitigation": seed.mitigation,
            },
            "operations": [op.to_dict() for op in self.operations],
            "upgrade_operations": [{"op": op.op, "table": str(op.table) if op.table else None, "column": op.column}
                                   for op in self.upgrade_operations],
            "understood_from": "python source" if self.render_error else "offline SQL",
        }
