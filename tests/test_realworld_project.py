"""rollbook on a real-world-shaped Alembic project (tests/projects/realworld).

Its env.py ignores sqlalchemy.url and reads REALWORLD_DB_URL; its migrations use batch mode, a
schema-qualified table, `sa.text` SQL and an `op.get_bind()` data migration. One database is
migrated to head as the app role (whose password needs percent-encoding) and filled with rows that
make every live count exact; a few tests migrate their own database to an earlier revision.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy.exc
from alembic import command
from alembic.config import Config
from click.testing import CliRunner
from pg import PgServer, database_name, psycopg_kwargs

from rollbook.cli import main
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.operations import Risk
from rollbook.planning.plan import DowngradePlan, plan_downgrade
from rollbook.planning.python_operations import operations_from_python
from rollbook.planning.sql_operations import operations_from_sql
from rollbook.planning.step import PlanStep
from rollbook.planning.verdict import judge
from rollbook.project.migrations import MigrationProject, load_project

PROJECT = Path(__file__).parent / "projects" / "realworld"
CONFIG = PROJECT / "alembic.ini"

BASE_SCHEMA = "4b7e2a91c0d3"
EXTERNAL_REF = "9c3d5e7f1a28"
CUSTOMER_REQUIRED = "c4d5e6f7a8b9"
EMAIL_DOMAIN = "e5f60718293a"
EXPIRE_ORDERS = "7a8b9c0d1e2f"
RELAX_CONSTRAINTS = "2d3e4f5a6b7c"
HEAD = "8e9f0a1b2c3d"
NEWEST_FIRST = (HEAD, RELAX_CONSTRAINTS, EXPIRE_ORDERS, EMAIL_DOMAIN, CUSTOMER_REQUIRED, EXTERNAL_REF, BASE_SCHEMA)

# Rows at head; the comments say which count each row feeds.
HEAD_ROWS = """
INSERT INTO customers (id, email, name, external_ref, email_domain) VALUES
    (1, 'ada@example.com', 'Ada', 'CRM-1', 'example.com'),
    (2, 'bob@example.org', 'Bob', 'CRM-2', 'example.org'),
    (3, 'cy@legacy.example', NULL, NULL, NULL),             -- the only NULL name
    (4, 'dee@example.com', 'Dee', NULL, 'example.com'),
    (5, 'eve@example.net', 'Eve', 'CRM-5', 'example.net');
INSERT INTO orders (id, customer_id, status, quantity) VALUES
    (1, 1, 'paid', 1),
    (2, 1, 'expired', 2147483647),                          -- largest integer: fits
    (3, 2, 'expired', 2147483648),                          -- does not fit integer
    (4, 999, 'pending', 0),                                 -- orphan; violates quantity > 0
    (5, 998, 'paid', 4),                                    -- orphan
    (6, 4, 'expired', 3000000000),                          -- does not fit integer
    (7, 5, 'expired', 3),
    (8, 5, 'pending', 2),
    (9, 997, 'pending', 1);                                 -- orphan
INSERT INTO billing.invoices (order_id, number, amount) VALUES
    (1, 'INV-1', 10.00),
    (1, 'INV-1', 99999999.99),                              -- largest numeric(10, 2): fits
    (2, 'INV-1', 100000000.00),                             -- does not fit numeric(10, 2)
    (3, 'INV-1', 123456789012.34),                          -- does not fit
    (3, 'INV-2', -99999999.99),
    (6, 'INV-2', -100000000.01),                            -- does not fit
    (7, 'INV-3', 5.00);                                     -- 7 invoices, 3 distinct numbers
