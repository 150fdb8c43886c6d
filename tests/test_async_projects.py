"""Projects whose env.py is async, and the drivers real projects hand it (asyncpg, psycopg2, pg8000).

The fixture tests/projects/async_template is what `alembic init -t async` makes: env.py calls
asyncio.run(), which fails inside a Jupyter kernel's running loop unless rollbook runs each step
where no loop runs. Its second revision passes a literal '%' to exec_driver_sql, as migrations
written for asyncpg do: replays under psycopg would read it as a placeholder.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic_projects import write_project
from pg import fingerprint, psycopg_kwargs, url_with
from runbook_runs import current_revision
from test_cli import ROLLBOOK
from test_records import STAGING, rollbook

from rollbook.execution.downgrade import DowngradeExecution, execute_downgrade
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.plan import plan_downgrade
from rollbook.project.migrations import alembic_config_for, load_project
from rollbook.records.model import read_record

PROJECT = Path(__file__).parent / "projects" / "async_template"
CONFIG = PROJECT / "alembic.ini"
NOTES, PROGRESS, TAGS = "a5c0000000a1", "a5c0000000a2", "a5c0000000a3"
ROWS = ("INSERT INTO notes (id, body, progress) VALUES (1, 'done: ship it', '100%'), (2, 'todo: write docs', NULL);"
        "INSERT INTO tags (id, note_id, name) VALUES (1, 1, 'release'), (2, 2, 'docs');")


def with_driver(url: str, driver: str) -> str:
    return url_with(url, drivername=f"postgresql+{driver}")


def upgrade_to_head(config: Path, url: str) -> None:
    """As the project's users do: `alembic upgrade head` with their driver (no event loop runs here)."""
    command.upgrade(alembic_config_for(load_project(config), DatabaseTarget.from_url(url)), "head")


def rows(url: str, query: str) -> list[tuple]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return conn.execute(query).fetchall()


def test_an_async_template_project_is_rolled_back_through_the_runbook_under_asyncpg(tmp_path, database_url):
    url = with_driver(database_url, "asyncpg")
    upgrade_to_head(CONFIG, url)
    with psycopg.connect(**psycopg_kwargs(database_url), autocommit=True) as conn:
        conn.execute(ROWS)

    result = rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "backup_dir", str(tmp_path / "backups"),
                      "--execute", url=url, config=CONFIG)

    assert result.returncode == 0, result.stdout + result.stderr
    assert current_revision(database_url) == [PROGRESS]
    assert rows(database_url, "SELECT to_regclass('tags') IS NULL") == [(True,)]
    assert rows(database_url, "SELECT id, body, progress FROM notes ORDER BY id") == [
        (1, "done: ship it", "100%"), (2, "todo: write docs", None)]
    [summary_file] = (tmp_path / "archive").glob("*.json")
    summary = read_record(json.loads(summary_file.read_text()))
    # Succeeded; not fully verified only because the fixture has no application health to check.
    assert summary.outcome == "succeeded_unverified", summary
    assert summary.database.startswith("postgresql+asyncpg://")
    checks = {check["name"]: check["status"] for check in summary.verification["checks"]}
    # The expected schema was built by replaying the '%' migration under asyncpg.
    assert checks["revision"] == "passed" and checks["schema"] == "passed", summary.verification
    executed = [s["sql"] for step in summary.downgrade["steps"] for s in step["statements"]]
    assert any("DROP TABLE tags" in sql for sql in executed)


def test_the_rehearsal_replays_migrations_under_the_driver_the_url_names(tmp_path, database_url):
    under_asyncpg = rollbook(tmp_path, "test-rollback", "--config", str(CONFIG),
                             url=with_driver(database_url, "asyncpg"))
    assert under_asyncpg.returncode == 0, under_asyncpg.stdout + under_asyncpg.stderr

    # The same history replayed under psycopg stops where the literal '%' is read as a placeholder:
    # rollbook no longer swaps the driver, so what the user sees is what their driver does.
    under_psycopg = rollbook(tmp_path, "test-rollback", "--config", str(CONFIG),
                             url=with_driver(database_url, "psycopg"))
    assert under_psycopg.returncode == 1
    assert "only '%s', '%b', '%t' are allowed as placeholders" in under_psycopg.stdout


