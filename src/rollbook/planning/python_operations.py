"""Reads a migration function's Python source when offline rendering is impossible.
One idea at about 580 lines, kept whole: the function reader (loops, dialect tests, helpers, literals) and
the table of `op.<name>(...)` calls it feeds depend on each other at every step of the walk.

Migrations that query the database (op.get_bind().execute(...)) cannot run offline. Their Alembic
operations are still visible in the source: each `op.<name>(...)` call (and `batch_op.<name>(...)`
inside `op.batch_alter_table`) becomes an operation; SQL given as a string literal goes through the
SQL reader; anything else that touches the database is `unknown`. An `autocommit_block()` becomes the
COMMIT and BEGIN Alembic's offline rendering shows around it, so both readers mark the same steps as
not atomic.

The source is read as it runs on PostgreSQL: only the PostgreSQL branch of a dialect test, the file's
own helpers as part of the function that calls them, a loop over names the source spells once per
name, and names bound to literals as their values. A statement in any other loop runs an unknown
number of times: it says so and carries no count. A test of `context.is_offline_mode()` takes the
online branch: that is the one `alembic downgrade` runs against a database.
"""

from __future__ import annotations

import ast
import copy
import inspect
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from rollbook.planning.operations import BEGIN, COMMIT, RENDER_FALLBACK, CheckKind, LiveCheck, Operation, TableName
from rollbook.planning.sql_operations import (
    ACCESS_EXCLUSIVE,
    COMMIT_REASON,
    OUTSIDE_TRANSACTION,
    SHARE,
    SHARE_ROW_EXCLUSIVE,
    SHARE_UPDATE_EXCLUSIVE,
    operations_from_sql,
)
from rollbook.project.offline_sql import is_offline_mode_test

_VARCHAR_TYPES = {"String", "VARCHAR", "Unicode", "CHAR", "NVARCHAR"}
_INTEGER_TYPES = {"SmallInteger": "smallint", "SMALLINT": "smallint", "Integer": "integer", "INTEGER": "integer"}
# Renders SQLAlchemy's `:name` bind parameters as `$1`, which PostgreSQL's parser reads.
# SQLAlchemy's dialect classes have untyped constructors.
_POSITIONAL_PARAMETERS = postgresql.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


