"""Steps whose downgrade() does not run as one transaction: named by the plan, gated by the policy, and
told truthfully when they fail half-way."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from alembic_projects import project_at_head
from pg import psycopg_kwargs
from runbook_runs import current_revision, papermill

from rollbook.execution.downgrade import execute_downgrade
from rollbook.planning.operations import AFTER_COMMIT
from rollbook.planning.plan import plan_downgrade
from rollbook.policy.gate import RollbackRequest, evaluate_policy
from rollbook.policy.rules import default_policy
from rollbook.records.model import read_record

BASE = "aaaa00000001"
HEAD = "aaaa00000002"
BASE_SCHEMA = ("op.execute(\"CREATE TABLE accounts (id int PRIMARY KEY, email text); CREATE INDEX ix_accounts_id "
               "ON accounts (id); CREATE TYPE mood AS ENUM ('ok')\")",
               'op.execute("DROP TABLE accounts; DROP TYPE mood")')
AUTOCOMMIT = "with op.get_context().autocommit_block():\n        "

# Each downgrade() that does not run as one transaction, and what its plan must say about it.
NOT_ATOMIC_FORMS = {
    "autocommit block": (AUTOCOMMIT + 'op.create_index("ix_email", "accounts", ["email"], '
                         "postgresql_concurrently=True)", ("COMMIT part-way", "CREATE INDEX CONCURRENTLY cannot")),
    "create index concurrently": ('op.execute("CREATE INDEX CONCURRENTLY ix_email ON accounts (email)")',
                                  ("CREATE INDEX CONCURRENTLY cannot",)),
    "drop index concurrently": ('op.drop_index("ix_accounts_id", table_name="accounts", postgresql_concurrently=True)',
                                ("DROP INDEX CONCURRENTLY cannot",)),
    "reindex concurrently": ('op.execute("REINDEX INDEX CONCURRENTLY ix_accounts_id")',
                             ("REINDEX CONCURRENTLY cannot",)),
    "enum value in an autocommit block": (AUTOCOMMIT + "op.execute(\"ALTER TYPE mood ADD VALUE 'meh'\")",
                                          ("COMMIT part-way", AFTER_COMMIT)),
    "explicit commit": ('op.execute("COMMIT")\n    op.execute("DELETE FROM accounts WHERE email IS NULL")',
                        ("COMMIT part-way", AFTER_COMMIT)),
    "vacuum": ('op.execute("VACUUM accounts")', ("VACUUM cannot",)),
    "autocommit block read from the source": (
        "op.get_bind().execute(op.inline_literal(1)).fetchall()\n    " + AUTOCOMMIT
        + 'op.create_index("ix_email", "accounts", ["email"], postgresql_concurrently=True)',
        ("COMMIT part-way", "CREATE INDEX CONCURRENTLY cannot")),
}


def plan_of(tmp_path, url: str, downgrade: str):
    project, target, _ = project_at_head(tmp_path / "project", url, {BASE: (None, *BASE_SCHEMA),
                                                                      HEAD: (BASE, "pass", downgrade)})
    return plan_downgrade(target, project, "-1")


@pytest.mark.parametrize("form", sorted(NOT_ATOMIC_FORMS))
def test_the_plan_marks_each_not_atomic_form(tmp_path, database_url, form):
    downgrade, reasons = NOT_ATOMIC_FORMS[form]

    plan = plan_of(tmp_path, database_url, downgrade)

    [step] = plan.steps
    assert not step.atomic
    assert bool(step.render_error) == form.endswith("read from the source")
    for reason in reasons:
        assert any(reason in r for r in step.not_atomic_reasons), (reason, step.not_atomic_reasons)
    # Understood, never "TransactionStmt: not understood".
    assert not any("not understood" in op.detail for op in step.operations)
    [shown] = plan.to_dict()["steps"]
    assert shown["atomic"] is False and shown["not_atomic_reasons"] == list(step.not_atomic_reasons)
    assert f"NOT ATOMIC: {step.not_atomic_reasons[0]}" in plan.to_text()
    assert "**NOT ATOMIC**" in plan._repr_markdown_()
    assert any(reason.startswith(f"{HEAD} is NOT ATOMIC") for reason in plan.verdict.reasons)


def test_a_step_in_one_transaction_stays_atomic(tmp_path, database_url):
    plan = plan_of(tmp_path, database_url, 'op.create_index("ix_email", "accounts", ["email"])')

    assert plan.steps[0].atomic and plan.to_dict()["steps"][0]["atomic"] is True
    assert "NOT ATOMIC" not in plan.to_text()
    assert plan.verdict.code == "safe" and not plan.verdict.reasons


NOW = datetime(2026, 1, 13, 14, 0, tzinfo=UTC)


def decide(plan, environment: str, accept_data_loss: bool):
    request = RollbackRequest(environment=environment, operator="bob", approved_by="alice",
                              approved_plan=plan.plan_hash, deployed_at=NOW - timedelta(minutes=2),
                              accept_data_loss=accept_data_loss, execute=True, now=NOW)
    return evaluate_policy(default_policy(), request, plan, backup_verified=True)


def test_the_policy_treats_a_not_atomic_step_like_a_high_risk_one(tmp_path, database_url):
    plan = plan_of(tmp_path, database_url, NOT_ATOMIC_FORMS["create index concurrently"][0])
    assert plan.verdict.code == "safe"  # it loses nothing: only its atomicity stops it

    production = decide(plan, "production", accept_data_loss=True)
    assert [r.rule for r in production.failed] == ["atomic steps"]
    assert "production allows no step that runs outside one transaction" in production.failed[0].reason
    assert "(accept_data_loss does not override this)" in production.failed[0].reason

    staging = decide(plan, "staging", accept_data_loss=False)
    assert [r.rule for r in staging.failed] == ["atomic steps"]
    assert staging.failed[0].remedy.startswith("pass accept_data_loss (-p accept_data_loss True) if a half-done step is acceptable")
    assert decide(plan, "staging", accept_data_loss=True).allowed


# The case: drop a table, build an index concurrently in an autocommit block, then fail.
HALF_DONE = {
    BASE: (None, 'op.execute("CREATE TABLE accounts (id int PRIMARY KEY, email text)")',
           'op.execute("DROP TABLE accounts")'),
    HEAD: (BASE, 'op.execute("CREATE TABLE audit_log (id int PRIMARY KEY, note text)")',
           'op.drop_table("audit_log")\n    ' + AUTOCOMMIT
           + 'op.create_index("ix_accounts_email", "accounts", ["email"], postgresql_concurrently=True)\n'
           # Only against a database: offline the step renders whole, so nothing predicts the failure.
           '    if not op.get_context().as_sql:\n'
           '        raise RuntimeError("the downgrade broke half-way")'),
}
ROWS = "INSERT INTO accounts VALUES (1, 'a@example.com'); INSERT INTO audit_log VALUES (1, 'kept'), (2, 'kept')"
ROLLED_BACK = "the failed step's transaction was rolled back"


def test_the_plan_and_the_policy_see_the_half_done_step_before_it_runs(tmp_path, database_url):
    project, target, _ = project_at_head(tmp_path / "project", database_url, HALF_DONE, ROWS)

    plan = plan_downgrade(target, project, "-1")

    [step] = plan.steps
    assert not step.atomic
    assert any("COMMIT part-way" in r for r in step.not_atomic_reasons)
    assert any("CREATE INDEX CONCURRENTLY cannot" in r for r in step.not_atomic_reasons)
    assert "atomic steps" in [r.rule for r in decide(plan, "production", accept_data_loss=True).failed]
    staging = decide(plan, "staging", accept_data_loss=False)
    assert "atomic steps" in [r.rule for r in staging.failed]
    assert decide(plan, "staging", accept_data_loss=True).allowed


def test_a_half_done_step_is_recorded_with_what_it_left_changed(tmp_path, database_url):
    project, target, _ = project_at_head(tmp_path / "project", database_url, HALF_DONE, ROWS)
    config = tmp_path / "project" / "alembic.ini"

    run = papermill(tmp_path, "rollback", "-p", "environment", "staging", "-p", "operator", "alice",
                    "-p", "accept_data_loss", "True", "-p", "execute", "True",
                    "-p", "backup_dir", str(tmp_path / "backups"), url=database_url, config=config)

    assert run.returncode != 0
    # What the database really is: the table and its rows gone, the index built, the version unmoved.
    with psycopg.connect(**psycopg_kwargs(database_url)) as conn:
        assert conn.execute("SELECT to_regclass('audit_log')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('ix_accounts_email')").fetchone()[0] is not None
    assert current_revision(database_url) == [HEAD]
    # What the record says: exactly that, and never that the step was rolled back.
    summary = read_record(json.loads(next((tmp_path / "rollback-records").glob("*.json")).read_text()))
    assert summary.plan_steps[0].atomic is False
    [failed] = summary.downgrade["steps"]
    left = failed["left_changed"]
    assert left["compared"] and not left["rolled_back"] and not left["atomic"]
    assert "table audit_log: dropped (it was there before the step)" in left["changes"]
    assert ("index ix_accounts_email on accounts: created (new since the step began: btree (email))"
            in left["changes"])
    assert summary.diagnosis["facts"][0].startswith("The failed step was NOT rolled back entirely")
    assert summary.diagnosis["advice"][-1].startswith("Do not simply retry")
    record = json.dumps(summary.to_json()) + run.text
    assert ROLLED_BACK not in record.lower()
    assert "table audit_log: dropped" in run.error
    # The restore it suggests leaves the opt-in that protects newer rows to the person restoring.
    assert f"rollbook run restore -r backup {summary.run_id} -p restore_into database --execute" in run.error
    assert "accept_writes_since_backup True" not in record


def test_the_diagnosis_claims_no_rollback_it_was_not_shown(tmp_path, database_url):
    project, target, _ = project_at_head(tmp_path / "project", database_url, HALF_DONE, ROWS)
    plan = plan_downgrade(target, project, "-1")

    execution = execute_downgrade(target, project, plan, lock_timeout_ms=2000, statement_timeout_ms=30000)

    left = execution.failed_step.left_changed
    assert not left.rolled_back and "table audit_log: dropped (it was there before the step)" in left.changes
    assert left.describe().startswith("The failed step was NOT rolled back entirely: it did not run as one "
                                      "transaction.")
    assert ROLLED_BACK not in execution.to_text().lower()
