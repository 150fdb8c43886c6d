"""Lock waits measured per downgrade step on the real server: a second session holds a lock the step needs."""

from __future__ import annotations

import threading
import time

import psycopg
from pg import psycopg_kwargs

from rollbook.execution.downgrade import execute_downgrade
from rollbook.execution.lock_wait_sampler import LockWaitSampler, sampling_lock_waits
from rollbook.execution.step_timings import step_times
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.plan import plan_downgrade
from rollbook.project.outside_event_loop import BackendPids
from rollbook.records.model import RunRecord
from rollbook.records.run_summary import step_times_lines

HELD_SECONDS = 1.5


def _hold_users_lock(url: str, locked: threading.Event) -> None:
    """Block writes to users (SHARE conflicts with the UPDATE of 0607bc5b8536's downgrade) for HELD_SECONDS."""
    with psycopg.connect(**psycopg_kwargs(url)) as holder:
        holder.execute("LOCK TABLE users IN SHARE MODE")
        locked.set()
        time.sleep(HELD_SECONDS)
        holder.rollback()


def test_a_step_blocked_by_another_session_shows_its_lock_wait_and_an_uncontended_step_none(demo_url, demo_project):
    target = DatabaseTarget.from_url(demo_url)
    plan = plan_downgrade(target, demo_project, "0607bc5b8534")
    locked = threading.Event()
    holder = threading.Thread(target=_hold_users_lock, args=(demo_url, locked))
    holder.start()
    try:
        assert locked.wait(10)
        result = execute_downgrade(target, demo_project, plan, lock_timeout_ms=10_000, statement_timeout_ms=30_000)
    finally:
        holder.join()

    assert result.succeeded
    blocked, free = result.steps
    assert blocked.revision == "0607bc5b8536" and blocked.lock_waits is not None
    assert blocked.lock_waits.seconds is not None and 1.0 <= blocked.lock_waits.seconds <= HELD_SECONDS + 0.5
    assert free.lock_waits is not None and free.lock_waits.seconds is not None and free.lock_waits.seconds < 0.2
    # What the run's record carries, and the lines the terminal shows.
    record = RunRecord(run_id="r1", runbook="rollback",
                       step_timings=[t.model_dump() for t in step_times(plan, real=result)])
    first, second = record.step_timings or []
    assert first.real_lock_wait_seconds is not None and first.real_lock_wait_seconds >= 1.0
    assert first.real_lock_waits_not_measured is None
    assert second.real_lock_wait_seconds is not None and second.real_lock_wait_seconds < 0.2
    assert first.real_seconds is not None and first.real_seconds >= first.real_lock_wait_seconds
    assert "real" in step_times_lines(record.step_timings or [])[0]
    assert "(lock waits 1." in step_times_lines(record.step_timings or [])[0]
    assert "lock waits" in result.to_text()


def test_a_sampler_whose_connection_dies_says_why_and_the_figure_is_not_claimed(database_url):
    target = DatabaseTarget.from_url(database_url)
    with psycopg.connect(**psycopg_kwargs(database_url), autocommit=True) as admin:
        with sampling_lock_waits(target, BackendPids()) as sampler:
            sampler.begin_step()
            pid = _sampler_pid(admin)
            admin.execute("SELECT pg_terminate_backend(%s)", [pid])
            waits = _once_failed(sampler)

    assert waits.seconds is None
    assert waits.not_measured is not None and waits.not_measured.startswith("the sampler failed (")
    assert waits.described().startswith("lock waits not measured: the sampler failed")
    password = target.url.password
    assert not password or password not in waits.not_measured


def test_a_sampler_that_dies_mid_downgrade_leaves_the_downgrade_done_and_says_lock_waits_were_not_measured(
        demo_url, demo_project):
    target = DatabaseTarget.from_url(demo_url)
    plan = plan_downgrade(target, demo_project, "0607bc5b8534")
    locked = threading.Event()
    holder = threading.Thread(target=_hold_users_lock, args=(demo_url, locked))
    holder.start()
    try:
        assert locked.wait(10)
        with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as admin:
            # The first step is blocked by the holder meanwhile: the sampler is ended while it waits.
            killer = threading.Thread(target=lambda: admin.execute("SELECT pg_terminate_backend(%s)",
                                                                   [_sampler_pid(admin)]))
            killer.start()
            result = execute_downgrade(target, demo_project, plan, lock_timeout_ms=10_000,
                                       statement_timeout_ms=30_000)
            killer.join()
    finally:
        holder.join()

    assert result.succeeded
    for step in result.steps:
        assert step.lock_waits is not None and step.lock_waits.seconds is None
        assert (step.lock_waits.not_measured or "").startswith("the sampler failed (")
    assert "lock waits not measured: the sampler failed" in result.to_text()


def _sampler_pid(admin: psycopg.Connection) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        row = admin.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND pid <> pg_backend_pid() AND application_name = 'rollbook lock-wait sampler'").fetchone()
        if row:
            return int(row[0])
        time.sleep(0.05)
    raise AssertionError("the sampler never connected")


def _once_failed(sampler: LockWaitSampler):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        waits = sampler.step_lock_waits()
        if waits.seconds is None:
            return waits
        time.sleep(0.05)
    return sampler.step_lock_waits()
