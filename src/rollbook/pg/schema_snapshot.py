"""A database's schema read from pg_catalog into a snapshot (pg/schema_objects.py).

Used after a rollback: the live schema must equal the schema the target revision's migrations build.
Used when a downgrade step fails: the live schema against a snapshot taken just before the step
names what the step left changed (pg/schema_comparison.py compares them). With a snapshot taken before
the rollback, `apply_change` gives the schema the rollback should leave: the database as it was, changed
only where the migrations change it, so drift that was already there is neither required nor blamed on
the rollback.
What is read: schemas, tables (and views, materialized views, foreign tables), columns (type,
nullability, default, identity, generated, collation), indexes, constraints, standalone sequences and
enum types. Not read: column order (a downgrade that re-adds a column puts it last), owners,
grants, comments, triggers, functions, statistics and storage parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg

from rollbook.pg.schema_objects import (
    ColumnInfo,
    ConstraintInfo,
    EnumInfo,
    IndexInfo,
    SchemaSnapshot,
    SequenceInfo,
    TableInfo,
    excluded,
)

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
        row for row in conn.execute(_RELATIONS_SQL, [names]).fetchall() if not excluded(row[1], row[2], exclude)
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
