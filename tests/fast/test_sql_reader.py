"""The SQL statement reader without a database: each statement kind becomes the operation, risk and reason a
plan shows, with the lock it takes and the live count that would quantify it."""

from __future__ import annotations

import pytest

from rollbook.planning.operations import Operation, Risk, TableName
from rollbook.planning.risk import assess_downgrade_operations
from rollbook.planning.sql_operations import operations_from_sql

EXISTING_COLUMN = "The column existed before this migration: dropping it destroys older data."
EXISTING_TABLE = "The table existed before this migration: dropping it destroys older data."
DATA_MIGRATION = "Data migration: rows are rewritten or removed and the change may not be reversible."
MAY_FAIL = "Fails, or changes data, when existing rows do not satisfy the new definition."
SCHEMA_ONLY = "Changes the schema only; no stored data is removed."
NOT_UNDERSTOOD = "Not understood: review by hand."


def downgrade(sql_text: str, upgrade_sql: str = "") -> list[Operation]:
    """The downgrade's operations with their risk, as the plan assesses them against the upgrade."""
    upgrade = operations_from_sql(upgrade_sql) if upgrade_sql else []
    return assess_downgrade_operations(upgrade, operations_from_sql(sql_text))


def only(sql_text: str, upgrade_sql: str = "") -> Operation:
    [operation] = downgrade(sql_text, upgrade_sql)
    return operation


@pytest.mark.parametrize(("statement", "op", "risk", "detail", "reason"), [
    ("ALTER TABLE users DROP COLUMN email", "drop_column", Risk.HIGH,
     "drops column users.email and every value in it", EXISTING_COLUMN),
    ("DROP TABLE app.sessions", "drop_table", Risk.HIGH, "drops table app.sessions and all its rows", EXISTING_TABLE),
    ("DELETE FROM app.users WHERE status = 'old'", "delete", Risk.HIGH,
     "deletes rows of app.users where status = 'old'", DATA_MIGRATION),
    ("UPDATE users SET status = NULL", "update", Risk.HIGH, "changes rows of users (every row)", DATA_MIGRATION),
    ("ALTER TABLE users ALTER COLUMN email TYPE varchar(50)", "alter_column_type", Risk.MEDIUM,
     "changes users.email to varchar(50)", MAY_FAIL),
    ("ALTER TABLE users ALTER COLUMN email SET NOT NULL", "set_not_null", Risk.MEDIUM,
     "makes users.email NOT NULL (scans the table)", MAY_FAIL),
    ("ALTER TABLE users ADD COLUMN age int NOT NULL", "add_column", Risk.MEDIUM,
     "adds NOT NULL column users.age without a default: fails if users has any row",
     "A NOT NULL column without a default cannot be added to a table that has rows."),
    ("ALTER TABLE users ADD COLUMN age int", "add_column", Risk.LOW,
     "adds column users.age: it comes back EMPTY (NULL in every row)", SCHEMA_ONLY),
    ("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id)", "add_foreign_key",
     Risk.MEDIUM, "adds foreign key fk orders (user_id) -> users: fails on orphans", MAY_FAIL),
    ("INSERT INTO t (id) VALUES (1), (2)", "insert", Risk.MEDIUM,
     "inserts 2 row(s) into t: fails on a key another row already has", MAY_FAIL),
    ("ALTER TABLE users RENAME TO people", "rename_table", Risk.LOW, "renames table users to people", SCHEMA_ONLY),
    ("CREATE TABLE x (id int)", "create_table", Risk.LOW, "creates table x (empty)", SCHEMA_ONLY),
    ("DROP TYPE status CASCADE", "unknown", Risk.UNKNOWN,
     "drops type status with CASCADE, and every object that depends on it, data included: review by hand",
     NOT_UNDERSTOOD),
    ("VACUUM users", "vacuum", Risk.LOW, "vacuums tables (changes no stored data)",
     "Maintenance: changes no stored data and no schema."),
])
def test_each_statement_kind_has_its_operation_risk_and_reason(
    statement: str, op: str, risk: Risk, detail: str, reason: str
) -> None:
    operation = only(statement)

    assert (operation.op, operation.risk, operation.detail, operation.reason) == (op, risk, detail, reason)
    assert operation.statement == statement


