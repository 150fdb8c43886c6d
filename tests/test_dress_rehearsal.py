"""The dress rehearsal (`rehearse copy`): the downgrade run first on a copy restored from the run's backup.

Each case runs `rollbook run rollback` as an operator does (papermill, the real server, the real
archive) and checks what the operator cares about: the timings side by side, production untouched
when the rehearsal fails, the copy gone in every outcome, and the refusals before anything changes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic_projects import write_project
from pg import PgServer, database_name, psycopg_kwargs
from psycopg import sql
from sqlalchemy.engine import make_url
from test_cli import ROLLBOOK
from test_lock_estimates import REWRITING, ROWS

from rollbook.pg.database import DatabaseTarget
from rollbook.pg.scratch import SCRATCH_MARKER, SCRATCH_PREFIX
from rollbook.pg.stale_scratch import drop_stale_scratch_databases
from rollbook.project.migrations import alembic_config_for, load_project
from rollbook.records.model import RunRecord, read_record

STAGING = ("-p", "environment", "staging", "-p", "operator", "alice", "-p", "accept_data_loss", "True")
# items.code held integers; the head made it text and someone wrote a code that is not a number since.
# Undoing the head casts it back: the plan cannot count what a USING cast rejects, the copy finds it.
CAST_BACK = {
    "c1": (None, 'op.execute("CREATE TABLE items (id int PRIMARY KEY, code integer NOT NULL)")',
           'op.execute("DROP TABLE items")'),
    "c2": ("c1", 'op.execute("ALTER TABLE items ALTER COLUMN code TYPE text")',
           'op.execute("ALTER TABLE items ALTER COLUMN code TYPE integer USING code::integer")'),
}

# A head whose downgrade sleeps a minute: long enough to stop mid-rehearsal, or to run past a budget.
SLOW = {
    "s1": (None, 'op.execute("CREATE TABLE audit_trail (id int)")', 'op.execute("DROP TABLE audit_trail")'),
    "s2": ("s1", 'op.execute("CREATE TABLE audit_extra (id int)")',
           'op.execute("DROP TABLE audit_extra"); op.execute("SELECT pg_sleep(60)")'),
}


def _upgraded(root: Path, url: str, revisions: dict[str, tuple[str | None, str, str]], rows: str) -> Path:
    config = write_project(root, revisions)
    command.upgrade(alembic_config_for(load_project(config), DatabaseTarget.from_url(url)), "head")
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        for statement in rows.split("; "):
            conn.execute(statement)
    return config


def _rollbook_run(tmp_path: Path, url: str, config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [ROLLBOOK, "run", "rollback", *STAGING, "-p", "backup_dir", str(tmp_path / "backups"), *args],
        env={**os.environ, "DATABASE_URL": url, "ALEMBIC_CONFIG": str(config),
             "ROLLBOOK_ARCHIVE": str(tmp_path / "archive")},
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _finished(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    return process.returncode, stdout, stderr


def _record(tmp_path: Path) -> RunRecord:
    [filed] = [path for path in (tmp_path / "archive").glob("*.json") if path.name != "manifest.json"]
    return read_record(json.loads(filed.read_text()))


def _scratch_databases(url: str) -> list[str]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return [row[0] for row in conn.execute("SELECT datname FROM pg_database WHERE datname LIKE %s",
                                               [f"{SCRATCH_PREFIX}%"])]


def _rows(url: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return conn.execute(query).fetchall()


def test_a_rewriting_step_is_estimated_within_half_to_twice_the_rehearsal_and_the_real_run(tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, REWRITING, ROWS)

    code, stdout, stderr = _finished(_rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy",
                                                   "--execute"))

    assert code == 0, stdout + stderr
    record = _record(tmp_path)
    assert record.rehearsal is not None and record.rehearsal["status"] == "passed", record.rehearsal
    assert record.rehearsal["copy_dropped"] is True
    assert record.rehearsal["rows"]["detail"] == ("accounts: 500000 rows before, 500000 after (too many rows to "
                                                  "compare values: counts only)")
    assert record.rehearsal["schema"]["status"] == "passed"
    assert record.backup is not None and record.backup.verification == "restore" and record.backup.verified
    [timing] = record.step_timings or []
    assert timing.revision == "b2" and record.plan_steps and record.plan_steps[0].estimated_lock_seconds
    assert timing.estimated_seconds and timing.rehearsal_seconds and timing.real_seconds
    assert 0.5 <= timing.estimated_seconds / timing.rehearsal_seconds <= 2.0, timing
    assert 0.5 <= timing.estimated_seconds / timing.real_seconds <= 2.0, timing
    assert "b2: estimate" in stdout and "rehearsal" in stdout and "real" in stdout
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("a1",)]
    assert not _scratch_databases(database_url)
    password = make_url(database_url).password
    assert password and not [path for path in (tmp_path / "archive").rglob("*")
                                                   if path.is_file() and password in path.read_text()]


# Undoing the head drops a column: the step needs ACCESS EXCLUSIVE on accounts, which a reader in SHARE mode blocks.
DROP_COLUMN = {
    "d1": (None, 'op.execute("CREATE TABLE accounts (id int PRIMARY KEY, note text)")',
           'op.execute("DROP TABLE accounts")'),
    "d2": ("d1", 'op.execute("ALTER TABLE accounts ADD COLUMN extra text")',
           'op.execute("ALTER TABLE accounts DROP COLUMN extra")'),
}
HELD_AFTER_BLOCKING_SECONDS = 1.5


def _hold_accounts_until_blocking(url: str, locked: threading.Event, ended: threading.Event) -> None:
    """Hold SHARE on accounts (the backup and the plan only read it) until a session waits for it, then 1.5 s more."""
    with psycopg.connect(**psycopg_kwargs(url)) as holder, \
            psycopg.connect(**psycopg_kwargs(url), autocommit=True) as watcher:
        holder.execute("LOCK TABLE accounts IN SHARE MODE")
        locked.set()
        holder_pid = holder.info.backend_pid
        while not ended.is_set() and not watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))",
                [holder_pid]).fetchone()[0]:  # type: ignore[index]
            time.sleep(0.02)
        time.sleep(HELD_AFTER_BLOCKING_SECONDS)
        holder.rollback()


def test_a_step_blocked_by_another_session_records_its_lock_wait_in_the_real_run_and_none_on_the_copy(
        tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, DROP_COLUMN,
                       "INSERT INTO accounts SELECT i, 'n' FROM generate_series(1, 100) i")
    locked, ended = threading.Event(), threading.Event()
    holder = threading.Thread(target=_hold_accounts_until_blocking, args=(database_url, locked, ended))
    holder.start()
    try:
        assert locked.wait(10)
        code, stdout, stderr = _finished(_rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy",
                                                       "-p", "lock_timeout", "20s", "--execute"))
    finally:
        ended.set()
        holder.join()

    assert code == 0, stdout + stderr
    [timing] = _record(tmp_path).step_timings or []
    assert timing.real_lock_wait_seconds is not None and timing.real_lock_wait_seconds >= 1.0, timing
    assert timing.real_seconds is not None and timing.real_seconds >= timing.real_lock_wait_seconds
    assert timing.rehearsal_lock_wait_seconds is not None and timing.rehearsal_lock_wait_seconds < 0.2, timing
    assert "(lock waits none seen), real" in stdout and "(lock waits 1." in stdout
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("d1",)]


def test_a_dry_run_says_what_the_copy_would_cost_and_changes_nothing(tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, CAST_BACK, "INSERT INTO items VALUES (1, '1')")

    code, stdout, stderr = _finished(_rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy"))

    assert code == 0, stdout + stderr
    rehearsal = _record(tmp_path).rehearsal
    assert rehearsal is not None and rehearsal["status"] == "not_run"
    assert rehearsal["summary"] == "dry run: no copy is made. An executed run: the copy fits rehearsal_budget"
    assert rehearsal["cost"]["may_create_databases"] is True and rehearsal["cost"]["database_bytes"] > 0
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("c2",)]
    assert not _scratch_databases(database_url) and not (tmp_path / "backups").exists()


def test_a_rehearsal_that_fails_on_the_copy_stops_the_run_with_production_untouched(tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, CAST_BACK,
                       "INSERT INTO items SELECT i, i::text FROM generate_series(1, 1000) i; "
                       "INSERT INTO items VALUES (1001, 'A-17')")

    code, stdout, stderr = _finished(_rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy",
                                                   "--execute"))

    assert code == 1, stdout + stderr
    record = _record(tmp_path)
    assert record.failed_step == "rehearsal", record.steps
    assert "downgrade" not in [step.step for step in record.steps]
    assert record.rehearsal is not None and record.rehearsal["status"] == "failed"
    assert record.rehearsal["diagnosis"] is not None
    assert "A-17" in json.dumps(record.rehearsal) or "invalid input syntax" in json.dumps(record.rehearsal)
    assert "The real downgrade was not started" in (record.message or "")
    # Production: still at the head, the column still text, every row as it was.
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("c2",)]
    assert _rows(database_url, "SELECT data_type FROM information_schema.columns WHERE table_name = 'items' "
                               "AND column_name = 'code'") == [("text",)]
    assert _rows(database_url, "SELECT count(*), max(code) FILTER (WHERE id = 1001) FROM items") == [(1001, "A-17")]
    assert not _scratch_databases(database_url)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_the_copy_is_dropped_when_the_run_is_stopped_during_the_rehearsal(tmp_path, database_url, how):
    config = _upgraded(tmp_path / "project", database_url, SLOW, "INSERT INTO audit_trail VALUES (1)")
    process = _rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy", "--execute")
    deadline = time.monotonic() + 120
    # The rehearsal's pg_sleep runs in the copy, never in production.
    while not _rows(database_url, "SELECT datname FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' "
                                  "AND state = 'active'"):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    assert _rows(database_url, "SELECT datname FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%'")[0][0] \
        .startswith(SCRATCH_PREFIX)

    os.kill(process.pid, getattr(signal, how))
    code, stdout, _ = _finished(process)

    assert code == 1 and stdout.startswith("interrupted in step rehearsal"), stdout
    assert not _scratch_databases(database_url)
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("s2",)]
    assert _rows(database_url, "SELECT to_regclass('audit_extra') IS NOT NULL") == [(True,)]


def test_production_requiring_a_rehearsal_refuses_a_run_without_one(tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, CAST_BACK, "INSERT INTO items VALUES (1, '1')")
    (config.parent / "rollbook.toml").write_text("[policy.staging]\nrequire_rehearsal = true\n")

    code, stdout, stderr = _finished(_rollbook_run(tmp_path, database_url, config, "--execute"))

    assert code == 4, stdout + stderr
    assert "Rule 'rehearsal' fails" in stdout + stderr and "-p rehearse copy" in stdout + stderr
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("c2",)]
    assert not list((tmp_path / "backups").glob("*.dump")) if (tmp_path / "backups").exists() else True


def test_rehearse_copy_without_createdb_is_refused_before_the_backup(tmp_path, pg_server: PgServer, database_url):
    config = _upgraded(tmp_path / "project", database_url, CAST_BACK, "INSERT INTO items VALUES (1, '1')")
    with psycopg.connect(**psycopg_kwargs(database_url), autocommit=True) as conn:
        # The application's role, which may read and change its tables but not create databases.
        conn.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA public TO {}").format(
            sql.Identifier(pg_server.app_user)))
    app_url = pg_server.url(database_name(database_url), user=pg_server.app_user)

    code, stdout, stderr = _finished(_rollbook_run(tmp_path, app_url, config, "-p", "rehearse", "copy", "--execute"))

    assert code == 2, stdout + stderr
    assert f"the role {pg_server.app_user} may not create databases" in stdout + stderr
    assert "CREATEDB" in stdout + stderr and "-p rehearse none" in stdout + stderr
    assert "Traceback" not in stdout + stderr and pg_server.app_password not in stdout + stderr
    assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").iterdir())
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("c2",)]


def test_a_rehearsal_running_past_its_budget_is_stopped_and_the_real_rollback_not_started(tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, SLOW, "INSERT INTO audit_trail VALUES (1)")

    code, stdout, stderr = _finished(_rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy",
                                                   "-p", "rehearsal_budget", "8s", "--execute"))

    assert code == 1, stdout + stderr
    record = _record(tmp_path)
    assert record.failed_step == "rehearsal"
    assert record.rehearsal is not None and record.rehearsal["status"] == "exceeded_budget", record.rehearsal
    assert "when rehearsal_budget (8.0 s) ran out" in (record.message or "")
    assert "downgrade" not in [step.step for step in record.steps]
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("s2",)]
    assert _rows(database_url, "SELECT to_regclass('audit_extra') IS NOT NULL") == [(True,)]
    assert not _scratch_databases(database_url)


def test_a_copy_too_big_for_the_budget_is_not_made_and_the_estimate_stands_alone(tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, CAST_BACK,
                       "INSERT INTO items SELECT i, i::text FROM generate_series(1, 20000) i")

    code, stdout, stderr = _finished(_rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy",
                                                   "-p", "rehearsal_budget", "1ms", "--execute"))

    assert code == 0, stdout + stderr
    record = _record(tmp_path)
    assert record.rehearsal is not None and record.rehearsal["status"] == "too_big", record.rehearsal
    assert "would take longer to restore than rehearsal_budget" in record.rehearsal["summary"]
    assert "nor would a tables-only copy" in record.rehearsal["summary"]
    assert "the plan's estimates stand alone" in record.rehearsal["summary"]
    [timing] = record.step_timings or []
    assert timing.estimated_seconds is not None and timing.rehearsal_seconds is None and timing.real_seconds
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("c1",)]
    assert not _scratch_databases(database_url)


# events is big and the downgrade never touches it; items is small and cast back; item_notes points at items,
# items at kinds (whose rows its foreign key is checked against when restored).
TABLES_ONLY = {
    "t1": (None, 'op.execute("CREATE TABLE events (id bigint, payload text); '
                 'CREATE TABLE kinds (id int PRIMARY KEY); '
                 'CREATE TABLE items (id int PRIMARY KEY, code integer NOT NULL, kind int REFERENCES kinds); '
                 'CREATE TABLE item_notes (id int PRIMARY KEY, item_id int REFERENCES items)")',
           'op.execute("DROP TABLE item_notes, items, kinds, events")'),
    "t2": ("t1", 'op.execute("ALTER TABLE items ALTER COLUMN code TYPE text")',
           'op.execute("ALTER TABLE items ALTER COLUMN code TYPE integer USING code::integer")'),
}
# About 420 MB of events: the whole copy's estimated restore (about 40 MB/s here) is about 10 s.
BIG_EVENTS = "INSERT INTO events SELECT i, repeat('x', 400) FROM generate_series(1, 1000000) i"


def _most_of_the_whole_copy(tmp_path: Path, url: str, config: Path) -> str:
    """A rehearsal_budget of 80 % of the whole copy's estimated restore, read from a dry run's record."""
    dry = tmp_path / "dry"
    dry.mkdir()
    code, stdout, stderr = _finished(_rollbook_run(dry, url, config, "-p", "rehearse", "copy",
                                                   "-p", "rehearsal_budget", "1s"))
    assert code == 0, stdout + stderr
    rehearsal = _record(dry).rehearsal
    assert rehearsal is not None and "a tables-only copy would" in rehearsal["summary"], rehearsal
    whole = rehearsal["cost"]["estimated_restore_seconds"]
    # The tables-only copy must have the time to restore the schema and run the downgrade and its checks.
    assert whole * 0.8 >= 6, f"the whole copy is estimated at only {whole:.1f} s: make events bigger"
    return f"{int(whole * 0.8)}s"


def test_a_copy_too_big_for_the_budget_is_rehearsed_on_the_tables_the_downgrade_needs(tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, TABLES_ONLY,
                       f"{BIG_EVENTS}; INSERT INTO kinds VALUES (1); "
                       "INSERT INTO items SELECT i, i::text, 1 FROM generate_series(1, 1000) i; "
                       "INSERT INTO item_notes VALUES (1, 1)")
    budget = _most_of_the_whole_copy(tmp_path, database_url, config)

    code, stdout, stderr = _finished(_rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy",
                                                   "-p", "rehearsal_budget", budget, "--execute"))

    assert code == 0, stdout + stderr
    rehearsal = _record(tmp_path).rehearsal
    assert rehearsal is not None and rehearsal["status"] == "passed", rehearsal
    assert rehearsal["copy"] == "tables-only" and rehearsal["copy_dropped"] is True
    assert rehearsal["tables_only"]["tables"] == ["public.alembic_version", "public.item_notes", "public.items",
                                                  "public.kinds"]
    assert rehearsal["tables_only"]["tables_left_empty"] == 1
    assert "On a tables-only copy" in rehearsal["summary"] and "restored empty" in rehearsal["summary"]
    assert "it cannot show what the downgrade does to the rows of the tables restored empty" in rehearsal["summary"]
    # Only the restored tables' rows are compared with the backup's counts: events was restored empty.
    assert {row["table"] for row in rehearsal["restore"]["table_rows_compared"]} == {
        "public.alembic_version", "public.item_notes", "public.items", "public.kinds"}
    assert rehearsal["rows"]["status"] != "failed" and rehearsal["schema"]["status"] == "passed", rehearsal
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("t1",)]
    assert _rows(database_url, "SELECT count(*) FROM events") == [(1000000,)]
    assert not _scratch_databases(database_url)


def test_a_downgrade_failing_on_the_tables_only_copy_stops_the_run_with_production_untouched(tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, TABLES_ONLY,
                       f"{BIG_EVENTS}; INSERT INTO kinds VALUES (1); "
                       "INSERT INTO items SELECT i, i::text, 1 FROM generate_series(1, 1000) i; "
                       "INSERT INTO items VALUES (1001, 'A-17', 1)")
    budget = _most_of_the_whole_copy(tmp_path, database_url, config)

    code, stdout, stderr = _finished(_rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy",
                                                   "-p", "rehearsal_budget", budget, "--execute"))

    assert code == 1, stdout + stderr
    record = _record(tmp_path)
    assert record.failed_step == "rehearsal" and "downgrade" not in [step.step for step in record.steps]
    assert record.rehearsal is not None and record.rehearsal["status"] == "failed", record.rehearsal
    assert record.rehearsal["copy"] == "tables-only" and record.rehearsal["copy_dropped"] is True
    assert "The real downgrade was not started" in (record.message or "")
    assert "On a tables-only copy" in (record.message or "")
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("t2",)]
    assert _rows(database_url, "SELECT count(*), max(code) FILTER (WHERE id = 1001) FROM items") == [(1001, "A-17")]
    assert not _scratch_databases(database_url)


# Undoing the head calls a function: which tables it changes, the plan cannot tell.
THROUGH_A_FUNCTION = {
    "u1": (None, 'op.execute("CREATE TABLE items (id int)")', 'op.execute("DROP TABLE items")'),
    "u2": ("u1", 'op.execute("CREATE FUNCTION tidy() RETURNS void LANGUAGE sql AS $$DELETE FROM items$$")',
           'op.execute("SELECT tidy()"); op.execute("DROP FUNCTION tidy()")'),
}


def test_no_tables_only_copy_is_made_when_the_plan_cannot_tell_which_tables_change(tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, THROUGH_A_FUNCTION, "INSERT INTO items VALUES (1)")

    code, stdout, stderr = _finished(_rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy",
                                                   "-p", "rehearsal_budget", "1ms", "--execute"))

    assert code == 0, stdout + stderr
    rehearsal = _record(tmp_path).rehearsal
    assert rehearsal is not None and rehearsal["status"] == "too_big", rehearsal
    assert "no tables-only copy either: the plan cannot tell which tables are changed by u2" in rehearsal["summary"]
    assert rehearsal["copy_dropped"] is None and not _scratch_databases(database_url)


def _rehearsing(process: subprocess.Popen[str], url: str, besides: tuple[str, ...] = ()) -> str:
    """The copy `process` is rehearsing in (its downgrade's pg_sleep running there), once it is."""
    deadline = time.monotonic() + 120
    while True:
        copies = [row[0] for row in _rows(url, "SELECT datname FROM pg_stat_activity WHERE query LIKE "
                                               "'SELECT pg_sleep%%' AND state = 'active'") if row[0] not in besides]
        if copies:
            return copies[0]
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)