def operations_from_python(
    path: str | Path, function: str, render_error: str, namespace: dict[str, Any] | None = None,
    *, fails_everywhere: bool = False,
) -> list[Operation]:
    """The operations of `function` (upgrade or downgrade) in the migration file at `path`.

    `namespace`, the imported module's globals, names what the source spells as attributes of what it
    imports (`op.create_table(SqlLatestMetric.__tablename__, ...)`). The first operation is `unknown`: a
    function that cannot be rendered offline (it depends on live data, does work only online, or fails to
    compile) is for a person to judge; or, when its error is its own code's (`fails_everywhere`), `raises`:
    the step fails wherever it runs.
    """
    source = Path(path).read_text(encoding="utf-8")
    tree = ast.parse(source)
    if namespace:
        tree = _ModuleAttributes(namespace).visit(tree)
    helpers = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    constants = {node.targets[0].id: node.value for node in tree.body if isinstance(node, ast.Assign)
                 and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == function:
            reader = _FunctionReader(source, helpers, constants)
            reader.read_function(node)
            code = ast.get_source_segment(source, node) or ""
            if fails_everywhere:
                first = Operation(
                    "raises", None, None,
                    f"fails: {function}() {render_error.rstrip('.')}, on every database: a defect of the migration "
                    "itself, to fix before rolling back through it; the operations below were read from its source",
                    code, extra={RENDER_FALLBACK: True})
            else:
                first = Operation(
                    "unknown", None, None,
                    f"{function}() cannot be rendered offline ({render_error}); the operations below were read "
                    "from its source, review its logic by hand",
                    code, extra={RENDER_FALLBACK: True},
                )
            return [replace(op, source="python") for op in [first, *reader.operations]]
    return [Operation("unknown", None, None, f"no {function}() function found", "", source="python")]


# What PostgreSQL is called where a migration branches on the dialect (`dialect.name == "postgresql"`).
_POSTGRESQL = "postgresql"
LOOP_NOTE = "runs once per pass of a Python loop: how many times, and on which rows, is known only at run time"


class _FunctionReader(ast.NodeVisitor):
    """Reads the operations of one function, following calls to the module's own helper functions and only
    the branches a PostgreSQL database takes."""

    def __init__(self, source: str, helpers: dict[str, ast.FunctionDef], constants: dict[str, ast.expr]) -> None:
        self.source = source
        self._constants = constants
        self._locals: dict[str, ast.expr] = {}
        self.operations: list[Operation] = []
        self._batch_tables: dict[str, TableName] = {}
        self._helpers = helpers
        self._reading: list[str] = []
        self._loops = 0
        # Names bound to the dialect's name, or to a test of it (`is_pg = bind.dialect.name == "postgresql"`).
        self._dialect_names: set[str] = set()
        self._dialect_tests: dict[str, bool] = {}

    def read_function(self, node: ast.FunctionDef) -> None:
        """Read the body of `node`; a helper that calls itself is read once."""
        if node.name in self._reading:
            return
        self._reading.append(node.name)
        for statement in node.body:
            self.visit(statement)
        self._reading.pop()

    def _add(self, operations: list[Operation]) -> None:
        if self._loops:
            # A statement in a loop runs an unknown number of times: no single count describes it.
            operations = [replace(op, detail=f"{op.detail} ({LOOP_NOTE})",
                                  check=op.check if op.op in ("drop_column", "drop_table") else None)
                          for op in operations]
        self.operations.extend(operations)

    def visit_For(self, node: ast.For | ast.While | ast.AsyncFor) -> None:
        if isinstance(node, ast.While):
            self.visit(node.test)
        else:
            self.visit(node.iter)
            values = self._literal_values(node.iter)
            if values is not None and _names_in(node.target):
                # `for column in ("a", "b"): op.drop_column("t", column)`: each pass is read with its value.
                for value in values:
                    for statement in node.body:
                        self.visit(_Substituted(_pass_values(_names_in(node.target), value)).visit(
                            copy.deepcopy(statement)))
                return
        self._loops += 1
        for statement in node.body:
            self.visit(statement)
        self._loops -= 1
        for statement in node.orelse:
            self.visit(statement)

    visit_While = visit_For
    visit_AsyncFor = visit_For

    def _literal_values(self, node: ast.expr) -> list[object] | None:
        """The values a loop runs over, when the source spells them: a literal, a name bound to one in this
        function or the module, or `.items()`, `.keys()`, `.values()` of such a dict."""
        method = None
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and not node.args
                and node.func.attr in ("items", "keys", "values")):
            method, node = node.func.attr, node.func.value
        if isinstance(node, ast.Name):
            node = self._locals.get(node.id) or self._constants.get(node.id) or node
        value = _literal(node)
        if isinstance(value, dict):
            return list(getattr(value, method or "keys")())
        return list(value) if isinstance(value, (list, tuple, set)) and method is None else None

    def visit_Assign(self, node: ast.Assign) -> None:
        names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        for name in names:
            # A literal a later loop may run over (`columns_by_table = {"spans": [...], ...}`).
            self._locals.pop(name, None)
            if _literal(node.value) is not None or (isinstance(node.value, ast.Call)
                                                   and _attribute_name(node.value.func) == "Column"):
                self._locals[name] = node.value
        test = _dialect_test(node.value, self._dialect_names, self._dialect_tests)
        for name in names:
            self._dialect_names.discard(name)
            self._dialect_tests.pop(name, None)
            if _is_dialect_name(node.value, self._dialect_names):
                self._dialect_names.add(name)
            elif test is not None:
                self._dialect_tests[name] = test
        self.generic_visit(node)

    def visit_If(self, node: ast.If) -> None:
        taken = _dialect_test(node.test, self._dialect_names, self._dialect_tests)
        if taken is None:
            self.generic_visit(node)
            return
        # A branch for another database (MySQL, SQLite) never runs on PostgreSQL.
        for statement in node.body if taken else node.orelse:
            self.visit(statement)

    def visit_With(self, node: ast.With) -> None:
        autocommit = next((item.context_expr for item in node.items if isinstance(item.context_expr, ast.Call)
                           and _attribute_name(item.context_expr.func) == "autocommit_block"), None)
        if autocommit is not None:
            text = ast.get_source_segment(self.source, autocommit) or "autocommit_block()"
            self._add([Operation(COMMIT, None, None, "autocommit_block(): commits the step's transaction "
                                 "part-way and runs the block outside any transaction", text,
                                 not_atomic_reason=COMMIT_REASON)])
        for item in node.items:
            call = self._inlined(item.context_expr)
            if (isinstance(call, ast.Call) and _attribute_name(call.func) == "batch_alter_table"
                    and isinstance(item.optional_vars, ast.Name)):
                table = _literal(call.args[0]) if call.args else _keyword(call, "table_name")
                schema = _keyword(call, "schema")
                if isinstance(table, str):
                    self._batch_tables[item.optional_vars.id] = TableName(_text(schema), table)
        for statement in node.body:
            self.visit(statement)
        if autocommit is not None:
            self._add([Operation(BEGIN, None, None, "autocommit_block() ends: a new transaction starts", text)])

    def _literal_names(self) -> dict[str, object]:
        bound = {**self._constants, **self._locals}
        values = {name: _literal(value) for name, value in bound.items()}
        return {name: value for name, value in values.items() if isinstance(value, (str, int, float, tuple))}

    def _inlined(self, node: ast.expr) -> ast.expr:
        """A call of one of the file's helpers that only returns an expression (`_workspace_column()`,
        `_with_batch("runs")`), replaced by that expression with the call's arguments in it; `op.f(name)` as
        `name`; else `node`."""
        if isinstance(node, ast.Name) and isinstance(self._locals.get(node.id), ast.Call):
            return self._locals[node.id]  # `column = sa.Column("x", ...)`, then `op.add_column("t", column)`
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "f"
                and isinstance(node.func.value, ast.Name) and len(node.args) == 1
                and (node.func.value.id == "op" or node.func.value.id in self._batch_tables)):
            return node.args[0]  # `op.f(name)` only marks `name` as final for the naming convention: it is `name`
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            return node
        helper = self._helpers.get(node.func.id)
        if helper is None:
            return node
        body = [s for s in helper.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
        if len(body) != 1 or not isinstance(body[0], ast.Return) or body[0].value is None:
            return node
        arguments = {parameter.arg: _literal(argument) for parameter, argument in zip(helper.args.args, node.args)}
        # visit() is typed Any; _Substituted replaces names by constants, so an expression stays one.
        return cast(ast.expr, _Substituted(arguments).visit(copy.deepcopy(body[0].value)))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name):
            owner, name = func.value.id, func.attr
            text = ast.get_source_segment(self.source, node) or name
            node = ast.copy_location(ast.Call(func=func, args=[self._inlined(a) for a in node.args],
                                              keywords=node.keywords), node)
            # Names bound to a literal (`sql = "UPDATE ..."`, a module's `INDEX_NAME = "ix"`) read as their value.
            node = _Substituted(self._literal_names()).visit(copy.deepcopy(node))
            if owner == "op":
                self._add(_op_call(name, node, text, None))
                return
            if owner in self._batch_tables:
                self._add(_op_call(name, node, text, self._batch_tables[owner]))
                return
            if name in ("execute", "exec_driver_sql"):
                self._add(_execute(node, text, driver_sql=name == "exec_driver_sql"))
                return
        if isinstance(func, ast.Attribute) and func.attr == "commit":
            # op.get_bind().commit(), connection.commit(): the step's transaction ends here.
            self._add([Operation(COMMIT, None, None, "commits the step's transaction part-way",
                                 ast.get_source_segment(self.source, node) or "commit()",
                                 not_atomic_reason=COMMIT_REASON)])
            return
        self.generic_visit(node)
        if isinstance(func, ast.Name) and func.id in self._helpers:
            # A helper defined in the same file (`_drop_old_columns()`): its operations are this function's.
            self.read_function(self._helpers[func.id])


