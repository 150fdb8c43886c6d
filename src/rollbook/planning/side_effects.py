"""What a downgrade's DELETE, UPDATE, INSERT or TRUNCATE does beyond its own table.

PostgreSQL carries out a foreign key's ON DELETE CASCADE, SET NULL or SET DEFAULT, refuses a DELETE
that would leave referencing rows behind (NO ACTION, RESTRICT), empties every referencing table on
TRUNCATE ... CASCADE, fires the table's triggers and applies its rules. A plan that counted only the statement's own
rows would call such a step cheaper than it is, so each of these becomes an operation of its own,
with its own live count where one can be taken, and "review by hand" where it cannot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from rollbook.planning.data_loss import column_reference, regclass_text, table_identifier
from rollbook.planning.dependent_objects import DroppedSoFar
from rollbook.planning.operations import LiveCheck, Operation, Risk, TableName

ON_DELETE = {"a": "NO ACTION", "r": "RESTRICT", "c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
_EVENTS = {"insert": "INSERT", "update": "UPDATE", "delete": "DELETE", "truncate": "TRUNCATE"}
# pg_trigger.tgtype bits (PostgreSQL's trigger.h).
_TYPE_BITS = {"INSERT": 4, "DELETE": 8, "UPDATE": 16, "TRUNCATE": 32}
_BEFORE, _INSTEAD = 2, 64
_RULE_EVENTS = {"2": "UPDATE", "3": "INSERT", "4": "DELETE"}


@dataclass(frozen=True)
class ForeignKey:
    """One foreign key, as the catalog has it now."""

    name: str
    table_oid: int
    table: TableName
    columns: tuple[str, ...]
    referenced_oid: int
    referenced: TableName
    referenced_columns: tuple[str, ...]
    on_delete: str
    set_columns: tuple[str, ...]


@dataclass(frozen=True)
class Trigger:
    """One user trigger (not a foreign key's internal one) that is enabled."""

    name: str
    table_oid: int
    events: frozenset[str]
    timing: str
    function: str


@dataclass(frozen=True)
class Rule:
    """One enabled rule (CREATE RULE ... ON DELETE/UPDATE/INSERT) that rewrites a statement on its table."""

    name: str
    table_oid: int
    event: str
    instead: bool


@dataclass(frozen=True)
class DataDependencies:
    """The foreign keys, triggers and rules of a database, and how the plan's table names resolve in it."""

    foreign_keys: tuple[ForeignKey, ...]
    triggers: tuple[Trigger, ...]
    rules: tuple[Rule, ...]
    oids: dict[TableName, int]

    def referencing(self, oid: int) -> list[ForeignKey]:
        return [fk for fk in self.foreign_keys if fk.referenced_oid == oid]

    def triggers_on(self, oid: int, event: str) -> list[Trigger]:
        return [t for t in self.triggers if t.table_oid == oid and event in t.events]

    def rules_on(self, oid: int, event: str) -> list[Rule]:
        return [r for r in self.rules if r.table_oid == oid and r.event == event]


def read_data_dependencies(conn: psycopg.Connection, tables: Iterable[TableName]) -> DataDependencies:
    """Foreign keys, triggers and rules from the catalog, and the oid of each of `tables` that exists now."""
    set_columns = _names_of("con.conrelid", "con.confdelsetcols") if conn.info.server_version >= 150000 else (
        "ARRAY[]::text[]")
    keys = conn.execute(
        f"SELECT con.conname, con.confdeltype, con.conrelid::int8, cn.nspname, c.relname, pg_table_is_visible(c.oid),"
        f" {_names_of('con.conrelid', 'con.conkey')}, con.confrelid::int8, rn.nspname, r.relname,"
        f" pg_table_is_visible(r.oid), {_names_of('con.confrelid', 'con.confkey')}, {set_columns}"
        " FROM pg_constraint con"
        " JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace"
        " JOIN pg_class r ON r.oid = con.confrelid JOIN pg_namespace rn ON rn.oid = r.relnamespace"
        # A partition's copy of its parent's key would count the same rows twice.
        " WHERE con.contype = 'f' AND con.conparentid = 0 ORDER BY con.conname"
    ).fetchall()
    triggers = conn.execute(
        "SELECT t.tgname, t.tgrelid::int8, t.tgtype, t.tgfoid::regproc::text FROM pg_trigger t"
        " WHERE NOT t.tgisinternal AND t.tgenabled <> 'D' ORDER BY t.tgname"
    ).fetchall()
    rules = conn.execute(
        "SELECT r.rulename, r.ev_class::int8, r.ev_type, r.is_instead FROM pg_rewrite r"
        " WHERE r.ev_type IN ('2', '3', '4') AND r.ev_enabled <> 'D' ORDER BY r.rulename"
    ).fetchall()
    names = list(dict.fromkeys(tables))
    found = conn.execute("SELECT to_regclass(name)::int8 FROM unnest(%s::text[]) WITH ORDINALITY AS n(name, i) "
                         "ORDER BY i", [[regclass_text(t) for t in names]]).fetchall()
    oids = {table: int(row[0]) for table, row in zip(names, found) if row[0] is not None}
    return DataDependencies(
        tuple(ForeignKey(name, int(oid), _table_name(schema, relname, visible), tuple(cols), int(ref_oid),
                         _table_name(ref_schema, ref_name, ref_visible), tuple(ref_cols), action,
                         tuple(set_cols) or tuple(cols))
              for (name, action, oid, schema, relname, visible, cols, ref_oid, ref_schema, ref_name, ref_visible,
                   ref_cols, set_cols) in keys),
        tuple(Trigger(name, int(oid), frozenset(e for e, bit in _TYPE_BITS.items() if tgtype & bit),
                      "INSTEAD OF" if tgtype & _INSTEAD else "BEFORE" if tgtype & _BEFORE else "AFTER", function)
              for name, oid, tgtype, function in triggers),
        tuple(Rule(name, int(oid), _RULE_EVENTS[ev_type], instead) for name, oid, ev_type, instead in rules),
        oids,
    )


def _names_of(relation: str, attnums: str) -> str:
    return (f"ARRAY(SELECT a.attname::text FROM unnest({attnums}) WITH ORDINALITY AS k(attnum, i)"
            f" JOIN pg_attribute a ON a.attrelid = {relation} AND a.attnum = k.attnum ORDER BY k.i)")


def _table_name(schema: str, name: str, visible: bool) -> TableName:
    # Unqualified when the search path finds it, so it matches the way migrations usually name it.
    return TableName(None if visible else schema, name)


def with_side_effects(operations: list[Operation], dependencies: DataDependencies,
                      dropped: DroppedSoFar) -> list[Operation]:
    """`operations`, each data change followed by what PostgreSQL does because of it elsewhere.

    `dropped` is what the downgrade dropped before these operations; it is kept up to date as they are read
    in order, so a foreign key an earlier statement drops sets off nothing (Prefect's 0a1250a5aa25 drops
    fk_work_queue__work_pool_id__work_pool, then deletes work_pool rows).
    """
    expanded = []
    for op in operations:
        expanded.append(op)
        oid = dependencies.oids.get(op.table) if op.table is not None else None
        if oid is not None and op.op in _EVENTS:
            assert op.table is not None
            if op.op == "delete":
                predicate = op.check.predicate if op.check is not None else None
                expanded += _after_delete(dependencies, dropped, oid, op.table, predicate, op.statement, {oid})
            elif op.op == "truncate":
                expanded += _after_truncate(dependencies, oid, op)
            expanded += _triggers(dependencies, oid, op.table, _EVENTS[op.op], op.statement)
        dropped.record(op)
    return expanded


def _after_delete(
    dependencies: DataDependencies, dropped: DroppedSoFar, oid: int, table: TableName, predicate: str | None,
    statement: str, path: set[int],
) -> list[Operation]:
    """The foreign-key actions a DELETE of `table`'s rows matching `predicate` sets off, recursively."""
    found: list[Operation] = []
    for fk in dependencies.referencing(oid):
        if dropped.drops_key(fk.table, fk.name, fk.columns):
            continue
        action = ON_DELETE[fk.on_delete]
        via = f"{fk.name}, ON DELETE {action}"
        if fk.table_oid in path:
            # The key leads back into the cascade: how far the deletion reaches depends on the data.
            found.append(Operation(
                _CASCADE_OPS.get(fk.on_delete, "restricted_delete"), fk.table, ", ".join(fk.columns),
                f"{_verb(fk)} rows of {fk.table} that reference the deleted rows of {table} ({via}); the key leads "
                "back into the rows being deleted, so how far this reaches was not counted: review by hand",
                statement, lock=_LOCK, risk=Risk.UNKNOWN,
                reason="A foreign key that refers back into the deletion reaches an unknown depth.",
            ))
            continue
        reference = _referencing(fk, table, predicate) if predicate is not None else None
        uncounted = "" if reference is not None else " (not counted: the DELETE's own rows cannot be counted)"
        if fk.on_delete in ("a", "r"):
            found.append(Operation(
                "restricted_delete", fk.table, ", ".join(fk.columns),
                f"fails if rows of {fk.table} still reference the deleted rows of {table} ({via}){uncounted}",
                statement, lock=_LOCK, risk=Risk.MEDIUM,
                reason="The DELETE fails while other rows still reference the rows it removes.",
                check=LiveCheck("referencing", fk.table, fk.columns, predicate=reference) if reference else None,
            ))
            continue
        op = _CASCADE_OPS[fk.on_delete]
        found.append(Operation(
            op, fk.table, ", ".join(fk.set_columns) if op != "cascade_delete" else None,
            f"{_verb(fk)} rows of {fk.table} that reference the deleted rows of {table} ({via}){uncounted}",
            statement, lock=_LOCK, risk=Risk.HIGH,
            reason=f"ON DELETE {action}: PostgreSQL changes these rows along with the rows they reference.",
            check=LiveCheck("matching_rows", fk.table, predicate=reference) if reference else None,
        ))
        event = "DELETE" if op == "cascade_delete" else "UPDATE"
        found += _triggers(dependencies, fk.table_oid, fk.table, event, statement)
        if op == "cascade_delete":
            found += _after_delete(dependencies, dropped, fk.table_oid, fk.table, reference, statement,
                                   path | {fk.table_oid})
    return found


_CASCADE_OPS = {"c": "cascade_delete", "n": "cascade_set_null", "d": "cascade_set_default"}
_LOCK = "ROW EXCLUSIVE"


def _verb(fk: ForeignKey) -> str:
    if fk.on_delete == "c":
        return "deletes"
    if fk.on_delete in ("n", "d"):
        value = "NULL" if fk.on_delete == "n" else "its default"
        return f"sets {', '.join(fk.set_columns)} to {value} in"
    return "fails on"


def _referencing(fk: ForeignKey, table: TableName, predicate: str) -> str:
    """SQL true for the rows of `fk.table` that reference a row of `table` matching `predicate`.

    An uncorrelated IN: PostgreSQL hashes the keys once instead of probing per row, and names in
    `predicate` can only mean `table`, at any depth of the cascade.
    """
    columns = [column_reference(fk.table, c) for c in fk.columns]
    left = columns[0] if len(columns) == 1 else sql.SQL("({})").format(sql.SQL(", ").join(columns))
    return sql.SQL("{} IN (SELECT {} FROM {} WHERE ({}))").format(
        left, sql.SQL(", ").join(sql.Identifier(c) for c in fk.referenced_columns), table_identifier(table),
        sql.SQL(predicate),
    ).as_string()


def _after_truncate(dependencies: DataDependencies, oid: int, op: Operation) -> list[Operation]:
    together = {dependencies.oids.get(t) for t in op.extra.get("together", ())}
    found: list[Operation] = []
    if not op.extra.get("cascade"):
        for fk in dependencies.referencing(oid):
            if fk.table_oid not in together:
                found.append(Operation(
                    "truncate_refused", fk.table, ", ".join(fk.columns),
                    f"fails: {fk.table} references {op.table} ({fk.name}) and the TRUNCATE has no CASCADE",
                    op.statement, risk=Risk.HIGH,
                    reason="PostgreSQL refuses to truncate a table other tables reference, whatever their rows.",
                ))
        return found
    reached, pending = together | {oid}, [oid]
    while pending:
        for fk in dependencies.referencing(pending.pop()):
            if fk.table_oid in reached:
                continue
            reached.add(fk.table_oid)
            pending.append(fk.table_oid)
            found.append(Operation(
                "cascade_truncate", fk.table, None,
                f"empties table {fk.table}: it references {fk.referenced} ({fk.name}) and TRUNCATE ... CASCADE "
                "empties it too", op.statement, lock="ACCESS EXCLUSIVE", risk=Risk.HIGH,
                reason="TRUNCATE ... CASCADE empties every table that references the truncated one.",
                check=LiveCheck("all_rows", fk.table),
            ))
            found += _triggers(dependencies, fk.table_oid, fk.table, "TRUNCATE", op.statement)
    return found


def _triggers(
    dependencies: DataDependencies, oid: int, table: TableName, event: str, statement: str
) -> list[Operation]:
    """The triggers and rules `event` on `table` sets off: named, never counted."""
    fired = [
        Operation(
            "trigger", table, None,
            f"fires trigger {t.name} on {table} ({t.timing} {event}, calls {t.function}): what it changes was not "
            "counted, review by hand", statement, risk=Risk.UNKNOWN,
            reason="A trigger can change or delete other rows and tables; rollbook does not read its code.",
        )
        for t in dependencies.triggers_on(oid, event)
    ]
    return fired + [
        Operation(
            "rule", table, None,
            f"is rewritten by rule {r.name} on {table} (ON {event} DO {'INSTEAD' if r.instead else 'ALSO'}): what "
            "it changes was not counted, review by hand", statement, risk=Risk.UNKNOWN,
            reason="A rule can replace the statement or add others; rollbook does not read its actions.",
        )
        for r in dependencies.rules_on(oid, event)
    ]
