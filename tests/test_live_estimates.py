"""Live checks on big tables: the statistics' estimate before the exact count, a count stopped by a timeout or
a lock leaves the estimate (never a zero, never safe), and planning never queues behind an ACCESS EXCLUSIVE lock."""

from __future__ import annotations

import json
import re
import time

import psycopg
from pg import fingerprint, psycopg_kwargs
from runbook_runs import MARKDOWN_ESCAPE, demo_at
from test_cli import run

from rollbook.demo.project import sample_data
from rollbook.demo.server import DEMO_CONFIG
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.data_loss import PROGRESS_BYTES, CountProgress, count_affected_rows
from rollbook.planning.operations import LiveCheck, TableName
from rollbook.planning.plan import plan_downgrade
from rollbook.project.migrations import MigrationProject

BIG = TableName(None, "big_accounts")
# Every 4th legacy_code is set; rows of about 140 bytes, so that the heap passes PROGRESS_BYTES.
BIG_ROWS, LEGACY_EVERY = 600_000, 4


def analyse(url: str) -> None:
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        conn.execute("ANALYZE")


def load_big_table(url: str) -> None:
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE big_accounts (id bigint, filler text, legacy_code text)")
        conn.execute(f"INSERT INTO big_accounts SELECT i, repeat('x', 100), CASE WHEN i %% {LEGACY_EVERY} = 0 "
                     "THEN 'L-' || i END FROM generate_series(1, %s) AS i", [BIG_ROWS])
        conn.execute("ANALYZE big_accounts")


def test_the_plan_shows_the_statistics_estimate_beside_the_exact_count(demo_url, demo_project: MigrationProject):
    analyse(demo_url)
    plan = plan_downgrade(DatabaseTarget.from_url(demo_url), demo_project, "0607bc5b8533")

    drop = next(op for step in plan.steps for op in step.operations if op.op == "drop_table")
    assert drop.rows_affected == sample_data.USER_PREFERENCE_ROWS
    assert drop.count_basis == "exact"
    assert drop.row_estimate is not None and drop.row_estimate.rows == sample_data.USER_PREFERENCE_ROWS
    assert drop.row_estimate.basis.startswith("pg_class.reltuples, ANALYZE of ")
    assert (f"estimate before counting: about {sample_data.USER_PREFERENCE_ROWS} (pg_class.reltuples, ANALYZE of "
            in plan.to_text())
    operation = next(o for s in plan.to_dict()["steps"] for o in s["operations"] if o["op"] == "drop_table")
    assert operation["rows_affected"] == operation["rows_estimated"] == sample_data.USER_PREFERENCE_ROWS
    assert operation["count_basis"] == "exact"
    assert operation["row_estimate"]["analyzed_at"] is not None
    # Small tables: the notebook's table and the affected tables keep to the exact count.
    assert "statistics said" not in plan.to_text()
    assert "estimate before counting" not in plan._repr_markdown_()


def test_a_never_analysed_table_says_so_instead_of_guessing(demo_url, demo_project: MigrationProject):
    with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as conn:
        analysed = conn.execute("SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
                                "WHERE relname = 'user_preferences'").fetchone()
    assert analysed == (None, None)  # the demo's tables are too small for autovacuum to have analysed them
    plan = plan_downgrade(DatabaseTarget.from_url(demo_url), demo_project, "0607bc5b8533")

    drop = next(op for step in plan.steps for op in step.operations if op.op == "drop_table")
    assert drop.rows_affected == sample_data.USER_PREFERENCE_ROWS
    assert drop.row_estimate is not None and drop.row_estimate.rows is None
    assert drop.row_estimate.basis == ("no estimate: user_preferences has never been analysed (ANALYZE "
                                       "user_preferences gives the planner statistics)")