def _names_in(target: ast.expr) -> list[str]:
    """The names a loop binds (`column`, or `table, column`); empty for anything else."""
    if isinstance(target, ast.Name):
        return [target.id]
    if isinstance(target, ast.Tuple) and all(isinstance(e, ast.Name) for e in target.elts):
        return [e.id for e in target.elts]  # type: ignore[attr-defined]
    return []


class _ModuleAttributes(ast.NodeTransformer):
    """Attributes of the module's imports that hold a name (`SqlLatestMetric.__tablename__`), as constants.

    Read with getattr_static: no property or descriptor of the project's code runs.
    """

    def __init__(self, namespace: dict[str, Any]) -> None:
        self._namespace = namespace

    def visit_Attribute(self, node: ast.Attribute) -> ast.expr:
        value = self._resolve(node) if isinstance(node.ctx, ast.Load) else _UNRESOLVED
        if isinstance(value, str):
            return ast.copy_location(ast.Constant(value), node)
        self.generic_visit(node)
        return node

    def _resolve(self, node: ast.expr) -> object:
        if isinstance(node, ast.Name):
            return self._namespace.get(node.id, _UNRESOLVED)
        if isinstance(node, ast.Attribute):
            owner = self._resolve(node.value)
            if owner is not _UNRESOLVED:
                return inspect.getattr_static(owner, node.attr, _UNRESOLVED)
        return _UNRESOLVED


