"""The data-loss risk of undoing a migration, by migration type, as the rollback procedures teach it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rollbook.planning.operations import BEGIN, COMMIT, RENDER_FALLBACK, ROW_CHANGES, Operation, Risk, TableName


@dataclass(frozen=True)
class MigrationTypeRisk:
    """What the procedures say about rolling back one kind of migration."""

    migration_type: str
    risk: Risk
    data_loss: str
    rollback_safety: str
    mitigation: str


MIGRATION_TYPES: dict[str, MigrationTypeRisk] = {
    t.migration_type: t
    for t in (
        MigrationTypeRisk(
            "add_column", Risk.LOW, "None from the schema (the column did not exist before).",
            "Safe if no data was written to the new column.",
            "Count the non-null values first: a rollback loses every one of them.",
        ),
        MigrationTypeRisk(
            "drop_column", Risk.HIGH, "All data in the removed column is lost permanently.",
            "NOT SAFE: the downgrade brings the column back EMPTY; the data cannot be recovered by it.",
            "Never roll back a column drop: restore from backup, or fix forward with a new migration.",
        ),
        MigrationTypeRisk(
            "alter_column", Risk.MEDIUM, "Possible if existing data does not fit the old type.",
            "RISKY: the downgrade fails (or truncates) when values exceed the old type's limits.",
            "Count the values that do not fit; fix them first or restore from backup.",
        ),
        MigrationTypeRisk(
            "add_table", Risk.LOW, "All data in the new table is lost.",
            "Safe if the table is empty or its data can be recreated.",
            "Count the table's rows before rolling back.",
        ),
        MigrationTypeRisk(
            "drop_table", Risk.HIGH, "All table data is lost permanently.",
            "NOT SAFE: the downgrade recreates the table EMPTY.",
            "Never roll back a table drop: restore from backup instead.",
        ),
        MigrationTypeRisk(
            "data_migration", Risk.HIGH, "Transformed data may be lost.",
            "RISKY: the downgrade may not reverse the transformation exactly.",
            "Check the data before and after, or restore from backup instead.",
        ),
    )
}

# Upgrade operations that decide a migration's type, most dangerous first.
_TYPE_OF_UPGRADE = (
    ("data_migration", {"update", "delete", "insert", "truncate"}),
    ("drop_table", {"drop_table"}),
    ("drop_column", {"drop_column"}),
    ("alter_column", {"alter_column_type", "set_not_null", "drop_not_null", "alter_column_default"}),
    ("add_table", {"create_table"}),
    ("add_column", {"add_column"}),
    ("add_enum_value", {"add_enum_value"}),
    ("add_constraint", {"add_unique", "add_primary_key", "add_foreign_key", "add_check", "create_unique_index"}),
    ("add_index", {"create_index"}),
    ("drop_constraint", {"drop_constraint", "drop_index"}),
    ("rename", {"rename_table", "rename_column"}),
)

_MEDIUM_OPS = {
    "alter_column_type", "convert_values", "set_not_null", "add_unique", "add_primary_key", "add_foreign_key",
    "add_check",
    "create_unique_index", "insert",
}
_HIGH_OPS = {"update", "delete", "truncate"}
_NAMED_LOW_REASONS = {
    "set_sequence": "Moves a sequence: no stored row changes; ids handed out later follow from where it stands.",
    "create_sequence": "Creates a sequence: no stored row changes.",
    "alter_sequence": "Changes a sequence's settings: no stored row changes.",
    "drop_sequence": "Drops a sequence: no stored row changes (PostgreSQL refuses while a column's default uses it).",
    "policy": "Changes which rows a role may see or write: no stored row changes.",
    "drop_policy": "Drops a row-level security policy: no stored row changes.",
    "privileges": "Changes privileges or owners: no stored row changes.",
    "create_extension": "Adds an extension's types and functions: no stored row changes.",
    "drop_extension": "Drops an extension: no stored row changes (PostgreSQL refuses while a column or index "
                      "uses its objects).",
    "create_function": "Defines a function: nothing runs until something calls it.",
    "create_trigger": "Creates a trigger: it acts only on later writes to its table.",
    "trigger_switch": "Turns triggers on or off: no stored row changes.",
    "comment": "Changes a comment: no stored data changes.",
}
_MAINTENANCE_OPS = {"vacuum", "analyze", "reindex"}


# Operations that change rows, not the schema.
DATA_OPS = frozenset({"update", "delete", "insert", "truncate", "select", "set_sequence"})
# Operations that change neither rows nor the shape of any table.
_NEUTRAL_OPS = frozenset({"comment", "set", "analyze", "vacuum", "reindex", COMMIT, BEGIN})


def migration_type(upgrade_ops: list[Operation]) -> str:
    """The procedures' migration type of a revision, judged by what its upgrade() does.

    What an upgrade does to a table or column it creates itself (a backfill of a column it adds, the NOT
    NULL it sets once the column is filled, rows put into a new table) belongs to adding that table or
    column: no older data is transformed.
    """
    kinds = {op.op for op in upgrade_ops if not _on_what_it_adds(op, upgrade_ops)}
    for name, ops in _TYPE_OF_UPGRADE:
        if kinds & ops:
            return name
    if "unknown" in kinds:
        return "unknown"
    return "empty" if not kinds else "other"


def table_key(table: TableName | None) -> str:
    """A table's name for comparisons: `public.t` and an unqualified `t` are the same table."""
    if table is None:
        return "None"
    return table.name if table.schema in (None, "public") else str(table)


