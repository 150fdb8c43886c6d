"""Reads a migration function's Python source when offline rendering is impossible.

Migrations that query the database (op.get_bind().execute(...)) cannot run offline. Their Alembic
operations are still visible in the source: each `op.<name>(...)` call (and `batch_op.<name>(...)`
inside `op.batch_alter_table`) becomes an operation; SQL given as a string literal goes through the
SQL reader; anything else that touches the database is `unknown`. An `autocommit_block()` becomes the
COMMIT and BEGIN Alembic's offline rendering shows around it, so both readers mark the same steps as
not atomic.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from rollbook.operations import BEGIN, COMMIT, LiveCheck, Operation, TableName
from rollbook.sql_operations import (
    ACCESS_EXCLUSIVE,
    COMMIT_REASON,
    OUTSIDE_TRANSACTION,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    operations_from_sql,
)

_VARCHAR_TYPES = {"String", "VARCHAR", "Unicode", "CHAR", "NVARCHAR"}
_INTEGER_TYPES = {"SmallInteger": "smallint", "SMALLINT": "smallint", "Integer": "integer", "INTEGER": "integer"}
# Renders SQLAlchemy's `:name` bind parameters as `$1`, which PostgreSQL's parser reads.
_POSITIONAL_PARAMETERS = postgresql.dialect(paramstyle="numeric_dollar")


def operations_from_python(path: str | Path, function: str, render_error: str) -> list[Operation]:
    """The operations of `function` (upgrade or downgrade) in the migration file at `path`.

    The first operation is always `unknown`: a function that cannot run offline depends on live data,
    and what it does with that data is for a person to judge.
    """
    source = Path(path).read_text(encoding="utf-8")
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            reader = _FunctionReader(source)
            for statement in node.body:
                reader.visit(statement)
            data_dependent = Operation(
                "unknown", None, None,
                f"{function}() cannot be rendered offline ({render_error}): it depends on live data; the "
                "operations below were read from its source, review its logic by hand",
                ast.get_source_segment(source, node) or "",
            )
            return [replace(op, source="python") for op in [data_dependent, *reader.operations]]
    return [Operation("unknown", None, None, f"no {function}() function found", "", source="python")]


class _FunctionReader(ast.NodeVisitor):
    def __init__(self, source: str) -> None:
        self.source = source
        self.operations: list[Operation] = []
        self._batch_tables: dict[str, TableName] = {}

    def visit_With(self, node: ast.With) -> None:
        autocommit = next((item.context_expr for item in node.items if isinstance(item.context_expr, ast.Call)
                           and _attribute_name(item.context_expr.func) == "autocommit_block"), None)
        if autocommit is not None:
            text = ast.get_source_segment(self.source, autocommit) or "autocommit_block()"
            self.operations.append(Operation(COMMIT, None, None, "autocommit_block(): commits the step's transaction "
                                             "part-way and runs the block outside any transaction", text,
                                             not_atomic_reason=COMMIT_REASON))
        for item in node.items:
            call = item.context_expr
            if (isinstance(call, ast.Call) and _attribute_name(call.func) == "batch_alter_table"
                    and isinstance(item.optional_vars, ast.Name)):
                table = _literal(call.args[0]) if call.args else _keyword(call, "table_name")
                schema = _keyword(call, "schema")
                if isinstance(table, str):
                    self._batch_tables[item.optional_vars.id] = TableName(schema, table)
        for statement in node.body:
            self.visit(statement)
        if autocommit is not None:
            self.operations.append(Operation(BEGIN, None, None, "autocommit_block() ends: a new transaction starts",
                                             text))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner, name = func.value.id, func.attr
            text = ast.get_source_segment(self.source, node) or name
            if owner == "op":
                self.operations.extend(_op_call(name, node, text, None))
                return
            if owner in self._batch_tables:
                self.operations.extend(_op_call(name, node, text, self._batch_tables[owner]))
                return
            if name in ("execute", "exec_driver_sql"):
                self.operations.extend(_execute(node, text, driver_sql=name == "exec_driver_sql"))
                return
        if isinstance(func, ast.Attribute) and func.attr == "commit":
            # op.get_bind().commit(), connection.commit(): the step's transaction ends here.
            self.operations.append(Operation(COMMIT, None, None, "commits the step's transaction part-way",
                                             ast.get_source_segment(self.source, node) or "commit()",
                                             not_atomic_reason=COMMIT_REASON))
            return
        self.generic_visit(node)


def _op_call(name: str, call: ast.Call, text: str, batch_table: TableName | None) -> list[Operation]:
    args = list(call.args)
    if batch_table is None and name not in ("execute", "bulk_insert", "get_bind", "get_context", "f",
                                            "inline_literal", "batch_alter_table"):
        table_arg_index = {"create_unique_constraint": 1, "create_check_constraint": 1, "create_primary_key": 1,
                           "create_index": 1, "drop_index": 1, "create_foreign_key": 1,
                           "drop_constraint": 1}.get(name, 0)
        table_value = _literal(args[table_arg_index]) if len(args) > table_arg_index else _keyword(
            call, "table_name") or _keyword(call, "source_table")
        # create_foreign_key names its table's schema source_schema (and the other one referent_schema).
        schema = _keyword(call, "source_schema" if name == "create_foreign_key" else "schema")
        table = TableName(schema, table_value) if isinstance(table_value, str) else None
        args = args[:table_arg_index] + args[table_arg_index + 1:]
    else:
        table = batch_table
    if name in ("get_bind", "get_context", "f", "inline_literal"):
        return []
    if name == "execute":
        return _execute(call, text)
    if table is None and name != "bulk_insert":
        return [Operation("unknown", None, None, f"op.{name} with a table name computed at run time: review by hand",
                          text)]
    if name == "drop_column":
        column = _literal(args[0]) if args else _keyword(call, "column_name")
        return [Operation("drop_column", table, column, f"drops column {table}.{column} and every value in it", text,
                          lock=ACCESS_EXCLUSIVE, check=LiveCheck("non_null_values", table, (column,)))]
    if name == "add_column":
        column = _column_name(args[0]) if args else None
        not_null = _column_not_null(args[0]) if args else False
        check = LiveCheck("rows_present", table, (column,)) if not_null else None
        detail = (f"adds NOT NULL column {table}.{column} without a default: fails if {table} has any row" if not_null
                  else f"adds column {table}.{column}: it comes back EMPTY (NULL in every row)")
        return [Operation("add_column", table, column, detail, text, lock=ACCESS_EXCLUSIVE, check=check)]
    if name == "drop_table":
        return [Operation("drop_table", table, None, f"drops table {table} and all its rows", text,
                          lock=ACCESS_EXCLUSIVE, check=LiveCheck("all_rows", table))]
    if name == "create_table":
        return [Operation("create_table", table, None, f"creates table {table} (empty)", text)]
    if name == "alter_column":
        return _alter_column(table, args, call, text)
    if name == "rename_table":
        return [Operation("rename_table", table, None, f"renames table {table}", text, lock=ACCESS_EXCLUSIVE)]
    if name in ("create_unique_constraint", "create_primary_key"):
        columns = _string_list(args[1]) if len(args) > 1 else _string_list(_keyword_node(call, "columns"))
        op, kind, fails = ("add_unique", "duplicates", "duplicates") if name == "create_unique_constraint" else (
            "add_primary_key", "primary_key", "NULLs and duplicates")
        return [Operation(op, table, ", ".join(columns or ()), f"adds {op[4:]} on {table}: fails on {fails}", text,
                          lock=ACCESS_EXCLUSIVE, check=LiveCheck(kind, table, tuple(columns)) if columns else None)]
    if name == "create_foreign_key":
        referent = _literal(args[1]) if len(args) > 1 else _keyword(call, "referent_table")
        local = _string_list(args[2]) if len(args) > 2 else _string_list(_keyword_node(call, "local_cols"))
        remote = _string_list(args[3]) if len(args) > 3 else _string_list(_keyword_node(call, "remote_cols"))
        referenced = TableName(_keyword(call, "referent_schema"), referent) if isinstance(referent, str) else None
        check = (LiveCheck("orphans", table, tuple(local), referenced_table=referenced,
                           referenced_columns=tuple(remote)) if local and remote and referenced else None)
        return [Operation("add_foreign_key", table, ", ".join(local or ()), f"adds foreign key on {table}: fails on "
                          "orphans", text, lock=SHARE_ROW_EXCLUSIVE, check=check)]
    if name == "create_check_constraint":
        condition = _literal(args[1]) if len(args) > 1 else _keyword(call, "condition")
        check = LiveCheck("violating", table, predicate=condition) if isinstance(condition, str) else None
        return [Operation("add_check", table, None, f"adds check constraint on {table}", text, lock=ACCESS_EXCLUSIVE,
                          check=check)]
    if name == "drop_constraint":
        constraint = _literal(args[0]) if args else _keyword(call, "constraint_name")
        return [Operation("drop_constraint", table, None, f"drops a constraint of {table}", text,
                          lock=ACCESS_EXCLUSIVE, extra={"name": constraint} if isinstance(constraint, str) else {})]
    concurrently = _keyword(call, "postgresql_concurrently") is True
    if name == "create_index":
        unique = _keyword(call, "unique") is True
        return [Operation("create_unique_index" if unique else "create_index", table, None,
                          f"creates {'unique ' if unique else ''}index on {table}", text,
                          lock=SHARE_UPDATE_EXCLUSIVE if concurrently else SHARE,
                          not_atomic_reason=OUTSIDE_TRANSACTION.format("CREATE INDEX CONCURRENTLY")
                          if concurrently else None)]
    if name == "drop_index":
        return [Operation("drop_index", table, None, "drops an index", text,
                          lock=SHARE_UPDATE_EXCLUSIVE if concurrently else ACCESS_EXCLUSIVE,
                          not_atomic_reason=OUTSIDE_TRANSACTION.format("DROP INDEX CONCURRENTLY")
                          if concurrently else None)]
    if name == "bulk_insert":
        return [Operation("insert", None, None, "inserts rows", text)]
    return [Operation("unknown", table, None, f"op.{name}: not understood, review by hand", text)]


def _alter_column(table: TableName, args: list[ast.expr], call: ast.Call, text: str) -> list[Operation]:
    column = _literal(args[0]) if args else _keyword(call, "column_name")
    operations = []
    nullable = _keyword(call, "nullable")
    type_node = _keyword_node(call, "type_")
    new_name = _keyword(call, "new_column_name")
    if type_node is not None:
        type_name, modifiers = _type_of(type_node)
        check = LiveCheck("not_fitting", table, (column,), type_name, modifiers) if type_name else None
        operations.append(Operation("alter_column_type", table, column, f"changes the type of {table}.{column}",
                                    text, lock=ACCESS_EXCLUSIVE, rewrites_table=True, check=check))
    if nullable is False:
        operations.append(Operation("set_not_null", table, column, f"makes {table}.{column} NOT NULL", text,
                                    lock=ACCESS_EXCLUSIVE, check=LiveCheck("nulls", table, (column,))))
    elif nullable is True:
        operations.append(Operation("drop_not_null", table, column, f"allows NULL in {table}.{column}", text,
                                    lock=ACCESS_EXCLUSIVE))
    if isinstance(new_name, str):
        operations.append(Operation("rename_column", table, column, f"renames {table}.{column} to {new_name}",
                                    text, lock=ACCESS_EXCLUSIVE))
    if _keyword_node(call, "server_default") is not None:
        operations.append(Operation("alter_column_default", table, column, f"changes the default of {table}.{column}",
                                    text, lock=ACCESS_EXCLUSIVE))
    return operations or [Operation("unknown", table, column, "alter_column: review by hand", text)]


def _execute(call: ast.Call, text: str, *, driver_sql: bool = False) -> list[Operation]:
    statement = call.args[0] if call.args else None
    if isinstance(statement, ast.Call) and _attribute_name(statement.func) == "text" and statement.args:
        statement = statement.args[0]
    sql_text = _literal(statement) if statement is not None else None
    if isinstance(sql_text, str):
        if not driver_sql:
            # op.execute() and Connection.execute() take SQLAlchemy text, where `:id` is a bind parameter
            # (a per-row UPDATE ... WHERE id = :id); exec_driver_sql() passes the string to the driver as is.
            sql_text = str(sa.text(sql_text).compile(dialect=_POSITIONAL_PARAMETERS))
        return operations_from_sql(sql_text)
    return [Operation("unknown", None, None, "executes SQL built at run time: review by hand", text)]


def _type_of(node: ast.expr) -> tuple[str | None, tuple[int, ...]]:
    call = node if isinstance(node, ast.Call) else None
    name = _attribute_name(call.func if call else node)
    modifiers = tuple(a.value for a in (call.args if call else []) if isinstance(a, ast.Constant)
                      and isinstance(a.value, int))
    if name in _VARCHAR_TYPES:
        return "varchar", modifiers
    if name in ("Numeric", "NUMERIC", "DECIMAL"):
        return "numeric", modifiers
    if name in _INTEGER_TYPES:
        return _INTEGER_TYPES[name], ()
    return (name.lower() if name else None), modifiers


def _attribute_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


def _literal(node: ast.expr | None) -> object:
    if node is None:
        return None
    try:
        return ast.literal_eval(node)
    except ValueError:
        return None


def _keyword_node(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _keyword(call: ast.Call, name: str) -> object:
    return _literal(_keyword_node(call, name))


def _string_list(node: ast.expr | None) -> list[str] | None:
    value = _literal(node)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _column_name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Call) and node.args:
        value = _literal(node.args[0])
        return value if isinstance(value, str) else None
    return None


def _column_not_null(node: ast.expr) -> bool:
    if not isinstance(node, ast.Call):
        return False
    return _keyword(node, "nullable") is False and _keyword_node(node, "server_default") is None