_UNRESOLVED = object()


def _pass_values(names: list[str], value: object) -> dict[str, object]:
    """What each name a loop binds holds in the pass over `value` (unpacked for `for table, column in ...`)."""
    values = (value,) if len(names) == 1 else value
    return dict(zip(names, values)) if isinstance(values, (tuple, list)) and len(values) == len(names) else {}


class _Substituted(ast.NodeTransformer):
    """A copy of source with some names replaced by the values they hold (a loop's pass, a helper's arguments)."""

    def __init__(self, values: dict[str, object]) -> None:
        self._values = values

    def visit_Name(self, node: ast.Name) -> ast.expr:
        if isinstance(node.ctx, ast.Load) and node.id in self._values:
            # A tuple of constants is a Constant too (the compiler folds them so); typeshed lists only scalars.
            return ast.copy_location(ast.Constant(self._values[node.id]), node)  # type: ignore[arg-type]
        return node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.expr:
        """An f-string whose every placeholder is now a plain value, as the string it makes."""
        self.generic_visit(node)
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue) and value.conversion == -1 and value.format_spec is None:
                value = value.value
            if not isinstance(value, ast.Constant) or not isinstance(value.value, (str, int, float)):
                return node
            parts.append(str(value.value))
        return ast.copy_location(ast.Constant("".join(parts)), node)


def _is_dialect_name(node: ast.expr, dialect_names: set[str]) -> bool:
    """`<anything>.dialect.name`, or a name bound to one."""
    if isinstance(node, ast.Name):
        return node.id in dialect_names
    return (isinstance(node, ast.Attribute) and node.attr == "name" and isinstance(node.value, ast.Attribute)
            and node.value.attr == "dialect")


