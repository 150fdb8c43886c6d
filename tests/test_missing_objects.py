"""Objects a downgrade drops must exist: a name the database does not have makes the plan say the step fails.

The shape comes from a real history whose tables came from `metadata.create_all`: the database names an
index differently from the migrations, and `alembic downgrade` stops with "index ... does not exist".
"""

from __future__ import annotations

import pytest
import sqlalchemy.exc
from alembic import command
from alembic_projects import project_at_head

from rollbook.pg.database import connect
from rollbook.planning.plan import DowngradePlan, plan_downgrade

BASE = {
    "eeee00000001": (None, 'op.execute("CREATE TABLE orders (id int PRIMARY KEY, customer int, note text)")',
                     'op.execute("DROP TABLE orders")'),
}


def failures(plan: DowngradePlan) -> list[str]:
    return [op.detail for step in plan.steps for op in step.operations if op.op == "missing_object"]


def with_step(upgrade: str, downgrade: str) -> dict[str, tuple[str | None, str, str]]:
    return {**BASE, "eeee00000002": ("eeee00000001", f'op.execute("{upgrade}")', f'op.execute("{downgrade}")')}


def test_an_index_the_database_names_differently_makes_the_plan_say_the_step_fails(tmp_path, database_url):
    revisions = with_step("CREATE INDEX ix_orders_customer ON orders (customer)", "DROP INDEX ix_orders_customer")
    # What create_all did in the real history: the same index under another name.
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions,
                                              "ALTER INDEX ix_orders_customer RENAME TO orders_customer_idx")

    plan = plan_downgrade(target, project, "-1")

    assert failures(plan) == [
        "fails: index ix_orders_customer does not exist; compare the migration with the live schema (a schema "
        "made by create_all or by hand may name it differently)"]
    assert plan.verdict.code == "do_not_downgrade"
    with pytest.raises(sqlalchemy.exc.ProgrammingError, match="does not exist"):
        command.downgrade(config, "-1")


def test_missing_columns_constraints_and_tables_are_named(tmp_path, database_url):
    revisions = with_step(
        "ALTER TABLE orders ADD COLUMN total int, ADD CONSTRAINT ck_orders_total CHECK (total >= 0); "
        "CREATE TABLE refunds (id int)",
        "ALTER TABLE orders DROP CONSTRAINT ck_orders_total; ALTER TABLE orders DROP COLUMN total; DROP TABLE refunds")
    project, target, _ = project_at_head(tmp_path / "project", database_url, revisions, (
        "ALTER TABLE orders RENAME CONSTRAINT ck_orders_total TO orders_total_check; "
        "ALTER TABLE orders RENAME COLUMN total TO amount; DROP TABLE refunds"))

    plan = plan_downgrade(target, project, "-1")

    assert [detail.split(";")[0] for detail in failures(plan)] == [
        "fails: constraint ck_orders_total of table orders does not exist",
        "fails: column orders.total does not exist",
        "fails: table refunds does not exist",
    ]


def test_if_exists_and_objects_an_earlier_statement_creates_are_not_looked_up(tmp_path, database_url):
    revisions = with_step(
        "SELECT 1",
        "DROP INDEX IF EXISTS ix_gone; ALTER TABLE orders DROP COLUMN IF EXISTS gone; "
        "ALTER TABLE IF EXISTS gone_table DROP COLUMN gone; "
        "CREATE INDEX ix_tmp ON orders (note); DROP INDEX ix_tmp; "
        "ALTER TABLE orders ADD COLUMN tmp int; ALTER TABLE orders DROP COLUMN tmp")
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions)

    plan = plan_downgrade(target, project, "-1")

    assert failures(plan) == []
    command.downgrade(config, "-1")