def test_the_copy_of_a_sigkilled_run_is_dropped_by_the_next_run_and_a_live_runs_copy_never(tmp_path, database_url):
    config = _upgraded(tmp_path / "project", database_url, SLOW, "INSERT INTO audit_trail VALUES (1)")
    killed = _rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy", "--execute")
    stale = _rehearsing(killed, database_url)
    # The kernel that made the copy (its comment names it) killed outright: nothing is left to drop the copy.
    [(comment,)] = _rows(database_url, f"SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                                       f"WHERE datname = '{stale}'")
    os.kill(json.loads(comment.removeprefix(SCRATCH_MARKER))["pid"], signal.SIGKILL)
    _finished(killed)
    assert stale in _scratch_databases(database_url)
    # The server notices a dead client only when it next writes to it (after the 60 s sleep): end it now.
    _rows(database_url, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{stale}'")

    (tmp_path / "archive").rename(tmp_path / "archive-killed")
    live = _rollbook_run(tmp_path, database_url, config, "-p", "rehearse", "copy", "--execute")
    copy = _rehearsing(live, database_url, besides=(stale,))

    # The next run dropped the stale copy before making its own; a sweep now leaves the live run's copy alone.
    assert _scratch_databases(database_url) == [copy]
    sweep = drop_stale_scratch_databases(DatabaseTarget.from_url(database_url))
    assert not sweep.dropped and not sweep.kept and _scratch_databases(database_url) == [copy]

    os.kill(live.pid, signal.SIGTERM)
    code, stdout, _ = _finished(live)
    assert code == 1 and f"dropped stale scratch database {stale} (pid " in stdout, stdout
    record = _record(tmp_path)
    assert record.stale_scratch is not None and [s["name"] for s in record.stale_scratch["dropped"]] == [stale]
    assert not _scratch_databases(database_url)
