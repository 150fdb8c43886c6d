"""The downgrade plan: the path, every operation with its risk and live counts, and one verdict."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import errors, sql

from rollbook import markdown
from rollbook.errors import DatabaseUnreachable, RollbookError
from rollbook.outcomes import ExitCode
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.lock_waits import PLANNING_LOCK_TIMEOUT_MS
from rollbook.planning.data_loss import CountProgress, TableFacts, count_affected_rows, lock_holders
from rollbook.planning.downgrade_path import DowngradePath, resolve_downgrade_path
from rollbook.planning.lock_time import (
    NO_LIVE_CHECKS,
    Blocking,
    LockCalibration,
    calibrate,
    plan_blocking,
    with_lock_estimates,
)
from rollbook.planning.operations import NO_DOWNGRADE, TableName
from rollbook.planning.step import PlanStep
from rollbook.planning.step_reading import (
    NO_DOWNGRADE_ADVICE,
    account_for_earlier_steps,
    analyse_steps,
    checks_to_run,
    with_counts,
    with_what_the_database_adds,
    with_widenings_recognised,
)
from rollbook.planning.verdict import Verdict, judge
from rollbook.project.migrations import MigrationProject
from rollbook.project.status import read_current_revisions


class DowngradeNotRenderable(RollbookError):
    """A step of the downgrade cannot be rendered offline, so no complete SQL script exists (exit 1)."""


@dataclass(frozen=True)
class DowngradePlan:
    """Everything a person needs to decide whether to run a downgrade."""

    database: str
    path: DowngradePath
    steps: tuple[PlanStep, ...]
    verdict: Verdict
    tables: tuple[TableFacts, ...]
    live_checks: bool
    version_table: str = "alembic_version"
    # What the lock-time estimates are derived from (None: not estimated at all).
    lock_calibration: LockCalibration | None = None

    @property
    def blocking(self) -> Blocking:
        """The whole downgrade's expected blocked time per table, summed over its steps (estimates)."""
        return plan_blocking(step.blocking for step in self.steps)

    def blocking_lines(self) -> list[str]:
        """The summary of what the downgrade blocks, one line per table, with the estimates' basis."""
        blocking = self.blocking
        if not blocking.tables and not blocking.row_locks:
            return ["Blocks no reads or writes of a table."]
        calibration = self.lock_calibration
        basis = (calibration.rate_basis() if calibration and calibration.scan else blocking.basis
                 or (calibration.unavailable if calibration else "") or NO_LIVE_CHECKS)
        lines = [f"Estimated blocked time while it runs ({basis}; a wait for the lock queue comes on top):"]
        lines += [table.described() for table in blocking.tables]
        lines += [rows.described() for rows in blocking.row_locks]
        return lines

    @property
    def exit_code(self) -> ExitCode:
        """The verdict as `rollbook plan --exit-code` exits with it: 0 only when the downgrade is safe."""
        return {"loses_data": ExitCode.PLAN_LOSES_DATA, "review_by_hand": ExitCode.PLAN_REVIEW_BY_HAND,
                "do_not_downgrade": ExitCode.PLAN_DO_NOT_DOWNGRADE}.get(self.verdict.code, ExitCode.OK)

    @property
    def plan_hash(self) -> str:
        """A digest of what the downgrade would do (path, files, operations), for approvals to name."""
        shape = {
            "current": list(self.path.current),
            "target": self.path.target,
            "steps": [
                {"revision": s.revision.revision, "sha256": s.revision.sha256,
                 "operations": [[op.op, str(op.table), op.column, op.statement] for op in s.operations]}
                for s in self.steps
            ],
        }
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "current": self.path.start,
            "current_revisions": list(self.path.current),
            "target": self.path.target_label,
            "requested_target": self.path.requested,
            "verdict": self.verdict.code,
            "verdict_headline": self.verdict.headline,
            "verdict_reasons": list(self.verdict.reasons),
            "advice": self.verdict.advice,
            "plan_hash": self.plan_hash,
            "live_checks": self.live_checks,
            "lock_estimates": {**self.blocking.to_dict(),
                               "calibration": self.lock_calibration.to_dict() if self.lock_calibration else None},
            "steps": [step.to_dict() for step in self.steps],
            "tables": [t.to_dict() for t in self.tables],
        }

    def to_text(self) -> str:
        lines = [
            f"Database: {self.database}",
            f"Downgrade {self.path.start} -> {self.path.target_label} ({len(self.steps)} step(s), "
            f"requested '{self.path.requested}')",
            "",
        ]
        for number, step in enumerate(self.steps, 1):
            rev = step.revision
            lines.append(f"{number}. {rev.revision} -> {rev.down_revision or 'base'}  {rev.message}")
            lines.append(f"   file {rev.file}  sha256 {rev.sha256[:16]}")
            lines.append(f"   type {step.migration_type}, risk {step.risk.value.upper()}"
                         + ("  (read from Python source)" if step.render_error else ""))
            if not step.atomic:
                lines.append(f"   {step.atomicity_text()}")
            lines.append(f"   lock time (estimate): {step.blocking.described()}")
            for op in step.operations:
                count = f"  [{op.count_text()}]" if op.check else ""
                lines.append(f"   - {op.risk.value.upper():7} {op.detail}{count}")
                if op.lock:
                    lines.append(f"     lock: {op.lock}{', rewrites the table' if op.rewrites_table else ''}")
                if op.lock_estimate and op.lock_estimate.lock:
                    lines.append(f"     {op.lock_estimate.described()}")
                if op.not_atomic_reason:
                    lines.append(f"     not atomic: {op.not_atomic_reason}")
                if op.count_note:
                    lines.append(f"     note: {op.count_note}")
                if op.estimate_text():
                    lines.append(f"     {op.estimate_text()}")
                if op.changed_earlier_by:
                    lines.append(f"     note: counted on today's data; step {op.changed_earlier_by} changes "
                                 f"{op.table} first")
        if self.tables:
            lines += ["", "Affected tables (live):"]
            lines += [f"  {t.table}: {_rows(t)}, {_size(t.total_bytes)}" if t.exists
                      else f"  {t.table}: not there now"
                      for t in self.tables]
        blocked = self.blocking_lines()
        lines += ["", blocked[0], *(f"  {line}" for line in blocked[1:])]
        lines += ["", f"Verdict: {self.verdict.headline}"]
        lines += [f"  - {reason}" for reason in self.verdict.reasons]
        lines.append(self.verdict.advice)
        lines.append(f"Plan hash (for approvals): {self.plan_hash}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        head = (f"**Downgrade** `{self.path.start}` → `{self.path.target_label}`: {len(self.steps)} step(s), "
                f"requested `{markdown.cell(self.path.requested)}`, on `{self.database}`")
        rows = []
        # Only a big table's exact count gets the statistics' estimate beside it: the table stays short otherwise.
        big = {t.table for t in self.tables if t.big}
        for number, step in enumerate(self.steps, 1):
            operations = "<br>".join(
                f"{op.risk.value.upper()} {markdown.cell(op.detail)}"
                + (f" **[{markdown.cell(op.count_text())}]**" if op.check else "")
                + (f" ({markdown.cell(estimate)})" if op.table in big and (estimate := op.estimate_text()) else "")
                + (f" ({markdown.cell(op.count_note)})" if op.count_note else "")
                + (" *(not atomic)*" if op.not_atomic_reason else "")
                for op in step.operations) or "(nothing)"
            risk = f"**{step.risk.value.upper()}**" + ("" if step.atomic else "<br>**NOT ATOMIC**")
            rows.append((str(number), markdown.code(step.revision.revision), markdown.cell(step.revision.message),
                         markdown.cell(step.migration_type), risk, operations,
                         markdown.cell(step.blocking.described())))
        parts = [head, markdown.table(["#", "revision", "message", "type", "risk", "downgrade operations",
                                       "lock time (estimate)"], rows)]
        parts += [f"Step {number} `{step.revision.revision}` is **{markdown.cell(step.atomicity_text())}**"
                  for number, step in enumerate(self.steps, 1) if not step.atomic]
        if self.tables:
            parts.append("Affected tables now: " + ", ".join(
                f"`{t.table}` {markdown.cell(_rows(t))} ({_size(t.total_bytes)})" if t.exists
                else f"`{t.table}` (not there)"
                for t in self.tables))
        blocked = self.blocking_lines()
        parts.append(f"**{markdown.cell(blocked[0])}**" + "".join(f"\n- {markdown.cell(line)}" for line in blocked[1:]))
        if not self.live_checks:
            parts.append("Live checks were **not run**: no row was counted.")
        parts.append(f"**Verdict: {markdown.cell(self.verdict.headline)}**")
        parts.append("\n".join(f"- {markdown.cell(reason)}" for reason in self.verdict.reasons))
        parts.append(f"{markdown.cell(self.verdict.advice)}\n\nPlan hash (approvals name it): `{self.plan_hash}`")
        return "\n\n".join(p for p in parts if p)

    def downgrade_sql(self) -> str:
        """The SQL of the whole downgrade, one transaction per revision, version table included.

        Raises DowngradeNotRenderable when a step cannot be rendered offline: a script that skipped
        its work would still move the version table, so no partial script is ever returned.
        """
        for step in self.steps:
            missing = next((op for op in step.operations if op.op == NO_DOWNGRADE), None)
            if missing is not None:
                raise DowngradeNotRenderable(f"No script can undo {step.revision.revision}: "
                                             f"{missing.detail.removeprefix('fails: ')}. {NO_DOWNGRADE_ADVICE}")
            if step.render_error is not None:
                raise DowngradeNotRenderable(self._not_renderable_message(step))
        parts = []
        for step in self.steps:
            rev = step.revision
            parent = rev.down_revision
            parts.append(f"-- Running downgrade {rev.revision} -> {parent or 'base'}\nBEGIN;\n")
            parts.append((step.downgrade_sql or f"-- downgrade() of {rev.revision} is empty: only the version "
                                                "table changes\n").strip())
            table = self.version_table
            if parent and len(rev.down_revisions) == 1 and parent not in self.path.shared_parents:
                parts.append(f"\nUPDATE {table} SET version_num='{parent}' "
                             f"WHERE {table}.version_num = '{rev.revision}';")
            elif not parent or parent in self.path.shared_parents:
                parts.append(f"\nDELETE FROM {table} WHERE {table}.version_num = '{rev.revision}';")
            else:
                parts.append(f"\n-- merge revision: {table} gets {', '.join(rev.down_revisions)}")
            parts.append("\nCOMMIT;\n\n")
        return "".join(parts)

    def downgrade_sql_or_why_not(self) -> str:
        """The downgrade's SQL for a notebook to show, or one SQL comment saying why no complete script exists."""
        try:
            return self.downgrade_sql()
        except DowngradeNotRenderable as reason:
            return f"-- No SQL script: {reason}\n"

    def _not_renderable_message(self, step: PlanStep) -> str:
        rev = step.revision
        if any(op.op == "raises" for op in step.operations):
            return (f"The downgrade of {rev.revision} ({rev.file}) {step.render_error}: it fails on every database, "
                    "offline and online, so no script was written. Fix the migration, or restore from backup instead "
                    "of rolling back through it.")
        return (f"The downgrade of {rev.revision} ({rev.file}) cannot be rendered offline ({step.render_error}). "
                f"A script without it would still move {self.version_table} to {rev.down_revision or 'base'}, so "
                "none was written. Run the downgrade through Alembic online (rollbook run rollback), which "
                "executes that step as its Python source says.")


