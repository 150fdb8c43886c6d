"""The data-loss risk of undoing a migration, by migration type, as the rollback procedures teach it."""

from __future__ import annotations

from dataclasses import dataclass, replace

from rollbook.operations import BEGIN, COMMIT, Operation, Risk


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
    "alter_column_type", "convert_values", "set_not_null", "add_unique", "add_primary_key", "add_foreign_key", "add_check",
    "create_unique_index", "insert",
}
_HIGH_OPS = {"update", "delete", "truncate"}
_MAINTENANCE_OPS = {"vacuum", "analyze", "reindex"}


def migration_type(upgrade_ops: list[Operation]) -> str:
    """The procedures' migration type of a revision, judged by what its upgrade() does."""
    kinds = {op.op for op in upgrade_ops}
    for name, ops in _TYPE_OF_UPGRADE:
        if kinds & ops:
            return name
    if "unknown" in kinds:
        return "unknown"
    return "empty" if not kinds else "other"


def type_risk(kind: str) -> Risk:
    """The procedures' risk for a migration type; types they do not name are judged by their operations."""
    known = MIGRATION_TYPES.get(kind)
    if known:
        return known.risk
    return Risk.UNKNOWN if kind == "unknown" else Risk.LOW


def assess_downgrade_operations(upgrade_ops: list[Operation], downgrade_ops: list[Operation]) -> list[Operation]:
    """Give each downgrade operation its risk and the reason, knowing what the upgrade did."""
    added_columns = {(str(o.table), o.column) for o in upgrade_ops if o.op == "add_column"}
    dropped_columns = {(str(o.table), o.column) for o in upgrade_ops if o.op == "drop_column"}
    created_tables = {str(o.table) for o in upgrade_ops if o.op == "create_table"}
    dropped_tables = {str(o.table) for o in upgrade_ops if o.op == "drop_table"}
    assessed = []
    for op in downgrade_ops:
        risk, reason = _risk_of(op, added_columns, dropped_columns, created_tables, dropped_tables)
        assessed.append(replace(op, risk=risk, reason=reason))
    if upgrade_ops and not downgrade_ops:
        assessed.append(Operation(
            "no_op_downgrade", None, None,
            "downgrade() does nothing although upgrade() changes the schema: the version would move back "
            "while the schema stays as it is", "", risk=Risk.UNKNOWN,
            reason="An empty downgrade leaves the database out of step with its revision: review by hand.",
        ))
    return assessed


def _risk_of(
    op: Operation,
    added_columns: set[tuple[str, str | None]],
    dropped_columns: set[tuple[str, str | None]],
    created_tables: set[str],
    dropped_tables: set[str],
) -> tuple[Risk, str]:
    key = (str(op.table), op.column)
    if op.op == "drop_column":
        if key in added_columns:
            return Risk.LOW, "The column was added by this migration; values written to it since are lost."
        return Risk.HIGH, "The column existed before this migration: dropping it destroys older data."
    if op.op == "drop_table":
        if str(op.table) in created_tables:
            return Risk.LOW, "The table was created by this migration; rows written to it since are lost."
        return Risk.HIGH, "The table existed before this migration: dropping it destroys older data."
    if op.op == "add_column" and key in dropped_columns:
        return Risk.HIGH, "upgrade() dropped this column: it comes back EMPTY; restore from backup to get data."
    if op.op == "create_table" and str(op.table) in dropped_tables:
        return Risk.HIGH, "upgrade() dropped this table: it comes back EMPTY; restore from backup to get data."
    if op.op == "add_column" and op.check is not None:
        return Risk.MEDIUM, "A NOT NULL column without a default cannot be added to a table that has rows."
    if op.op in _HIGH_OPS:
        return Risk.HIGH, "Data migration: rows are rewritten or removed and the change may not be reversible."
    if op.op in _MEDIUM_OPS:
        return Risk.MEDIUM, "Fails, or changes data, when existing rows do not satisfy the new definition."
    if op.op == "unknown":
        return Risk.UNKNOWN, "Not understood: review by hand."
    if op.op in (COMMIT, BEGIN):
        # The step's atomicity is judged on its own (PlanStep.atomic): the policy treats it like a HIGH risk.
        return Risk.LOW, "Transaction control: removes no data, but the step no longer runs as one transaction."
    if op.op in _MAINTENANCE_OPS:
        return Risk.LOW, "Maintenance: changes no stored data and no schema."
    return Risk.LOW, "Changes the schema only; no stored data is removed."
