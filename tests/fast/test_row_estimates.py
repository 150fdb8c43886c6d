"""Estimates from the statistics, worked out from what pg_class and pg_stats hold (no database needed)."""

from __future__ import annotations

from datetime import UTC, datetime

from rollbook.planning.operations import LiveCheck, TableName
from rollbook.planning.row_estimates import TableStatistics, estimate_check

USERS = TableName(None, "users")
ANALYSED = datetime(2026, 12, 1, 21, 5, tzinfo=UTC)


def statistics(**columns: tuple[float, list[str] | None, list[float] | None, list[str] | None]) -> TableStatistics:
    return TableStatistics(USERS, 1000, 8192 * 10, ANALYSED, columns)


def test_nulls_and_values_come_from_the_null_fraction_with_the_time_of_the_analyze():
    stats = statistics(nickname=(0.1, None, None, None))

    nulls = estimate_check(stats, LiveCheck("nulls", USERS, ("nickname",)))
    values = estimate_check(stats, LiveCheck("non_null_values", USERS, ("nickname",)))

    assert (nulls.rows, values.rows) == (100, 900)
    assert nulls.basis == "pg_stats.null_frac of nickname, ANALYZE of 2026-12-01 21:05 UTC"
    assert nulls.analyzed_at == ANALYSED


def test_values_too_long_for_a_narrower_varchar_count_common_values_by_frequency_and_the_rest_by_the_histogram():
    # 20% NULL, 'x' * 20 in 30% of the rows, the other 50% spread over a histogram where 1 bound in 4 is long.
    bounds = ["a", "b" * 50, "c", "d"]
    stats = statistics(email=(0.2, ["x" * 20], [0.3], bounds))

    estimate = estimate_check(stats, LiveCheck("not_fitting", USERS, ("email",), "varchar", (10,)))

    assert estimate.rows == round(1000 * (0.3 + 0.5 * 0.25))


def test_integer_narrowing_counts_values_out_of_range_and_values_that_are_no_number():
    stats = statistics(total=(0.0, None, None, ["1", "40000", "-5", "7"]))

    estimate = estimate_check(stats, LiveCheck("not_fitting", USERS, ("total",), "smallint"))

    assert estimate.rows == 250


def test_never_analysed_gives_no_number_and_says_so():
    stats = TableStatistics(USERS, None, 0, None, {})

    estimate = estimate_check(stats, LiveCheck("all_rows", USERS))

    assert estimate.rows is None
    assert estimate.basis == "no estimate: users has never been analysed (ANALYZE users gives the planner statistics)"


def test_a_migrations_own_condition_gets_no_made_up_number():
    estimate = estimate_check(statistics(), LiveCheck("matching_rows", USERS, predicate="status = 'x'"))

    assert estimate.rows is None
    assert estimate.basis == "no estimate: the statistics do not describe a matching rows check"