def _on_what_it_adds(op: Operation, upgrade_ops: list[Operation]) -> bool:
    created = {table_key(o.table) for o in upgrade_ops if o.op == "create_table"}
    added = {(table_key(o.table), o.column) for o in upgrade_ops if o.op == "add_column"}
    table = table_key(op.table)
    if op.table is None or op.op == "create_table":
        return False
    if table in created:
        return True
    if op.op == "update":
        set_columns = op.extra.get("set_columns", ())
        return bool(set_columns) and all((table, column) in added for column in set_columns)
    return op.op in ("alter_column_type", "set_not_null", "drop_not_null", "alter_column_default") and (
        (table, op.column) in added)


def step_risk(kind: str, downgrade_ops: list[Operation]) -> Risk:
    """The risk of undoing one revision: its migration type's risk, and the worst of its downgrade operations.

    Two types carry no risk of their own beyond what the downgrade does: an `alter_column` downgrade's type
    changes are judged one by one (a narrowing is counted, a widening is LOW), and a `data_migration` whose
    downgrade changes no row leaves the rows as upgrade() left them, destroying nothing.
    """
    operations_risk = Risk.worst([op.risk for op in downgrade_ops])
    if kind == "alter_column" or (kind == "data_migration" and not changes_rows(downgrade_ops)):
        return operations_risk
    return Risk.worst([type_risk(kind), operations_risk])


def changes_rows(operations: list[Operation]) -> bool:
    """Whether any operation changes or removes rows, or might (not understood)."""
    return any(op.op in ROW_CHANGES or op.op in ("insert", "unknown") for op in operations)


def type_risk(kind: str) -> Risk:
    """The procedures' risk for a migration type; types they do not name are judged by their operations."""
    known = MIGRATION_TYPES.get(kind)
    if known:
        return known.risk
    return Risk.UNKNOWN if kind == "unknown" else Risk.LOW


def assess_downgrade_operations(upgrade_ops: list[Operation], downgrade_ops: list[Operation]) -> list[Operation]:
    """Give each downgrade operation its risk and the reason, knowing what the upgrade did."""
    added_columns = {(table_key(o.table), o.column) for o in upgrade_ops if o.op == "add_column"}
    dropped_columns = {(table_key(o.table), o.column) for o in upgrade_ops if o.op == "drop_column"}
    created_tables = {table_key(o.table) for o in upgrade_ops if o.op == "create_table"}
    dropped_tables = {table_key(o.table) for o in upgrade_ops if o.op == "drop_table"}
    # Part of upgrade() could not be read (a column list computed at run time): what it added is not all known.
    partly_read = any(o.op == "unknown" and not o.extra.get(RENDER_FALLBACK) for o in upgrade_ops)
    assessed = []
    for op in downgrade_ops:
        risk, reason = _risk_of(op, added_columns, dropped_columns, created_tables, dropped_tables)
        if partly_read and op.op in ("drop_column", "drop_table") and risk == Risk.HIGH:
            what = "column" if op.op == "drop_column" else "table"
            risk, reason = Risk.UNKNOWN, (
                f"upgrade() could not be read in full, so whether it created this {what} is not known: if the "
                f"{what} existed before this migration, dropping it destroys older data. Review upgrade() by hand.")
        assessed.append(replace(op, risk=risk, reason=reason))
    if upgrade_ops and not downgrade_ops:
        assessed.append(_empty_downgrade(upgrade_ops))
    return assessed