def plan_downgrade(
    target: DatabaseTarget, project: MigrationProject, requested: str, *, live_checks: bool = True,
    statement_timeout_ms: int = 30_000, lock_timeout_ms: int = PLANNING_LOCK_TIMEOUT_MS,
    progress: Callable[[CountProgress], None] | None = None,
) -> DowngradePlan:
    """Plan a downgrade of the database at `target` to `requested` (`-N`, a revision or prefix, `base`).

    Live checks show the statistics' estimates first, then count exactly; `progress` hears when the count of
    a big table starts and ends. No query waits longer than `lock_timeout_ms` for a lock another session holds.
    """
    with connect(target) as conn:
        conn.execute("SELECT set_config('lock_timeout', %s, false)", [str(lock_timeout_ms)])
        steps: tuple[PlanStep, ...] = ()
        try:
            current = read_current_revisions(conn, project)
            path = resolve_downgrade_path(project, current, requested)
            steps = analyse_steps(project, path)
            steps = with_widenings_recognised(conn, with_what_the_database_adds(conn, steps))
        except errors.LockNotAvailable:
            raise _locked(conn, project, steps, lock_timeout_ms) from None
        steps = account_for_earlier_steps(steps)
        counts = None
        calibration = LockCalibration(unavailable=NO_LIVE_CHECKS)
        if live_checks:
            counts = count_affected_rows(conn, checks_to_run(steps), statement_timeout_ms=statement_timeout_ms,
                                         lock_timeout_ms=lock_timeout_ms, progress=progress)
            calibration = calibrate(conn, (op for step in steps for op in step.operations),
                                    statement_timeout_ms=statement_timeout_ms, lock_timeout_ms=lock_timeout_ms)
    steps = tuple(replace(step, operations=tuple(with_lock_estimates(step.operations, calibration)))
                  for step in with_counts(steps, counts))
    return DowngradePlan(
        database=target.redacted,
        path=path,
        steps=steps,
        verdict=judge(steps, live_checks),
        tables=tuple(counts.tables.values()) if counts else (),
        live_checks=live_checks,
        version_table=_sql_name(project.version_table_schema, project.version_table),
        lock_calibration=calibration,
    )


