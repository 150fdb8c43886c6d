"""The dependent-objects scenario of a diagnosis: a drop or type change refused because views, constraints or
other objects depend on what it changes; the catalog names them and how to keep and drop them.
"""

from __future__ import annotations

import psycopg

from rollbook.execution.diagnosis_model import (
    CATALOG_TIMEOUT_MS,
    LOCK_TIMEOUT_MS,
    RESTORE,
    Diagnosis,
    Failure,
    step_facts,
    with_catalog,
)
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.data_loss import read_only_transaction
from rollbook.planning.dependent_objects import DEPENDENCY_OPS, DependentObject, find_dependent_objects
from rollbook.planning.operations import Operation


def dependency_targets(failure: Failure) -> list[Operation]:
    """The drops and type changes the failing statement makes, else those of the step."""
    ops = [op for op in failure.statement_operations if op.op in DEPENDENCY_OPS and op.table]
    if not ops and failure.step:
        ops = [op for op in failure.step.operations if op.op in DEPENDENCY_OPS and op.table]
    return ops


def dependent_objects(
    target: DatabaseTarget, failure: Failure, *, require_dependents: bool = False
) -> Diagnosis | None:
    """A drop or type change refused by dependent objects; None if `require_dependents` and the catalog names none."""
    facts = step_facts(failure)
    dependents: list[DependentObject] = []
    targets = dependency_targets(failure)

    def read(conn: psycopg.Connection) -> None:
        for op in targets:
            assert op.table is not None
            column = op.column if op.op != "drop_table" else None
            with read_only_transaction(conn, CATALOG_TIMEOUT_MS, LOCK_TIMEOUT_MS):
                found = find_dependent_objects(conn, op.table, column)
            what = f"{op.table}.{column}" if column else f"table {op.table}"
            dependents.extend(found)
            if found:
                facts.append(f"Objects that depend on {what}: " + ", ".join(d.description for d in found) + ".")
            else:
                facts.append(f"No object depends directly on {what} now.")

    with_catalog(target, facts, read)
    if require_dependents and not dependents:
        return None
    detail = failure.error.diag.message_detail or ""
    if detail:
        # PostgreSQL's own list follows chains (a view on a view) and names objects only.
        facts.append("PostgreSQL's detail: " + "; ".join(line.strip() for line in detail.splitlines() if line.strip()))
    names = ", ".join(dict.fromkeys(d.description for d in dependents)) or "the objects named in the detail"
    advice = [
        f"Drop or change {names} first, in a new migration (preferred, it is reviewed and recorded) or by hand, "
        "then retry the rollback. Re-create them afterwards if the application still needs them."
    ]
    advice += [f"Keep the definition first: `{d.keep}`, then `{d.drop}`." if d.keep else f"`{d.drop}`"
               for d in dict.fromkeys(dependents) if d.drop]
    advice.append(RESTORE)
    summary = (f"The downgrade cannot drop or change {_targets_text(targets)} because other objects depend on it."
               if targets else "The downgrade cannot drop an object because other objects depend on it.")
    return Diagnosis("dependent_objects", summary, tuple(facts), tuple(advice), failure.sqlstate, failure.revision)


def _targets_text(ops: list[Operation]) -> str:
    return ", ".join(dict.fromkeys(f"{op.table}.{op.column}" if op.column and op.op != "drop_table"
                                   else f"table {op.table}" for op in ops))
