"""A database's schema read from pg_catalog, and the differences between two such snapshots.

Used after a rollback: the live schema must equal the schema the target revision's migrations build.
Used when a downgrade step fails: the live schema against a snapshot taken just before the step
names what the step left changed. With a snapshot taken before the rollback, `apply_change` gives the
schema the rollback should leave: the database as it was, changed only where the migrations change it,
so drift that was already there is neither required nor blamed on the rollback.
What is compared: schemas, tables (and views, materialized views, foreign tables), columns (type,
nullability, default, identity, generated, collation), indexes, constraints, standalone sequences and
enum types. Not compared: column order (a downgrade that re-adds a column puts it last), owners,
grants, comments, triggers, functions, statistics and storage parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import psycopg

# A default that draws from the column's own sequence (serial) is rewritten to this: the sequence's
# name is an accident of history (renamed tables keep their old sequence names), not a schema fact.
OWNED_SEQUENCE = "<owned sequence>"

# Catalog reads are quick; a stuck catalog lock must not hang a verification step.
STATEMENT_TIMEOUT = "30s"
LOCK_TIMEOUT = "5s"

# A fixed search path makes pg_get_expr, format_type and friends qualify names the same way in both
# databases, whatever search_path the live database or role has set.
SEARCH_PATH = "pg_catalog, public"

_RELATION_KINDS = {
    "r": "table",
    "p": "partitioned table",
    "v": "view",
    "m": "materialized view",
    "f": "foreign table",
}

_CONSTRAINT_KINDS = {
    "p": "primary key",
    "u": "unique",
    "f": "foreign key",
    "c": "check",
    "x": "exclusion",
}

_IDENTITY = {"a": "always", "d": "by default"}

_NOT_EXTENSION_MEMBER = """
NOT EXISTS (SELECT 1 FROM pg_depend e
            WHERE e.classid = {catalog}::regclass AND e.objid = {oid} AND e.deptype = 'e')
"""

_SCHEMAS_SQL = """
SELECT nspname FROM pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
ORDER BY nspname
"""

_EXISTING_SCHEMAS_SQL = "SELECT nspname FROM pg_namespace WHERE nspname = ANY(%s) ORDER BY nspname"

_RELATIONS_SQL = f"""
SELECT c.oid, n.nspname, c.relname, c.relkind::text,
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid, true) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND {_NOT_EXTENSION_MEMBER.format(catalog="'pg_class'", oid="c.oid")}
"""

_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(ad.adbin, ad.adrelid), a.attidentity::text, a.attgenerated::text,
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END,
       -- How pg_get_expr prints the column's own sequence(s), to recognise nextval() of them.
       ARRAY(SELECT quote_literal(s.objid::regclass::text) || '::regclass'
             FROM pg_depend s JOIN pg_class sc ON sc.oid = s.objid AND sc.relkind = 'S'
             WHERE s.classid = 'pg_class'::regclass AND s.refclassid = 'pg_class'::regclass
               AND s.refobjid = a.attrelid AND s.refobjsubid = a.attnum AND s.deptype = 'a')
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

# Indexes that implement a primary key, unique or exclusion constraint are reported as that constraint.
_INDEXES_SQL = """
SELECT i.indrelid, ic.relname, i.indisunique, pg_get_indexdef(i.indexrelid),
       quote_ident(n.nspname) || '.' || quote_ident(tc.relname), quote_ident(tc.relname)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class tc ON tc.oid = i.indrelid
JOIN pg_namespace n ON n.oid = tc.relnamespace
WHERE i.indrelid = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                  WHERE k.conindid = i.indexrelid AND k.conrelid = i.indrelid AND k.contype IN ('p', 'u', 'x'))
ORDER BY ic.relname
"""

# PostgreSQL 18 also lists NOT NULL constraints (contype 'n'); nullability is compared per column.
_CONSTRAINTS_SQL = """
SELECT conrelid, conname, contype::text, pg_get_constraintdef(oid)
FROM pg_constraint
WHERE conrelid = ANY(%s) AND contype IN ('p', 'u', 'f', 'c', 'x')
ORDER BY conname
"""

# Sequences owned by a column (serial, identity) belong to that column and are not listed on their own.
_SEQUENCES_SQL = f"""
SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
       s.seqmin, s.seqmax, s.seqcycle
FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY(%s)
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i'))
  AND {_NOT_EXTENSION_MEMBER.format(catalog="'pg_class'", oid="c.oid")}