def _locked(conn: psycopg.Connection, project: MigrationProject, steps: tuple[PlanStep, ...],
            lock_timeout_ms: int) -> DatabaseUnreachable:
    """The error for a catalog read that gave up on a lock: who holds it, and what to do."""
    version_table = TableName(project.version_table_schema, project.version_table)
    tables = dict.fromkeys([version_table, *(op.table for step in steps for op in step.operations if op.table)])
    held = [f"pid {', '.join(map(str, pids))} holds ACCESS EXCLUSIVE on {table}"
            for table in tables if (pids := lock_holders(conn, table))]
    who = "; ".join(held) or "another session holds a lock on a table the plan reads"
    return DatabaseUnreachable(
        f"Planning gave up after waiting {lock_timeout_ms} ms for a lock ({who}): a migration or another session "
        "is changing the schema now. Nothing was changed. Wait until it commits or rolls back "
        "(pg_stat_activity shows what it runs), then plan again.")


def _rows(facts: TableFacts) -> str:
    """'12 rows', or the statistics' 'about 12 rows (estimate only: ...)' when the table was not counted; a big
    table's count has the statistics' estimate beside it, so that a reader sees how far to trust the next one."""
    estimate = facts.estimate
    if facts.rows is not None:
        if facts.big and estimate is not None and estimate.rows is not None:
            return f"{facts.rows:,} rows (statistics said about {estimate.rows:,}: {estimate.basis})"
        return f"{facts.rows} rows"
    if estimate is not None and estimate.rows is not None:
        return f"about {estimate.rows} rows (estimate only: {estimate.basis})"
    return "rows not counted"


def _sql_name(*parts: str | None) -> str:
    """`parts` joined as SQL, quoted only where PostgreSQL needs it, as Alembic writes them."""
    return ".".join(p if re.fullmatch(r"[a-z_][a-z0-9_$]*", p) else sql.Identifier(p).as_string()
                    for p in parts if p)


def _size(total_bytes: int | None) -> str:
    if total_bytes is None:
        return "size unknown"
    if total_bytes < 1024:
        return f"{total_bytes} bytes"
    size, unit = total_bytes / 1024, "kB"
    for bigger in ("MB", "GB", "TB"):
        if size < 1024:
            break
        size, unit = size / 1024, bigger
    return f"{size:.1f} {unit}"
