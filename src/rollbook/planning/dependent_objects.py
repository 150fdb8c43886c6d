"""Objects that stop a downgrade from dropping or retyping a table or column: views, other tables' keys.

PostgreSQL refuses DROP TABLE, DROP COLUMN and ALTER COLUMN TYPE while another object depends on
the target (without CASCADE, which drops those objects too). The planner names each one before the
run, unless an earlier statement of the same downgrade drops it first; the diagnosis names them
after a failure, with the statements that would keep and drop them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

from rollbook.planning.data_loss import regclass_text
from rollbook.planning.operations import Operation, Risk, TableName

# Operations whose statement fails when other objects depend on what it drops or retypes.
DEPENDENCY_OPS = ("drop_column", "drop_table", "alter_column_type")

_DEPENDENTS_QUERY = """
WITH target AS (
    SELECT c.oid, c.reltype, a.attnum
    FROM pg_class c LEFT JOIN pg_attribute a
      ON a.attrelid = c.oid AND a.attname = %(column)s AND NOT a.attisdropped
    WHERE c.oid = to_regclass(%(table)s)
)
SELECT DISTINCT
    CASE WHEN d.classid = 'pg_rewrite'::regclass THEN pg_describe_object('pg_class'::regclass, r.ev_class, 0)
         -- pg_describe_object calls a generated column's expression its "default value".
         WHEN ad.oid IS NOT NULL THEN 'generated ' || pg_describe_object('pg_class'::regclass, ad.adrelid, ad.adnum)
         ELSE pg_describe_object(d.classid, d.objid, d.objsubid) END,
    vn.nspname, vc.relname, vc.relkind, cn.nspname, cc.relname, con.conname,
    (SELECT array_agg(a.attname::text) FROM pg_attribute a WHERE a.attrelid = con.conrelid
       AND a.attnum = ANY (con.conkey)) AS constraint_columns
FROM target t
JOIN pg_depend d ON d.deptype = 'n' AND (
        (d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
         AND (%(column)s::text IS NULL OR d.refobjsubid = t.attnum))
     OR (%(column)s::text IS NULL AND d.refclassid = 'pg_type'::regclass AND d.refobjid = t.reltype))
LEFT JOIN pg_rewrite r ON d.classid = 'pg_rewrite'::regclass AND r.oid = d.objid
LEFT JOIN pg_class vc ON vc.oid = r.ev_class
LEFT JOIN pg_namespace vn ON vn.oid = vc.relnamespace
LEFT JOIN pg_constraint con ON d.classid = 'pg_constraint'::regclass AND con.oid = d.objid
LEFT JOIN pg_class cc ON cc.oid = con.conrelid
LEFT JOIN pg_namespace cn ON cn.oid = cc.relnamespace
LEFT JOIN pg_attrdef ad ON d.classid = 'pg_attrdef'::regclass AND ad.oid = d.objid
-- The table's own rules, constraints, defaults and generated columns go with the table, and its constraints
-- with a column they use: they never block the drop. A generated column does block dropping a column it reads.
WHERE r.ev_class IS DISTINCT FROM t.oid AND NOT (d.classid = 'pg_class'::regclass AND d.objid = t.oid)
  AND con.conrelid IS DISTINCT FROM t.oid
  AND (%(column)s::text IS NOT NULL OR ad.adrelid IS DISTINCT FROM t.oid)