"""

_ENUMS_SQL = f"""
SELECT n.nspname, t.typname, ARRAY(SELECT e.enumlabel FROM pg_enum e
                                   WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = ANY(%s) AND t.typtype = 'e'
  AND {_NOT_EXTENSION_MEMBER.format(catalog="'pg_type'", oid="t.oid")}
"""


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
        return _display(self.schema, self.name)

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
        return _display(self.schema, self.name)

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
        return _display(self.schema, self.name)

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
        return replace(self, tables=tuple(t for t in self.tables if not _excluded(t.schema, t.name, exclude)))

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
        return ", ".join(_plural(n, word) for n, word in counts if n or word in ("table", "column"))

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
        lines = [f"{_plural(len(self.differences), 'difference')}:"]
        lines += [f"  - {difference}" for difference in self.differences]
        return "\n".join(lines)


def list_schemas(conn: psycopg.Connection[Any], *, with_relations_only: bool = False) -> tuple[str, ...]:
    """The non-system schemas of the database; only those holding tables or views if asked."""
    names = tuple(row[0] for row in conn.execute(_SCHEMAS_SQL).fetchall())
    if not with_relations_only:
        return names
    rows = conn.execute(
        "SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ORDER BY 1",
        [list(names)],
    ).fetchall()
    return tuple(row[0] for row in rows)


def read_schema(
    conn: psycopg.Connection[Any],
    *,
    schemas: tuple[str, ...] | None = None,
    exclude: tuple[str, ...] = (),
) -> SchemaSnapshot:
    """Read the schema of `conn`'s database from pg_catalog.

    `schemas` limits the read (default: every non-system schema). `exclude` names tables to leave out,
    as "table" (in any schema) or "schema.table"; the Alembic version table is the usual one.
    The read runs in its own read-only transaction when `conn` is idle, under a statement timeout.
    """
    own_transaction = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if own_transaction:
            # One snapshot for every query below, and a promise to write nothing.
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for setting, value in (("search_path", SEARCH_PATH), ("statement_timeout", STATEMENT_TIMEOUT),
                               ("lock_timeout", LOCK_TIMEOUT)):
            conn.execute("SELECT set_config(%s, %s, true)", [setting, value])
        return _read(conn, schemas, exclude)


def _read(conn: psycopg.Connection[Any], schemas: tuple[str, ...] | None, exclude: tuple[str, ...]) -> SchemaSnapshot:
    if schemas is None:
        names = list(list_schemas(conn))
    else:
        names = [row[0] for row in conn.execute(_EXISTING_SCHEMAS_SQL, [list(schemas)]).fetchall()]
    relations = [
        row for row in conn.execute(_RELATIONS_SQL, [names]).fetchall() if not _excluded(row[1], row[2], exclude)
    ]
    oids = [row[0] for row in relations]

    columns: dict[int, list[ColumnInfo]] = {oid: [] for oid in oids}
    for relid, name, type_, notnull, default, identity, generated, collation, own_sequences in conn.execute(
        _COLUMNS_SQL, [oids]
    ).fetchall():
        columns[relid].append(ColumnInfo(
            name=name,
            type=type_,
            nullable=not notnull,
            default=_normalise_default(default, own_sequences),
            identity=_IDENTITY.get(identity),
            generated=bool(generated),
            collation=collation,
        ))

    indexes: dict[int, list[IndexInfo]] = {oid: [] for oid in oids}
    for relid, name, unique, indexdef, qualified_table, bare_table in conn.execute(_INDEXES_SQL, [oids]).fetchall():
        indexes[relid].append(IndexInfo(name, unique, _index_body(indexdef, qualified_table, bare_table)))

    constraints: dict[int, list[ConstraintInfo]] = {oid: [] for oid in oids}
    for relid, name, contype, definition in conn.execute(_CONSTRAINTS_SQL, [oids]).fetchall():
        constraints[relid].append(ConstraintInfo(name, _CONSTRAINT_KINDS[contype], definition))

    tables = tuple(sorted(
        (
            TableInfo(
                schema=schema,
                name=name,
                kind=_RELATION_KINDS[relkind],
                columns=tuple(sorted(columns[oid], key=lambda c: c.name)),
                indexes=tuple(indexes[oid]),
                constraints=tuple(constraints[oid]),
                definition=definition,
            )
            for oid, schema, name, relkind, definition in relations
        ),
        key=lambda t: (t.schema, t.name),
    ))
    sequences = tuple(sorted(
        (SequenceInfo(*row) for row in conn.execute(_SEQUENCES_SQL, [names]).fetchall()),
        key=lambda s: (s.schema, s.name),
    ))
    enums = tuple(sorted(
        (EnumInfo(schema, name, tuple(labels)) for schema, name, labels in conn.execute(_ENUMS_SQL, [names])),
        key=lambda e: (e.schema, e.name),
    ))
    return SchemaSnapshot(schemas=tuple(names), tables=tables, sequences=sequences, enums=enums)


def _excluded(schema: str, name: str, exclude: tuple[str, ...]) -> bool:
    return name in exclude or f"{schema}.{name}" in exclude


def _normalise_default(default: str | None, own_sequences: Iterable[str]) -> str | None:
    if default is None:
        return None
    for literal in own_sequences:
        default = default.replace(f"nextval({literal})", f"nextval({OWNED_SEQUENCE})")
    return default


def _index_body(indexdef: str, qualified_table: str, bare_table: str) -> str:
    """'CREATE UNIQUE INDEX ix ON public.t USING btree (a)' -> 'btree (a)': name and table are keys elsewhere."""
    for table in (qualified_table, bare_table):
        for only in ("ONLY ", ""):
            marker = f" ON {only}{table} USING "
            position = indexdef.find(marker)
            if position != -1:
                return indexdef[position + len(marker):]
    return indexdef  # an unexpected shape: compare it whole rather than guess


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
        name = _display(*key)
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
        name = _display(*key)
        if have_enum is None:
            differences.append(f"enum type {name}: {words.missing} ({words.missing_why})")
        elif want_enum is None:
            differences.append(f"enum type {name}: {words.extra} ({words.extra_why})")
        elif want_enum.labels != have_enum.labels:
            differences.append(f"enum type {name}: labels {_labels(want_enum.labels)} {words.expected}, "
                               f"{_labels(have_enum.labels)} {words.found}")
    return SchemaDifference(tuple(differences))


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


def _display(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


def _plural(count: int, word: str) -> str:
    if count == 1:
        return f"1 {word}"
    return f"{count} {word}es" if word.endswith(("x", "s")) else f"{count} {word}s"
