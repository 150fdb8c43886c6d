"""Benchmark: rollbook's live checks on a 5-million-row table vs one `SELECT count(*)` of it.

On an embedded PostgreSQL server, loads one UNLOGGED table (a single INSERT ... SELECT from
generate_series, then VACUUM ANALYZE) and times, on the same connection, after warming the cache:

- `SELECT count(*) FROM accounts`
- `count_affected_rows` with three checks on that table: non-null values of a column to be dropped,
  values that do not fit varchar(100) in a column to be narrowed, NULLs in a column becoming NOT NULL.

and, for reference, the cheapest scan that reads any value at all (`count(id)`, the first column,
fixed width), the cheapest scan that reads a checked value (one FILTER on the checked column stored
last) and the three checks run by hand as three separate counts.

Bar: the live checks take at most 1.3x the time of the count(*).

Run from the repository root: /work/venv/bin/python bench/live_checks.py [--rows N] [--runs N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from bench_support import embedded_database, machine, summarize

from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.data_loss import count_affected_rows
from rollbook.planning.operations import LiveCheck, TableName

BAR = 1.3
DATABASE = "bench_live"
TABLE = TableName(None, "accounts")
RESULTS = Path(__file__).resolve().parent / "results" / "live_checks.json"
# Every LONG_EVERY-th email is 150 characters; every NULL_EVERY-th nickname is NULL;
# every LEGACY_EVERY-th legacy_code is set.
LONG_EVERY, NULL_EVERY, LEGACY_EVERY = 1000, 10, 7

CHECKS = [
    LiveCheck("non_null_values", TABLE, ("legacy_code",)),
    LiveCheck("not_fitting", TABLE, ("email",), "varchar", (100,)),
    LiveCheck("nulls", TABLE, ("nickname",)),
]


def load_table(conn: psycopg.Connection, rows: int) -> None:
    """Create and fill the table in one statement, then VACUUM ANALYZE it (UNLOGGED: no WAL to wait for)."""
    conn.execute(
        "CREATE UNLOGGED TABLE accounts ("
        " id bigint NOT NULL, email varchar(255) NOT NULL, nickname text, legacy_code text,"
        " status varchar(20) NOT NULL, created_at timestamptz NOT NULL)"
    )
    conn.execute(
        "INSERT INTO accounts SELECT i,"
        f" CASE WHEN mod(i, {LONG_EVERY}) = 0 THEN repeat('x', 138) || '@example.com'"
        "  ELSE 'user' || i || '@example.com' END,"
        f" CASE WHEN mod(i, {NULL_EVERY}) <> 0 THEN 'nick' || i END,"
        f" CASE WHEN mod(i, {LEGACY_EVERY}) = 0 THEN 'L-' || i END,"
        " CASE WHEN mod(i, 3) = 0 THEN 'closed' ELSE 'active' END,"
        " timestamptz '2024-01-01' + i * interval '1 second'"
        " FROM generate_series(1, %s) AS i",
        [rows],
    )
    conn.execute("VACUUM ANALYZE accounts")


def expected_counts(rows: int) -> dict[LiveCheck, int]:
    """What each check must find, from the way the data was generated."""
    return {CHECKS[0]: rows // LEGACY_EVERY, CHECKS[1]: rows // LONG_EVERY, CHECKS[2]: rows // NULL_EVERY}


def timed(action: Callable[[], object]) -> tuple[float, object]:
    """Wall time of one call in seconds, and what it returned."""
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--runs", type=int, default=7)
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="rollbook-bench-live-") as work:
        with embedded_database(Path(work), DATABASE) as url:
            target = DatabaseTarget.from_url(url)
            with connect(target) as conn:
                load_seconds, _ = timed(lambda: load_table(conn, options.rows))
                settings = dict(conn.execute(
                    "SELECT name, current_setting(name) FROM pg_settings WHERE name IN "
                    "('server_version', 'shared_buffers', 'max_parallel_workers_per_gather', 'work_mem')"
                ).fetchall())
                table_bytes = conn.execute("SELECT pg_table_size('accounts')").fetchone()[0]
                count_plan = "\n".join(r[0] for r in conn.execute("EXPLAIN SELECT count(*) FROM accounts"))

                def scalar(query: str) -> Callable[[], int]:
                    return lambda: conn.execute(query).fetchone()[0]

                def live_checks() -> dict[LiveCheck, int | None]:
                    counts = count_affected_rows(conn, CHECKS)
                    return {check: result.rows for check, result in counts.checks.items()}

                def separate_counts() -> list[int]:
                    return [scalar(f"SELECT count(*) FROM accounts WHERE {where}")() for where in (
                        "legacy_code IS NOT NULL", "char_length(email) > 100", "nickname IS NULL")]

                subjects: dict[str, Callable[[], object]] = {
                    "select_count_star": scalar("SELECT count(*) FROM accounts"),
                    "count_affected_rows": live_checks,
                    "ref_count_first_column": scalar("SELECT count(id) FROM accounts"),
                    "ref_one_filter_on_legacy_code": scalar(
                        "SELECT count(*) FILTER (WHERE legacy_code IS NOT NULL) FROM accounts"),
                    "ref_three_separate_counts": separate_counts,
                }
                for _ in range(2):  # warm the OS page cache and the server's buffers for every subject
                    for action in subjects.values():
                        action()
                samples: dict[str, list[float]] = {name: [] for name in subjects}
                results: dict[str, object] = {}
                for _ in range(options.runs):  # interleaved, so drift hits every subject alike
                    for name, action in subjects.items():
                        seconds, results[name] = timed(action)
                        samples[name].append(seconds)
                expected = expected_counts(options.rows)
                if results["select_count_star"] != options.rows or results["count_affected_rows"] != expected:
                    raise RuntimeError(f"wrong counts: {results}")

    medians, ratios = summarize(samples, "select_count_star")
    ratio = ratios["count_affected_rows"]
    verdict = "PASS" if ratio <= BAR else "FAIL"
    print(f"{options.rows:,} rows, table {table_bytes / 2**20:.0f} MiB (loaded in {load_seconds:.1f} s), "
          f"{options.runs} runs each after warm-up; server {settings}")
    print(f"count(*) plan:\n{count_plan}")
    for name, times in samples.items():
        print(f"  {name:30} median {medians[name] * 1000:7.1f} ms  min {min(times) * 1000:7.1f} ms  "
              f"ratio {ratios[name]:.2f}x")
    print(f"live checks / count(*) = {ratio:.2f}x (bar {BAR}x): {verdict}")

    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "live_checks", "rows": options.rows, "runs": options.runs, "bar": BAR,
        "table_bytes": table_bytes, "load_seconds": load_seconds, "server": settings, "count_plan": count_plan,
        "samples_seconds": samples, "median_seconds": medians,
        "min_seconds": {name: min(times) for name, times in samples.items()},
        "ratio_to_count_star": ratios, "verdict": verdict, "machine": machine(),
    }, indent=2) + "\n")
    print(f"results written to {RESULTS}")


if __name__ == "__main__":
    main()