"""

# (op, table, column, rows_affected) of each downgrade, in execution order, over HEAD_ROWS.
EXPECTED_OPERATIONS = {
    HEAD: [
        ("alter_column_type", "orders", "quantity", 2),
        ("convert_values", "orders", "quantity", 0),  # integers are never rounded
        ("alter_column_type", "billing.invoices", "amount", 3),
        ("convert_values", "billing.invoices", "amount", 0),  # the scale stays 2
    ],
    RELAX_CONSTRAINTS: [
        ("add_unique", "billing.invoices", "number", 4),
        ("add_check", "orders", None, 1),
        ("add_foreign_key", "orders", "customer_id", 3),
        ("set_not_null", "customers", "name", 1),
    ],
    EXPIRE_ORDERS: [("update", "orders", None, 4)],
    EMAIL_DOMAIN: [
        ("unknown", None, None, None),
        ("select", None, None, None),
        # Per-row `UPDATE ... WHERE id = :id`: which rows, only the running migration knows.
        ("update", "customers", None, None),
        ("drop_index", "customers", None, None),
        ("drop_column", "customers", "email_domain", 4),
    ],
    CUSTOMER_REQUIRED: [("drop_not_null", "orders", "customer_id", None)],
    EXTERNAL_REF: [
        ("drop_constraint", "customers", None, None),
        ("drop_column", "customers", "external_ref", 3),
    ],
    BASE_SCHEMA: [
        ("drop_table", "billing.invoices", None, 7),
        ("drop_index", None, None, None),
        ("drop_table", "orders", None, 9),
        ("drop_table", "customers", None, 5),
        ("drop_schema", None, None, None),
    ],
}

# migration_type, risk and the verdict of undoing that revision alone.
EXPECTED_STEPS = {
    HEAD: ("alter_column", Risk.MEDIUM, "do_not_downgrade"),
    RELAX_CONSTRAINTS: ("alter_column", Risk.MEDIUM, "do_not_downgrade"),
    EXPIRE_ORDERS: ("data_migration", Risk.HIGH, "do_not_downgrade"),
    # The upgrade backfills only the column it adds; the downgrade rewrites older data (customers.email).
    EMAIL_DOMAIN: ("add_column", Risk.HIGH, "do_not_downgrade"),
    # Its downgrade only allows NULL again: nothing can fail or be lost.
    CUSTOMER_REQUIRED: ("alter_column", Risk.LOW, "safe"),
    EXTERNAL_REF: ("add_column", Risk.LOW, "loses_data"),
    BASE_SCHEMA: ("add_table", Risk.LOW, "loses_data"),
}


def migrate(url: str, revision: str, *, down: bool = False) -> None:
    """`alembic upgrade` (or downgrade) as the team runs it: from the project folder, the URL in REALWORLD_DB_URL."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(PROJECT)
        mp.setenv("REALWORLD_DB_URL", url)
        # Alembic prepends prepend_sys_path ('.') to sys.path each time it loads the project.
        mp.setattr(sys, "path", [*sys.path])
        (command.downgrade if down else command.upgrade)(Config(str(CONFIG)), revision)


def run_sql(url: str, statements: str) -> None:
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        conn.execute(statements)


def app_url(pg_server: PgServer, admin_url: str) -> str:
    """The same database as the app role; its password holds '%', '@' and ':', percent-encoded."""
    return pg_server.url(database_name(admin_url), user=pg_server.app_user)


def operations(step: PlanStep) -> list[tuple[str, str | None, str | None, int | None]]:
    return [(op.op, str(op.table) if op.table else None, op.column, op.rows_affected) for op in step.operations]


def step_of(plan: DowngradePlan, revision: str) -> PlanStep:
    return next(step for step in plan.steps if step.revision.revision == revision)


@pytest.fixture(autouse=True)
def _keep_sys_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Loading the project prepends '.' to sys.path (alembic's prepend_sys_path): undo it after each test.
    monkeypatch.setattr(sys, "path", [*sys.path])


@pytest.fixture(scope="module")
def project() -> MigrationProject:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sys, "path", [*sys.path])
        return load_project(CONFIG)


@pytest.fixture(scope="module")
def head_url(pg_server: PgServer) -> Iterator[str]:
    """Admin URL of a database migrated to head by the app role, holding HEAD_ROWS."""
    url = pg_server.create_database()
    try:
        migrate(app_url(pg_server, url), "head")
        run_sql(app_url(pg_server, url), HEAD_ROWS)
        yield url
    finally:
        pg_server.drop_database(database_name(url))


@pytest.fixture(scope="module")
def base_plan(head_url: str, project: MigrationProject) -> DowngradePlan:
    return plan_downgrade(DatabaseTarget.from_url(head_url), project, "base")


