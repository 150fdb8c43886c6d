"""What a downgrade puts at risk, read from its plan: the tables, (key, column) pairs and rows to save first.

The plan already knows what each step destroys or rewrites (its operations, their live checks and the
cascades the database adds). An at-risk backup copies exactly that; anything the plan could not pin down
(an operation not understood, a count not taken, a row set that depends on an earlier step) makes the
at-risk backup insufficient, and it says so instead of saving part of what is lost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rollbook.planning.operations import Operation, Risk, TableName
from rollbook.planning.plan import DowngradePlan

# How a piece is put back: whole rows inserted again, or the columns' values written back by primary key.
Keep = Literal["whole_rows", "key_and_columns"]

# Operations that delete whole rows (or empty the table): the rows themselves are saved.
_WHOLE_ROWS = frozenset({"delete", "cascade_delete", "truncate", "cascade_truncate", "drop_table"})
# Operations that overwrite values in place: the primary key and the overwritten columns are saved.
_OVERWRITES = frozenset({"update", "cascade_set_null", "cascade_set_default", "convert_values",
                         "alter_column_type", "drop_column"})


@dataclass(frozen=True)
class AtRiskPiece:
    """One set of data a step destroys or rewrites: which table, which rows, which columns."""

    revision: str
    table: TableName
    keep: Keep
    # The columns whose values are lost (key_and_columns); empty for whole rows.
    columns: tuple[str, ...]
    # The SQL condition of the rows reached (the migration's own, or the cascade's); None: every row.
    predicate: str | None
    # Only rows where the columns hold a value: a dropped column's NULLs need no saving.
    only_non_null: bool
    why: str


@dataclass(frozen=True)
class AtRiskScope:
    """The pieces to save, or the reasons the plan cannot say exactly what is at risk."""

    pieces: tuple[AtRiskPiece, ...]
    unquantified: tuple[str, ...]

    @property
    def sufficient(self) -> bool:
        return not self.unquantified


def at_risk_scope(plan: DowngradePlan) -> AtRiskScope:
    """The data each step of `plan` destroys or rewrites; `unquantified` lists what the plan could not pin down."""
    pieces: list[AtRiskPiece] = []
    unquantified: list[str] = []
    if plan.steps and not plan.live_checks:
        unquantified.append("the plan was made without live checks, so what each step reaches was not counted")
    for step in plan.steps:
        revision = step.revision.revision
        for op in step.operations:
            problem = _unquantified(op)
            if problem is not None:
                unquantified.append(f"{revision}: {op.detail}: {problem}")
                continue
            piece = _piece(revision, op)
            if piece is not None:
                pieces.append(piece)
    return AtRiskScope(tuple(dict.fromkeys(pieces)), tuple(dict.fromkeys(unquantified)))


def _unquantified(op: Operation) -> str | None:
    """Why the rows or values `op` reaches are not known before it runs; None when they are (or it reaches none)."""
    if op.risk == Risk.UNKNOWN:
        return "not understood (review by hand)"
    if op.op == "insert" and "do update" in op.statement.lower():
        # INSERT ... ON CONFLICT DO UPDATE overwrites the rows it collides with: which ones is known only then.
        return "overwrites the rows its values collide with, known only when it runs"
    if not _destroys(op):
        return None
    if op.table is None:
        return "its table is not known"
    if op.op in _BY_CONDITION and (op.check is None or op.check.predicate is None):
        return "which rows it changes is known only when it runs"
    if op.op == "update" and not op.extra.get("set_columns"):
        return "which columns it changes is not known"
    if op.check is not None and op.rows_affected is None:
        return f"not counted ({op.count_note or 'live checks were not run'})"
    if op.op in _BY_CONDITION and op.changed_earlier_by:
        return (f"step {op.changed_earlier_by} changes {op.table} first, so the rows its condition reaches then "
                "may differ from those it reaches now")
    return None


# Operations that reach the rows of a condition (the migration's own, or a cascade's).
_BY_CONDITION = frozenset({"update", "delete", "cascade_delete", "cascade_set_null", "cascade_set_default"})


def _destroys(op: Operation) -> bool:
    """Whether `op` deletes or overwrites stored values; a widening type change keeps every value."""
    if op.op == "alter_column_type":
        return op.risk != Risk.LOW
    return op.op in _WHOLE_ROWS | _OVERWRITES


def _piece(revision: str, op: Operation) -> AtRiskPiece | None:
    if not _destroys(op) or op.table is None:
        return None
    # A narrowing's count is of values that make it fail, not of values lost: its column is saved whatever the count.
    if op.op != "alter_column_type" and op.rows_affected == 0 and not op.changed_earlier_by:
        return None
    predicate = op.check.predicate if op.check is not None and op.op in _BY_CONDITION else None
    if op.op in _WHOLE_ROWS:
        return AtRiskPiece(revision, op.table, "whole_rows", (), predicate, False, op.detail)
    if op.op == "update":
        columns = tuple(op.extra["set_columns"])
    else:
        columns = tuple(c.strip() for c in (op.column or "").split(",") if c.strip())
    return AtRiskPiece(revision, op.table, "key_and_columns", columns, predicate, op.op == "drop_column", op.detail)
