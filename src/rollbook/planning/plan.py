"""The downgrade plan: the path, every operation with its risk and live counts, and one verdict."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

import psycopg
from psycopg import sql

from rollbook import markdown
from rollbook.errors import RollbookError
from rollbook.outcomes import ExitCode
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.data_loss import LiveCounts, TableFacts, count_affected_rows, table_facts
from rollbook.planning.dependent_objects import DroppedSoFar, with_dependent_objects
from rollbook.planning.downgrade_path import DowngradePath, resolve_downgrade_path
from rollbook.planning.lock_time import (
    NO_LIVE_CHECKS,
    Blocking,
    LockCalibration,
    calibrate,
    plan_blocking,
    step_blocking,
    with_lock_estimates,
)
from rollbook.planning.missing_objects import NamesSoFar, with_missing_objects
from rollbook.planning.operations import (
    CERTAIN_FAILURES,
    NO_DOWNGRADE,
    ROW_CHANGES,
    LiveCheck,
    Operation,
    Risk,
    TableName,
    type_widening,
    with_autocommit_marked,
)
from rollbook.planning.python_operations import operations_from_python
from rollbook.planning.risk import MIGRATION_TYPES, assess_downgrade_operations, migration_type, step_risk
from rollbook.planning.side_effects import read_data_dependencies, with_side_effects
from rollbook.planning.sql_operations import operations_from_sql
from rollbook.project.migrations import MigrationProject, RevisionInfo
from rollbook.project.offline_sql import OfflineRenderer, RenderedSQL
from rollbook.project.status import read_current_revisions

VERDICT_ORDER = ("safe", "loses_data", "review_by_hand", "do_not_downgrade")


class DowngradeNotRenderable(RollbookError):
    """A step of the downgrade cannot be rendered offline, so no complete SQL script exists (exit 1)."""


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


@dataclass(frozen=True)
class Verdict:
    """The answer for the whole path, with the reasons behind it and what to do."""

    code: str
    headline: str
    reasons: tuple[str, ...]
    advice: str


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
                if op.changed_earlier_by:
                    lines.append(f"     note: counted on today's data; step {op.changed_earlier_by} changes "
                                 f"{op.table} first")
        if self.tables:
            lines += ["", "Affected tables (live):"]
            lines += [f"  {t.table}: {t.rows} rows, {_size(t.total_bytes)}" if t.exists
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
        for number, step in enumerate(self.steps, 1):
            operations = "<br>".join(
                f"{op.risk.value.upper()} {markdown.cell(op.detail)}"
                + (f" **[{markdown.cell(op.count_text())}]**" if op.check else "")
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
                f"`{t.table}` {t.rows} rows ({_size(t.total_bytes)})" if t.exists else f"`{t.table}` (not there)"
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
                                             f"{missing.detail.removeprefix('fails: ')}. {_NO_DOWNGRADE_ADVICE}")
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
    statement_timeout_ms: int = 30_000,
) -> DowngradePlan:
    """Plan a downgrade of the database at `target` to `requested` (`-N`, a revision or prefix, `base`)."""
    with connect(target) as conn:
        current = read_current_revisions(conn, project)
        path = resolve_downgrade_path(project, current, requested)
        steps = with_widenings_recognised(conn, with_what_the_database_adds(conn, analyse_steps(project, path)))
        steps = _account_for_earlier_steps(steps)
        counts = None
        calibration = LockCalibration(unavailable=NO_LIVE_CHECKS)
        if live_checks:
            counts = count_affected_rows(conn, _checks_to_run(steps), statement_timeout_ms=statement_timeout_ms)
            calibration = calibrate(conn, (op for step in steps for op in step.operations),
                                    statement_timeout_ms=statement_timeout_ms)
    steps = tuple(replace(step, operations=tuple(with_lock_estimates(step.operations, calibration)))
                  for step in _with_counts(steps, counts))
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


def analyse_steps(project: MigrationProject, path: DowngradePath) -> tuple[PlanStep, ...]:
    """The operations and risk of every revision on the path, as its migration file states them."""
    renderer = OfflineRenderer(project)
    steps = []
    for revision in path.steps:
        info = project.info(revision)
        upgrade = _operations(project, renderer.render(revision, "upgrade"))
        if not project.has_downgrade(revision):
            rendered = RenderedSQL(revision, "downgrade", None)
            downgrade = [_no_downgrade(project, revision)]
        else:
            rendered = renderer.render(revision, "downgrade")
            downgrade = assess_downgrade_operations(upgrade, _operations(project, rendered))
        kind = migration_type(upgrade)
        risk = step_risk(kind, downgrade)
        steps.append(PlanStep(info, kind, risk, tuple(downgrade), tuple(upgrade), rendered.sql, rendered.error))
    return tuple(steps)


_NO_DOWNGRADE_ADVICE = "Restore from a backup taken before the upgrade, or fix forward with a new migration."


def _no_downgrade(project: MigrationProject, revision: str) -> Operation:
    return Operation(
        NO_DOWNGRADE, None, None, f"fails: {project.no_downgrade_text(revision)}", "", risk=Risk.HIGH,
        reason=f"It has no downgrade(): `alembic downgrade` stops at it with nothing undone. {_NO_DOWNGRADE_ADVICE}")


def with_what_the_database_adds(conn: psycopg.Connection, steps: tuple[PlanStep, ...]) -> tuple[PlanStep, ...]:
    """Each step with what the catalog adds to it: the foreign-key actions and triggers its data changes set
    off, the objects that stop what it drops or retypes, and the objects it drops that do not exist."""
    tables = [op.table for step in steps for op in step.operations if op.table is not None]
    dependencies = read_data_dependencies(conn, tables)
    dropped = DroppedSoFar()
    names = NamesSoFar()
    expanded = []
    for step in steps:
        checked = with_missing_objects(conn, list(step.operations), names)
        # Side effects follow the step's statements in order from what the path dropped before it.
        before = copy.deepcopy(dropped)
        operations = with_side_effects(with_dependent_objects(conn, checked, dropped), dependencies, before)
        # The step's own risk anew: a drop of what does not exist has lost the risk of a drop.
        risk = Risk.worst([step_risk(step.migration_type, checked), *(op.risk for op in operations)])
        expanded.append(replace(step, operations=tuple(operations), risk=risk))
    return tuple(expanded)


# Operations after which a column's type is no longer today's: it is dropped or made anew.
_RESHAPES = frozenset({"add_column", "drop_column", "create_table", "drop_table", "rename_column", "rename_table"})


def with_widenings_recognised(conn: psycopg.Connection, steps: tuple[PlanStep, ...]) -> tuple[PlanStep, ...]:
    """Each type change that keeps every value (varchar(255) to varchar, integer to bigint) made LOW, with no
    count: it can neither fail nor change a value, whatever the rows and the server version.

    The type a column has when its change runs is the one an earlier change of this downgrade gave it, or
    else today's type in the catalog.
    """
    types: dict[tuple[str, str], str] = {}
    reshaped: set[tuple[str, str]] = set()
    catalog: dict[TableName, dict[str, str]] = {}
    recognised = []
    for step in steps:
        operations: list[Operation] = []
        widened: set[str] = set()
        for op in step.operations:
            check = op.check
            if op.op == "convert_values" and op.statement in widened:
                continue  # a widening changes no value
            if op.op in _RESHAPES and op.table is not None:
                # Re-created by this downgrade: neither today's type nor a tracked change says what it will be.
                reshaped.add((str(op.table), op.column or ""))
            if op.op != "alter_column_type" or op.table is None or check is None or not check.type_name:
                operations.append(op)
                continue
            key = (str(op.table), op.column or "")
            if op.table not in catalog:
                catalog[op.table] = dict(table_facts(conn, op.table).columns)
            unknowable = key in reshaped or (str(op.table), "") in reshaped
            current = None if unknowable else types.get(key) or catalog[op.table].get(op.column or "")
            mods = check.type_modifiers
            types[key] = f"{check.type_name}({','.join(map(str, mods))})" if mods else check.type_name
            widening = None if check.predicate or current is None else type_widening(current, check.type_name, mods)
            if widening is None:
                operations.append(op)
                continue
            widened.add(op.statement)
            in_place = widening == "in_place"
            operations.append(replace(
                op, check=None, rewrites_table=not in_place, risk=Risk.LOW,
                detail=f"{op.detail}: a widening from {current}, every value fits"
                + ("" if in_place else " (rewrites the table)"),
                reason="A widening type change: every value fits the new type, so it can neither fail nor change "
                       "a value. " + ("PostgreSQL changes only the catalog; the table is not rewritten." if in_place
                                      else "It rewrites the table under an ACCESS EXCLUSIVE lock.")))
        recognised.append(replace(step, operations=tuple(operations),
                                  risk=step_risk(step.migration_type, list(operations))))
    return tuple(recognised)


def _operations(project: MigrationProject, rendered: RenderedSQL) -> list[Operation]:
    if rendered.sql is not None:
        return with_autocommit_marked(operations_from_sql(rendered.sql)) if rendered.sql.strip() else []
    script = project.script(rendered.revision)
    return with_autocommit_marked(operations_from_python(script.path, rendered.direction, rendered.error or "",
                                                         vars(script.module),
                                                         fails_everywhere=rendered.fails_everywhere))


# Downgrade operations that change what a later count of their table would see: every row, or one column.
_TABLE_CHANGES = (ROW_CHANGES - {"convert_values"}) | {"insert"}
_COLUMN_CHANGES = {"alter_column_type", "convert_values"}


def _account_for_earlier_steps(steps: tuple[PlanStep, ...]) -> tuple[PlanStep, ...]:
    """Mark checks whose table an earlier statement of the same downgrade re-creates or changes.

    A table or column re-created earlier comes back empty: its check counts zero rows. A table (or,
    after a type change, a column) that an earlier statement changes is counted on today's data, which
    the later statement will not see.
    """
    created: dict[str, str] = {}
    changed: dict[str, tuple[str, str]] = {}  # table or table.column -> (revision, statement) that changes it
    types: dict[str, tuple[str, tuple[str, ...]]] = {}  # type created -> (revision, enum labels)
    marked = []
    for step in steps:
        operations = []
        for op in step.operations:
            table_key, column_key = str(op.table), f"{op.table}.{op.column}"
            check = op.check
            if check:
                source = created.get(column_key) if check.kind == "non_null_values" else None
                source = source or created.get(table_key)
                earlier = [changed[key] for key in (table_key, *(f"{op.table}.{c}" for c in check.columns))
                           if key in changed and changed[key][1] != op.statement]
                new_type = types.get(check.type_name or "") if check.kind in ("not_fitting", "converted") else None
                if source:
                    op = replace(op, rows_affected=0, count_note=f"comes back empty in step {source} of this downgrade")
                elif new_type and new_type[1]:
                    op = replace(op, check=replace(check, allowed_values=new_type[1]))
                elif new_type:
                    op = replace(op, count_note=f"type {check.type_name} is created by step {new_type[0]} of this "
                                 "downgrade, so today's values cannot be checked against it: not counted")
                elif earlier:
                    op = replace(op, changed_earlier_by=earlier[0][0])
            operations.append(op)
            if op.op == "create_type":
                types[op.extra["name"]] = (step.revision.revision, tuple(op.extra.get("labels", ())))
            elif op.op == "create_table":
                created[table_key] = step.revision.revision
            elif op.op == "add_column":
                created[column_key] = step.revision.revision
            elif op.op in _TABLE_CHANGES or op.op in _COLUMN_CHANGES:
                key = table_key if op.op in _TABLE_CHANGES else column_key
                changed.setdefault(key, (step.revision.revision, op.statement))
        marked.append(replace(step, operations=tuple(operations)))
    return tuple(marked)


def _checks_to_run(steps: tuple[PlanStep, ...]) -> list[LiveCheck]:
    return [op.check for step in steps for op in step.operations if op.check and op.count_note is None]


def _with_counts(steps: tuple[PlanStep, ...], counts: LiveCounts | None) -> tuple[PlanStep, ...]:
    if counts is None:
        return steps
    updated = []
    for step in steps:
        operations = []
        for op in step.operations:
            if op.check is not None and op.count_note is None and op.check in counts.checks:
                result = counts.checks[op.check]
                op = replace(op, rows_affected=result.rows, count_note=result.note)
            operations.append(op)
        updated.append(replace(step, operations=tuple(operations)))
    return tuple(updated)


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