def _empty_downgrade(upgrade_ops: list[Operation]) -> Operation:
    """What an empty downgrade() means, by what upgrade() did: schema left out of step, or rows left as they are."""
    read = [op for op in upgrade_ops if not op.extra.get(RENDER_FALLBACK)]
    schema_changes = [op for op in read if op.op not in DATA_OPS | _NEUTRAL_OPS | {"unknown"}]
    dropped = [op for op in schema_changes if op.op in ("drop_column", "drop_table")]
    if dropped:
        what = ", ".join(f"{op.table}.{op.column}" if op.column else str(op.table) for op in dropped)
        return Operation(
            "no_op_downgrade", None, None,
            f"downgrade() does nothing: what upgrade() dropped ({what}) does not come back, and the schema stays as "
            "the newer revision left it while the version moves back", "", risk=Risk.UNKNOWN,
            reason="The data of what upgrade() dropped was lost when upgrade() ran; this downgrade neither brings it "
                   "back nor loses more. Older code may need what is missing: restore from backup or fix forward.")
    if schema_changes:
        return Operation(
            "no_op_downgrade", None, None,
            "downgrade() does nothing although upgrade() changes the schema: the version would move back "
            "while the schema stays as it is", "", risk=Risk.UNKNOWN,
            reason="An empty downgrade leaves the database out of step with its revision: review by hand.")
    if any(op.op == "unknown" for op in read) or not any(op.op in DATA_OPS for op in read):
        return Operation(
            "no_op_downgrade", None, None,
            "downgrade() does nothing, and part of what upgrade() does could not be read: if it changes only rows, "
            "they stay as upgrade() left them; if it changes the schema, the schema stays out of step", "",
            risk=Risk.UNKNOWN, reason="What upgrade() does is not fully known: review it by hand.")
    if len(read) < len(upgrade_ops):
        # Read from Python source: calls that are not Alembic operations or SQL (an ORM session) stay unseen.
        return Operation(
            "no_op_downgrade", None, None,
            "downgrade() does nothing; upgrade(), read from its Python source, appears to change only rows, which "
            "stay as upgrade() left them", "", risk=Risk.UNKNOWN,
            reason="Confirm by hand that upgrade() changes no schema: its source was read, not rendered.")
    return Operation(
        "no_op_downgrade", None, None,
        "downgrade() does nothing: upgrade() changes only rows, so the schema is already right for the older "
        "revision, and the rows stay as upgrade() left them", "", risk=Risk.LOW,
        reason="A data-only migration with an empty downgrade: nothing is removed; what upgrade() wrote stays.")


def _risk_of(
    op: Operation,
    added_columns: set[tuple[str, str | None]],
    dropped_columns: set[tuple[str, str | None]],
    created_tables: set[str],
    dropped_tables: set[str],
) -> tuple[Risk, str]:
    key = (table_key(op.table), op.column)
    if op.op in _NAMED_LOW_REASONS:
        return Risk.LOW, _NAMED_LOW_REASONS[op.op]
    if op.op == "drop_column":
        if key in added_columns:
            return Risk.LOW, "The column was added by this migration; values written to it since are lost."
        return Risk.HIGH, "The column existed before this migration: dropping it destroys older data."
    if op.op == "drop_table":
        if table_key(op.table) in created_tables:
            return Risk.LOW, "The table was created by this migration; rows written to it since are lost."
        return Risk.HIGH, "The table existed before this migration: dropping it destroys older data."
    if op.op == "add_column" and key in dropped_columns:
        return Risk.HIGH, "upgrade() dropped this column: it comes back EMPTY; restore from backup to get data."
    if op.op == "create_table" and table_key(op.table) in dropped_tables:
        return Risk.HIGH, "upgrade() dropped this table: it comes back EMPTY; restore from backup to get data."
    if op.op == "add_column" and op.check is not None:
        return Risk.MEDIUM, "A NOT NULL column without a default cannot be added to a table that has rows."
    if op.op in _HIGH_OPS:
        return Risk.HIGH, "Data migration: rows are rewritten or removed and the change may not be reversible."
    if op.op in _MEDIUM_OPS:
        return Risk.MEDIUM, "Fails, or changes data, when existing rows do not satisfy the new definition."
    if op.op == "unknown":
        return Risk.UNKNOWN, "Not understood: review by hand."
    if op.op == "raises":
        return Risk.MEDIUM, ("The migration's own code raises: the step fails where it does, and its transaction "
                             "rolls back what its earlier statements did (unless the step commits on its way).")
    if op.op in (COMMIT, BEGIN):
        # The step's atomicity is judged on its own (PlanStep.atomic): the policy treats it like a HIGH risk.
        return Risk.LOW, "Transaction control: removes no data, but the step no longer runs as one transaction."
    if op.op in _MAINTENANCE_OPS:
        return Risk.LOW, "Maintenance: changes no stored data and no schema."
    return Risk.LOW, "Changes the schema only; no stored data is removed."