ORDER BY 1
"""


@dataclass(frozen=True)
class DependentObject:
    """One object in the way, and the statements that keep its definition and drop it (None if unknown)."""

    description: str
    drop: str | None
    keep: str | None
    view: str | None = None
    constraint: tuple[str, str] | None = None  # (table, constraint name)
    constraint_columns: tuple[str, ...] = ()  # the columns of its own table the constraint is on


def find_dependent_objects(conn: psycopg.Connection, table: TableName, column: str | None) -> list[DependentObject]:
    """Objects with a normal dependency (the kind DROP without CASCADE refuses) on a table or column."""
    rows = conn.execute(_DEPENDENTS_QUERY, {"table": regclass_text(table), "column": column}).fetchall()
    dependents = []
    for description, view_schema, view, view_kind, con_schema, con_table, constraint, columns in rows:
        drop = keep = None
        if view:
            name = sql.Identifier(view_schema, view).as_string()
            drop = f"DROP {'MATERIALIZED VIEW' if view_kind == 'm' else 'VIEW'} {name}"
            keep = sql.SQL("SELECT pg_get_viewdef({}::regclass, true)").format(sql.Literal(name)).as_string()
        elif constraint:
            drop = sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                sql.Identifier(con_schema, con_table), sql.Identifier(constraint)).as_string()
            keep = sql.SQL("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = {}::regclass "
                           "AND conname = {}").format(
                sql.Literal(sql.Identifier(con_schema, con_table).as_string()), sql.Literal(constraint)).as_string()
        dependents.append(DependentObject(description, drop, keep, view,
                                          (con_table, constraint) if constraint else None,
                                          tuple(columns or ())))
    return dependents


@dataclass(frozen=True)
class CreatedForeignKey:
    """A foreign key an earlier statement of the downgrade creates: the catalog does not know it yet."""

    table: str
    name: str
    columns: tuple[str, ...]
    referenced_table: str
    referenced_columns: tuple[str, ...]


@dataclass
class DroppedSoFar:
    """Views, constraints and tables the downgrade has dropped before the statement being looked at, and the
    foreign keys it has created by then, in the order the downgrade runs.

    Tables are named as the catalog names them now: a statement after a rename names a table by its new name
    (Airflow's 05234396c6fc renames the asset tables back to dataset ones, which the squashed first step
    drops), while the catalog's objects name it by the old one.
    """

    views: set[str] = field(default_factory=set)
    constraints: set[tuple[str, str]] = field(default_factory=set)
    tables: set[str] = field(default_factory=set)
    columns: set[tuple[str, str]] = field(default_factory=set)
    created_keys: dict[tuple[str, str], CreatedForeignKey] = field(default_factory=dict)
    renamed: dict[str, str] = field(default_factory=dict)  # the catalog's name -> the name the downgrade gave it

    def record(self, op: Operation) -> None:
        table = self.in_catalog(op.table).name if op.table is not None else None
        if op.op == "rename_table" and table is not None and op.extra.get("new_name"):
            self.renamed[table] = op.extra["new_name"]
        elif op.op == "drop_column" and table is not None and op.column:
            self.columns.add((table, op.column))
            self._forget_created(lambda key: key.table == table and op.column in key.columns)
        elif op.op == "drop_view" and op.extra.get("name"):
            self.views.add(op.extra["name"].split(".")[-1])
        elif op.op == "drop_constraint" and table is not None and op.extra.get("name"):
            self.constraints.add((table, op.extra["name"]))
            self.created_keys.pop((table, op.extra["name"]), None)
        elif op.op == "drop_table" and table is not None:
            self.tables.add(table)
            self._forget_created(lambda key: key.table == table)
        elif op.op == "add_foreign_key" and table is not None and op.extra.get("name") and op.check is not None \
                and op.check.referenced_table is not None:
            name = op.extra["name"]
            # Made again after an earlier drop: from here on it is in the way like any other.
            self.constraints.discard((table, name))
            self.created_keys[(table, name)] = CreatedForeignKey(
                table, name, op.check.columns, self.in_catalog(op.check.referenced_table).name,
                op.check.referenced_columns)

    def _forget_created(self, dropped_with: Callable[[CreatedForeignKey], bool]) -> None:
        for key in [key for key, created in self.created_keys.items() if dropped_with(created)]:
            del self.created_keys[key]

    def covers(self, dependent: DependentObject) -> bool:
        if dependent.view is not None:
            return dependent.view in self.views
        if dependent.constraint is not None:
            table = dependent.constraint[0]
            # Dropping a column drops its table's constraints on it (a foreign key from runs.snapshot_id, say).
            return (dependent.constraint in self.constraints or table in self.tables
                    or any((table, column) in self.columns for column in dependent.constraint_columns))
        return False

    def drops_key(self, table: TableName, name: str, columns: tuple[str, ...]) -> bool:
        """Whether an earlier statement dropped the foreign key `name` of `table`: itself, its table or a column."""
        return ((table.name, name) in self.constraints or table.name in self.tables
                or any((table.name, column) in self.columns for column in columns))

    def in_catalog(self, table: TableName) -> TableName:
        """`table` by the name the catalog has for it now, before the renames recorded so far."""
        catalog = next((old for old, new in self.renamed.items() if new == table.name), None)
        return TableName(table.schema, catalog) if catalog else table

    def created_keys_on(self, table: TableName, column: str | None) -> list[CreatedForeignKey]:
        """Foreign keys created earlier in the downgrade, still there, that reference `table` (or its `column`)."""
        name = self.in_catalog(table).name
        return [key for key in self.created_keys.values() if key.referenced_table == name
                and key.table != name and (column is None or column in key.referenced_columns)]


def with_dependent_objects(
    conn: psycopg.Connection, operations: list[Operation], dropped: DroppedSoFar
) -> list[Operation]:
    """`operations`, each drop or type change followed by the objects that make it fail (or that CASCADE drops)."""
    # Operations read from Python source come in source order, branches and helpers included, not in the order
    # they run (MLflow drops its foreign keys after a SQLite-only branch that drops the same columns): for
    # those, whatever the step drops anywhere may be dropped first.
    dropped_in_source = DroppedSoFar()
    for op in operations:
        if op.source == "python":
            dropped_in_source.record(op)
    expanded = []
    for op in operations:
        expanded.append(op)
        if op.op in DEPENDENCY_OPS and op.table is not None:
            column = None if op.op == "drop_table" else op.column
            what = f"{op.table}.{column}" if column else f"table {op.table}"
            # A foreign key an earlier statement creates is not in the catalog yet; one it drops and makes again
            # is named once, as made again.
            created = [DependentObject(f"constraint {key.name} on table {key.table} (created earlier in this "
                                       "downgrade)", None, None, constraint=(key.table, key.name),
                                       constraint_columns=key.columns)
                       for key in dropped.created_keys_on(op.table, column)] if op.op != "alter_column_type" else []
            dependents = [dependent for dependent in find_dependent_objects(conn, dropped.in_catalog(op.table), column)
                          if not dropped.covers(dependent) and dependent.constraint not in dropped.created_keys]
            dependents = [dependent for dependent in dependents + created
                          if not (op.source == "python" and dropped_in_source.covers(dependent))]
            for dependent in dependents:
                if op.extra.get("cascade"):
                    expanded.append(Operation(
                        "cascade_drop", op.table, column,
                        f"also drops {dependent.description}, which depends on {what} (CASCADE); the downgrade "
                        "does not re-create it", op.statement, risk=Risk.MEDIUM,
                        reason="CASCADE drops every object that depends on what the statement drops.",
                    ))
                else:
                    expanded.append(Operation(
                        "dependent_object", op.table, column,
                        f"fails: {dependent.description} depends on {what}; drop or change it first",
                        op.statement, risk=Risk.MEDIUM,
                        reason="PostgreSQL refuses to drop or retype what another object depends on.",
                    ))
        dropped.record(op)
    return expanded