def test_a_count_stopped_by_statement_timeout_keeps_the_estimate_and_never_says_zero(demo_url):
    load_big_table(demo_url)
    legacy = LiveCheck("non_null_values", BIG, ("legacy_code",))
    everything = LiveCheck("all_rows", BIG)
    shown: list[CountProgress] = []
    with connect(DatabaseTarget.from_url(demo_url)) as conn:
        counted = count_affected_rows(conn, [legacy, everything], progress=shown.append)
        stopped = count_affected_rows(conn, [legacy, everything], statement_timeout_ms=1, progress=shown.append)

    assert counted.checks[legacy].rows == BIG_ROWS // LEGACY_EVERY
    assert counted.checks[everything].rows == BIG_ROWS
    assert stopped.checks[legacy].rows is None and stopped.checks[everything].rows is None
    assert "took longer than statement_timeout (1 ms): not counted" in (stopped.checks[legacy].note or "")
    estimate = stopped.checks[legacy].estimate
    assert estimate is not None and estimate.rows is not None
    # ANALYZE samples 30,000 rows: the estimate is close, not exact, and certainly not zero.
    assert abs(estimate.rows - BIG_ROWS // LEGACY_EVERY) < BIG_ROWS // LEGACY_EVERY * 0.1
    assert stopped.tables[BIG].rows is None and stopped.tables[BIG].estimate is not None
    # A big table's count is reported as it starts and ends, its estimate first.
    assert [(p.table, p.seconds is None, p.counted) for p in shown] == [
        (BIG, True, False), (BIG, False, True), (BIG, True, False), (BIG, False, False)]
    assert all(p.heap_bytes >= PROGRESS_BYTES and p.estimate.rows for p in shown)


def test_a_locked_table_does_not_hang_the_plan_and_keeps_it_as_risky_as_the_estimate(
        demo_url, demo_project: MigrationProject):
    demo_at(demo_url, "0607bc5b8531")  # one step left: drop users.preferences, LOW, loses the values counted
    analyse(demo_url)
    target = DatabaseTarget.from_url(demo_url)
    assert plan_downgrade(target, demo_project, "-1").verdict.code == "loses_data"
    with psycopg.connect(**target.connect_kwargs()) as migration:
        migration.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        pid = migration.info.backend_pid
        before = time.monotonic()
        plan = plan_downgrade(target, demo_project, "-1", lock_timeout_ms=300)
        seconds = time.monotonic() - before
        queued = migration.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()

    assert seconds < 10
    assert queued == (0,)  # nothing of the plan's is left waiting for the lock, blocking those queued after it
    drop = next(op for op in plan.steps[0].operations if op.op == "drop_column")
    assert drop.rows_affected is None and drop.count_basis == "estimate_only"
    assert drop.row_estimate is not None and drop.row_estimate.rows == sample_data.PREFERENCES
    assert f"users is locked by another session, pid {pid}, and the count gave up" in (drop.count_note or "")
    assert drop.count_text() == f"about {sample_data.PREFERENCES} values lost (estimate only: not counted exactly)"
    assert plan.verdict.code == "review_by_hand"  # never safe, and never less than the estimate says
    assert any("about 5 values lost (estimate only" in reason for reason in plan.verdict.reasons)
    table = plan.to_dict()["tables"][0]
    assert table["rows"] is None and table["estimate"]["rows"] == sample_data.USERS


def test_planning_gives_up_on_a_locked_version_table_with_a_message_not_a_hang(demo_url):
    before = fingerprint(demo_url)
    with psycopg.connect(**psycopg_kwargs(demo_url)) as migration:
        migration.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        pid = migration.info.backend_pid
        result = run("plan", "-1", env={"DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(DEMO_CONFIG)})

    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert f"Planning gave up after waiting 2000 ms for a lock (pid {pid} holds ACCESS EXCLUSIVE on alembic_version)" \
        in result.stderr
    assert "plan again" in result.stderr
    assert result.stdout == ""
    assert fingerprint(demo_url) == before


def test_plan_json_carries_estimate_exact_and_basis(demo_url):
    analyse(demo_url)
    result = run("plan", "-1", "--json", env={"DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(DEMO_CONFIG)})

    assert result.returncode == 0, result.stderr
    update = json.loads(result.stdout)["steps"][0]["operations"][0]
    assert (update["rows_affected"], update["count_basis"]) == (9, "exact")
    # A migration's own condition is not something the column statistics describe: no number is made up.
    assert update["rows_estimated"] is None
    assert update["row_estimate"]["basis"].startswith("no estimate: the statistics do not describe")


def test_an_uncounted_narrowing_fails_by_its_estimate_so_the_plan_says_do_not_downgrade(
        demo_url, demo_project: MigrationProject):
    demo_at(demo_url, "0607bc5b8533")  # one step left: users.email back to varchar(100), with long emails in it
    analyse(demo_url)
    target = DatabaseTarget.from_url(demo_url)
    counted = plan_downgrade(target, demo_project, "-1")
    narrowing = next(op for op in counted.steps[0].operations if op.op == "alter_column_type")
    assert narrowing.rows_affected == sample_data.LONG_EMAILS
    assert narrowing.row_estimate is not None and narrowing.row_estimate.rows == sample_data.LONG_EMAILS
    assert narrowing.row_estimate.basis.startswith("pg_stats most common values and histogram bounds of email")
    with psycopg.connect(**target.connect_kwargs()) as migration:
        migration.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        plan = plan_downgrade(target, demo_project, "-1", lock_timeout_ms=300)

    narrowing = next(op for op in plan.steps[0].operations if op.op == "alter_column_type")
    assert narrowing.rows_affected is None and narrowing.fails
    assert narrowing.count_text() == (f"about {sample_data.LONG_EMAILS} rows that would make it fail "
                                      "(estimate only: not counted exactly)")
    assert plan.verdict.code == "do_not_downgrade"


def test_plan_shows_a_big_tables_estimate_and_count_on_stderr_and_a_stopped_count_as_estimate_only(demo_url):
    rows = load_big_user_preferences(demo_url)
    env = {"DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(DEMO_CONFIG)}

    counted = run("plan", "-1", env=env)
    assert counted.returncode == 0, counted.stderr
    assert re.search(r"Counting user_preferences \(\d+ MB\) exactly; the statistics say about \d+ rows "
                     r"\(pg_class.reltuples, ANALYZE of [0-9-]+ [0-9:]+ UTC\) \.\.\.\n"
                     r"  user_preferences: counted after \d+\.\d s\n", counted.stderr), counted.stderr
    assert f"[{rows} rows lost]" in counted.stdout

    stopped = run("plan", "-1", "--statement-timeout", "1ms", "--exit-code", env=env)
    assert stopped.returncode == 6, stopped.stderr  # review by hand: never safe, never a zero
    assert "user_preferences: not counted (the plan keeps the estimate) after" in stopped.stderr
    assert re.search(r"\[about \d+ rows lost \(estimate only: not counted exactly\)\]", stopped.stdout), stopped.stdout
    assert "took longer than statement_timeout (1 ms)" in stopped.stdout
    assert "[0 rows lost]" not in stopped.stdout


def load_big_user_preferences(url: str) -> int:
    """The demo one step above 0607bc5b8533, its user_preferences past PROGRESS_BYTES and analysed: its row count."""
    demo_at(url, "0607bc5b8534")  # one step left: drop user_preferences, and all its rows
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no foreign-key check per row: a quicker load
        conn.execute("INSERT INTO user_preferences (id, user_id, key, value) SELECT 100 + i, 1, 'k' || i, "
                     "repeat('v', 150) FROM generate_series(1, 450000) AS i")
        conn.execute("ANALYZE user_preferences")
        return int(conn.execute("SELECT count(*) FROM user_preferences").fetchone()[0])


def test_a_big_tables_exact_count_has_the_statistics_estimate_beside_it_in_text_and_notebook(
        demo_url, demo_project: MigrationProject):
    rows = load_big_user_preferences(demo_url)
    plan = plan_downgrade(DatabaseTarget.from_url(demo_url), demo_project, "-1")

    [table] = plan.tables
    assert table.big and table.rows == rows and table.estimate is not None and table.estimate.rows is not None
    estimated = table.estimate.rows
    analysed = r"pg_class.reltuples, ANALYZE of [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2} UTC"
    said = rf"{rows:,} rows \(statistics said about {estimated:,}: {analysed}\)"
    assert re.search(rf"  user_preferences: {said}, [0-9.]+ MB", plan.to_text()), plan.to_text()
    markdown = MARKDOWN_ESCAPE.sub(r"\1", plan._repr_markdown_())  # as a reader sees it
    assert re.search(rf"`user_preferences` {said} \([0-9.]+ MB\)", markdown), markdown
    assert re.search(rf"\*\*\[{rows} rows lost\]\*\* \(estimate before counting: about {estimated} \({analysed}\)\)",
                     markdown), markdown
    assert plan.to_dict()["tables"][0]["heap_bytes"] >= PROGRESS_BYTES
