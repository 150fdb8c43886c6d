"""Seeding a scratch database for a rehearsal: made-up rows in every table, parents before children."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg import sql

from rollbook.project.migrations import MigrationProject
from rollbook.recovery.rehearsal_tables import TABLES_SQL, display, version_keys

# Each column with its base type (domains resolved), so a value can be made up for it.
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, a.attnotnull, a.atthasdef, coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
       a.attidentity::text, a.attgenerated::text, bt.typname, bt.typtype::text, bt.typcategory::text,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
       (SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = bt.oid ORDER BY e.enumsortorder LIMIT 1)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
_FOREIGN_KEYS_SQL = """
SELECT k.conrelid, k.confrelid,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
FROM pg_constraint k WHERE k.contype = 'f' AND k.conrelid = ANY(%s)
"""


@dataclass(frozen=True)
class _Column:
    name: str
    not_null: bool
    has_default: bool
    default: str
    identity: str
    generated: str
    type_name: str
    type_type: str
    category: str
    typmod: int
    enum_label: str | None


def seed_rows(conn: psycopg.Connection[Any], project: MigrationProject, count: int
              ) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """Insert up to `count` made-up rows into every table, parents before children; what was seeded, and notes.

    Every column gets a value where one can be made up (so a dropped column has values to lose);
    serial, identity and generated columns keep their defaults; a foreign key points at a row of its
    table. Each row goes in on its own, so a check constraint that rejects one costs only that row.
    """
    versions = version_keys(project, conn)
    tables = [(oid, schema, name) for oid, schema, name in conn.execute(TABLES_SQL).fetchall()
              if (schema, name) not in versions]
    oids = [oid for oid, _, _ in tables]
    columns: dict[int, list[_Column]] = {oid: [] for oid in oids}
    for relid, *fields in conn.execute(_COLUMNS_SQL, [oids]).fetchall():
        columns[relid].append(_Column(*fields))
    keys: dict[int, list[tuple[int, list[str], list[str]]]] = {oid: [] for oid in oids}
    for relid, parent, own, referenced in conn.execute(_FOREIGN_KEYS_SQL, [oids]).fetchall():
        keys[relid].append((parent, list(own), list(referenced)))
    names = {oid: (schema, name) for oid, schema, name in tables}
    seeded, notes = [], []
    left_null: list[tuple[int, tuple[int, list[str], list[str]]]] = []
    for oid in _parents_first(oids, keys, columns):
        schema, name = names[oid]
        inserted, note, waiting = _seed_table(conn, schema, name, columns[oid], keys[oid], names, count)
        seeded.append((display(schema, name), inserted))
        left_null += [(oid, key) for key in waiting] if inserted else []
        if note:
            notes.append(f"{display(schema, name)}: {note}")
    # Foreign keys in a cycle (flow_run.state_id -> flow_run_state.flow_run_id -> flow_run): the nullable
    # side went in as NULL, its parent is seeded now, so the reference is filled in afterwards.
    for oid, key in left_null:
        note = _point_at_parent(conn, names[oid], key, names)
        if note:
            notes.append(f"{display(*names[oid])}: {note}")
    return tuple(seeded), tuple(notes)


def _point_at_parent(conn: psycopg.Connection[Any], table: tuple[str, str], key: tuple[int, list[str], list[str]],
                     names: dict[int, tuple[str, str]]) -> str:
    """Fill a foreign key seeded as NULL (its parent had no rows yet) with a row of its parent; a note if refused."""
    parent, own, other = key
    targets = sql.SQL(", ").join(map(sql.Identifier, own))
    statement = sql.SQL("UPDATE {} SET " + ("({}) = " if len(own) > 1 else "{} = ") + "(SELECT {} FROM {} LIMIT 1) "
                        "WHERE {}").format(
        sql.Identifier(*table), targets, sql.SQL(", ").join(map(sql.Identifier, other)), sql.Identifier(*names[parent]),
        sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(sql.Identifier(column)) for column in own))
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.Error as exc:
        why = exc.diag.message_primary or type(exc).__name__
        return f"its reference to {display(*names[parent])} stayed NULL: {why}"
    return ""


def _seed_table(conn: psycopg.Connection[Any], schema: str, name: str, columns: list[_Column],
                keys: list[tuple[int, list[str], list[str]]], names: dict[int, tuple[str, str]], count: int,
                ) -> tuple[int, str, list[tuple[int, list[str], list[str]]]]:
    """Seed one table: rows inserted, a note if some were not, and the foreign keys left NULL for now."""
    referenced: dict[str, list[Any]] = {}
    waiting = []
    for parent, own, other in keys:
        if parent not in names:
            continue
        parent_schema, parent_name = names[parent]
        found = conn.execute(sql.SQL("SELECT {} FROM {} LIMIT {}").format(
            sql.SQL(", ").join(map(sql.Identifier, other)), sql.Identifier(parent_schema, parent_name),
            sql.Literal(count))).fetchall()
        if not found:
            waiting.append((parent, own, other))
        for position, own_column in enumerate(own):
            referenced[own_column] = [row[position] for row in found]
    inserted, problem = 0, ""
    for k in range(1, count + 1):
        # A made-up key may already be taken by a row the migrations themselves insert (Airflow's default_pool
        # is slot_pool id 1): the row is tried again with the values of a later row, which no seeded row uses.
        for attempt in range(_SEED_ATTEMPTS):
            values = _row_values(columns, referenced, k + attempt * count)
            if isinstance(values, str):
                return inserted, values, []
            try:
                _insert_row(conn, schema, name, values, columns)
            except psycopg.errors.UniqueViolation as exc:
                if attempt + 1 < _SEED_ATTEMPTS:
                    continue
                problem = problem or f"a row was rejected: {exc.diag.message_primary or type(exc).__name__}"
            except psycopg.Error as exc:
                problem = problem or f"a row was rejected: {exc.diag.message_primary or type(exc).__name__}"
            else:
                inserted += 1
            break
    return inserted, problem, waiting


_SEED_ATTEMPTS = 3


def _row_values(columns: list[_Column], referenced: dict[str, list[Any]], k: int) -> dict[str, Any] | str:
    """The made-up values of the `k`th row (defaults left out); or why no row can be made up."""
    values: dict[str, Any] = {}
    for column in columns:
        if column.identity or column.generated or "nextval(" in column.default:
            continue
        # Made-up bytes are no payload a project wrote (Airflow's 55297ae24532 decompresses every
        # serialized_dag.data_compressed): a nullable binary column is left NULL, which a downgrade skips or keeps.
        if column.type_name == "bytea" and not column.not_null:
            continue
        # A uuid the table makes itself (gen_random_uuid()) is left to it: the same made-up ids in two tables
        # collide when a migration copies rows from one into the other (Prefect's concurrency_limit_v2).
        if column.type_name == "uuid" and column.has_default:
            continue
        if column.name in referenced:
            choices = referenced[column.name]
            if not choices and column.not_null:
                return f"not seeded: no row in the table its column {column.name} refers to"
            values[column.name] = choices[(k - 1) % len(choices)] if choices else None
            continue
        value = made_up_value(column.type_name, column.type_type, column.category, column.typmod,
                              column.enum_label, k)
        if value is not None:
            values[column.name] = value
        elif column.not_null and not column.has_default:
            return f"not seeded: no value can be made up for {column.name} ({column.type_name})"
    return values


def _insert_row(conn: psycopg.Connection[Any], schema: str, name: str, values: dict[str, Any],
                columns: list[_Column]) -> None:
    """Insert one made-up row. A CHECK constraint that rejects it is tried once more with its nullable columns
    NULL, which every CHECK accepts (CKAN's package_flat_extras wants a JSON object of strings)."""
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(schema, name), sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() for _ in values)) if values else \
        sql.SQL("INSERT INTO {} DEFAULT VALUES").format(sql.Identifier(schema, name))
    try:
        with conn.transaction():
            conn.execute(statement, list(values.values()))
        return
    except psycopg.errors.CheckViolation as exc:
        checked = {row[0] for row in conn.execute(
            "SELECT a.attname FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid "
            "AND a.attnum = ANY (c.conkey) WHERE c.conrelid = %s::regclass AND c.conname = %s",
            [sql.Identifier(schema, name).as_string(conn), exc.diag.constraint_name]).fetchall()}
        nullable = {column.name for column in columns if not column.not_null} & checked & {
            column for column, value in values.items() if value is not None}
        if not nullable:
            raise
    with conn.transaction():
        conn.execute(statement, [None if column in nullable else value for column, value in values.items()])


