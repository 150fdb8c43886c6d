"""Verification after a downgrade: each check passed, failed or not checked, and "verified" only when all passed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollbook import markdown
from rollbook.execution.expected_schema import SchemaCheck
from rollbook.execution.health import HealthCheck
from rollbook.pg.table_counts import TableRowCounts
from rollbook.planning.plan import DowngradePlan


@dataclass(frozen=True)
class VerificationCheck:
    """One check after the downgrade: passed, failed, or not checked (never counted as passed)."""

    name: str
    status: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class RollbackVerification:
    """Everything the procedure's "after rollback" section checks."""

    checks: tuple[VerificationCheck, ...]
    counts_table: str = ""
    schema: SchemaCheck | None = None

    @property
    def failed(self) -> tuple[VerificationCheck, ...]:
        return tuple(c for c in self.checks if c.status == "failed")

    @property
    def not_checked(self) -> tuple[VerificationCheck, ...]:
        return tuple(c for c in self.checks if c.status == "not_checked")

    @property
    def passed(self) -> bool:
        """Verified means every check ran and passed: a check that could not run is not a pass."""
        return all(c.status == "passed" for c in self.checks)

    def unverified_text(self) -> str:
        """The checks that could not run, with why: what "not fully verified" leaves open."""
        return "; ".join(f"{c.name} not checked ({c.detail})" for c in self.not_checked)

    def to_dict(self) -> dict[str, Any]:
        return {"checks": [c.to_dict() for c in self.checks], "passed": self.passed,
                "failed": [c.name for c in self.failed], "not_checked": [c.name for c in self.not_checked],
                "schema": self.schema.to_dict() if self.schema else None}

    def _repr_markdown_(self) -> str:
        # Words, not emoji: a page or terminal without an emoji font shows those as empty boxes.
        marks = {"passed": "passed", "failed": "**FAILED**", "not_checked": "not checked"}
        rows = [(markdown.cell(c.name), marks.get(c.status, c.status), markdown.cell(c.detail)) for c in self.checks]
        parts = [markdown.table(["check", "result", "detail"], rows)]
        if self.schema and (self.schema.differences or self.schema.drift):
            parts.append(self.schema._repr_markdown_())
        if self.counts_table:
            parts.append("Critical tables:\n\n" + self.counts_table)
        return "\n\n".join(parts)


def health_verification(check: HealthCheck) -> VerificationCheck:
    """The application health check as one verification check."""
    return VerificationCheck("application health", check.status, check.detail)


def schema_detail(schema: SchemaCheck) -> str:
    """What the schema check found, in words: changed as the migrations do, drift already there, or why not."""
    drift = f"; {len(schema.drift)} difference(s) already there before the rollback (drift, listed below)" \
        if schema.drift else ""
    if schema.status == "passed" and schema.drift:
        return (f"the rollback changed the schema exactly as the migrations do down to {schema.revision or 'base'}"
                f"{drift}")
    if schema.status == "passed":
        return f"the live schema equals the schema migrations build at {schema.revision or 'base'}"
    if schema.status == "failed":
        return f"{len(schema.differences)} difference(s) from the schema of {schema.revision or 'base'}{drift}"
    return schema.reason


def critical_tables_check(
    before: TableRowCounts | None, after: TableRowCounts, plan: DowngradePlan
) -> VerificationCheck:
    """Critical tables counted before and after: a count missing after the downgrade fails unless the plan drops it."""
    if before is None:
        return VerificationCheck("critical tables", "not_checked", "no counts were taken before the downgrade")
    if not after.rows:
        return VerificationCheck("critical tables", "not_checked", "no critical tables named and none touched")
    dropped = {str(op.table) for step in plan.steps for op in step.operations if op.op == "drop_table"}
    # A table the downgrade drops is expected to be gone; any other missing count is a failure, never a pass.
    missing = [t for t, rows in after.rows.items() if rows is None and t not in dropped]
    if missing:
        return VerificationCheck("critical tables", "failed", f"missing after the downgrade: {', '.join(missing)}")
    return VerificationCheck("critical tables", "passed",
                             "; ".join(_count_change(t, before.rows.get(t), rows) for t, rows in after.rows.items()))


def _count_change(table: str, before: int | None, after: int | None) -> str:
    if after is None:
        return f"{table} dropped by the downgrade, as planned ({before} rows before)"
    if before is None:
        return f"{table} re-created by the downgrade ({after} rows)"
    return f"{table} {before} -> {after}"
