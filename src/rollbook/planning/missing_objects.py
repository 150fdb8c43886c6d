"""Objects a downgrade drops that the database does not have: the statement would fail.

A database whose tables came from `metadata.create_all` (or were changed by hand) can name an index or
a constraint differently from the migrations: `DROP INDEX ix_old` then fails with "does not exist" in
the middle of the rollback. The planner looks each dropped table, column, index and constraint up in
the live catalog, unless an earlier statement of the same downgrade creates it; an index whose table an
earlier statement drops went with that table. With IF EXISTS the statement does not fail but does
nothing, and the plan says so: CKAN's `021` "drops" its indexes with `DROP CONSTRAINT IF EXISTS`, so
they stay. Names an earlier statement renames, or that a statement rollbook did not understand may
have touched, are not looked up, and an unqualified table or index found in another schema (the one
a multi-tenant env.py selects) is taken to be there: an unsure "fails" would be a false one.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import psycopg
from psycopg import sql

from rollbook.planning.data_loss import regclass_text
from rollbook.planning.operations import Operation, Risk

# The drops whose object is looked up, and what each drops.
CHECKED_DROPS = {"drop_table": "table", "drop_column": "column", "drop_index": "index",
                 "drop_constraint": "constraint"}

_CREATES = {"create_table": "table", "add_column": "column", "create_index": "index",
            "create_unique_index": "index", "add_unique": "constraint", "add_primary_key": "constraint",
            "add_foreign_key": "constraint", "add_check": "constraint"}

_TABLE_EXISTS = "SELECT 1 FROM pg_class WHERE oid = to_regclass(%s) AND relkind IN ('r', 'p', 'f')"
_COLUMN_EXISTS = ("SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s "
                  "AND attnum > 0 AND NOT attisdropped")
_CONSTRAINT_EXISTS = "SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass(%s) AND conname = %s"
_INDEX_EXISTS = "SELECT 1 FROM pg_class WHERE oid = to_regclass(%s) AND relkind IN ('i', 'I')"
# The table an index belongs to, as a downgrade may name it: bare and schema-qualified.
_INDEX_TABLE = ("SELECT c.relname, n.nspname || '.' || c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE i.indexrelid = to_regclass(%s)")
_INDEX_OF_TABLE = ("SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                   "WHERE i.indrelid = to_regclass(%s) AND c.relname = %s")
# An unqualified name found in no schema on rollbook's search path may be in the schema the project's
# env.py selects (multi-tenant projects set search_path from -x arguments): then nothing is claimed.
_IN_ANY_SCHEMA = ("SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = %s "
                  "AND c.relkind = ANY(%s) AND n.nspname NOT IN ('pg_catalog', 'information_schema')")


@dataclass
class NamesSoFar:
    """What the statements of the downgrade before the one being looked at create, drop, or make uncertain."""

    created: set[tuple[str, str]] = field(default_factory=set)  # (kind, name), e.g. ("index", "ix_a")
    dropped: set[tuple[str, str]] = field(default_factory=set)
    created_tables: set[str] = field(default_factory=set)
    unsure_tables: set[str] = field(default_factory=set)
    unsure_everywhere: bool = False

    def record(self, op: Operation) -> None:
        """Note what `op` does to the names a later drop may look up."""
        key = _object_key(op, _CREATES.get(op.op) or CHECKED_DROPS.get(op.op))
        if op.op in _CREATES and key is not None:
            self.created.add(key)
            self.dropped.discard(key)
            if op.op == "create_table" and op.table is not None:
                self.created_tables.add(str(op.table))
        elif op.op in CHECKED_DROPS and key is not None:
            self.dropped.add(key)
            self.created.discard(key)
        elif op.op == "unknown" or op.op.startswith("rename_") or op.source != "sql":
            if op.table is None:
                self.unsure_everywhere = True
            else:
                self.unsure_tables.add(str(op.table))

    def knows_nothing_about(self, op: Operation) -> bool:
        """Whether an earlier statement may have made or renamed what `op` drops, so the catalog cannot tell."""
        if self.unsure_everywhere:
            return True
        # A table the downgrade creates has columns, indexes and constraints no operation lists one by one.
        return op.table is not None and (str(op.table) in self.unsure_tables or str(op.table) in self.created_tables)


def with_missing_objects(conn: psycopg.Connection, operations: list[Operation], names: NamesSoFar) -> list[Operation]:
    """`operations`, each drop of an object the database does not have followed by why it fails."""
    expanded = []
    for op in operations:
        why = _why_missing(conn, op, names)
        if why is None:
            expanded.append(op)
        elif op.extra.get("if_exists"):
            expanded.append(Operation(
                "drops_nothing", op.table, op.column, f"does nothing: {why}{_index_of_that_name(conn, op)}",
                op.statement, risk=Risk.LOW,
                reason="IF EXISTS: PostgreSQL skips what is not there, so what the statement was meant to remove "
                       "stays; the schema check after the rollback shows it.",
            ))
        else:
            # What it would drop is not there, so it destroys nothing: the risk and reason of a drop (data lost,
            # "the column existed before this migration") would be false, and there is nothing to count.
            expanded.append(replace(op, check=None, risk=Risk.LOW,
                                    reason=f"Destroys nothing: {why}, so the statement fails instead."))
            # Absent from the catalog: the schema may name it differently. Gone by an earlier statement: the
            # downgrade's own order is wrong, and the live schema has nothing to compare.
            advice = ("; compare the migration with the live schema (a schema made by create_all or by hand may name "
                      "it differently)") if why.endswith("does not exist") else ""
            expanded.append(Operation(
                "missing_object", op.table, op.column, f"fails: {why}{advice}", op.statement, risk=Risk.MEDIUM,
                reason="PostgreSQL refuses to drop what does not exist, unless the statement says IF EXISTS.",
            ))
        names.record(op)
    return expanded


def _why_missing(conn: psycopg.Connection, op: Operation, names: NamesSoFar) -> str | None:
    kind = CHECKED_DROPS.get(op.op)
    key = _object_key(op, kind)
    if kind is None or key is None or op.source != "sql":
        return None
    if key in names.dropped:
        return f"{kind} {key[1]} is dropped by an earlier statement of this downgrade"
    if key in names.created or names.knows_nothing_about(op):
        return None
    if kind == "index":
        parts = op.extra["name"].split(".")
        # Buildbot's 060 and 067 drop a table, then its index: the index went with the table.
        owner = conn.execute(_INDEX_TABLE, [sql.Identifier(*parts).as_string()]).fetchone()
        if owner is not None and any(("table", name) in names.dropped for name in owner):
            return f"index {op.extra['name']} went with its table {owner[0]}, which an earlier statement drops"
        if _exists(conn, _INDEX_EXISTS, sql.Identifier(*parts).as_string()) or (
                len(parts) == 1 and _exists(conn, _IN_ANY_SCHEMA, parts[0], ["i", "I"])):
            return None
        return f"index {op.extra['name']} does not exist"
    assert op.table is not None  # every table, column and constraint drop names its table
    if ("table", str(op.table)) in names.dropped:
        return f"table {op.table} is dropped by an earlier statement of this downgrade"
    if not _exists(conn, _TABLE_EXISTS, regclass_text(op.table)):
        if op.extra.get("table_if_exists") or (
                op.table.schema is None and _exists(conn, _IN_ANY_SCHEMA, op.table.name, ["r", "p", "f"])):
            return None
        return f"table {op.table} does not exist"
    if kind == "column" and not _exists(conn, _COLUMN_EXISTS, regclass_text(op.table), op.column):
        return f"column {op.table}.{op.column} does not exist"
    if kind == "constraint" and not _exists(conn, _CONSTRAINT_EXISTS, regclass_text(op.table), op.extra["name"]):
        return f"constraint {op.extra['name']} of table {op.table} does not exist"
    return None


def _index_of_that_name(conn: psycopg.Connection, op: Operation) -> str:
    """A hint when a missing constraint is an index of its table: DROP CONSTRAINT does not remove indexes."""
    if op.op != "drop_constraint" or op.table is None or not _exists(conn, _INDEX_OF_TABLE, regclass_text(op.table),
                                                                     op.extra["name"]):
        return ""
    return f" ({op.extra['name']} is an index of {op.table}: DROP INDEX removes it)"


def _object_key(op: Operation, kind: str | None) -> tuple[str, str] | None:
    """How `op` names its object: ("index", "ix_a"), ("column", "users.email"), ("table", "users")."""
    if kind == "index":
        return (kind, op.extra["name"]) if op.extra.get("name") else None
    if op.table is None or kind is None:
        return None
    if kind == "table":
        return kind, str(op.table)
    if kind == "column":
        return (kind, f"{op.table}.{op.column}") if op.column else None
    return (kind, f"{op.table}.{op.extra['name']}") if op.extra.get("name") else None


def _exists(conn: psycopg.Connection, query: str, *parameters: str | list[str] | None) -> bool:
    return conn.execute(query, parameters).fetchone() is not None