def test_dropping_the_same_index_twice_fails_the_second_time(tmp_path, database_url):
    revisions = with_step("CREATE INDEX ix_orders_note ON orders (note)",
                          "DROP INDEX ix_orders_note; DROP INDEX ix_orders_note")
    project, target, _ = project_at_head(tmp_path / "project", database_url, revisions)

    plan = plan_downgrade(target, project, "-1")

    assert [detail.split(";")[0] for detail in failures(plan)] == [
        "fails: index ix_orders_note is dropped by an earlier statement of this downgrade"]


def test_objects_in_a_schema_env_py_may_select_are_not_called_missing(tmp_path, database_url):
    """Multi-tenant projects migrate a schema their env.py selects: rollbook's search path does not see it."""
    revisions = with_step("CREATE INDEX ix_orders_customer ON orders (customer)",
                          "DROP INDEX ix_orders_customer; ALTER TABLE orders DROP COLUMN note")
    project, target, _ = project_at_head(tmp_path / "project", database_url, revisions,
                                         "CREATE SCHEMA tenant_a; ALTER TABLE orders SET SCHEMA tenant_a")

    plan = plan_downgrade(target, project, "-1")

    assert failures(plan) == []


def test_a_drop_of_a_column_that_does_not_exist_is_not_called_data_loss(tmp_path, database_url):
    """Buildbot's 060: the upgrade adds builders.projectid, the downgrade drops builders.project (no such column)."""
    revisions = with_step("ALTER TABLE orders ADD COLUMN projectid int",
                          "ALTER TABLE orders DROP COLUMN project; ALTER TABLE orders DROP COLUMN projectid")
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions,
                                              "INSERT INTO orders (id, note) VALUES (1, 'kept')")

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    [wrong] = [op for op in step.operations if op.op == "drop_column" and op.column == "project"]
    assert wrong.reason == ("Destroys nothing: column orders.project does not exist, so the statement fails "
                            "instead.")
    assert wrong.check is None and "existed before this migration" not in " ".join(op.reason for op in step.operations)
    assert [detail.split(";")[0] for detail in failures(plan)] == ["fails: column orders.project does not exist"]
    assert step.risk.value == "medium" and plan.verdict.code == "do_not_downgrade"
    with pytest.raises(sqlalchemy.exc.ProgrammingError, match='column "project" of relation "orders" does not exist'):
        command.downgrade(config, "-1")


def test_an_index_dropped_after_its_table_fails(tmp_path, database_url):
    """Buildbot's 060 and 067: drop_table, then drop_index of an index of that table."""
    revisions = with_step("CREATE TABLE tags (id int, name text); CREATE UNIQUE INDEX tags_name ON tags (name)",
                          "DROP TABLE tags; DROP INDEX tags_name")
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions)

    plan = plan_downgrade(target, project, "-1")

    assert failures(plan) == ["fails: index tags_name went with its table tags, which an earlier statement drops"]
    assert plan.verdict.code == "do_not_downgrade"
    with pytest.raises(sqlalchemy.exc.ProgrammingError, match='index "tags_name" does not exist'):
        command.downgrade(config, "-1")


def test_a_drop_with_if_exists_of_what_is_not_there_is_said_to_do_nothing(tmp_path, database_url):
    """CKAN's 021: the downgrade "drops" the indexes its upgrade made with DROP CONSTRAINT IF EXISTS."""
    revisions = with_step("CREATE INDEX idx_orders_customer ON orders (customer)",
                          "ALTER TABLE orders DROP CONSTRAINT IF EXISTS idx_orders_customer")
    project, target, config = project_at_head(tmp_path / "project", database_url, revisions)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    assert [op.detail for op in step.operations if op.op == "drops_nothing"] == [
        "does nothing: constraint idx_orders_customer of table orders does not exist (idx_orders_customer is an "
        "index of orders: DROP INDEX removes it)"]
    assert failures(plan) == []
    # As the plan says: the downgrade succeeds and the index stays.
    command.downgrade(config, "-1")
    with connect(target) as conn:
        assert conn.execute("SELECT to_regclass('idx_orders_customer') IS NOT NULL").fetchone() == (True,)
