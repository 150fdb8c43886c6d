"""What a schema snapshot holds (tables, columns, indexes, constraints, sequences, enum types), kept in records, and
`apply_change`: a snapshot changed only where the migrations change the schema, by a three-way merge.

Snapshots are read from pg_catalog by pg/schema_snapshot.py and compared by pg/schema_comparison.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ColumnInfo:
    """One column as PostgreSQL describes it."""

    name: str
    type: str
    nullable: bool
    default: str | None = None
    identity: str | None = None  # "always", "by default" or None
    generated: bool = False  # a stored generated column; `default` then holds its expression
    collation: str | None = None  # only when it differs from the type's default collation

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "type": self.type, "nullable": self.nullable, "default": self.default,
            "identity": self.identity, "generated": self.generated, "collation": self.collation,
        }


@dataclass(frozen=True)
class IndexInfo:
    """An index that backs no constraint; `definition` is pg_get_indexdef without name and table."""

    name: str
    unique: bool
    definition: str

    @property
    def description(self) -> str:
        return f"{'unique ' if self.unique else ''}{self.definition}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "unique": self.unique, "definition": self.definition}


@dataclass(frozen=True)
class ConstraintInfo:
    """A table constraint: kind ("primary key", "unique", ...) and pg_get_constraintdef."""

    name: str
    kind: str
    definition: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "definition": self.definition}


@dataclass(frozen=True)
class TableInfo:
    """A table, view, materialized view or foreign table, with what hangs off it."""

    schema: str
    name: str
    kind: str
    columns: tuple[ColumnInfo, ...]
    indexes: tuple[IndexInfo, ...] = ()
    constraints: tuple[ConstraintInfo, ...] = ()
    definition: str | None = None  # pg_get_viewdef of a view

    @property
    def display_name(self) -> str:
        return display(self.schema, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema, "name": self.name, "kind": self.kind, "definition": self.definition,
            "columns": [c.to_dict() for c in self.columns],
            "indexes": [i.to_dict() for i in self.indexes],
            "constraints": [k.to_dict() for k in self.constraints],
        }


@dataclass(frozen=True)
class SequenceInfo:
    """A sequence no column owns (owned ones are covered by their column's default or identity)."""

    schema: str
    name: str
    type: str
    start: int
    increment: int
    minimum: int
    maximum: int
    cycle: bool

    @property
    def display_name(self) -> str:
        return display(self.schema, self.name)

    @property
    def description(self) -> str:
        return (f"{self.type} start {self.start} increment {self.increment} "
                f"min {self.minimum} max {self.maximum}{' cycle' if self.cycle else ''}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema, "name": self.name, "type": self.type, "start": self.start,
            "increment": self.increment, "minimum": self.minimum, "maximum": self.maximum, "cycle": self.cycle,
        }


@dataclass(frozen=True)
class EnumInfo:
    """An enum type and its labels in sort order."""

    schema: str
    name: str
    labels: tuple[str, ...]

    @property
    def display_name(self) -> str:
        return display(self.schema, self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"schema": self.schema, "name": self.name, "labels": list(self.labels)}


@dataclass(frozen=True)
class SchemaSnapshot:
    """What `read_schema` found, sorted so that equal schemas give equal snapshots."""

    schemas: tuple[str, ...]
    tables: tuple[TableInfo, ...]
    sequences: tuple[SequenceInfo, ...] = ()
    enums: tuple[EnumInfo, ...] = ()

    def without_tables(self, exclude: tuple[str, ...]) -> SchemaSnapshot:
        """The snapshot without the tables `exclude` names, as `read_schema(exclude=...)` would have read it."""
        return replace(self, tables=tuple(t for t in self.tables if not excluded(t.schema, t.name, exclude)))

    def table(self, name: str) -> TableInfo | None:
        """The table called `name` ("users" for public.users, or "schema.table")."""
        return next((t for t in self.tables if name in (t.display_name, f"{t.schema}.{t.name}")), None)

    @property
    def summary(self) -> str:
        """How much there was to compare, e.g. '3 tables, 14 columns, 1 index, 6 constraints'."""
        counts = [
            (len(self.tables), "table"),
            (sum(len(t.columns) for t in self.tables), "column"),
            (sum(len(t.indexes) for t in self.tables), "index"),
            (sum(len(t.constraints) for t in self.tables), "constraint"),
            (len(self.sequences), "sequence"),
            (len(self.enums), "enum type"),
        ]
        return ", ".join(plural(n, word) for n, word in counts if n or word in ("table", "column"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "schemas": list(self.schemas),
            "tables": [t.to_dict() for t in self.tables],
            "sequences": [s.to_dict() for s in self.sequences],
            "enums": [e.to_dict() for e in self.enums],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SchemaSnapshot:
        """Rebuild a snapshot from `to_dict()` output (for example one kept in a record)."""
        tables = tuple(
            TableInfo(
                schema=t["schema"], name=t["name"], kind=t["kind"], definition=t.get("definition"),
                columns=tuple(ColumnInfo(**c) for c in t["columns"]),
                indexes=tuple(IndexInfo(**i) for i in t["indexes"]),
                constraints=tuple(ConstraintInfo(**k) for k in t["constraints"]),
            )
            for t in data["tables"]
        )
        return cls(
            schemas=tuple(data["schemas"]),
            tables=tables,
            sequences=tuple(SequenceInfo(**s) for s in data.get("sequences", ())),
            enums=tuple(EnumInfo(e["schema"], e["name"], tuple(e["labels"])) for e in data.get("enums", ())),
        )


def apply_change(before: SchemaSnapshot, start: SchemaSnapshot, target: SchemaSnapshot) -> SchemaSnapshot:
    """`before` changed the way the migrations change `start` into `target`, and nowhere else.

    Each object (schema, table, column, index, constraint, sequence, enum type) that the migrations leave
    as it is keeps the database's own version, drift included; each one they change, create or drop
    takes its state at `target`.
    """
    tables = _merge(_by_key(before.tables), _by_key(start.tables), _by_key(target.tables), _merge_table)
    return SchemaSnapshot(
        schemas=tuple(sorted(_merge({n: n for n in before.schemas}, {n: n for n in start.schemas},
                                    {n: n for n in target.schemas}).values())),
        tables=tuple(tables[key] for key in sorted(tables)),
        sequences=tuple(v for _, v in sorted(_merge(_by_key(before.sequences), _by_key(start.sequences),
                                                     _by_key(target.sequences)).items())),
        enums=tuple(v for _, v in sorted(_merge(_by_key(before.enums), _by_key(start.enums),
                                                 _by_key(target.enums)).items())),
    )


def _by_key(items: Iterable[Any]) -> dict[Any, Any]:
    return {(item.schema, item.name): item for item in items}


def _merge(ours: dict[Any, Any], base: dict[Any, Any], theirs: dict[Any, Any],
           both_changed: Callable[[Any, Any, Any], Any] | None = None) -> dict[Any, Any]:
    """A three-way merge by key: what the migrations (base -> theirs) leave alone keeps the database's (ours)."""
    merged = {}
    for key in ours.keys() | base.keys() | theirs.keys():
        mine, old, new = ours.get(key), base.get(key), theirs.get(key)
        if old == new:
            value = mine
        elif both_changed is not None and None not in (mine, old, new):
            value = both_changed(mine, old, new)
        else:
            value = new
        if value is not None:
            merged[key] = value
    return merged


def _merge_table(mine: TableInfo, old: TableInfo, new: TableInfo) -> TableInfo:
    def by_name(items: Iterable[Any]) -> dict[str, Any]:
        return {item.name: item for item in items}

    def merged(attribute: str) -> tuple[Any, ...]:
        values = _merge(by_name(getattr(mine, attribute)), by_name(getattr(old, attribute)),
                        by_name(getattr(new, attribute)))
        return tuple(values[name] for name in sorted(values))

    return TableInfo(
        schema=mine.schema, name=mine.name,
        kind=mine.kind if old.kind == new.kind else new.kind,
        columns=merged("columns"), indexes=merged("indexes"), constraints=merged("constraints"),
        definition=mine.definition if old.definition == new.definition else new.definition,
    )


def excluded(schema: str, name: str, exclude: tuple[str, ...]) -> bool:
    """Whether `exclude` names the table, as "table" (in any schema) or "schema.table"."""
    return name in exclude or f"{schema}.{name}" in exclude


def display(schema: str, name: str) -> str:
    """An object's name as the differences show it: without "public.", else schema-qualified."""
    return name if schema == "public" else f"{schema}.{name}"


def plural(count: int, word: str) -> str:
    """"1 table", "2 tables", "3 indexes"."""
    if count == 1:
        return f"1 {word}"
    return f"{count} {word}es" if word.endswith(("x", "s")) else f"{count} {word}s"