def _dialect_test(node: ast.expr, dialect_names: set[str], dialect_tests: dict[str, bool]) -> bool | None:
    """Whether `node` is true on PostgreSQL, when it only tests the dialect's name, or whether the migration runs
    offline (never: the source is read for what runs against a database); None for any other test."""
    if is_offline_mode_test(node):
        return False
    if isinstance(node, ast.Name):
        return dialect_tests.get(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _dialect_test(node.operand, dialect_names, dialect_tests)
        return None if inner is None else not inner
    if isinstance(node, ast.BoolOp):
        parts = [_dialect_test(value, dialect_names, dialect_tests) for value in node.values]
        if None in parts:
            return None
        return all(parts) if isinstance(node.op, ast.And) else any(parts)
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and _is_dialect_name(node.left, dialect_names):
        compared = _literal(node.comparators[0])
        operator = node.ops[0]
        if isinstance(compared, str) and isinstance(operator, (ast.Eq, ast.NotEq)):
            return (compared == _POSTGRESQL) == isinstance(operator, ast.Eq)
        if isinstance(compared, (tuple, list, set)) and isinstance(operator, (ast.In, ast.NotIn)):
            return (_POSTGRESQL in compared) == isinstance(operator, ast.In)
    return None


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
        table = TableName(_text(schema), table_value) if isinstance(table_value, str) else None
        args = args[:table_arg_index] + args[table_arg_index + 1:]
    else:
        table = batch_table
    if name in ("get_bind", "get_context", "f", "inline_literal"):
        return []
    if name == "execute":
        return _execute(call, text)
    if name == "bulk_insert":
        return [Operation("insert", None, None, "inserts rows", text)]
    if table is None:
        return [Operation("unknown", None, None, f"op.{name} with a table name computed at run time: review by hand",
                          text)]
    if name == "drop_column":
        column = _literal(args[0]) if args else _keyword(call, "column_name")
        if not isinstance(column, str):
            return [Operation("unknown", table, None, f"drops a column of {table} whose name is computed at run time: "
                              "review by hand", text)]
        return [Operation("drop_column", table, column, f"drops column {table}.{column} and every value in it", text,
                          lock=ACCESS_EXCLUSIVE, check=LiveCheck("non_null_values", table, (column,)))]
    if name == "add_column":
        column = _column_name(args[0]) if args else None
        if column is None:
            return [Operation("add_column", table, None, f"adds a column to {table} whose definition is computed at "
                              "run time: it comes back EMPTY", text, lock=ACCESS_EXCLUSIVE)]
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
        new_name = _literal(args[0]) if args else _keyword(call, "new_table_name")
        if not isinstance(new_name, str):
            return [Operation("rename_table", table, None, f"renames table {table}", text, lock=ACCESS_EXCLUSIVE)]
        return [Operation("rename_table", table, None, f"renames table {table} to {new_name}", text,
                          lock=ACCESS_EXCLUSIVE, extra={"new_name": new_name})]
    if name in ("create_unique_constraint", "create_primary_key"):
        columns = _string_list(args[1]) if len(args) > 1 else _string_list(_keyword_node(call, "columns"))
        unique = name == "create_unique_constraint"
        kind: CheckKind = "duplicates" if unique else "primary_key"
        op, fails = ("add_unique", "duplicates") if unique else ("add_primary_key", "NULLs and duplicates")
        return [Operation(op, table, ", ".join(columns or ()), f"adds {op[4:]} on {table}: fails on {fails}", text,
                          lock=ACCESS_EXCLUSIVE, check=LiveCheck(kind, table, tuple(columns)) if columns else None)]
    if name == "create_foreign_key":
        referent = _literal(args[1]) if len(args) > 1 else _keyword(call, "referent_table")
        local = _string_list(args[2]) if len(args) > 2 else _string_list(_keyword_node(call, "local_cols"))
        remote = _string_list(args[3]) if len(args) > 3 else _string_list(_keyword_node(call, "remote_cols"))
        referenced = TableName(_text(_keyword(call, "referent_schema")), referent) if isinstance(referent, str) \
            else None
        check = (LiveCheck("orphans", table, tuple(local), referenced_table=referenced,
                           referenced_columns=tuple(remote)) if local and remote and referenced else None)
        constraint = _literal(args[0]) if args else _keyword(call, "constraint_name")
        return [Operation("add_foreign_key", table, ", ".join(local or ()), f"adds foreign key on {table}: fails on "
                          "orphans", text, lock=SHARE_ROW_EXCLUSIVE, check=check,
                          extra={"name": constraint} if isinstance(constraint, str) else {})]
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
    return [Operation("unknown", table, None, f"op.{name}: not understood, review by hand", text)]


def _alter_column(table: TableName, args: list[ast.expr], call: ast.Call, text: str) -> list[Operation]:
    column = _literal(args[0]) if args else _keyword(call, "column_name")
    if not isinstance(column, str):
        return [Operation("unknown", table, None, f"alters a column of {table} whose name is computed at run time: "
                          "review by hand", text)]
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
                                    text, lock=ACCESS_EXCLUSIVE, extra={"new_name": new_name}))
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


def _text(value: object) -> str | None:
    """A literal that names something (a schema), or None when there is none or it is not text."""
    return value if isinstance(value, str) else None


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