def test_project_has_no_sqlalchemy_url_yet_rollbook_reads_the_revision(
    head_url: str, project: MigrationProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REALWORLD_DB_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert project.config.get_main_option("sqlalchemy.url") is None

    plan = plan_downgrade(DatabaseTarget.from_url(head_url), project, "-1")

    assert plan.path.current == (HEAD,)
    # env.py keeps the revision in schema_history, a module constant rollbook reads without running it.
    assert project.version_table == "schema_history"
    assert f"UPDATE schema_history SET version_num='{plan.steps[0].revision.down_revision}'" in plan.downgrade_sql()
    assert [step.revision.revision for step in plan.steps] == [HEAD]
    assert operations(plan.steps[0]) == EXPECTED_OPERATIONS[HEAD]
    assert plan.verdict.code == "do_not_downgrade"


def test_plan_to_base_walks_every_revision_newest_first(base_plan: DowngradePlan) -> None:
    assert base_plan.path.target is None
    assert tuple(step.revision.revision for step in base_plan.steps) == NEWEST_FIRST
    assert base_plan.steps[-1].revision.file == f"versions/{BASE_SCHEMA}_create_customers_orders_invoices.py"
    assert base_plan.verdict.code == "do_not_downgrade"
    reasons = "\n".join(base_plan.verdict.reasons)
    assert f"{EXPIRE_ORDERS} (data_migration) is HIGH risk" in reasons
    assert (f"{EMAIL_DOMAIN} (add_column) is HIGH risk: Data migration: rows are rewritten or removed and the change "
            "may not be reversible.") in reasons
    blocking = [(step.revision.revision, op) for step in base_plan.steps for op in step.operations
                if op.check and op.check.effect == "blocks"]
    assert len(blocking) == 6
    for revision, op in blocking:
        assert f"{revision}: {op.detail}: {op.count_text()}" in reasons
    assert {str(t.table): t.rows for t in base_plan.tables} == {
        "orders": 9, "billing.invoices": 7, "customers": 5,
    }


@pytest.mark.parametrize("revision", NEWEST_FIRST)
def test_each_downgrade_operation_and_its_exact_count(base_plan: DowngradePlan, revision: str) -> None:
    step = step_of(base_plan, revision)
    migration_type, risk, verdict = EXPECTED_STEPS[revision]

    assert operations(step) == EXPECTED_OPERATIONS[revision]
    assert (step.migration_type, step.risk) == (migration_type, risk)
    assert judge((step,), live_checks=True).code == verdict


def test_schema_qualified_table_keeps_its_schema(base_plan: DowngradePlan) -> None:
    step = step_of(base_plan, RELAX_CONSTRAINTS)
    unique = next(op for op in step.operations if op.op == "add_unique")

    assert (unique.table.schema, unique.table.name) == ("billing", "invoices")
    assert unique.check is not None and unique.check.kind == "duplicates"
    assert unique.statement == "ALTER TABLE billing.invoices ADD CONSTRAINT uq_invoices_number UNIQUE (number)"


def test_batch_alter_table_downgrade_drops_constraint_and_column(database_url: str,
                                                               project: MigrationProject) -> None:
    migrate(database_url, EXTERNAL_REF)
    run_sql(database_url, "INSERT INTO customers (email, name, external_ref) VALUES "
                          "('a@example.com', 'A', 'CRM-1'), ('b@example.com', 'B', NULL), "
                          "('c@example.com', 'C', 'CRM-3')")

    plan = plan_downgrade(DatabaseTarget.from_url(database_url), project, "-1")

    (step,) = plan.steps
    assert step.render_error is None
    assert operations(step) == [("drop_constraint", "customers", None, None),
                                ("drop_column", "customers", "external_ref", 2)]
    assert (step.migration_type, step.risk) == ("add_column", Risk.LOW)
    assert plan.verdict.code == "loses_data"


def test_downgrade_of_a_not_null_upgrade_is_safe(database_url: str, project: MigrationProject) -> None:
    migrate(database_url, CUSTOMER_REQUIRED)
    run_sql(database_url, "INSERT INTO customers (id, email, name) VALUES (1, 'a@example.com', 'A');"
                          "INSERT INTO orders (customer_id, quantity) VALUES (1, 1), (1, 2)")

    plan = plan_downgrade(DatabaseTarget.from_url(database_url), project, "-1")

    (step,) = plan.steps
    assert operations(step) == [("drop_not_null", "orders", "customer_id", None)]
    assert step.operations[0].statement == "ALTER TABLE orders ALTER COLUMN customer_id DROP NOT NULL"
    assert (step.migration_type, step.risk) == ("alter_column", Risk.LOW)  # allowing NULL again can neither fail nor lose a value
    assert plan.verdict.code == "safe"


def test_get_bind_data_migration_is_read_from_python_and_never_safe(database_url: str,
                                                                    project: MigrationProject) -> None:
    migrate(database_url, CUSTOMER_REQUIRED)
    run_sql(database_url, "INSERT INTO customers (email, name) VALUES "
                          "('a@Example.COM', 'A'), ('b@example.org', 'B'), ('c@example.net', 'C')")
    migrate(database_url, EMAIL_DOMAIN)  # runs the get_bind() backfill for real

    target = DatabaseTarget.from_url(database_url)

    plan = plan_downgrade(target, project, "-1")

    (step,) = plan.steps
    assert step.render_error is not None and step.to_dict()["understood_from"] == "python source"
    assert all(op.source == "python" for op in step.operations)
    data_dependent = step.operations[0]
    assert (data_dependent.op, data_dependent.risk) == ("unknown", Risk.UNKNOWN)
    assert "cannot be rendered offline" in data_dependent.detail
    assert operations(step) == [("unknown", None, None, None), ("select", None, None, None),
                                ("update", "customers", None, None), ("drop_index", "customers", None, None),
                                ("drop_column", "customers", "email_domain", 3)]
    # Its upgrade fills only the column it adds (an add_column); its downgrade rewrites customers.email row by
    # row: older data changed, HIGH risk.
    assert [op.op for op in step.upgrade_operations] == ["unknown", "add_column", "create_index", "select", "update"]
    assert (step.migration_type, step.risk) == ("add_column", Risk.HIGH)
    assert step.operations[2].reason == "Data migration: rows are rewritten or removed and the change may not be reversible."
    assert plan.verdict.code == "do_not_downgrade"
    assert any("review its logic by hand" in reason for reason in plan.verdict.reasons)
    assert plan_downgrade(target, project, "-1", live_checks=False).verdict.code == "do_not_downgrade"


def test_a_downgrade_counted_as_failing_does_fail(database_url: str, project: MigrationProject) -> None:
    migrate(database_url, "head")
    run_sql(database_url, "INSERT INTO orders (customer_id, quantity) VALUES (1, 2147483648)")
    plan = plan_downgrade(DatabaseTarget.from_url(database_url), project, "-1")
    assert operations(plan.steps[0])[0] == ("alter_column_type", "orders", "quantity", 1)

    with pytest.raises(sqlalchemy.exc.DataError, match="integer out of range"):
        migrate(database_url, "-1", down=True)

    assert plan_downgrade(DatabaseTarget.from_url(database_url), project, "-1").path.current == (HEAD,)


def test_app_role_url_with_percent_encoded_password(pg_server: PgServer, head_url: str,
                                                     project: MigrationProject, base_plan: DowngradePlan) -> None:
    url = app_url(pg_server, head_url)
    assert all(code in url for code in ("%25", "%40", "%3A"))

    plan = plan_downgrade(DatabaseTarget.from_url(url), project, "base")

    assert pg_server.app_password not in plan.database and "***" in plan.database
    assert plan.verdict.code == base_plan.verdict.code
    assert [operations(step) for step in plan.steps] == [operations(step) for step in base_plan.steps]
    assert plan.plan_hash == base_plan.plan_hash


def test_cli_plan_json(pg_server: PgServer, head_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REALWORLD_DB_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", app_url(pg_server, head_url))

    result = CliRunner().invoke(main, ["plan", "--config", str(CONFIG), "--target", EXPIRE_ORDERS, "--json"])

    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert (plan["current"], plan["target"], plan["verdict"]) == (HEAD, EXPIRE_ORDERS, "do_not_downgrade")
    assert [step["revision"] for step in plan["steps"]] == [HEAD, RELAX_CONSTRAINTS]
    assert [(op["op"], op["table"], op["column"], op["rows_affected"], op["effect"])
            for op in plan["steps"][1]["operations"]] == [
        ("add_unique", "billing.invoices", "number", 4, "blocks"),
        ("add_check", "orders", None, 1, "blocks"),
        ("add_foreign_key", "orders", "customer_id", 3, "blocks"),
        ("set_not_null", "customers", "name", 1, "blocks"),
    ]
    assert {step["understood_from"] for step in plan["steps"]} == {"offline SQL"}


@pytest.mark.parametrize(("statement", "op"), [
    ("CREATE SCHEMA billing", "create_schema"),
    ("DROP SCHEMA billing", "drop_schema"),
    # CASCADE would take billing.invoices and its rows along: never harmless.
    ("DROP SCHEMA billing CASCADE", "unknown"),
    ("DROP TYPE order_status CASCADE", "unknown"),
])
def test_schema_statements_of_the_base_migration(statement: str, op: str) -> None:
    assert [o.op for o in operations_from_sql(statement)] == [op]


def test_get_bind_downgrade_restoring_a_cross_schema_foreign_key(tmp_path: Path) -> None:
    # A variant of this project's data migrations: create_foreign_key names its schemas
    # source_schema and referent_schema, and the orphans check must count the billing table.
    migration = tmp_path / "3a4b5c6d7e8f_invoices_reference_customers.py"
    migration.write_text(
        "from alembic import op\nimport sqlalchemy as sa\n\n\n"
        "def downgrade() -> None:\n"
        "    conn = op.get_bind()\n"
        "    conn.execute(sa.text(\"DELETE FROM billing.invoices WHERE number = :number\"), {\"number\": \"VOID\"})\n"
        "    op.create_foreign_key('fk_invoices_customer_id_customers', 'invoices', 'customers', ['customer_id'],\n"
        "                          ['id'], source_schema='billing', referent_schema='public')\n"
    )

    unknown, delete, foreign_key = operations_from_python(migration, "downgrade", "AttributeError")

    assert unknown.op == "unknown"
    assert (delete.op, str(delete.table), delete.check) == ("delete", "billing.invoices", None)
    assert (foreign_key.op, str(foreign_key.table), foreign_key.column) == (
        "add_foreign_key", "billing.invoices", "customer_id")
    assert foreign_key.check is not None
    assert (str(foreign_key.check.table), str(foreign_key.check.referenced_table)) == (
        "billing.invoices", "public.customers")
