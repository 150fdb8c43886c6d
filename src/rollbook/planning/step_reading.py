"""Reading each step of a downgrade: the operations of its SQL or Python, what the database adds to them
(foreign-key actions, dependent objects, drops of what is not there), and the live counts."""

from __future__ import annotations

import copy
from dataclasses import replace

import psycopg

from rollbook.planning.data_loss import LiveCounts, table_columns
from rollbook.planning.dependent_objects import DroppedSoFar, with_dependent_objects
from rollbook.planning.downgrade_path import DowngradePath
from rollbook.planning.missing_objects import NamesSoFar, with_missing_objects
from rollbook.planning.operations import (
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
from rollbook.planning.risk import assess_downgrade_operations, migration_type, step_risk
from rollbook.planning.side_effects import read_data_dependencies, with_side_effects
from rollbook.planning.sql_operations import operations_from_sql
from rollbook.planning.step import PlanStep
from rollbook.project.migrations import MigrationProject
from rollbook.project.offline_sql import OfflineRenderer, RenderedSQL


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


NO_DOWNGRADE_ADVICE = "Restore from a backup taken before the upgrade, or fix forward with a new migration."


def _no_downgrade(project: MigrationProject, revision: str) -> Operation:
    return Operation(
        NO_DOWNGRADE, None, None, f"fails: {project.no_downgrade_text(revision)}", "", risk=Risk.HIGH,
        reason=f"It has no downgrade(): `alembic downgrade` stops at it with nothing undone. {NO_DOWNGRADE_ADVICE}")


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
                catalog[op.table] = dict(table_columns(conn, op.table))
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


def account_for_earlier_steps(steps: tuple[PlanStep, ...]) -> tuple[PlanStep, ...]:
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


def checks_to_run(steps: tuple[PlanStep, ...]) -> list[LiveCheck]:
    return [op.check for step in steps for op in step.operations if op.check and op.count_note is None]


def with_counts(steps: tuple[PlanStep, ...], counts: LiveCounts | None) -> tuple[PlanStep, ...]:
    if counts is None:
        return steps
    updated = []
    for step in steps:
        operations = []
        for op in step.operations:
            if op.check is not None and op.count_note is None and op.check in counts.checks:
                result = counts.checks[op.check]
                op = replace(op, rows_affected=result.rows, count_note=result.note, row_estimate=result.estimate)
            operations.append(op)
        updated.append(replace(step, operations=tuple(operations)))
    return tuple(updated)
