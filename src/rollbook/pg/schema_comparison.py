"""The differences between two schema snapshots, one readable sentence each, in the words of the question asked
(the target revision against the database, a step's before and after, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rollbook.pg.schema_objects import ColumnInfo, SchemaSnapshot, TableInfo, display, plural


@dataclass(frozen=True)
class ComparisonWords:
    """How the differences name the two sides, so one comparison answers several questions."""

    missing: str  # only the expected side has it
    missing_why: str
    extra: str  # only the actual side has it
    extra_why: str
    expected: str  # a value on the expected side
    found: str  # the value on the actual side


# The expected side is what the target revision builds; the actual side the live database.
TARGET_AND_DATABASE = ComparisonWords("missing", "the target revision has it", "not expected",
                                      "present in the database", "expected", "found")
# The expected side is what the starting revision builds; the actual side the database before the rollback.
START_AND_DATABASE_BEFORE = ComparisonWords("missing", "the migrations build it at the starting revision",
                                            "not made by the migrations", "in the database before the rollback",
                                            "built by the migrations", "in the database before the rollback")
# The expected side is a snapshot taken just before a downgrade step; the actual side the database after it.
BEFORE_AND_AFTER_STEP = ComparisonWords("dropped", "it was there before the step", "created",
                                        "new since the step began", "before the step", "now")


@dataclass(frozen=True)
class SchemaDifference:
    """The differences between an expected and an actual schema, one readable sentence each."""

    differences: tuple[str, ...]

    @property
    def matches(self) -> bool:
        return not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {"matches": self.matches, "differences": list(self.differences)}

    def to_text(self) -> str:
        if self.matches:
            return "The schemas match."
        lines = [f"{plural(len(self.differences), 'difference')}:"]
        lines += [f"  - {difference}" for difference in self.differences]
        return "\n".join(lines)


def compare_schemas(
    expected: SchemaSnapshot, actual: SchemaSnapshot, words: ComparisonWords = TARGET_AND_DATABASE,
) -> SchemaDifference:
    """Every way `actual` (the database) differs from `expected` (by default, what the target revision builds)."""
    differences: list[str] = []
    differences += _compare_names("schema", set(expected.schemas), set(actual.schemas), words)

    expected_tables = {(t.schema, t.name): t for t in expected.tables}
    actual_tables = {(t.schema, t.name): t for t in actual.tables}
    for key in sorted(expected_tables.keys() | actual_tables.keys()):
        want, have = expected_tables.get(key), actual_tables.get(key)
        if have is None:
            assert want is not None
            differences.append(f"{want.kind} {want.display_name}: {words.missing} ({words.missing_why})")
        elif want is None:
            differences.append(f"{have.kind} {have.display_name}: {words.extra} ({words.extra_why})")
        else:
            differences += _compare_tables(want, have, words)

    expected_sequences = {(s.schema, s.name): s for s in expected.sequences}
    actual_sequences = {(s.schema, s.name): s for s in actual.sequences}
    for key in sorted(expected_sequences.keys() | actual_sequences.keys()):
        want_seq, have_seq = expected_sequences.get(key), actual_sequences.get(key)
        name = display(*key)
        if have_seq is None:
            differences.append(f"sequence {name}: {words.missing} ({words.missing_why})")
        elif want_seq is None:
            differences.append(f"sequence {name}: {words.extra} ({words.extra_why})")
        elif want_seq != have_seq:
            differences.append(f"sequence {name}: {want_seq.description} {words.expected}, {have_seq.description} "
                               f"{words.found}")

    expected_enums = {(e.schema, e.name): e for e in expected.enums}
    actual_enums = {(e.schema, e.name): e for e in actual.enums}
    for key in sorted(expected_enums.keys() | actual_enums.keys()):
        want_enum, have_enum = expected_enums.get(key), actual_enums.get(key)
        name = display(*key)
        if have_enum is None:
            differences.append(f"enum type {name}: {words.missing} ({words.missing_why})")
        elif want_enum is None:
            differences.append(f"enum type {name}: {words.extra} ({words.extra_why})")
        elif want_enum.labels != have_enum.labels:
            differences.append(f"enum type {name}: labels {_labels(want_enum.labels)} {words.expected}, "
                               f"{_labels(have_enum.labels)} {words.found}")
    return SchemaDifference(tuple(differences))


def _compare_names(kind: str, expected: set[str], actual: set[str], words: ComparisonWords) -> list[str]:
    return (
        [f"{kind} {name}: {words.missing} ({words.missing_why})" for name in sorted(expected - actual)]
        + [f"{kind} {name}: {words.extra} ({words.extra_why})" for name in sorted(actual - expected)]
    )


def _compare_tables(want: TableInfo, have: TableInfo, words: ComparisonWords) -> list[str]:
    table = want.display_name
    differences: list[str] = []
    if want.kind != have.kind:
        differences.append(f"{table}: {want.kind} {words.expected}, {have.kind} {words.found}")
    if want.definition != have.definition:
        differences.append(
            f"{want.kind} {table}: definition {_one_line(want.definition)} {words.expected}, "
            f"{_one_line(have.definition)} {words.found}"
        )

    want_columns = {c.name: c for c in want.columns}
    have_columns = {c.name: c for c in have.columns}
    for name in sorted(want_columns.keys() | have_columns.keys()):
        expected_column, actual_column = want_columns.get(name), have_columns.get(name)
        if actual_column is None:
            differences.append(f"column {table}.{name}: {words.missing} ({words.missing_why})")
        elif expected_column is None:
            differences.append(f"column {table}.{name}: {words.extra} ({words.extra_why})")
        else:
            differences += _compare_columns(f"{table}.{name}", expected_column, actual_column, words)

    differences += _compare_keyed(
        "index", table,
        {i.name: i for i in want.indexes}, {i.name: i for i in have.indexes},
        describe=lambda i: i.description, words=words,
    )
    differences += _compare_keyed(
        "constraint", table,
        {k.name: k for k in want.constraints}, {k.name: k for k in have.constraints},
        describe=lambda k: k.definition, words=words,  # pg_get_constraintdef names the kind: "UNIQUE (email)"
    )
    return differences


def _compare_columns(column: str, want: ColumnInfo, have: ColumnInfo, words: ComparisonWords) -> list[str]:
    differences = []
    if want.type != have.type:
        differences.append(f"{column}: type {want.type} {words.expected}, {have.type} {words.found}")
    if want.nullable != have.nullable:
        differences.append(f"{column}: {_nullability(want)} {words.expected}, {_nullability(have)} {words.found}")
    if want.default != have.default or want.generated != have.generated:
        differences.append(f"{column}: {_default(want)} {words.expected}, {_default(have)} {words.found}")
    if want.identity != have.identity:
        differences.append(f"{column}: {_identity(want)} {words.expected}, {_identity(have)} {words.found}")
    if want.collation != have.collation:
        differences.append(
            f"{column}: collation {want.collation or '(type default)'} {words.expected}, "
            f"{have.collation or '(type default)'} {words.found}"
        )
    return differences


def _compare_keyed(
    kind: str, table: str, want: dict[str, Any], have: dict[str, Any], describe: Callable[[Any], str],
    words: ComparisonWords,
) -> list[str]:
    """Indexes or constraints, matched by name; a missing and an extra one that only differ by name are a rename."""
    differences: list[str] = []
    missing = {name: want[name] for name in sorted(want.keys() - have.keys())}
    extra = {name: have[name] for name in sorted(have.keys() - want.keys())}
    for name, item in list(missing.items()):
        twin = next((other for other, candidate in extra.items() if describe(candidate) == describe(item)), None)
        if twin is not None:
            differences.append(f"{kind} {describe(item)} on {table}: named {name} {words.expected}, "
                               f"{twin} {words.found}")
            del missing[name], extra[twin]
    for name in sorted(want.keys() & have.keys()):
        if describe(want[name]) != describe(have[name]):
            differences.append(
                f"{kind} {name} on {table}: {describe(want[name])} {words.expected}, "
                f"{describe(have[name])} {words.found}"
            )
    differences += [f"{kind} {name} on {table}: {words.missing} ({describe(item)})" for name, item in missing.items()]
    differences += [
        f"{kind} {name} on {table}: {words.extra} ({words.extra_why}: {describe(item)})"
        for name, item in extra.items()
    ]
    return differences


def _nullability(column: ColumnInfo) -> str:
    return "nullable" if column.nullable else "NOT NULL"


def _default(column: ColumnInfo) -> str:
    if column.generated:
        return f"generated always as {column.default}"
    return f"default {column.default}" if column.default is not None else "no default"


def _identity(column: ColumnInfo) -> str:
    return f"identity generated {column.identity}" if column.identity else "no identity"


def _labels(labels: tuple[str, ...]) -> str:
    return "(" + ", ".join(repr(label) for label in labels) + ")"


def _one_line(text: str | None) -> str:
    return " ".join(text.split()) if text is not None else "(none)"

