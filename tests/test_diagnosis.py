"""Diagnosis of failed rollbacks from real failing statements: facts name causes, never data values or secrets."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from urllib.parse import quote, quote_plus

import psycopg
import pytest
from alembic import command
from alembic.util import CommandError
from pg import database_name
from psycopg import sql

from rollbook.demo.server import DEMO_CONFIG
from rollbook.execution.diagnosis import diagnose_failure
from rollbook.execution.diagnosis_model import Diagnosis
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.plan import plan_downgrade
from rollbook.planning.step import PlanStep
from rollbook.project.migrations import alembic_config_for, load_project

HEAD = "0607bc5b8536"
FIRST = "0607bc5b8530"


def steps_by_revision(demo_url: str, demo_project) -> dict[str, PlanStep]:
    plan = plan_downgrade(DatabaseTarget.from_url(demo_url), demo_project, FIRST, live_checks=False)
    return {step.revision.revision: step for step in plan.steps}


def failure(conn: psycopg.Connection, statement: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        conn.execute(statement)
    return caught.value


def every_text(diagnosis: Diagnosis) -> str:
    return "\n".join([diagnosis.to_text(), diagnosis._repr_markdown_(), json.dumps(diagnosis.to_dict())])


def test_a_view_on_the_dropped_column_is_named(demo_url, demo_project):
    target = DatabaseTarget.from_url(demo_url)
    step = steps_by_revision(demo_url, demo_project)["0607bc5b8531"]
    statement = "ALTER TABLE users DROP COLUMN preferences"
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        conn.execute("CREATE VIEW user_prefs AS SELECT id, preferences FROM users")
        error = failure(conn, statement)

    diagnosis = diagnose_failure(target, error, step=step, statement=statement)

    assert diagnosis.scenario == "dependent_objects"
    assert diagnosis.sqlstate == "2BP01"
    assert diagnosis.revision == "0607bc5b8531"
    named = [fact for fact in diagnosis.facts if "view user_prefs" in fact]
    assert any("users.preferences" in fact for fact in named)
    assert any('DROP VIEW "public"."user_prefs"' in item for item in diagnosis.advice)
    assert any("restore the backup" in item for item in diagnosis.advice)


def test_altering_a_column_a_view_reads_is_a_dependency_too(demo_url):
    target = DatabaseTarget.from_url(demo_url)
    statement = "ALTER TABLE users ALTER COLUMN name TYPE VARCHAR(50)"
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        conn.execute("CREATE VIEW user_names AS SELECT id, name FROM users")
        error = failure(conn, statement)

    diagnosis = diagnose_failure(target, error, step=None, statement=statement)

    assert error.sqlstate == "0A000"  # not 2BP01: PostgreSQL words this one as "not supported"
    assert diagnosis.scenario == "dependent_objects"
    assert any("view user_names" in fact for fact in diagnosis.facts)


def test_emails_too_long_are_counted_and_named_by_key_not_value(demo_url, demo_project):
    target = DatabaseTarget.from_url(demo_url)
    step = steps_by_revision(demo_url, demo_project)["0607bc5b8533"]
    statement = "ALTER TABLE users ALTER COLUMN email TYPE VARCHAR(100)"
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        long_ones = conn.execute("SELECT id, email FROM users WHERE length(email) > 100 ORDER BY id").fetchall()
        error = failure(conn, statement)

    diagnosis = diagnose_failure(target, error, step=step, statement=statement)

    assert error.sqlstate == "22001"
    assert diagnosis.scenario == "data_does_not_fit"
    assert any(fact.startswith("3 row(s) of users") for fact in diagnosis.facts)
    keys = ", ".join(str(row[0]) for row in long_ones)
    assert any(fact.endswith(f"of them: {keys}.") for fact in diagnosis.facts)
    text = every_text(diagnosis)
    for _, email in long_ones:
        assert email not in text and email[:40] not in text
    assert any('UPDATE "users" SET "email" = LEFT("email", 100) WHERE LENGTH("email") > 100;' in item
               for item in diagnosis.advice)
    assert any("Option B (safer): restore" in item for item in diagnosis.advice)


def test_a_real_alembic_downgrade_failure_wrapped_by_sqlalchemy(demo_url, demo_project):
    target = DatabaseTarget.from_url(demo_url)
    step = steps_by_revision(demo_url, demo_project)["0607bc5b8533"]
    with pytest.raises(Exception) as caught:
        command.downgrade(alembic_config_for(demo_project, target), "0607bc5b8532")

    diagnosis = diagnose_failure(target, caught.value, step=step, statement=None)

    assert type(caught.value).__module__.startswith("sqlalchemy")
    assert diagnosis.scenario == "data_does_not_fit"
    assert any("ALTER TABLE users ALTER COLUMN email TYPE VARCHAR(100)" in fact for fact in diagnosis.facts)
    assert any(fact.startswith("3 row(s) of users") for fact in diagnosis.facts)


def test_a_not_null_violation_counts_nulls_without_showing_the_failing_row(demo_url):
    target = DatabaseTarget.from_url(demo_url)
    statement = "ALTER TABLE users ALTER COLUMN preferences SET NOT NULL"
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        nulls = conn.execute("SELECT count(*) FROM users WHERE preferences IS NULL").fetchone()[0]
        error = failure(conn, statement)

    diagnosis = diagnose_failure(target, error, step=None, statement=statement)

    assert diagnosis.scenario == "constraint_violation"
    assert any(fact.startswith(f"{nulls} row(s) of users have NULL in preferences") for fact in diagnosis.facts)
    assert any('WHERE "preferences" IS NULL' in item for item in diagnosis.advice)


def test_duplicates_name_every_row_that_shares_a_key(demo_url):
    target = DatabaseTarget.from_url(demo_url)
    statement = "CREATE UNIQUE INDEX users_name_key ON users (name)"
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        conn.execute("UPDATE users SET name = 'same name' WHERE id IN (2, 4, 5)")
        error = failure(conn, statement)

    diagnosis = diagnose_failure(target, error, step=None, statement=statement)

    assert error.sqlstate == "23505"
    assert diagnosis.scenario == "constraint_violation"
    assert any(fact.startswith("2 row(s) of users repeat a (name) key") for fact in diagnosis.facts)
    assert any(fact.endswith("of them: 2, 4, 5.") for fact in diagnosis.facts)
    assert "same name" not in every_text(diagnosis)


def test_the_session_holding_the_lock_is_named(demo_url, demo_project):
    target = DatabaseTarget.from_url(demo_url)
    step = steps_by_revision(demo_url, demo_project)["0607bc5b8531"]
    statement = "ALTER TABLE users DROP COLUMN preferences"
    holder = psycopg.connect(**{**target.connect_kwargs(), "application_name": "nightly-report"})
    try:
        holder.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        pid = holder.info.backend_pid
        with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
            conn.execute("SET lock_timeout = '200ms'")
            error = failure(conn, statement)

        diagnosis = diagnose_failure(target, error, step=step, statement=statement)
    finally:
        holder.close()

    assert error.sqlstate == "55P03"
    assert diagnosis.scenario == "lock_timeout"
    session = next(fact for fact in diagnosis.facts if f"pid {pid} " in fact)
    assert "application_name 'nightly-report'" in session
    assert "idle in transaction" in session and "AccessExclusiveLock on users" in session
    assert any(f"pg_cancel_backend({pid})" in item for item in diagnosis.advice)


def test_statement_timeout_names_the_statement_and_the_setting(demo_url, demo_project, pg_server):
    target = DatabaseTarget.from_url(demo_url)
    step = steps_by_revision(demo_url, demo_project)[HEAD]
    pg_server.admin().execute(
        sql.SQL("ALTER DATABASE {} SET statement_timeout = '150ms'").format(sql.Identifier(database_name(demo_url))))
    statement = "UPDATE users SET status = NULL WHERE status = 'active' AND pg_sleep(0.1) IS NOT NULL"
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        error = failure(conn, statement)

    diagnosis = diagnose_failure(target, error, step=step, statement=statement)

    assert error.sqlstate == "57014"
    assert diagnosis.scenario == "statement_timeout"
    assert any(statement in fact for fact in diagnosis.facts)
    assert any("150ms (set by: database)" in fact for fact in diagnosis.facts)
    assert any(fact.startswith("users: ") and "on disk" in fact for fact in diagnosis.facts)


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_a_deleted_migration_file_is_traced_to_the_commit_that_deleted_it(demo_url, tmp_path):
    repo = tmp_path / "app"
    shutil.copytree(DEMO_CONFIG.parent, repo / "migrations",
                    ignore=shutil.ignore_patterns("__pycache__"))
    git = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]

    def run(*args: str) -> str:
        return subprocess.run([*git, *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()

    run("init", "-q")
    run("add", ".")
    run("commit", "-q", "-m", "Migrations")
    deleted = f"migrations/versions/{HEAD}_backfill_users_status.py"
    run("rm", "-q", deleted)
    run("commit", "-q", "-m", "Tidy up migrations")
    commit = run("rev-parse", "--short", "HEAD")
    project = load_project(repo / "migrations" / "alembic.ini")
    target = DatabaseTarget.from_url(demo_url)
    with pytest.raises(CommandError) as caught:
        command.downgrade(alembic_config_for(project, target), "-1")

    diagnosis = diagnose_failure(target, caught.value, step=None, statement=None, project=project)

    assert diagnosis.scenario == "missing_migration_file" and diagnosis.revision == HEAD
    assert any(f"deleted in commit {commit}" in fact and "Tidy up migrations" in fact for fact in diagnosis.facts)
    assert any(f"records revision {HEAD}" in fact for fact in diagnosis.facts)
    advised = next(re.search(r"`(git checkout [^`]+)`", item) for item in diagnosis.advice if "git checkout" in item)
    assert advised.group(1) == f"git checkout {commit}^ -- {deleted}"
    subprocess.run(advised.group(1).split(), cwd=repo, check=True, capture_output=True)
    assert (repo / deleted).is_file()


def test_without_a_project_the_seed_advice_is_given():
    target = DatabaseTarget.from_url("postgresql://app@db.invalid/app")
    error = CommandError("Can't locate revision identified by '0607bc5b8536'")

    diagnosis = diagnose_failure(target, error, step=None, statement=None)

    assert diagnosis.scenario == "missing_migration_file"
    assert "`ls alembic/versions/0607bc5b8536_*.py`" in diagnosis.to_text()
    assert "`git checkout alembic/versions/0607bc5b8536_*.py`" in diagnosis._repr_markdown_()


def test_the_app_password_never_appears(pg_server, demo_url):
    app_url = pg_server.url(database_name(demo_url), user=pg_server.app_user)
    target = DatabaseTarget.from_url(app_url)
    password = pg_server.app_password
    echo = sql.SQL("DO $$ BEGIN RAISE EXCEPTION 'token %', {}; END $$").format(sql.Literal(password))
    cast = sql.SQL("SELECT {}::integer").format(sql.Literal(password))
    with psycopg.connect(**target.connect_kwargs(), autocommit=True) as conn:
        errors = [(failure(conn, echo), echo.as_string(conn)), (failure(conn, cast), cast.as_string(conn))]
    errors.append((CommandError(f"Can't reach {target.sqlalchemy_url}"), None))
    errors.append((CommandError(f"Can't locate revision identified by '{password}'"), f"ALTER ROLE x PASSWORD "
                                                                                     f"'{password}'"))

    diagnoses = [diagnose_failure(target, error, step=None, statement=statement) for error, statement in errors]

    assert [d.scenario for d in diagnoses] == ["unknown", "data_does_not_fit", "unknown", "missing_migration_file"]
    assert diagnoses[0].sqlstate == "P0001" and "token ***" in diagnoses[0].to_text()
    for diagnosis in diagnoses:
        text = every_text(diagnosis)
        for secret in {password, quote(password, safe=""), quote_plus(password)}:
            assert secret not in text


def test_markdown_escapes_names_but_keeps_code():
    diagnosis = Diagnosis("unknown", "x", facts=("view v_*x* <b>",), advice=("run `SELECT a_b * 2`",))

    markdown = diagnosis._repr_markdown_()

    assert r"v\_\*x\* &lt;b&gt;" in markdown and "`SELECT a_b * 2`" in markdown
    assert diagnosis.to_dict()["facts"] == ["view v_*x* <b>"]