def test_the_demo_is_rolled_back_through_the_runbook_under_psycopg2(tmp_path, demo_url):
    result = rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "backup_dir", str(tmp_path / "backups"),
                      "--execute", url=with_driver(demo_url, "psycopg2"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert current_revision(demo_url) == ["0607bc5b8535"]
    [summary_file] = (tmp_path / "archive").glob("*.json")
    summary = read_record(json.loads(summary_file.read_text()))
    assert summary.database.startswith("postgresql+psycopg2://")
    assert {c["name"]: c["status"] for c in summary.verification["checks"]}["schema"] == "passed"


def test_plan_and_its_sql_under_asyncpg_render_the_async_env_py_offline(tmp_path, database_url):
    url = with_driver(database_url, "asyncpg")
    upgrade_to_head(CONFIG, url)

    planned = rollbook(tmp_path, "plan", "--target", "-1", "--json", url=url, config=CONFIG)
    script = rollbook(tmp_path, "plan", "--target", "-1", "--sql", url=url, config=CONFIG)

    assert planned.returncode == 0, planned.stderr
    assert [step["revision"] for step in json.loads(planned.stdout)["steps"]] == [TAGS]
    assert script.returncode == 0, script.stderr
    assert "DROP TABLE tags" in script.stdout


def recording_project(root: Path, driver: str) -> Path:
    """Two revisions; undoing the second records the session settings the step's connection runs with."""
    config = write_project(root, {
        "b0000001": (None, "op.execute('CREATE TABLE t (id int)')", "op.execute('DROP TABLE t')"),
        "b0000002": ("b0000001", "op.execute('SELECT 1')",
                     "op.execute(\"CREATE TABLE seen AS SELECT current_setting('lock_timeout') AS lock_timeout, "
                     "current_setting('statement_timeout') AS statement_timeout\")"),
    })
    if driver == "asyncpg":
        shutil.copy(PROJECT / "env.py", root / "env.py")
        shutil.copy(CONFIG, config)
    return config


def downgrade_one_step(url: str, config: Path) -> DowngradeExecution:
    """Undo the head revision through the project's env.py, with timeouts the recording project can see."""
    target, project = DatabaseTarget.from_url(url), load_project(config)
    return execute_downgrade(target, project, plan_downgrade(target, project, "-1"),
                             lock_timeout_ms=1234, statement_timeout_ms=5678)


@pytest.mark.parametrize("driver", ["psycopg2", "pg8000", "asyncpg"])
def test_the_connection_guard_speaks_every_driver(tmp_path, database_url, driver):
    url = with_driver(database_url, driver)
    config = recording_project(tmp_path / "project", driver)
    upgrade_to_head(config, url)

    result = downgrade_one_step(url, config)

    assert result.succeeded, result.to_text()
    assert current_revision(database_url) == ["b0000001"]
    assert rows(database_url, "SELECT lock_timeout, statement_timeout FROM seen") == [("1234ms", "5678ms")]
    assert any("CREATE TABLE seen" in s.sql for s in result.steps[0].statements)


def test_an_asyncpg_url_with_options_of_its_own_serves_env_py_and_rollbook_s_own_connection(tmp_path, database_url):
    # prepared_statement_cache_size is asyncpg's (libpq refuses it); asyncpg spells sslmode `ssl`.
    url = with_driver(database_url, "asyncpg") + "?prepared_statement_cache_size=0&ssl=disable"
    config = recording_project(tmp_path / "project", "asyncpg")
    upgrade_to_head(config, url)
    target = DatabaseTarget.from_url(url)
    assert target.connect_kwargs()["sslmode"] == "disable"
    assert "prepared_statement_cache_size" not in target.connect_kwargs()

    result = downgrade_one_step(url, config)

    assert result.succeeded, result.to_text()
    assert current_revision(database_url) == ["b0000001"]


def test_an_env_py_that_calls_back_into_an_anyio_loop_like_prefects_runs(tmp_path, database_url):
    # Prefect's env.py runs its coroutine with anyio.from_thread.run: it expects to be called, as
    # Prefect's CLI calls it, from a worker thread of a running anyio loop (else NoEventLoopError).
    url = with_driver(database_url, "asyncpg")
    config = recording_project(tmp_path / "project", "asyncpg")
    upgrade_to_head(config, url)
    env_py = config.parent / "env.py"
    env_py.write_text(env_py.read_text().replace("asyncio.run(run_async_migrations())",
                                                 "anyio.from_thread.run(run_async_migrations)")
                      .replace("import asyncio", "import anyio.from_thread"))

    result = downgrade_one_step(url, config)

    assert result.succeeded, result.to_text()
    assert current_revision(database_url) == ["b0000001"]
    assert rows(database_url, "SELECT lock_timeout, statement_timeout FROM seen") == [("1234ms", "5678ms")]


def test_an_async_env_py_connecting_elsewhere_is_stopped_before_any_statement(pg_server, tmp_path, database_url):
    other_url = pg_server.create_database()
    try:
        config = recording_project(tmp_path / "project", "asyncpg")
        upgrade_to_head(config, with_driver(database_url, "asyncpg"))
        upgrade_to_head(config, with_driver(other_url, "asyncpg"))
        env_py = config.parent / "env.py"
        env_py.write_text(env_py.read_text().replace(
            "config.get_section(config.config_ini_section, {}),",
            "{'sqlalchemy.url': os.environ['OTHER_DATABASE_URL']},").replace("import asyncio", "import asyncio, os"))
        target, project = DatabaseTarget.from_url(with_driver(database_url, "asyncpg")), load_project(config)
        before, other_before = fingerprint(database_url), fingerprint(other_url)
        os.environ["OTHER_DATABASE_URL"] = with_driver(other_url, "asyncpg")
        try:
            result = execute_downgrade(target, project, plan_downgrade(target, project, "-1"),
                                       lock_timeout_ms=1000, statement_timeout_ms=1000)
        finally:
            del os.environ["OTHER_DATABASE_URL"]

        assert not result.succeeded
        assert "stopped before env.py ran any statement" in result.failed_step.error
        assert fingerprint(database_url) == before and fingerprint(other_url) == other_before
    finally:
        pg_server.drop_database(other_url.rsplit("/", 1)[1])


SLOW_DOWNGRADE = '''"""Slow to undo."""
from alembic import op

revision = "a5c0000000a4"
down_revision = "a5c0000000a3"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("CREATE TABLE audit_trail (id int)")


def downgrade():
    op.execute("DROP TABLE audit_trail")
    op.execute("SELECT pg_sleep(60)")
'''


def test_an_async_step_stopped_with_ctrl_c_is_cancelled_and_rolled_back(tmp_path, database_url):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "versions" / "a5c0000000a4_slow.py").write_text(SLOW_DOWNGRADE)
    url = with_driver(database_url, "asyncpg")
    upgrade_to_head(project / "alembic.ini", url)
    process = subprocess.Popen(
        [ROLLBOOK, "run", "rollback", *STAGING, "-p", "backup_dir", str(tmp_path / "backups"), "--execute"],
        env={**os.environ, "DATABASE_URL": url, "ALEMBIC_CONFIG": str(project / "alembic.ini"),
             "ROLLBOOK_ARCHIVE": str(tmp_path / "archive")},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        with psycopg.connect(**psycopg_kwargs(database_url), autocommit=True) as watcher:
            for _ in range(600):
                if watcher.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' "
                                   "AND state = 'active'").fetchone():
                    break
                assert process.poll() is None, process.communicate()
                time.sleep(0.1)
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 1, stdout + stderr
    assert stdout.startswith("interrupted in step downgrade"), stdout
    assert current_revision(database_url) == ["a5c0000000a4"]
    assert rows(database_url, "SELECT to_regclass('audit_trail') IS NOT NULL") == [(True,)]
    assert rows(database_url, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' "
                              "AND state = 'active'") == [(0,)]
    [summary_file] = (tmp_path / "archive").glob("*.json")
    assert read_record(json.loads(summary_file.read_text())).outcome == "interrupted"


def test_a_driver_that_is_not_installed_is_refused_naming_the_package(tmp_path, database_url):
    url = with_driver(database_url, "asyncpg")
    upgrade_to_head(CONFIG, url)
    before = fingerprint(database_url)
    # An asyncpg that fails to import stands for one that was never installed.
    missing = tmp_path / "missing"
    (missing / "asyncpg").mkdir(parents=True)
    (missing / "asyncpg" / "__init__.py").write_text("raise ImportError('No module named asyncpg')\n")
    hidden = {"PYTHONPATH": str(missing)}

    for args in (("status",), ("run", "rollback", *STAGING, "--execute")):
        result = rollbook(tmp_path, *args, url=url, config=CONFIG, env=hidden)

        assert result.returncode == 2, result.stdout + result.stderr
        assert "names the driver 'asyncpg', which is not installed" in result.stderr + result.stdout
        assert "pip install 'asyncpg'" in result.stderr + result.stdout
        assert "Traceback" not in result.stderr
    assert fingerprint(database_url) == before
