"""Reads rendered migration SQL with PostgreSQL's own parser (pglast) into operations.

One idea at about 500 lines, kept whole: one table from pglast's statement nodes to operations, a short
function per kind of statement, which a reader compares side by side when a statement is read wrong.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

import pglast
from pglast import ast
from pglast.enums import AlterTableType, ConstrType, DropBehavior, ObjectType, TransactionStmtKind
from pglast.stream import RawStream
from pglast.visitors import Visitor

from rollbook.planning.operations import BEGIN, COMMIT, INTEGER_TYPES, LiveCheck, Operation, TableName

ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
SHARE_UPDATE_EXCLUSIVE = "SHARE UPDATE EXCLUSIVE"
SHARE = "SHARE"
ROW_EXCLUSIVE = "ROW EXCLUSIVE"

# The parser's internal names of common types, as people write them.
_SQL_TYPE_NAMES = {"int2": "smallint", "int4": "integer", "int8": "bigint", "float4": "real",
                   "float8": "double precision", "bool": "boolean"}

# Statements PostgreSQL refuses inside a transaction block: they run, and commit, on their own.
OUTSIDE_TRANSACTION = ("{} cannot run inside a transaction: it runs and commits on its own, apart from the step's "
                       "transaction")
COMMIT_REASON = ("COMMIT part-way through the step: what ran before it stays done even if a later statement fails, "
                 "while the version table still names the revision")

# Objects whose DROP destroys no table data.
_HARMLESS_DROPS = {
    ObjectType.OBJECT_INDEX: "drop_index",
    ObjectType.OBJECT_VIEW: "drop_view",
    ObjectType.OBJECT_SEQUENCE: "drop_sequence",
    ObjectType.OBJECT_TYPE: "drop_type",
    ObjectType.OBJECT_FUNCTION: "drop_function",
    ObjectType.OBJECT_TRIGGER: "drop_trigger",
    ObjectType.OBJECT_POLICY: "drop_policy",
    # Without CASCADE PostgreSQL refuses while a column, index or view still uses the extension's objects.
    ObjectType.OBJECT_EXTENSION: "drop_extension",
    # Without CASCADE a schema can only be dropped once it is empty.
    ObjectType.OBJECT_SCHEMA: "drop_schema",
}


_T = TypeVar("_T")


def _as(kind: type[_T], value: object) -> _T:
    """A field that PostgreSQL's grammar always fills for this statement, as the type it has there.

    pglast types every field of every node as optional; this says which one the statement carries.
    """
    if not isinstance(value, kind):
        raise TypeError(f"pglast gave {type(value).__name__} where {kind.__name__} was expected")
    return value


def operations_from_sql(sql_text: str) -> list[Operation]:
    """Every operation in `sql_text`; statements that cannot be parsed or classified become `unknown`."""
    try:
        statements = pglast.parse_sql(sql_text)
    except pglast.parser.ParseError as exc:
        return [Operation("unknown", None, None, f"SQL that PostgreSQL's parser rejects ({exc})", sql_text.strip())]
    operations: list[Operation] = []
    for raw in statements:
        text = _statement_text(sql_text, raw)
        operations.extend(_classify(_as(ast.Node, raw.stmt), text))
    return operations


def _statement_text(sql_text: str, raw: ast.RawStmt) -> str:
    start = raw.stmt_location or 0
    end = start + raw.stmt_len if raw.stmt_len else len(sql_text)
    return sql_text.encode()[start:end].decode(errors="replace").strip()


def _table(range_var: ast.RangeVar | None) -> TableName:
    relation = _as(ast.RangeVar, range_var)
    return TableName(relation.schemaname, _as(str, relation.relname))


def _names(nodes: tuple[Any, ...] | None) -> tuple[str, ...]:
    return tuple(node.sval for node in nodes or ())


def _deparse(node: ast.Node) -> str:
    return RawStream()(node)


def _classify(stmt: ast.Node, text: str) -> list[Operation]:
    if isinstance(stmt, ast.AlterTableStmt) and stmt.objtype == ObjectType.OBJECT_TABLE:
        table = _table(stmt.relation)
        operations = [op for cmd in _as(tuple, stmt.cmds) for op in _alter_table_command(table, cmd, text)]
        # ALTER TABLE IF EXISTS does nothing when the table is missing: none of its drops can fail for that.
        return [replace(op, extra={**op.extra, "table_if_exists": True}) for op in operations] if stmt.missing_ok \
            else operations
    if isinstance(stmt, ast.DropStmt):
        return _drop(stmt, text)
    if isinstance(stmt, ast.CreateStmt):
        table = _table(stmt.relation)
        return [Operation("create_table", table, None, f"creates table {table} (empty)", text, lock=None)]
    if isinstance(stmt, ast.IndexStmt):
        return [_create_index(stmt, text)]
    if isinstance(stmt, ast.CreateEnumStmt):
        name, labels = _names(stmt.typeName)[-1], _names(stmt.vals)
        return [Operation("create_type", None, None, f"creates enum type {name} ({', '.join(labels)})", text,
                          extra={"name": name, "labels": labels})]
    if isinstance(stmt, ast.AlterEnumStmt) and stmt.newVal and not stmt.oldVal:
        name = _names(stmt.typeName)[-1]
        return [Operation("add_enum_value", None, None, f"adds value {stmt.newVal} to enum type {name}", text,
                          extra={"name": name})]
    if isinstance(stmt, (ast.CreateDomainStmt, ast.CompositeTypeStmt)):
        name = _names(stmt.domainname)[-1] if isinstance(stmt, ast.CreateDomainStmt) else \
            _as(str, _as(ast.RangeVar, stmt.typevar).relname)
        return [Operation("create_type", None, None, f"creates type {name}", text, extra={"name": name})]
    if isinstance(stmt, ast.CreateSchemaStmt):
        return [Operation("create_schema", None, None, f"creates schema {stmt.schemaname} (empty)", text)]
    if isinstance(stmt, ast.RenameStmt):
        return [_rename(stmt, text)]
    if isinstance(stmt, ast.UpdateStmt):
        return [_update_or_delete("update", stmt, text)]
    if isinstance(stmt, ast.DeleteStmt):
        return [_update_or_delete("delete", stmt, text)]
    if isinstance(stmt, ast.TruncateStmt):
        together = tuple(_table(rel) for rel in _as(tuple, stmt.relations))
        cascade = stmt.behavior == DropBehavior.DROP_CASCADE
        return [
            Operation("truncate", table, None, f"empties table {table}", text, lock=ACCESS_EXCLUSIVE,
                      check=LiveCheck("all_rows", table), extra={"cascade": cascade, "together": together})
            for table in together
        ]
    if isinstance(stmt, ast.InsertStmt):
        return [_insert(stmt, text)]
    if isinstance(stmt, ast.SelectStmt) and stmt.intoClause is None:
        return [_select(stmt, text)]
    if isinstance(stmt, (ast.CreateSeqStmt, ast.AlterSeqStmt)):
        name = _as(str, _as(ast.RangeVar, stmt.sequence).relname)
        if isinstance(stmt, ast.CreateSeqStmt):
            return [Operation("create_sequence", None, None, f"creates sequence {name} (no table rows)", text,
                              extra={"name": name})]
        return [Operation("alter_sequence", None, None, f"changes sequence {name} (its next values or owner; no "
                          "table rows)", text, lock=ROW_EXCLUSIVE, extra={"name": name})]
    if isinstance(stmt, ast.CreateExtensionStmt):
        return [Operation("create_extension", None, None, f"creates extension {stmt.extname} (adds types and "
                          "functions; no table rows)", text, extra={"name": stmt.extname})]
    if isinstance(stmt, (ast.CreatePolicyStmt, ast.AlterPolicyStmt)):
        table = _table(stmt.table)
        verb = "creates" if isinstance(stmt, ast.CreatePolicyStmt) else "changes"
        return [Operation("policy", table, None, f"{verb} row-level security policy {stmt.policy_name} on {table}: "
                          "changes which rows a role sees or writes, not the rows stored", text, lock=ACCESS_EXCLUSIVE,
                          extra={"name": stmt.policy_name})]
    if isinstance(stmt, (ast.GrantStmt, ast.GrantRoleStmt, ast.AlterDefaultPrivilegesStmt)):
        verb = "grants" if getattr(stmt, "is_grant", True) else "revokes"
        return [Operation("privileges", None, None, f"{verb} privileges (who may read or write; no stored data "
                          "changes)", text)]
    if isinstance(stmt, ast.AlterOwnerStmt):
        return [Operation("privileges", None, None, "changes an owner (no stored data changes)", text)]
    if isinstance(stmt, ast.CreateFunctionStmt):
        name = ".".join(_names(stmt.funcname))
        kind = "procedure" if stmt.is_procedure else "function"
        return [Operation("create_function", None, None, f"{'creates or replaces' if stmt.replace else 'creates'} "
                          f"{kind} {name} (its body runs only when something calls it)", text, extra={"name": name})]
    if isinstance(stmt, ast.CreateTrigStmt):
        table = _table(stmt.relation)
        function = ".".join(_names(stmt.funcname))
        return [Operation("create_trigger", table, None, f"creates trigger {stmt.trigname} on {table}: later writes "
                          f"to {table} run {function}()", text, lock=SHARE_ROW_EXCLUSIVE,
                          extra={"name": stmt.trigname})]
    if isinstance(stmt, ast.DoStmt):
        return [Operation("unknown", None, None, "runs a DO block of procedural code: what it changes is known "
                          "only when it runs, review by hand", text)]
    if isinstance(stmt, ast.TransactionStmt):
        return [_transaction_control(stmt, text)]
    if isinstance(stmt, ast.VacuumStmt):
        if stmt.is_vacuumcmd:
            return [Operation("vacuum", None, None, "vacuums tables (changes no stored data)", text,
                              lock=SHARE_UPDATE_EXCLUSIVE, not_atomic_reason=OUTSIDE_TRANSACTION.format("VACUUM"))]
        return [Operation("analyze", None, None, "updates planner statistics (changes no stored data)", text,
                          lock=SHARE_UPDATE_EXCLUSIVE)]
    if isinstance(stmt, ast.ReindexStmt):
        concurrent = any(option.defname == "concurrently" for option in stmt.params or ())
        return [Operation("reindex", None, None, f"rebuilds index(es) {'concurrently ' if concurrent else ''}"
                          "(changes no stored data)", text, lock=SHARE_UPDATE_EXCLUSIVE if concurrent else SHARE,
                          not_atomic_reason=OUTSIDE_TRANSACTION.format("REINDEX CONCURRENTLY") if concurrent else None)]
    if isinstance(stmt, (ast.CommentStmt, ast.VariableSetStmt)):
        return [Operation("comment" if isinstance(stmt, ast.CommentStmt) else "set", None, None,
                          "changes a comment (no effect on stored data)" if isinstance(stmt, ast.CommentStmt) else
                          "changes a session setting (no effect on stored data)", text)]
    return [Operation("unknown", None, None, f"{type(stmt).__name__}: not understood, review by hand", text)]


def _transaction_control(stmt: ast.TransactionStmt, text: str) -> Operation:
    if stmt.kind == TransactionStmtKind.TRANS_STMT_COMMIT:
        return Operation(COMMIT, None, None, "commits the step's transaction part-way", text,
                         not_atomic_reason=COMMIT_REASON)
    if stmt.kind in (TransactionStmtKind.TRANS_STMT_BEGIN, TransactionStmtKind.TRANS_STMT_START):
        return Operation(BEGIN, None, None, "starts a new transaction", text)
    # ROLLBACK, savepoints, two-phase commit: what they undo depends on what ran before; a person must judge.
    kind = _as(TransactionStmtKind, stmt.kind).name[11:]
    return Operation("unknown", None, None, f"transaction control {kind}: not understood, review by hand", text)


def _alter_table_command(table: TableName, cmd: ast.AlterTableCmd, text: str) -> list[Operation]:
    if cmd.subtype == AlterTableType.AT_AlterColumnType:
        return _alter_column_type(table, cmd, text)
    return [_other_alter_table_command(table, cmd, text)]


def _alter_column_type(table: TableName, cmd: ast.AlterTableCmd, text: str) -> list[Operation]:
    """The type change, counted for values that make it fail, and, where it can round or rewrite values
    without failing (a USING expression, a numeric scale, an integer type), for the values it changes."""
    column = _as(str, cmd.name)
    column_def = _as(ast.ColumnDef, cmd.def_)
    type_name = _as(ast.TypeName, column_def.typeName)
    names = _names(type_name.names)
    modifiers = tuple(_as(int, m.val.ival) for m in type_name.typmods or () if isinstance(m, ast.A_Const)
                      and isinstance(m.val, ast.Integer))
    name = _SQL_TYPE_NAMES.get(names[-1], names[-1])
    shown = f"{name}({', '.join(map(str, modifiers))})" if modifiers else name
    using = _deparse(column_def.raw_default) if column_def.raw_default else None
    operations = [Operation(
        "alter_column_type", table, column, f"changes {table}.{column} to {shown}"
        + (f" using {using}" if using else ""), text, lock=ACCESS_EXCLUSIVE, rewrites_table=True,
        check=LiveCheck("not_fitting", table, (column,), names[-1], modifiers, predicate=using),
    )]
    if using or (names[-1] == "numeric" and modifiers) or names[-1] in INTEGER_TYPES:
        how = f"rewrites the values of {table}.{column} with {using}" if using else (
            f"rounds the values of {table}.{column} that {shown} cannot hold exactly")
        operations.append(Operation(
            "convert_values", table, column, how, text,
            check=LiveCheck("converted", table, (column,), names[-1], modifiers, predicate=using),
        ))
    return operations


def _other_alter_table_command(table: TableName, cmd: ast.AlterTableCmd, text: str) -> Operation:
    sub = cmd.subtype
    column = cmd.name
    if sub == AlterTableType.AT_DropColumn:
        return Operation("drop_column", table, column, f"drops column {table}.{column} and every value in it", text,
                         lock=ACCESS_EXCLUSIVE, check=LiveCheck("non_null_values", table, (_as(str, column),)),
                         extra={"cascade": cmd.behavior == DropBehavior.DROP_CASCADE, "if_exists": cmd.missing_ok})
    if sub == AlterTableType.AT_AddColumn:
        return _add_column(table, _as(ast.ColumnDef, cmd.def_), text)
    if sub == AlterTableType.AT_SetNotNull:
        return Operation("set_not_null", table, column, f"makes {table}.{column} NOT NULL (scans the table)", text,
                         lock=ACCESS_EXCLUSIVE, check=LiveCheck("nulls", table, (_as(str, column),)))
    if sub == AlterTableType.AT_DropNotNull:
        return Operation("drop_not_null", table, column, f"allows NULL in {table}.{column}", text,
                         lock=ACCESS_EXCLUSIVE)
    if sub == AlterTableType.AT_ColumnDefault:
        return Operation("alter_column_default", table, column, f"changes the default of {table}.{column}", text,
                         lock=ACCESS_EXCLUSIVE)
    if sub == AlterTableType.AT_AddConstraint:
        constraint = _as(ast.Constraint, cmd.def_)
        added = _add_constraint(table, constraint, text)
        return replace(added, extra={**added.extra, "name": constraint.conname})
    if sub == AlterTableType.AT_DropConstraint:
        return Operation("drop_constraint", table, None, f"drops constraint {cmd.name} of {table}", text,
                         lock=ACCESS_EXCLUSIVE, extra={"name": cmd.name, "if_exists": cmd.missing_ok})
    if sub == AlterTableType.AT_ValidateConstraint:
        return Operation("validate_constraint", table, None, f"validates constraint {cmd.name} of {table}", text,
                         lock=SHARE_UPDATE_EXCLUSIVE)
    if sub in _ROW_SECURITY:
        return Operation("policy", table, None, f"{_ROW_SECURITY[sub]} row-level security on {table}: changes which "
                         "rows a role sees or writes, not the rows stored", text, lock=ACCESS_EXCLUSIVE)
    if sub in _TRIGGER_SWITCHES:
        return Operation("trigger_switch", table, None, f"{_TRIGGER_SWITCHES[sub]} trigger(s) {cmd.name or ''} on "
                         f"{table}", text, lock=SHARE_ROW_EXCLUSIVE)
    if sub in (AlterTableType.AT_AddIdentity, AlterTableType.AT_SetIdentity, AlterTableType.AT_DropIdentity):
        return Operation("alter_column_default", table, column, f"changes the identity (generated values) of "
                         f"{table}.{column}", text, lock=ACCESS_EXCLUSIVE)
    if sub == AlterTableType.AT_ChangeOwner:
        return Operation("privileges", table, None, f"changes the owner of {table}", text, lock=ACCESS_EXCLUSIVE)
    return Operation("unknown", table, column, f"ALTER TABLE {table}: subcommand {_as(AlterTableType, sub).name} "
                     "not understood, review by hand", text, lock=ACCESS_EXCLUSIVE)


_ROW_SECURITY = {
    AlterTableType.AT_EnableRowSecurity: "enables", AlterTableType.AT_DisableRowSecurity: "disables",
    AlterTableType.AT_ForceRowSecurity: "forces", AlterTableType.AT_NoForceRowSecurity: "stops forcing",
}
_TRIGGER_SWITCHES = {
    **dict.fromkeys((AlterTableType.AT_EnableTrig, AlterTableType.AT_EnableTrigAll, AlterTableType.AT_EnableTrigUser,
                     AlterTableType.AT_EnableAlwaysTrig, AlterTableType.AT_EnableReplicaTrig), "enables"),
    **dict.fromkeys((AlterTableType.AT_DisableTrig, AlterTableType.AT_DisableTrigAll,
                     AlterTableType.AT_DisableTrigUser), "disables"),
}


def _add_column(table: TableName, column_def: ast.ColumnDef, text: str) -> Operation:
    constraints = column_def.constraints or ()
    not_null = any(c.contype in (ConstrType.CONSTR_NOTNULL, ConstrType.CONSTR_PRIMARY) for c in constraints)
    has_default = any(c.contype in (ConstrType.CONSTR_DEFAULT, ConstrType.CONSTR_IDENTITY,
                                    ConstrType.CONSTR_GENERATED) for c in constraints)
    type_names = _names(_as(ast.TypeName, column_def.typeName).names)
    serial = type_names[-1] in ("serial", "bigserial", "smallserial")
    name = _as(str, column_def.colname)
    detail = f"adds column {table}.{name}: it comes back EMPTY (NULL in every row)"
    check = None
    if not_null and not has_default and not serial:
        detail = f"adds NOT NULL column {table}.{name} without a default: fails if {table} has any row"
        check = LiveCheck("rows_present", table, (name,))
    return Operation("add_column", table, name, detail, text, lock=ACCESS_EXCLUSIVE, check=check)


def _add_constraint(table: TableName, constraint: ast.Constraint, text: str) -> Operation:
    kind = _as(ConstrType, constraint.contype)
    name = constraint.conname or "(unnamed)"
    if kind in (ConstrType.CONSTR_UNIQUE, ConstrType.CONSTR_PRIMARY):
        columns = _names(constraint.keys)
        if kind == ConstrType.CONSTR_UNIQUE:
            return Operation("add_unique", table, ", ".join(columns), f"adds unique {name} on {table} "
                             f"({', '.join(columns)}): fails on duplicates", text, lock=ACCESS_EXCLUSIVE,
                             check=LiveCheck("duplicates", table, columns))
        return Operation("add_primary_key", table, ", ".join(columns), f"adds primary key {name} on {table} "
                         f"({', '.join(columns)}): fails on NULLs and duplicates", text, lock=ACCESS_EXCLUSIVE,
                         check=LiveCheck("primary_key", table, columns))
    if kind == ConstrType.CONSTR_FOREIGN:
        columns = _names(constraint.fk_attrs)
        referenced = _table(constraint.pktable)
        ref_columns = _names(constraint.pk_attrs)
        return Operation("add_foreign_key", table, ", ".join(columns),
                         f"adds foreign key {name} {table} ({', '.join(columns)}) -> {referenced}: fails on orphans",
                         text, lock=SHARE_ROW_EXCLUSIVE,
                         check=LiveCheck("orphans", table, columns, referenced_table=referenced,
                                         referenced_columns=ref_columns))
    if kind == ConstrType.CONSTR_CHECK:
        expression = _deparse(_as(ast.Node, constraint.raw_expr))
        return Operation("add_check", table, None, f"adds check {name} ({expression}) on {table}", text,
                         lock=ACCESS_EXCLUSIVE, check=LiveCheck("violating", table, predicate=expression))
    return Operation("unknown", table, None, f"adds a {kind.name} constraint on {table}: review by hand", text,
                     lock=ACCESS_EXCLUSIVE)


def _drop(stmt: ast.DropStmt, text: str) -> list[Operation]:
    kind = _as(ObjectType, stmt.removeType)
    noun = kind.name[7:].lower()
    operations = []
    for obj in _as(tuple, stmt.objects):
        parts = _names(obj) if isinstance(obj, tuple) else ()
        if kind == ObjectType.OBJECT_TABLE and parts:
            table = TableName(parts[0] if len(parts) > 1 else None, parts[-1])
            operations.append(Operation("drop_table", table, None, f"drops table {table} and all its rows", text,
                                        lock=ACCESS_EXCLUSIVE, check=LiveCheck("all_rows", table),
                                        extra={"cascade": stmt.behavior == DropBehavior.DROP_CASCADE,
                                               "if_exists": stmt.missing_ok}))
        elif kind in _HARMLESS_DROPS and stmt.behavior == DropBehavior.DROP_CASCADE:
            # CASCADE also drops what depends on the object: a type's columns, a schema's tables.
            operations.append(Operation("unknown", None, None, f"drops {noun} {_object_label(obj)} with CASCADE, "
                                        "and every object that depends on it, data included: review by hand", text))
        elif kind in _HARMLESS_DROPS:
            lock = SHARE_UPDATE_EXCLUSIVE if stmt.concurrent else ACCESS_EXCLUSIVE
            operations.append(Operation(_HARMLESS_DROPS[kind], None, None, f"drops {noun} {_object_label(obj)}",
                                        text, lock=lock,
                                        extra={"name": _object_label(obj), "if_exists": stmt.missing_ok},
                                        not_atomic_reason=OUTSIDE_TRANSACTION.format("DROP INDEX CONCURRENTLY")
                                        if stmt.concurrent else None))
        else:
            operations.append(Operation("unknown", None, None, f"DROP {kind.name[7:]}: review by hand", text))
    return operations


def _object_label(obj: ast.Node | tuple[Any, ...]) -> str:
    if isinstance(obj, tuple):
        return ".".join(_names(obj))
    if isinstance(obj, ast.String):
        return _as(str, obj.sval)
    if isinstance(obj, ast.TypeName):
        return ".".join(_names(obj.names))
    if isinstance(obj, ast.ObjectWithArgs):
        return ".".join(_names(obj.objname))
    return "object"


def _create_index(stmt: ast.IndexStmt, text: str) -> Operation:
    table = _table(stmt.relation)
    params = _as(tuple, stmt.indexParams)
    columns = tuple(p.name or _deparse(p.expr) for p in params)
    lock = SHARE_UPDATE_EXCLUSIVE if stmt.concurrent else SHARE
    not_atomic = (f"{OUTSIDE_TRANSACTION.format('CREATE INDEX CONCURRENTLY')}; a failed build leaves an INVALID "
                  "index behind" if stmt.concurrent else None)
    if stmt.unique:
        where = _deparse(stmt.whereClause) if stmt.whereClause is not None else None
        expressions = not all(p.name for p in params)
        check = LiveCheck("duplicates", table, () if expressions else columns, predicate=where,
                          keys=tuple(_deparse(p.expr) if p.expr else p.name for p in params)
                          if expressions else ())
        partial = f" where {where}" if where else ""
        return Operation("create_unique_index", table, ", ".join(columns),
                         f"creates unique index {stmt.idxname} on {table} ({', '.join(columns)}){partial}: fails on "
                         "duplicates", text, lock=lock, check=check, not_atomic_reason=not_atomic,
                         extra={"name": stmt.idxname})
    blocks = "builds without blocking writes" if stmt.concurrent else "blocks writes while it builds"
    return Operation("create_index", table, ", ".join(columns),
                     f"creates index {stmt.idxname} on {table} ({blocks})", text, lock=lock,
                     not_atomic_reason=not_atomic, extra={"name": stmt.idxname})


def _rename(stmt: ast.RenameStmt, text: str) -> Operation:
    if stmt.renameType == ObjectType.OBJECT_TABLE:
        table = _table(stmt.relation)
        return Operation("rename_table", table, None, f"renames table {table} to {stmt.newname}", text,
                         lock=ACCESS_EXCLUSIVE, extra={"new_name": stmt.newname})
    if stmt.renameType == ObjectType.OBJECT_COLUMN:
        table = _table(stmt.relation)
        return Operation("rename_column", table, stmt.subname,
                         f"renames column {table}.{stmt.subname} to {stmt.newname}", text, lock=ACCESS_EXCLUSIVE,
                         extra={"new_name": stmt.newname})
    noun = _as(ObjectType, stmt.renameType).name[7:].lower()
    return Operation(f"rename_{noun}", None, None, f"renames {noun} to {stmt.newname}", text, lock=ACCESS_EXCLUSIVE)


# Functions a SELECT calls to move a sequence: the only writes rendered migrations make through a SELECT.
_SEQUENCE_FUNCTIONS = {"setval": "moves", "nextval": "advances"}
# Functions that only compute or read: a SELECT calling nothing else changes nothing.
_READ_ONLY_FUNCTIONS = frozenset({
    "count", "max", "min", "sum", "avg", "now", "lower", "upper", "length", "char_length", "octet_length",
    "pg_get_serial_sequence", "current_setting", "to_regclass", "current_schema", "array_agg", "string_agg",
    "json_agg", "jsonb_agg", "json_build_object", "jsonb_build_object", "concat", "format", "substring", "trim",
    "replace", "to_char", "date_trunc", "date_part", "extract", "gen_random_uuid", "version", "currval", "abs",
    "round", "greatest", "least", "bool_or", "bool_and", "split_part", "coalesce", "left", "right",
})


def _select(stmt: ast.SelectStmt, text: str) -> Operation:
    calls = _function_calls(stmt)
    sequence_calls = [call for call in calls if _names(call.funcname)[-1] in _SEQUENCE_FUNCTIONS]
    if sequence_calls:
        call = sequence_calls[0]
        verb = _SEQUENCE_FUNCTIONS[_names(call.funcname)[-1]]
        name = _sequence_label(call.args[0] if call.args else None)
        return Operation("set_sequence", None, None, f"{verb} sequence {name}: no table row changes; new rows take "
                         "their ids from where it then stands", text, extra={"name": name})
    others = sorted({_names(call.funcname)[-1] for call in calls} - _READ_ONLY_FUNCTIONS)
    # `SELECT migrate_rows()`: a call with no table read is run for what it does, not for what it returns.
    if others and not stmt.fromClause:
        return Operation("unknown", None, None, f"a SELECT that calls {', '.join(others)}(): what that function "
                         "changes is known only when it runs, review by hand", text)
    return Operation("select", None, None, "reads data, changes nothing", text)


def _sequence_label(node: ast.Node | None) -> str:
    """'t_id_seq', or 'of t.id' for pg_get_serial_sequence('t', 'id'), as a sequence argument names it."""
    if isinstance(node, ast.A_Const) and isinstance(node.val, ast.String):
        return _as(str, node.val.sval)
    if isinstance(node, ast.FuncCall) and _names(node.funcname)[-1] == "pg_get_serial_sequence" and all(
            isinstance(a, ast.A_Const) and isinstance(a.val, ast.String) for a in node.args or ()):
        return "of " + ".".join(a.val.sval for a in node.args or ())
    return _deparse(node) if node is not None else "(computed at run time)"


class _FunctionCallFinder(Visitor):
    def __init__(self) -> None:
        self.calls: list[ast.FuncCall] = []

    def visit_FuncCall(self, ancestors: object, node: ast.FuncCall) -> None:
        self.calls.append(node)


def _function_calls(node: ast.Node) -> list[ast.FuncCall]:
    finder = _FunctionCallFinder()
    finder(node)
    return finder.calls


def _insert(stmt: ast.InsertStmt, text: str) -> Operation:
    table = _table(stmt.relation)
    if _uses_parameters(stmt.selectStmt):
        # Values bound when the migration runs, often once per row of a Python loop: how many rows arrive
        # and which keys they carry exist only then.
        return Operation("insert", table, None, f"inserts rows into {table} with values bound at run time (how "
                         "many is known only then)", text, lock=ROW_EXCLUSIVE)
    values = stmt.selectStmt.valuesLists if isinstance(stmt.selectStmt, ast.SelectStmt) else None
    if not values or stmt.onConflictClause is not None or stmt.withClause is not None:
        # INSERT ... SELECT, or ON CONFLICT: which rows arrive, or what happens to a clash, is not known here.
        return Operation("insert", table, None, f"inserts rows into {table}", text, lock=ROW_EXCLUSIVE)
    columns = tuple(target.name for target in stmt.cols or ())
    return Operation("insert", table, None, f"inserts {len(values)} row(s) into {table}: fails on a key another row "
                     "already has", text, lock=ROW_EXCLUSIVE,
                     check=LiveCheck("conflicting_inserts", table, columns,
                                     predicate=_deparse(_as(ast.Node, stmt.selectStmt))))


def _update_or_delete(op: str, stmt: ast.UpdateStmt | ast.DeleteStmt, text: str) -> Operation:
    table = _table(stmt.relation)
    joined = stmt.fromClause if isinstance(stmt, ast.UpdateStmt) else stmt.usingClause
    predicate = _deparse(stmt.whereClause) if stmt.whereClause is not None else "true"
    where = f" where {predicate}" if stmt.whereClause is not None else " (every row)"
    verb = "changes" if op == "update" else "deletes"
    countable = not (joined or stmt.withClause or _uses_parameters(stmt.whereClause))
    check = LiveCheck("matching_rows", table, predicate=predicate) if countable else None
    set_columns = tuple(target.name for target in stmt.targetList or ()) if isinstance(stmt, ast.UpdateStmt) else ()
    return Operation(op, table, None, f"{verb} rows of {table}{where}", text, lock=ROW_EXCLUSIVE, check=check,
                     extra={"set_columns": set_columns})


class _ParameterFinder(Visitor):
    def __init__(self) -> None:
        self.found = False

    def visit_ParamRef(self, ancestors: object, node: ast.ParamRef) -> None:
        self.found = True


def _uses_parameters(node: ast.Node | None) -> bool:
    """Whether `node` refers to a bind parameter ($1): its value exists only while the migration runs."""
    if node is None:
        return False
    finder = _ParameterFinder()
    finder(node)
    return finder.found