def test_dropping_what_the_upgrade_added_is_low() -> None:
    column = only("ALTER TABLE users DROP COLUMN email", upgrade_sql="ALTER TABLE users ADD COLUMN email text")
    table = only("DROP TABLE notes", upgrade_sql="CREATE TABLE notes (id int)")

    assert (column.risk, column.reason) == (
        Risk.LOW, "The column was added by this migration; values written to it since are lost.")
    assert (table.risk, table.reason) == (
        Risk.LOW, "The table was created by this migration; rows written to it since are lost.")


def test_bringing_back_what_the_upgrade_dropped_says_it_comes_back_empty() -> None:
    operation = only("ALTER TABLE users ADD COLUMN legacy text", upgrade_sql="ALTER TABLE users DROP COLUMN legacy")

    assert operation.risk == Risk.HIGH
    assert operation.reason == "upgrade() dropped this column: it comes back EMPTY; restore from backup to get data."


def test_the_live_count_of_each_kind_names_what_it_counts() -> None:
    drop = only("ALTER TABLE users DROP COLUMN email")
    narrowing = only("ALTER TABLE users ALTER COLUMN email TYPE varchar(50)")
    delete = only("DELETE FROM users WHERE status = 'old'")
    foreign_key = only("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES app.users (id)")

    assert drop.check is not None and (drop.check.kind, drop.check.columns) == ("non_null_values", ("email",))
    assert narrowing.check is not None
    assert (narrowing.check.kind, narrowing.check.type_name, narrowing.check.type_modifiers) == (
        "not_fitting", "varchar", (50,))
    assert delete.check is not None and (delete.check.kind, delete.check.predicate) == (
        "matching_rows", "status = 'old'")
    assert foreign_key.check is not None
    assert foreign_key.check.referenced_table == TableName("app", "users")
    assert foreign_key.check.referenced_columns == ("id",)


def test_a_truncate_of_several_tables_is_one_operation_per_table() -> None:
    operations = downgrade("TRUNCATE users, orders CASCADE")

    assert [(op.op, op.table, op.risk) for op in operations] == [
        ("truncate", TableName(None, "users"), Risk.HIGH), ("truncate", TableName(None, "orders"), Risk.HIGH)]
    assert all(op.extra["cascade"] for op in operations)


def test_locks_follow_postgresql() -> None:
    assert only("ALTER TABLE users DROP COLUMN email").lock == "ACCESS EXCLUSIVE"
    assert only("CREATE INDEX ix ON users (email)").lock == "SHARE"
    assert only("CREATE INDEX CONCURRENTLY ix ON users (email)").lock == "SHARE UPDATE EXCLUSIVE"
    assert only("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (u) REFERENCES users (id)").lock == (
        "SHARE ROW EXCLUSIVE")
    assert only("DELETE FROM users").lock == "ROW EXCLUSIVE"


@pytest.mark.parametrize(("statement", "starts"), [
    ("COMMIT", "COMMIT part-way through the step"),
    ("VACUUM users", "VACUUM cannot run inside a transaction"),
    ("CREATE UNIQUE INDEX CONCURRENTLY ix ON users (email)", "CREATE INDEX CONCURRENTLY cannot run inside a transaction"),
    ("DROP INDEX CONCURRENTLY ix", "DROP INDEX CONCURRENTLY cannot run inside a transaction"),
])
def test_statements_that_break_the_steps_transaction_say_why(statement: str, starts: str) -> None:
    operation = only(statement)

    assert operation.not_atomic_reason is not None and operation.not_atomic_reason.startswith(starts)


def test_sql_the_parser_rejects_is_unknown_and_quotes_the_parser() -> None:
    operation = only("SELEC broken")

    assert (operation.op, operation.risk) == ("unknown", Risk.UNKNOWN)
    assert operation.detail.startswith("SQL that PostgreSQL's parser rejects (syntax error at or near \"SELEC\"")


def test_a_statement_of_several_is_kept_with_its_own_text() -> None:
    first, second = downgrade("ALTER TABLE users DROP COLUMN email;\nDROP TABLE sessions;")

    assert first.statement == "ALTER TABLE users DROP COLUMN email"
    assert second.statement == "DROP TABLE sessions"


def test_alter_table_if_exists_marks_its_drops() -> None:
    operation = only("ALTER TABLE IF EXISTS users DROP COLUMN IF EXISTS email")

    assert operation.extra["table_if_exists"] is True
    assert operation.extra["if_exists"] is True
