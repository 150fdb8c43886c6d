"""What a migration function does to the schema and the data, one operation at a time."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # lock_time and row_estimates read operations; an operation only carries their estimates
    from rollbook.planning.lock_time import LockEstimate
    from rollbook.planning.row_estimates import RowEstimate


class Risk(str, Enum):  # noqa: UP042 (StrEnum changes str() and f-strings: "high", not "Risk.HIGH")
    """Risk levels of the rollback procedures, plus `unknown` for anything not understood."""

    LOW = "low"
    MEDIUM = "medium"
    UNKNOWN = "unknown"
    HIGH = "high"

    @property
    def rank(self) -> int:
        return _RANK[self]

    @classmethod
    def worst(cls, risks: list[Risk]) -> Risk:
        return max(risks, key=lambda r: r.rank, default=cls.LOW)


_RANK = {Risk.LOW: 0, Risk.MEDIUM: 1, Risk.UNKNOWN: 2, Risk.HIGH: 3}


@dataclass(frozen=True)
class TableName:
    schema: str | None
    name: str

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}" if self.schema else self.name


CheckKind = Literal[
    "non_null_values",  # values in a column that is dropped
    "all_rows",  # rows in a table that is dropped or truncated
    "matching_rows",  # rows an UPDATE or DELETE touches
    "not_fitting",  # values that do not fit a new column type
    "nulls",  # NULLs in a column that becomes NOT NULL
    "duplicates",  # rows that break a new unique constraint or index (partial: `predicate`; expressions: `keys`)
    "primary_key",  # rows that break a new primary key: a NULL in the key, or a repeated key
    "orphans",  # rows that break a new foreign key
    "violating",  # rows that break a new check constraint
    "rows_present",  # any row at all blocks the statement (NOT NULL column without default)
    "referencing",  # rows whose foreign key (NO ACTION / RESTRICT) makes a DELETE fail
    "converted",  # values a type change rounds or rewrites without failing
    "conflicting_inserts",  # rows of an INSERT ... VALUES whose unique key a row already has (`predicate`: VALUES)
]

# Operations that delete or rewrite rows of their table, directly, through a foreign key's action, or by
# converting values to a new type.
ROW_CHANGES = frozenset({
    "update", "delete", "truncate", "cascade_delete", "cascade_set_null", "cascade_set_default", "cascade_truncate",
    "convert_values",
})

# The values each integer type holds, by the names a type change may use for it.
INTEGER_RANGES = {
    **dict.fromkeys(("int2", "smallint"), (-32768, 32767)),
    **dict.fromkeys(("int4", "integer", "int"), (-2147483648, 2147483647)),
    **dict.fromkeys(("int8", "bigint"), (-9223372036854775808, 9223372036854775807)),
}
INTEGER_TYPES = frozenset(INTEGER_RANGES)
# The character types whose length modifier limits a value.
TEXT_TYPES = ("varchar", "character varying", "bpchar", "char", "character")

# Type names as the parser, SQLAlchemy or PostgreSQL's format_type() write them, to one spelling.
_TYPE_SPELLINGS = {
    "varchar": "character varying", "string": "character varying", "unicode": "character varying",
    "int2": "smallint", "int4": "integer", "int": "integer", "int8": "bigint", "biginteger": "bigint",
    "unicodetext": "text", "decimal": "numeric",
}
_INTEGER_WIDTH = {"smallint": 0, "integer": 1, "bigint": 2}
_STRING_TYPES = ("character varying", "text")

Widening = Literal["in_place", "rewrites"]


def type_widening(current: str, new_type: str, new_modifiers: tuple[int, ...]) -> Widening | None:
    """Whether changing a column of type `current` (format_type's text) to `new_type` keeps every value as it
    is: "in_place" when PostgreSQL only changes the catalog, "rewrites" when it rewrites the table; None when
    the change can fail or change a value (a narrowing, or a different kind of type)."""
    current_name, _, rest = current.partition("(")
    current_name = _TYPE_SPELLINGS.get(current_name.strip(), current_name.strip())
    current_modifiers = tuple(int(m) for m in rest.rstrip(")").split(",") if m.strip().isdigit())
    new_name = _TYPE_SPELLINGS.get(new_type.lower(), new_type.lower())
    if current_name in _STRING_TYPES and new_name in _STRING_TYPES:
        # varchar(n) to varchar(m >= n), to unbounded varchar, or to text: binary-compatible, no rewrite.
        if new_name == "text" or not new_modifiers:
            return "in_place"
        if current_name == "character varying" and current_modifiers and new_modifiers[0] >= current_modifiers[0]:
            return "in_place"
        return None
    if current_name == new_name == "numeric":
        if not new_modifiers:
            return "in_place"
        new_scale = new_modifiers[1] if len(new_modifiers) > 1 else 0
        if current_modifiers:
            current_scale = current_modifiers[1] if len(current_modifiers) > 1 else 0
            if new_scale == current_scale and new_modifiers[0] >= current_modifiers[0]:
                return "in_place"
        return None
    if current_name in _INTEGER_WIDTH and new_name in _INTEGER_WIDTH:
        return "in_place" if current_name == new_name else (
            "rewrites" if _INTEGER_WIDTH[new_name] > _INTEGER_WIDTH[current_name] else None)
    if current_name in _INTEGER_WIDTH and new_name == "numeric" and not new_modifiers:
        return "rewrites"
    return None


@dataclass(frozen=True)
class LiveCheck:
    """A read-only count the planner runs against the live table to quantify an operation."""

    kind: CheckKind
    table: TableName
    columns: tuple[str, ...] = ()
    type_name: str | None = None
    type_modifiers: tuple[int, ...] = ()
    predicate: str | None = None
    referenced_table: TableName | None = None
    referenced_columns: tuple[str, ...] = ()
    # The labels of an enum type the downgrade itself creates before this check's statement.
    allowed_values: tuple[str, ...] = ()
    # The SQL of each element of a unique index on expressions (instead of `columns`).
    keys: tuple[str, ...] = ()

    @property
    def effect(self) -> Literal["lost", "blocks"]:
        """Whether counted rows lose data, or make the statement fail."""
        return "lost" if self.kind in ("non_null_values", "all_rows", "matching_rows", "converted") else "blocks"


# Operations whose statement fails whatever the rows: an object in its way, an object to drop that does not
# exist, a TRUNCATE that is refused, a migration's own code that raises, a migration file with no downgrade() at all.
NO_DOWNGRADE = "no_downgrade"
CERTAIN_FAILURES = frozenset({"dependent_object", "missing_object", "truncate_refused", "raises", NO_DOWNGRADE})

_LOSS_VERBS = {
    "update": "rewritten", "delete": "deleted", "cascade_delete": "deleted", "cascade_set_null": "rewritten",
    "cascade_set_default": "rewritten", "convert_values": "changed",
}


@dataclass(frozen=True)
class Operation:
    """One schema or data change made by a migration function."""

    op: str
    table: TableName | None
    column: str | None
    detail: str
    statement: str
    lock: str | None = None
    rewrites_table: bool = False
    check: LiveCheck | None = None
    source: Literal["sql", "python"] = "sql"
    risk: Risk = Risk.UNKNOWN
    reason: str = ""
    rows_affected: int | None = None
    count_note: str | None = None
    # An earlier step of the same downgrade that changes this table's data first: the live count,
    # taken on today's data, is then an estimate.
    changed_earlier_by: str | None = None
    # Why this statement keeps its step from running as one transaction (a COMMIT, CREATE INDEX
    # CONCURRENTLY, ...); None when it runs inside the step's transaction.
    not_atomic_reason: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # How long it is expected to hold its lock and what that blocks; None until the plan estimates it.
    lock_estimate: LockEstimate | None = None
    # What the statistics said the check would count, before the exact count; None without live checks.
    row_estimate: RowEstimate | None = None

    @property
    def understood(self) -> bool:
        return self.op != "unknown"

    @property
    def fails(self) -> bool:
        """Whether the statement is known to fail: an object in its way, or counted rows that break it."""
        if self.op in CERTAIN_FAILURES:
            return True
        # An uncounted check keeps its estimate's alarm: a false alarm rather than a false all-clear.
        return self.check is not None and self.check.effect == "blocks" and (self.rows_counted_or_estimated or 0) > 0

    @property
    def estimate_only(self) -> bool:
        """Whether the exact count did not finish and the statistics' estimate is all the plan has."""
        return self.rows_affected is None and self.row_estimate is not None and self.row_estimate.rows is not None

    @property
    def rows_counted_or_estimated(self) -> int | None:
        """The exact count, or else the estimate when the count did not finish; None when neither is known."""
        if self.rows_affected is not None:
            return self.rows_affected
        return self.row_estimate.rows if self.row_estimate is not None else None

    @property
    def count_basis(self) -> Literal["exact", "estimate_only", "not_counted"] | None:
        """What `rows_counted_or_estimated` rests on; None without a check."""
        if self.check is None:
            return None
        return "exact" if self.rows_affected is not None else "estimate_only" if self.estimate_only else "not_counted"

    def count_text(self) -> str | None:
        """The live count in words ("5 values lost", "9 rows rewritten"); None without a check."""
        if self.check is None:
            return None
        rows = self.rows_counted_or_estimated
        if rows is None:
            return "not counted"
        number = f"{rows}" if self.rows_affected is not None else f"about {rows}"
        noun = "values" if self.check.kind in ("non_null_values", "converted") else "rows"
        after = " (estimate only: not counted exactly)" if self.rows_affected is None else ""
        if self.check.effect == "blocks":
            return f"{number} {noun} that would make it fail{after}"
        return f"{number} {noun} {_LOSS_VERBS.get(self.op, 'lost')}{after}"

    def estimate_text(self) -> str | None:
        """The statistics' estimate beside an exact count ("estimate before counting: about 5, ..."), if any."""
        if self.rows_affected is None or self.row_estimate is None:
            return None
        estimate = self.row_estimate
        if estimate.rows is None:
            return estimate.basis  # "no estimate: ..." says why
        return f"estimate before counting: about {estimate.rows} ({estimate.basis})"

    def described(self) -> str:
        """The detail, followed by the live count when there is a check."""
        count = self.count_text()
        return f"{self.detail}: {count}" if count else self.detail

    def to_dict(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "table": str(self.table) if self.table else None,
            "column": self.column,
            "risk": self.risk.value,
            "rows_affected": self.rows_affected,
            "rows_estimated": self.row_estimate.rows if self.row_estimate else None,
            "count_basis": self.count_basis,
            "row_estimate": self.row_estimate.to_dict() if self.row_estimate else None,
            "effect": self.check.effect if self.check else None,
            "fails": self.fails,
            "detail": self.detail,
            "reason": self.reason,
            "count_note": self.count_note,
            "changed_earlier_by": self.changed_earlier_by,
            "lock": self.lock,
            "rewrites_table": self.rewrites_table,
            "not_atomic_reason": self.not_atomic_reason,
            "estimated_lock_seconds": self.lock_estimate.seconds if self.lock_estimate else None,
            "lock_estimate": self.lock_estimate.to_dict() if self.lock_estimate else None,
            "statement": self.statement,
            "source": self.source,
        }


# Marks (in `extra`) the first operation of a function read from its Python source because it could not be
# rendered offline: it says so, and is not itself something the function does.
RENDER_FALLBACK = "render_fallback"

# Transaction control inside a migration function: the statements between them run in autocommit.
COMMIT, BEGIN = "commit", "begin"
AFTER_COMMIT = ("runs after a COMMIT, outside the step's transaction: it is committed on its own the moment it "
                "succeeds")


def with_autocommit_marked(operations: list[Operation]) -> list[Operation]:
    """Mark each operation between a COMMIT and the next BEGIN as running outside the step's transaction.

    That is where Alembic's `autocommit_block()` puts its statements (it renders as COMMIT ... BEGIN),
    and where anything after an explicit COMMIT runs.
    """
    marked = []
    committed = False
    for op in operations:
        if op.op == COMMIT:
            committed = True
        elif op.op == BEGIN:
            committed = False
        elif committed and op.not_atomic_reason is None:
            op = replace(op, not_atomic_reason=AFTER_COMMIT)
        marked.append(op)
    return marked
