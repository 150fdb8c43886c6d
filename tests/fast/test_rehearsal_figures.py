"""The figures a dress rehearsal shows, without a database: the timings side by side and the copy's refusals."""

from __future__ import annotations

from rollbook.records.model import RunRecord, StepTiming
from rollbook.records.run_summary import step_times_lines
from rollbook.recovery.copy_cost import DISK_FACTOR, CopyCost
from rollbook.website.record_page import step_timings_section


def _cost(**changes: object) -> CopyCost:
    values: dict[str, object] = {"role": "app", "may_create_databases": True, "database_bytes": 2_000_000_000,
                                 "restore_seconds": 40.0, "restore_basis": "estimate", "free_bytes": 50_000_000_000,
                                 "disk_basis": "the file system of the server's data directory /srv/pg"}
    return CopyCost(**{**values, **changes})  # type: ignore[arg-type]


def test_each_step_reads_estimate_rehearsal_and_real_side_by_side() -> None:
    times = [StepTiming(revision="b2", estimated_seconds=1.5, rehearsal_seconds=1.7, real_seconds=1.9),
             StepTiming(revision="a1")]

    assert step_times_lines(times) == ["b2: estimate 1.5 s, rehearsal 1.7 s, real 1.9 s",
                                       "a1: estimate not estimated, rehearsal none, real not run"]


def test_each_measured_step_says_how_long_it_waited_for_locks_or_why_that_is_not_known() -> None:
    times = [StepTiming(revision="b2", estimated_seconds=0.01, rehearsal_seconds=0.02, rehearsal_lock_wait_seconds=0.0,
                        real_seconds=1.6, real_lock_wait_seconds=1.5),
             StepTiming(revision="a1", estimated_seconds=0.01, real_seconds=0.02,
                        real_lock_waits_not_measured="the sampler failed (terminated)")]

    assert step_times_lines(times) == [
        "b2: estimate 10 ms, rehearsal 20 ms (lock waits none seen), real 1.6 s (lock waits 1.5 s)",
        "a1: estimate 10 ms, rehearsal none, real 20 ms (lock waits not measured: the sampler failed "
        "(terminated))"]


def test_the_record_page_has_an_estimate_vs_rehearsal_vs_real_table() -> None:
    record = RunRecord(run_id="r1", runbook="rollback",
                       step_timings=[StepTiming(revision="b2", estimated_seconds=2.0, rehearsal_seconds=1.8,
                                                rehearsal_lock_wait_seconds=0.0, real_seconds=3.0,
                                                real_lock_wait_seconds=1.2)],
                       rehearsal={"status": "passed", "summary": "the downgrade ran on a copy"})

    page = step_timings_section(record)

    assert page.startswith("## Estimate vs rehearsal vs real")
    assert "Dress rehearsal on a restored copy: **passed**" in page
    assert "| `b2` | 2.0 s | 1.8 s | none seen | 3.0 s | 1.2 s | 1.50 |" in page
    assert step_timings_section(RunRecord(run_id="r2", runbook="rollback")) == ""


def test_a_copy_is_refused_without_createdb_or_disk_and_allowed_when_unmeasured() -> None:
    assert "may not create databases: grant it CREATEDB (ALTER ROLE app CREATEDB)" in (
        _cost(may_create_databases=False).refusal() or "")
    short = _cost(free_bytes=2_500_000_000).refusal() or ""
    assert f"needs about {2_000_000_000 * DISK_FACTOR / 1e6:.1f} MB free" in short and "-p rehearse none" in short
    assert _cost(free_bytes=None, disk_basis="not measured").refusal() is None
    assert _cost().refusal() is None


def test_a_copy_too_slow_to_restore_does_not_fit_the_budget_and_an_unestimated_one_is_tried() -> None:
    assert not _cost(restore_seconds=900.0).fits_in(600.0)
    assert _cost(restore_seconds=30.0).fits_in(600.0)
    assert _cost(restore_seconds=None).fits_in(600.0)
