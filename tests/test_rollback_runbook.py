"""The rollback runbook run with plain papermill against the real server, for each migration type of the procedure."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import nbformat
import papermill as pm
import psycopg
import pytest
from pg import fingerprint, psycopg_kwargs
from runbook_runs import (
    RUNBOOKS,
    current_revision,
    demo_at,
    kill_kernels,
    papermill,
    slow_project,
    wait_for_sleeping_downgrade,
)

from rollbook.demo.server import DEMO_CONFIG
from rollbook.pg.advisory_lock import ROLLBACK_LOCK_KEY
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.plan import plan_downgrade
from rollbook.project.migrations import load_project
from rollbook.records.model import read_record
from rollbook.runs.notebook import RUNBOOKS as RUNBOOK_CLASSES
from rollbook.runs.parameters import notebook_parameters

# Each revision of the demo, the migration type it is, and its parent (where -1 takes it).
MIGRATION_TYPES = [
    ("0607bc5b8536", "data_migration", "0607bc5b8535"),
    ("0607bc5b8535", "drop_table", "0607bc5b8534"),
    ("0607bc5b8534", "add_table", "0607bc5b8533"),
    ("0607bc5b8533", "alter_column", "0607bc5b8532"),
    ("0607bc5b8532", "drop_column", "0607bc5b8531"),
    ("0607bc5b8531", "add_column", "0607bc5b8530"),
]
STAGING = ("-p", "environment", "staging", "-p", "operator", "alice", "-p", "accept_data_loss", "True")


def executed(tmp_path: Path, *args: str) -> tuple[str, ...]:
    return (*STAGING, "-p", "execute", "True", "-p", "backup_dir", str(tmp_path / "backups"), *args)


def prepared(url: str, revision: str) -> None:
    """The demo at `revision`, with the long emails shortened when its step narrows the column."""
    demo_at(url, revision)
    if revision == "0607bc5b8533":
        with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
            conn.execute("UPDATE users SET email = 'short' || id || '@example.com' WHERE length(email) > 100")


def test_every_notebook_is_a_runbook_of_the_framework():
    assert sorted(path.stem for path in RUNBOOKS.glob("*.ipynb")) == sorted(RUNBOOK_CLASSES)


@pytest.mark.parametrize("runbook", sorted(RUNBOOK_CLASSES))
def test_runbooks_are_stored_without_outputs_and_declare_their_parameters(runbook):
    path = RUNBOOKS / f"{runbook}.ipynb"
    notebook = nbformat.read(path, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert sum("parameters" in c.metadata.get("tags", []) for c in notebook.cells) == 1
    # The parameters cell, as papermill reads it, and the runbook's parameters dataclass name the same parameters.
    declared = pm.inspect_notebook(str(path))
    parameters = RUNBOOK_CLASSES[runbook].parameters_type
    assert list(declared) == list(notebook_parameters(parameters))
    # And the notebook's defaults are parameters the dataclass accepts (the restore runbook needs its backup named).
    defaults = {name: ast.literal_eval(p["default"]) for name, p in declared.items()}
    named = {"restore": {"backup": "20260113T140500Z-3f9a1c"},
             "restore-lost-data": {"at_risk_backup": "backups/at-risk_app"}}.get(runbook, {})
    assert parameters.read({**defaults, **named}).to_dict()["database_url"] == "(from DATABASE_URL)"


@pytest.mark.parametrize(("revision", "migration_type", "parent"), MIGRATION_TYPES)
def test_a_dry_run_plans_and_gates_each_migration_type_and_changes_nothing(
    tmp_path, demo_url, revision, migration_type, parent
):
    prepared(demo_url, revision)
    before = fingerprint(demo_url)

    run = papermill(tmp_path, "rollback", *STAGING, "-p", "backup_dir", str(tmp_path / "backups"), url=demo_url)

    assert run.returncode == 0, run.error or run.stderr
    assert fingerprint(demo_url) == before
    assert not (tmp_path / "backups").exists()
    assert migration_type in run.text
    assert "Dry run complete" in run.text
    assert f"`{revision}` → `{parent}`" in run.text


@pytest.mark.parametrize(("revision", "migration_type", "parent"), MIGRATION_TYPES)
def test_an_executed_run_moves_the_database_exactly_to_the_target_and_verifies_it(
    tmp_path, demo_url, revision, migration_type, parent
):
    prepared(demo_url, revision)

    run = papermill(tmp_path, "rollback", *executed(tmp_path), url=demo_url)

    assert run.returncode == 0, run.error or run.stderr
    assert current_revision(demo_url) == [parent]
    # No health URL: the run must not call itself verified, and says which check it could not run.
    assert f"Rolled back {revision} -> {parent}, not fully verified: application health not checked" in run.text
    assert "and verified" not in run.text
    assert "| revision | passed |" in run.text
    assert "| schema | passed |" in run.text
    assert "| application health | not checked |" in run.text
    backups = list((tmp_path / "backups").glob("*.dump"))
    assert len(backups) == 1
    assert hashlib.sha256(backups[0].read_bytes()).hexdigest() in run.text


def test_the_record_holds_who_where_when_the_files_the_plan_the_backup_and_every_statement(tmp_path, demo_url):
    url = demo_url
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        system_identifier = str(conn.execute("SELECT system_identifier FROM pg_control_system()").fetchone()[0])
        version = conn.execute("SHOW server_version").fetchone()[0]
    plan = plan_downgrade(DatabaseTarget.from_url(url), load_project(DEMO_CONFIG), "-1")

    run = papermill(tmp_path, "rollback", *executed(tmp_path, "-p", "ticket", "INC-42", "-p", "verify_backup",
                                                    "restore"), url=url)

    assert run.returncode == 0, run.error
    text = run.text
    for fact in ("alice", socket.gethostname(), "INC-42", system_identifier, f"PostgreSQL {version}",
                 plan.steps[0].revision.sha256, plan.plan_hash, "restore", "**passed**",
                 "UPDATE users SET status = NULL WHERE status = 'active'", "9 rows rewritten"):
        assert fact in text, fact
    assert re.search(r"\| [\d.]+ \| `UPDATE users SET status = NULL", text)
    password = DatabaseTarget.from_url(url).url.password
    assert password and password not in run.path.read_text()


def test_production_refuses_the_high_risk_data_migration_and_changes_nothing(tmp_path, demo_url):
    before = fingerprint(demo_url)
    deployed = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()

    run = papermill(tmp_path, "rollback", "-p", "environment", "production", "-p", "operator", "alice",
                    "-p", "approved_by", "bob", "-p", "deployed_at", deployed, "-p", "execute", "True",
                    "-p", "backup_dir", str(tmp_path / "backups"), url=demo_url)

    assert run.returncode != 0
    assert "refuses this rollback" in run.error
    assert "Rule 'risk' fails" in run.error and "fix forward" in run.error
    assert "| risk | **FAIL** |" in run.text
    assert fingerprint(demo_url) == before
    assert not (tmp_path / "backups").exists()


def low_risk_production_case(url: str) -> str:
    """The demo at its add-table revision with the table emptied: a LOW step that destroys nothing."""
    demo_at(url, "0607bc5b8534")
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        conn.execute("DELETE FROM user_preferences")
    return plan_downgrade(DatabaseTarget.from_url(url), load_project(DEMO_CONFIG), "-1").plan_hash


def production(tmp_path: Path, deployed_minutes_ago: float, approver: str, approved_plan: str) -> tuple[str, ...]:
    deployed = (datetime.now(UTC) - timedelta(minutes=deployed_minutes_ago)).isoformat()
    return ("-p", "environment", "production", "-p", "operator", "alice", "-p", "approved_by", approver,
            "-r", "approved_plan", approved_plan, "-p", "deployed_at", deployed, "-p", "execute", "True",
            "-p", "backup_dir", str(tmp_path / "backups"))


def test_production_allows_a_low_risk_rollback_within_the_window_with_an_approved_plan(tmp_path, demo_url):
    plan_hash = low_risk_production_case(demo_url)

    run = papermill(tmp_path, "rollback", *production(tmp_path, 1, "bob", plan_hash), url=demo_url)

    assert run.returncode == 0, run.error
    assert current_revision(demo_url) == ["0607bc5b8533"]
    assert "ALLOWED: every rule of the production policy passes" in run.text


@pytest.mark.parametrize(
    ("minutes_ago", "approver", "plan_changed", "failing_rule", "advice"),
    [
        (30, "bob", False, "deployment window", "fix forward"),
        (1, "", False, "approver", "approved_by"),
        (1, "alice", False, "approver", "approve their own rollback"),
        (1, "bob", True, "approved plan", "changed"),
    ],
)
def test_production_refuses_outside_the_window_without_an_approver_or_when_the_approved_plan_changed(
    tmp_path, demo_url, minutes_ago, approver, plan_changed, failing_rule, advice
):
    plan_hash = low_risk_production_case(demo_url)
    if plan_changed:
        plan_hash = "0" * 64
    before = fingerprint(demo_url)

    run = papermill(tmp_path, "rollback", *production(tmp_path, minutes_ago, approver, plan_hash), url=demo_url)

    assert run.returncode != 0
    assert f"Rule '{failing_rule}' fails" in run.error
    assert advice in run.error
    assert fingerprint(demo_url) == before
    assert not (tmp_path / "backups").exists()


def test_data_that_would_not_fit_is_refused_before_the_downgrade_fails_on_it(tmp_path, demo_url):
    demo_at(demo_url, "0607bc5b8533")

    # The plan counts 3 emails too long for varchar(100): the gate refuses in every environment.
    refused = papermill(tmp_path, "rollback", *executed(tmp_path), url=demo_url)
    assert refused.returncode != 0 and "Rule 'what blocks the downgrade' fails" in refused.error
    assert current_revision(demo_url) == ["0607bc5b8533"]


def test_a_view_on_the_dropped_column_is_named_and_refused_before_any_backup_or_downgrade(tmp_path, demo_url):
    demo_at(demo_url, "0607bc5b8531")
    with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as conn:
        conn.execute("UPDATE users SET preferences = NULL")
        conn.execute("CREATE VIEW user_theme AS SELECT id, preferences FROM users")

    run = papermill(tmp_path, "rollback", *executed(tmp_path), url=demo_url)

    assert run.returncode != 0
    assert "Rule 'what blocks the downgrade' fails" in run.error
    assert "fails: view user_theme depends on users.preferences; drop or change it first" in run.text
    assert current_revision(demo_url) == ["0607bc5b8531"]
    assert not list((tmp_path / "backups").glob("*.dump"))


def test_a_lock_held_past_lock_timeout_names_its_holder(tmp_path, demo_url):
    with psycopg.connect(**psycopg_kwargs(demo_url)) as holder:
        holder.execute("SET application_name = 'nightly-report'")
        holder.execute("LOCK TABLE users IN SHARE MODE")
        run = papermill(tmp_path, "rollback", *executed(tmp_path, "-p", "lock_timeout", "300ms"), url=demo_url)
        holder.rollback()

    assert run.returncode != 0
    assert "LockNotAvailable" in run.error
    assert "nightly-report" in run.text
    assert current_revision(demo_url) == ["0607bc5b8536"]
    # What to do next: the backup this run took, and the two ways to restore it.
    backup = next((tmp_path / "backups").glob("*.dump"))
    run_id = read_record(json.loads(next((tmp_path / "rollback-records").glob("*.json")).read_text())).run_id
    assert f"rollbook run restore -r backup {run_id} -p restore_into database" in run.error
    assert "pg_restore --clean --if-exists --single-transaction -d 'postgresql://" in run.error
    assert str(backup) in run.error


def test_another_run_holding_the_rollback_lock_makes_this_one_refuse(tmp_path, demo_url):
    before = fingerprint(demo_url)
    with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as other:
        other.execute("SELECT pg_advisory_lock(%s)", [ROLLBACK_LOCK_KEY])
        run = papermill(tmp_path, "rollback", *executed(tmp_path, "-p", "lock_timeout", "300ms"), url=demo_url)

    assert run.returncode != 0
    assert "Another rollback run is in progress" in run.error
    assert fingerprint(demo_url) == before


def test_a_healthy_application_passes_and_a_failing_one_fails_verification(tmp_path, demo_url, health_server):
    run = papermill(tmp_path, "rollback", *executed(tmp_path, "-p", "health_url", f"{health_server}/health"),
                    url=demo_url)
    assert run.returncode == 0, run.error
    assert "| application health | passed |" in run.text
    assert "Rolled back 0607bc5b8536 -> 0607bc5b8535 and verified" in run.text

    down = papermill(tmp_path, "rollback", *executed(tmp_path, "-p", "health_url", f"{health_server}/broken"),
                     url=demo_url)
    assert down.returncode != 0
    assert "verification failed (application health)" in down.error
    assert "pg_restore" in down.error and "fix forward" in down.error
    assert current_revision(demo_url) == ["0607bc5b8534"]


def test_an_unwritable_backup_folder_stops_the_run_before_any_change(tmp_path, demo_url):
    before = fingerprint(demo_url)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    run = papermill(tmp_path, "rollback", *executed(tmp_path, "-p", "backup_dir", str(blocker / "backups")),
                    url=demo_url)

    assert run.returncode != 0
    assert "cannot be used" in run.error and str(blocker / "backups") in run.error
    assert fingerprint(demo_url) == before


def test_a_missing_migration_file_is_refused_with_how_to_get_it_back(tmp_path, demo_url):
    project = tmp_path / "project"
    shutil.copytree(Path(DEMO_CONFIG).parent, project, ignore=shutil.ignore_patterns("__pycache__"))
    next(project.glob("versions/0607bc5b8536_*.py")).unlink()

    run = papermill(tmp_path, "rollback", *executed(tmp_path), url=demo_url, config=project / "alembic.ini")

    assert run.returncode != 0
    assert "0607bc5b8536" in run.error and "git" in run.error
    assert current_revision(demo_url) == ["0607bc5b8536"]


@pytest.mark.parametrize(
    ("args", "phrases"),
    [
        (("-p", "target_revision", "0002"), ["arrived as the number 2", "-r target_revision 0002"]),
        (("-p", "target_revison", "-1"), ["Unknown parameter(s) target_revison", "target_revision"]),
        (("-p", "execute", "maybe"), ["execute must be true or false"]),
        (("-p", "environment", "prod"), ["prod", "production"]),
    ],
)
def test_papermill_misuse_is_refused_loudly(tmp_path, demo_url, args, phrases):
    before = fingerprint(demo_url)

    run = papermill(tmp_path, "rollback", *args, url=demo_url)

    assert run.returncode != 0
    for phrase in phrases:
        assert phrase in run.error
    assert fingerprint(demo_url) == before


def test_a_password_passed_as_a_parameter_is_refused_without_repeating_it(tmp_path, demo_url):
    url = DatabaseTarget.from_url(demo_url)
    secret = str(url.url.password)

    run = papermill(tmp_path, "rollback", "-p", "database_url", url.sqlalchemy_url, url="")

    assert run.returncode != 0
    assert "carries a password" in run.error and "PGPASSWORD" in run.error
    assert secret not in run.error


def test_a_kernel_killed_mid_downgrade_leaves_the_database_at_a_known_revision(tmp_path, demo_url):
    config = slow_project(tmp_path, demo_url)
    args = [sys.executable, "-m", "papermill", str(RUNBOOKS / "rollback.ipynb"), str(tmp_path / "killed.ipynb"),
            "--no-progress-bar", *executed(tmp_path)]
    env = {**os.environ, "DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(config)}
    with subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as runner:
        wait_for_sleeping_downgrade(demo_url, runner)
        kill_kernels(runner.pid)
        assert runner.wait(timeout=60) != 0
    with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as watcher:
        deadline = time.monotonic() + 10
        while watcher.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%'").fetchone():
            assert time.monotonic() < deadline, "the killed run's statement is still running"
            time.sleep(0.2)
        assert watcher.execute("SELECT pg_try_advisory_lock(%s)", [ROLLBACK_LOCK_KEY]).fetchone()[0]
        assert watcher.execute("SELECT to_regclass('audit_trail') IS NOT NULL").fetchone()[0]
    assert current_revision(demo_url) == ["0607bc5b8537"]


def test_a_target_the_database_is_already_at_is_nothing_to_do(tmp_path, demo_url):
    before = fingerprint(demo_url)

    run = papermill(tmp_path, "rollback", *executed(tmp_path, "-r", "target_revision", "0607bc5b8536"), url=demo_url)

    assert run.returncode == 0, run.error
    assert "Nothing to do: the database is already at 0607bc5b8536" in run.text
    assert fingerprint(demo_url) == before
    assert not (tmp_path / "backups").exists()
