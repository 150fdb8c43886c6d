"""Executing downgrades against the real server: one step per transaction, locks, timeouts, wrong databases."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import psycopg
import pytest
from pg import fingerprint, psycopg_kwargs

from rollbook.demo.server import DEMO_CONFIG, install_demo
from rollbook.execution.downgrade import (
    DatabaseMoved,
    execute_downgrade,
)
from rollbook.pg.advisory_lock import ROLLBACK_LOCK_KEY, ConcurrentRollback
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.plan import plan_downgrade
from rollbook.project.migrations import load_project
from rollbook.project.status import read_current_revisions


def revisions(url: str) -> list[str]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]


def run(url, project, target, **kwargs):
    db = DatabaseTarget.from_url(url)
    plan = plan_downgrade(db, project, target)
    options = {"lock_timeout_ms": 2000, "statement_timeout_ms": 30000, **kwargs}
    return execute_downgrade(db, project, plan, **options)


def test_each_step_runs_and_is_logged_with_its_statements(demo_url, demo_project):
    result = run(demo_url, demo_project, "0607bc5b8534")

    assert result.succeeded
    assert revisions(demo_url) == ["0607bc5b8534"]
    assert result.revisions_before == ("0607bc5b8536",)
    assert result.revisions_after == ("0607bc5b8534",)
    assert [(s.revision, s.down_to, s.outcome) for s in result.steps] == [
        ("0607bc5b8536", "0607bc5b8535", "done"),
        ("0607bc5b8535", "0607bc5b8534", "done"),
    ]
    first, second = result.steps
    assert any("UPDATE users SET status = NULL" in s.sql for s in first.statements)
    assert any(s.sql.startswith("CREATE TABLE old_sessions") for s in second.statements)
    assert all(s.seconds >= 0 for s in first.statements + second.statements)
    assert "0607bc5b8534" in result.to_text()


def test_a_failing_step_rolls_back_alone_and_the_database_stays_at_a_known_revision(demo_url, demo_project):
    # 0607bc5b8533's downgrade narrows users.email to 100 characters; 3 sample emails are longer.
    result = run(demo_url, demo_project, "0607bc5b8532")

    assert not result.succeeded
    assert [(s.revision, s.outcome) for s in result.steps] == [
        ("0607bc5b8536", "done"), ("0607bc5b8535", "done"), ("0607bc5b8534", "done"),
        ("0607bc5b8533", "failed"),
    ]
    assert revisions(demo_url) == ["0607bc5b8533"]
    assert result.revisions_after == ("0607bc5b8533",)
    failed = result.failed_step
    assert "StringDataRightTruncation" in failed.error
    assert failed.statements[-1].failed and "ALTER TABLE users" in failed.statements[-1].sql
    assert result.failed_statement == failed.statements[-1].sql
    # The schema, compared with the snapshot taken before the step, shows the rollback; only then is it claimed.
    assert failed.left_changed.compared and failed.left_changed.rolled_back
    assert failed.left_changed.describe().startswith("The failed step's transaction was rolled back")


def test_a_second_run_waits_a_bounded_time_then_refuses_and_changes_nothing(demo_url, demo_project):
    before = fingerprint(demo_url)
    with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as other:
        other.execute("SELECT set_config('application_name', 'other rollback', false)")
        other.execute("SELECT pg_advisory_lock(%s)", [ROLLBACK_LOCK_KEY])
        with pytest.raises(ConcurrentRollback) as refused:
            run(demo_url, demo_project, "-1", lock_wait_ms=300)
    assert "Another rollback run is in progress" in str(refused.value)
    assert "other rollback" in str(refused.value)
    assert fingerprint(demo_url) == before


def test_a_lock_held_past_lock_timeout_fails_the_step_without_waiting_forever(demo_url, demo_project):
    with psycopg.connect(**psycopg_kwargs(demo_url)) as holder:
        holder.execute("LOCK TABLE users IN ACCESS SHARE MODE")
        result = run(demo_url, demo_project, "0607bc5b8530", lock_timeout_ms=200)
        holder.rollback()
    assert not result.succeeded
    assert "LockNotAvailable" in result.failed_step.error
    assert revisions(demo_url) == [result.failed_step.revision]


def test_a_database_that_moved_since_the_plan_is_refused(demo_url, demo_project):
    db = DatabaseTarget.from_url(demo_url)
    plan = plan_downgrade(db, demo_project, "-1")
    run(demo_url, demo_project, "-1")
    with pytest.raises(DatabaseMoved, match="someone migrated it since"):
        execute_downgrade(db, demo_project, plan, lock_timeout_ms=1000, statement_timeout_ms=1000)
    assert revisions(demo_url) == ["0607bc5b8535"]


def test_env_py_that_connects_elsewhere_is_stopped_before_any_statement(pg_server, demo_url, tmp_path, monkeypatch):
    other_url = pg_server.create_database()
    try:
        install_demo(DatabaseTarget.from_url(other_url))
        project_dir = tmp_path / "project"
        shutil.copytree(Path(DEMO_CONFIG).parent, project_dir)
        env_py = project_dir / "env.py"
        # An env.py that ignores both the URL and the engine rollbook hands it, and connects elsewhere.
        env_py.write_text(env_py.read_text().replace(
            'return config.get_main_option("sqlalchemy.url") or os.environ["DATABASE_URL"]',
            'return os.environ["OTHER_DATABASE_URL"]').replace(
            'connectable = config.attributes.get("connection")', 'connectable = None'))
        monkeypatch.setenv("OTHER_DATABASE_URL", other_url)
        project = load_project(project_dir / "alembic.ini")
        other_before, ours_before = fingerprint(other_url), fingerprint(demo_url)

        result = run(demo_url, project, "-1")

        assert not result.succeeded
        assert "connected to database rbtest_" in result.failed_step.error
        assert "stopped before env.py ran any statement" in result.failed_step.error
        assert fingerprint(other_url) == other_before
        assert fingerprint(demo_url) == ours_before
    finally:
        pg_server.drop_database(other_url.rsplit("/", 1)[1])


def test_the_lock_is_released_after_the_run(demo_url, demo_project):
    run(demo_url, demo_project, "-1")
    with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as conn:
        assert conn.execute("SELECT pg_try_advisory_lock(%s)", [ROLLBACK_LOCK_KEY]).fetchone()[0]


def test_two_runs_at_once_never_interleave(demo_url, demo_project):
    results, errors = [], []

    def attempt():
        try:
            results.append(run(demo_url, demo_project, "-1", lock_wait_ms=100))
        except (ConcurrentRollback, DatabaseMoved) as exc:
            errors.append(exc)

    threads = [threading.Thread(target=attempt) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 1 and results[0].succeeded
    assert len(errors) == 1
    assert revisions(demo_url) == ["0607bc5b8535"]


# Dagster's dagster._core.storage.sql.run_migrations_online, which its env.py calls.
DAGSTER_STORAGE_SQL = (
    "def run_migrations_online(context):\n"
    "    connection = context.config.attributes.get('connection', None)\n"
    "    if connection is None:\n"
    "        raise Exception('No connection set in alembic config. If you are trying to run this script from '\n"
    "                        'the command line, STOP and read the README.')\n"
    "    context.configure(connection=connection)\n"
    "    with context.begin_transaction():\n"
    "        context.run_migrations()\n"
)


def test_an_env_py_that_expects_its_caller_to_hand_it_a_connection_is_handed_one(tmp_path, database_url):
    """Dagster's env.py raises unless the caller sets config.attributes['connection'], as its own code does."""
    from alembic_projects import project_at_head
    from test_records import STAGING, rollbook

    project, target, _ = project_at_head(tmp_path / "project", database_url, {
        "eeee00000001": (None, "op.execute('CREATE TABLE runs (id int)')", "op.execute('DROP TABLE runs')"),
        "eeee00000002": ("eeee00000001", "op.execute('CREATE INDEX ix_runs_id ON runs (id)')",
                         "with op.get_context().autocommit_block():\n"
                         "        op.execute('DROP INDEX CONCURRENTLY ix_runs_id')"),
        "eeee00000003": ("eeee00000002", "op.execute('ALTER TABLE runs ADD COLUMN note text')",
                         "op.execute('ALTER TABLE runs DROP COLUMN note')"),
    })
    # As Dagster's: env.py only calls a helper of the project's own package, which reads the connection.
    helpers = tmp_path / "helpers"
    helpers.mkdir()
    (helpers / "storage_sql.py").write_text(DAGSTER_STORAGE_SQL)
    (tmp_path / "project" / "env.py").write_text(
        "from alembic import context\nfrom storage_sql import run_migrations_online\n\n"
        "run_migrations_online(context)\n")

    result = rollbook(tmp_path, "run", "rollback", "-r", "target_revision", "eeee00000001", *STAGING,
                      "-p", "backup_dir", str(tmp_path / "backups"), "--execute", url=database_url,
                      config=project.config_path, env={"PYTHONPATH": str(helpers)})

    assert result.returncode == 0, result.stdout + result.stderr
    with connect(target) as conn:
        assert read_current_revisions(conn, project) == ("eeee00000001",)
        assert conn.execute("SELECT to_regclass('ix_runs_id') IS NULL").fetchone()[0]