def made_up_value(type_name: str, type_type: str, category: str, typmod: int, enum_label: str | None,
                  k: int) -> str | None:
    """The k-th made-up value for a column of this type, as text PostgreSQL casts; None if none can be made."""
    if type_type == "e":
        return enum_label
    if category == "A":
        return "{}"
    day = date(2026, 1, 1) + timedelta(days=k)
    if type_name in ("int2", "int4", "int8"):
        return str((20_000 if type_name == "int2" else 1_000_000) + k)
    if type_name == "numeric":
        if typmod < 4:
            return str(k)
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        return str(k) if precision - scale >= len(str(k)) else "0"
    if type_name in ("float4", "float8", "money"):
        return f"{k}.5"
    if type_name in ("text", "varchar", "bpchar", "name", "citext"):
        width = typmod - 4 if typmod > 4 else None
        text = f"rollbook seed {k}"
        return text if width is None or width >= len(text) else f"s{k}"[:width]
    values = {
        "bool": "true" if k % 2 else "false",
        "date": day.isoformat(),
        "timestamp": f"{day.isoformat()} 12:00:00",
        "timestamptz": f"{day.isoformat()} 12:00:00+00",
        "time": f"12:{k % 60:02d}:00",
        "timetz": f"12:{k % 60:02d}:00+00",
        "interval": f"{k} days",
        # An object of strings: what a document column holds most often (CKAN checks that its extras are).
        "json": json.dumps({"rollbook_seed": f"seed {k}"}),
        "jsonb": json.dumps({"rollbook_seed": f"seed {k}"}),
        "uuid": f"00000000-0000-4000-8000-{k:012d}",
        "bytea": f"\\x{k % 256:02x}",
        "inet": f"10.0.{k // 256 % 256}.{k % 256}",
        "cidr": f"10.{k % 256}.0.0/16",
        "macaddr": f"08:00:2b:01:02:{k % 256:02x}",
        "xml": f"<seed>{k}</seed>",
        "bit": "1",
        "varbit": "1",
    }
    return values.get(type_name)


def _parents_first(oids: list[int], keys: dict[int, list[tuple[int, list[str], list[str]]]],
                   columns: dict[int, list[_Column]]) -> list[int]:
    """Tables ordered so that a table comes after the parents its NOT NULL foreign keys need.

    Only required references order the tables: a nullable one in a cycle is seeded as NULL and filled in
    once its parent has rows, so tables whose keys point at each other are all seeded.
    """
    ordered: list[int] = []
    visiting: set[int] = set()

    def required(oid: int, own: list[str]) -> bool:
        return any(c.not_null for c in columns.get(oid, []) if c.name in own)

    def visit(oid: int) -> None:
        if oid in ordered or oid in visiting:
            return  # done, or a cycle of NOT NULL keys: its rows may be rejected, which is reported
        visiting.add(oid)
        for parent, own, _ in keys.get(oid, []):
            if parent != oid and parent in keys and required(oid, own):
                visit(parent)
        visiting.discard(oid)
        ordered.append(oid)

    for oid in oids:
        visit(oid)
    return ordered
