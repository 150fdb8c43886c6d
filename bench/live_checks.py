"""Benchmark: rollbook's live checks against the cheapest single scan that reads every checked column.

On an embedded PostgreSQL server, loads two UNLOGGED tables (a single INSERT ... SELECT from
generate_series each, then VACUUM ANALYZE): `accounts`, 5 million narrow rows (about 90 bytes), and
`wide_accounts`, the same columns plus a 400-character `bio`, rows of about 500 bytes. On each, it times,
on the same connection, after warming the cache:

- `count_affected_rows`: rollbook's live checks (the statistics' estimates, then one scan for the exact
  counts) with three checks: non-null values of a column to be dropped, values that do not fit
  varchar(100) in a column to be narrowed, NULLs in a column becoming NOT NULL;
- the floor: `SELECT count(*) FILTER (WHERE legacy_code IS NOT NULL)`, the cheapest single scan that reads
  every checked column (legacy_code is the checked column stored last);

and, for reference, `SELECT count(*)`, `count(id)` (the first column, fixed width) and the three checks
run by hand as three separate counts.

Bar: on both tables, the live checks take at most 1.3x the floor (`ratio_to_floor`).

Run from the repository root: .venv/bin/python bench/live_checks.py [--rows N] [--wide-rows N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from bench_support import embedded_database, machine, summarize

from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.data_loss import count_affected_rows
from rollbook.planning.operations import LiveCheck, TableName

BAR = 1.3
DATABASE = "bench_live"
RESULTS = Path(__file__).resolve().parent / "results" / "live_checks.json"
# Every LONG_EVERY-th email is 150 characters; every NULL_EVERY-th nickname is NULL;
# every LEGACY_EVERY-th legacy_code is set.
LONG_EVERY, NULL_EVERY, LEGACY_EVERY = 1000, 10, 7
# The wide table's extra column: 400 characters stored inline (below the TOAST threshold), after the checked ones.
WIDE_COLUMN = "bio"
FLOOR = "SELECT count(*) FILTER (WHERE legacy_code IS NOT NULL) FROM {table}"


def checks(table: TableName) -> list[LiveCheck]:
    return [
        LiveCheck("non_null_values", table, ("legacy_code",)),
        LiveCheck("not_fitting", table, ("email",), "varchar", (100,)),
        LiveCheck("nulls", table, ("nickname",)),
    ]


def load_table(conn: psycopg.Connection, name: str, rows: int, wide: bool) -> None:
    """Create and fill the table in one statement, then VACUUM ANALYZE it (UNLOGGED: no WAL to wait for)."""
    extra = f", {WIDE_COLUMN} text NOT NULL" if wide else ""
    extra_value = ", repeat(md5(i::text), 13) || 'abcd'" if wide else ""
    conn.execute(
        f"CREATE UNLOGGED TABLE {name} ("
        " id bigint NOT NULL, email varchar(255) NOT NULL, nickname text, legacy_code text,"
        f" status varchar(20) NOT NULL{extra}, created_at timestamptz NOT NULL)"
    )
    conn.execute(
        f"INSERT INTO {name} SELECT i,"
        f" CASE WHEN mod(i, {LONG_EVERY}) = 0 THEN repeat('x', 138) || '@example.com'"
        "  ELSE 'user' || i || '@example.com' END,"
        f" CASE WHEN mod(i, {NULL_EVERY}) <> 0 THEN 'nick' || i END,"
        f" CASE WHEN mod(i, {LEGACY_EVERY}) = 0 THEN 'L-' || i END,"
        f" CASE WHEN mod(i, 3) = 0 THEN 'closed' ELSE 'active' END{extra_value},"
        " timestamptz '2024-01-01' + i * interval '1 second'"
        " FROM generate_series(1, %s) AS i",
        [rows],
    )
    conn.execute(f"VACUUM ANALYZE {name}")


def expected_counts(table: TableName, rows: int) -> dict[LiveCheck, int]:
    """What each check must find, from the way the data was generated."""
    return dict(zip(checks(table), (rows // LEGACY_EVERY, rows // LONG_EVERY, rows // NULL_EVERY), strict=True))


def timed(action: Callable[[], object]) -> tuple[float, object]:
    """Wall time of one call in seconds, and what it returned."""
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def measure(conn: psycopg.Connection, name: str, rows: int, runs: int) -> dict[str, Any]:
    """Time every subject on table `name` (warm-up first, then `runs` interleaved rounds), counts checked."""
    table = TableName(None, name)
    table_bytes = conn.execute("SELECT pg_table_size(%s::regclass)", [name]).fetchone()[0]
    row_bytes = conn.execute(f"SELECT avg(pg_column_size(t.*)) FROM (SELECT * FROM {name} LIMIT 10000) t").fetchone()[0]

    def scalar(query: str) -> Callable[[], int]:
        return lambda: conn.execute(query).fetchone()[0]

    def live_checks() -> dict[LiveCheck, int | None]:
        counts = count_affected_rows(conn, checks(table))
        return {check: result.rows for check, result in counts.checks.items()}

    def separate_counts() -> list[int]:
        return [scalar(f"SELECT count(*) FROM {name} WHERE {where}")() for where in (
            "legacy_code IS NOT NULL", "char_length(email) > 100", "nickname IS NULL")]

    subjects: dict[str, Callable[[], object]] = {
        "floor_one_filter_on_last_checked_column": scalar(FLOOR.format(table=name)),
        "count_affected_rows": live_checks,
        "ref_select_count_star": scalar(f"SELECT count(*) FROM {name}"),
        "ref_count_first_column": scalar(f"SELECT count(id) FROM {name}"),
        "ref_three_separate_counts": separate_counts,
    }
    for _ in range(2):  # warm the OS page cache and the server's buffers for every subject
        for action in subjects.values():
            action()
    samples: dict[str, list[float]] = {subject: [] for subject in subjects}
    results: dict[str, object] = {}
    for _ in range(runs):  # interleaved, so drift hits every subject alike
        for subject, action in subjects.items():
            seconds, results[subject] = timed(action)
            samples[subject].append(seconds)
    if results["ref_select_count_star"] != rows or results["count_affected_rows"] != expected_counts(table, rows):
        raise RuntimeError(f"wrong counts on {name}: {results}")
    medians, ratios = summarize(samples, "floor_one_filter_on_last_checked_column")
    plan = "\n".join(r[0] for r in conn.execute(f"EXPLAIN {FLOOR.format(table=name)}"))
    return {
        "rows": rows, "table_bytes": table_bytes, "row_bytes": float(row_bytes),
        "floor_query": FLOOR.format(table=name), "floor_plan": plan,
        "samples_seconds": samples, "median_seconds": medians,
        "min_seconds": {subject: min(times) for subject, times in samples.items()},
        "ratio_to_floor": ratios["count_affected_rows"], "ratios_to_floor": ratios,
        "ratio_to_count_star": medians["count_affected_rows"] / medians["ref_select_count_star"],
        "verdict": "PASS" if ratios["count_affected_rows"] <= BAR else "FAIL",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000, help="rows of the narrow table")
    parser.add_argument("--wide-rows", type=int, default=1_000_000, help="rows of the ~500-byte-row table")
    parser.add_argument("--runs", type=int, default=11)
    options = parser.parse_args()

    tables: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="rollbook-bench-live-") as work:
        with embedded_database(Path(work), DATABASE) as url:
            with connect(DatabaseTarget.from_url(url)) as conn:
                settings = dict(conn.execute(
                    "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                    "('server_version', 'shared_buffers', 'max_parallel_workers_per_gather', 'work_mem', 'jit')"
                ).fetchall())
                for name, rows, wide in (("accounts", options.rows, False),
                                         ("wide_accounts", options.wide_rows, True)):
                    load_seconds, _ = timed(lambda: load_table(conn, name, rows, wide))  # noqa: B023
                    tables[name] = {"load_seconds": load_seconds, **measure(conn, name, rows, options.runs)}

    print(f"{options.runs} runs each after warm-up; server {settings}")
    for name, result in tables.items():
        print(f"{name}: {result['rows']:,} rows of about {result['row_bytes']:.0f} bytes, "
              f"{result['table_bytes'] / 2**20:.0f} MiB")
        for subject, seconds in result["median_seconds"].items():
            print(f"  {subject:42} median {seconds * 1000:7.1f} ms  "
                  f"ratio to floor {result['ratios_to_floor'][subject]:.2f}x")
        print(f"  live checks / floor = {result['ratio_to_floor']:.2f}x (bar {BAR}x): {result['verdict']}")
    verdict = "PASS" if all(r["verdict"] == "PASS" for r in tables.values()) else "FAIL"
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "live_checks", "runs": options.runs, "bar": BAR, "server": settings,
        "ratio_to_floor": {name: r["ratio_to_floor"] for name, r in tables.items()},
        "tables": tables, "verdict": verdict, "machine": machine(),
    }, indent=2) + "\n")
    print(f"verdict {verdict}; results written to {RESULTS}")


if __name__ == "__main__":
    main()
