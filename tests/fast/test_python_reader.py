"""The Python operations reader without a database: a migration file's `op.*` calls, read from its source when
its downgrade cannot be rendered offline, become the same operations and risks as rendered SQL."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from rollbook.planning.operations import RENDER_FALLBACK, Operation, Risk, TableName
from rollbook.planning.python_operations import operations_from_python
from rollbook.planning.risk import assess_downgrade_operations

HEADER = '''\
from alembic import op
import sqlalchemy as sa

revision = "b2"
down_revision = "a1"


def upgrade():
    op.add_column("users", sa.Column("email", sa.String(50)))


def downgrade():
'''


def read(tmp_path: Path, body: str) -> list[Operation]:
    """The assessed downgrade operations of a migration whose downgrade() is `body`, after the render note."""
    path = tmp_path / "b2_migration.py"
    path.write_text(HEADER + textwrap.indent(textwrap.dedent(body), "    "))
    upgrade = operations_from_python(path, "upgrade", "it reads the database")
    note, *operations = assess_downgrade_operations(upgrade, operations_from_python(path, "downgrade",
                                                                                     "it reads the database"))
    assert note.extra.get(RENDER_FALLBACK)
    return operations


def only(tmp_path: Path, body: str) -> Operation:
    [operation] = read(tmp_path, body)
    return operation


def test_the_first_operation_says_why_the_source_was_read(tmp_path: Path) -> None:
    path = tmp_path / "b2_migration.py"
    path.write_text(HEADER + '    op.drop_column("users", "email")\n')

    note = operations_from_python(path, "downgrade", "it reads the database")[0]

    assert (note.op, note.risk, note.source) == ("unknown", Risk.UNKNOWN, "python")
    assert note.detail == ("downgrade() cannot be rendered offline (it reads the database); the operations below "
                           "were read from its source, review its logic by hand")


@pytest.mark.parametrize(("body", "op", "table", "column", "risk", "detail"), [
    ('op.drop_column("users", "email")', "drop_column", TableName(None, "users"), "email", Risk.LOW,
     "drops column users.email and every value in it"),
    ('op.drop_table("sessions", schema="app")', "drop_table", TableName("app", "sessions"), None, Risk.HIGH,
     "drops table app.sessions and all its rows"),
    ('op.add_column("users", sa.Column("age", sa.Integer(), nullable=False))', "add_column",
     TableName(None, "users"), "age", Risk.MEDIUM,
     "adds NOT NULL column users.age without a default: fails if users has any row"),
    ('op.alter_column("users", "name", type_=sa.String(20))', "alter_column_type", TableName(None, "users"), "name",
     Risk.MEDIUM, "changes the type of users.name"),
    ('op.alter_column("users", "name", nullable=False)', "set_not_null", TableName(None, "users"), "name",
     Risk.MEDIUM, "makes users.name NOT NULL"),
    ('op.execute("DELETE FROM users WHERE status = \'old\'")', "delete", TableName(None, "users"), None, Risk.HIGH,
     "deletes rows of users where status = 'old'"),
    ('op.create_foreign_key("fk", "orders", "users", ["user_id"], ["id"])', "add_foreign_key",
     TableName(None, "orders"), "user_id", Risk.MEDIUM, "adds foreign key on orders: fails on orphans"),
    ('op.rename_table("a", "b")', "rename_table", TableName(None, "a"), None, Risk.LOW, "renames table a to b"),
])
def test_each_op_call_has_its_operation_and_risk(
    tmp_path: Path, body: str, op: str, table: TableName, column: str | None, risk: Risk, detail: str
) -> None:
    operation = only(tmp_path, body)

    assert (operation.op, operation.table, operation.column, operation.risk, operation.detail) == (
        op, table, column, risk, detail)
    assert operation.source == "python"


def test_the_column_the_upgrade_added_is_low_and_an_older_one_high(tmp_path: Path) -> None:
    added, older = read(tmp_path, '''\
        op.drop_column("users", "email")
        op.drop_column("users", "name")
        ''')

    assert (added.risk, added.reason) == (
        Risk.LOW, "The column was added by this migration; values written to it since are lost.")
    assert (older.risk, older.reason) == (
        Risk.HIGH, "The column existed before this migration: dropping it destroys older data.")


def test_a_type_change_is_counted_against_the_new_type(tmp_path: Path) -> None:
    operation = only(tmp_path, 'op.alter_column("users", "name", type_=sa.String(20))')

    assert operation.check is not None
    assert (operation.check.kind, operation.check.columns, operation.check.type_name,
            operation.check.type_modifiers) == ("not_fitting", ("name",), "varchar", (20,))


def test_batch_operations_name_the_batch_table(tmp_path: Path) -> None:
    operation = only(tmp_path, '''\
        with op.batch_alter_table("orders") as batch:
            batch.drop_column("note")
        ''')

    assert (operation.op, operation.table, operation.column) == ("drop_column", TableName(None, "orders"), "note")


def test_a_concurrent_index_is_not_atomic(tmp_path: Path) -> None:
    operation = only(tmp_path, 'op.create_index("ix", "users", ["email"], unique=True, postgresql_concurrently=True)')

    assert (operation.op, operation.lock) == ("create_unique_index", "SHARE UPDATE EXCLUSIVE")
    assert operation.not_atomic_reason is not None
    assert operation.not_atomic_reason.startswith("CREATE INDEX CONCURRENTLY cannot run inside a transaction")


@pytest.mark.parametrize(("body", "detail"), [
    ('op.drop_column(TABLE, "x")', "op.drop_column with a table name computed at run time: review by hand"),
    ('op.drop_column("users", COLUMN)', "drops a column of users whose name is computed at run time: review by hand"),
    ('op.alter_column("users", COLUMN, nullable=False)',
     "alters a column of users whose name is computed at run time: review by hand"),
])
def test_names_computed_at_run_time_are_unknown_never_guessed(tmp_path: Path, body: str, detail: str) -> None:
    operation = only(tmp_path, body)

    assert (operation.op, operation.risk, operation.detail) == ("unknown", Risk.UNKNOWN, detail)
    assert operation.check is None
