"""Benchmark: the plan's estimated lock time of five kinds of downgrade steps against the time they really hold it.

On an embedded PostgreSQL server, for tables of about 10 MB, 100 MB and 1 GB (logged, with a primary key
and an index on `email`, as a production table would be), each case:

1. reads the statement with rollbook's own reader (`operations_from_sql`), calibrates as `rollbook plan`
   does (`calibrate`: the catalog's sizes and a timed read of a sample of the table) and estimates its lock
   time (`estimate_lock`), all read-only;
2. runs the statement in a transaction and times it from the statement to the end of its COMMIT: the time
   its lock is held;
3. undoes it (untimed) so the next run starts from the same table.

Cases: drop a column (catalog only), narrow a varchar with a rewrite (varchar(255) to varchar(100), every
value fits), add a NOT NULL (a validating scan), add a foreign key to a 1,000-row table, re-create an index
(on `created_at`); and, as a reference outside the bar, an UPDATE of a tenth of the rows.

Bar: every case's estimate is within 0.5x-2x of the measured time (ratio = estimate / measured, median).

Run from the repository root: .venv/bin/python bench/lock_estimates.py [--sizes-mb 10 100 1000] [--runs 3]
[--skip-1gb]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
from bench_support import embedded_database, machine

from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning import lock_time
from rollbook.planning.lock_time import calibrate, estimate_lock
from rollbook.planning.sql_operations import operations_from_sql

BAR = (0.5, 2.0)
RESULTS = Path(__file__).resolve().parent / "results" / "lock_estimates.json"
# About 100 bytes of heap a row (tuple header and line pointer included): rows for a table of a given size.
BYTES_PER_ROW = 100

# (name, statement, the statement that undoes it (None: nothing to undo), whether the bar applies)
CASES = [
    ("drop_column", "ALTER TABLE accounts DROP COLUMN legacy_code",
     "ALTER TABLE accounts ADD COLUMN legacy_code text", True),
    ("narrow_varchar_rewrite", "ALTER TABLE accounts ALTER COLUMN email TYPE varchar(100)",
     "ALTER TABLE accounts ALTER COLUMN email TYPE varchar(255)", True),
    ("add_not_null", "ALTER TABLE accounts ALTER COLUMN note SET NOT NULL",
     "ALTER TABLE accounts ALTER COLUMN note DROP NOT NULL", True),
    ("add_foreign_key", ("ALTER TABLE accounts ADD CONSTRAINT accounts_org_id_fkey FOREIGN KEY (org_id) "
                         "REFERENCES orgs (id)"), "ALTER TABLE accounts DROP CONSTRAINT accounts_org_id_fkey", True),
    ("recreate_index", "CREATE INDEX ix_accounts_created_at ON accounts (created_at)",
     "DROP INDEX ix_accounts_created_at", True),
    ("update_tenth_of_rows", "UPDATE accounts SET note = note || 'x' WHERE id % 10 = 0", None, False),
]


def load(conn: psycopg.Connection[Any], size_mb: int) -> int:
    """Create `orgs` (1,000 rows) and `accounts` of about `size_mb` MB; return the rows of accounts."""
    rows = size_mb * 1_000_000 // BYTES_PER_ROW
    conn.execute("DROP TABLE IF EXISTS accounts, orgs")
    conn.execute("CREATE TABLE orgs (id integer PRIMARY KEY, name text NOT NULL)")
    conn.execute("INSERT INTO orgs SELECT i, 'org ' || i FROM generate_series(1, 1000) i")
    conn.execute(
        "CREATE TABLE accounts (id bigint PRIMARY KEY, org_id integer NOT NULL, email varchar(255) NOT NULL,"
        " note text, legacy_code text, status varchar(20) NOT NULL, created_at timestamptz NOT NULL)")
    batch = 500_000
    for start in range(1, rows + 1, batch):
        conn.execute(
            "INSERT INTO accounts SELECT i, 1 + mod(i, 1000), 'user' || i || '@example.com',"
            " 'note number ' || i, CASE WHEN mod(i, 7) = 0 THEN 'L' || i END,"
            " CASE WHEN mod(i, 3) = 0 THEN 'closed' ELSE 'active' END,"
            " timestamptz '2020-01-01' + i * interval '1 second' FROM generate_series(%s, %s) i",
            [start, min(rows, start + batch - 1)])
    conn.execute("CREATE INDEX ix_accounts_email ON accounts (email)")
    conn.execute("VACUUM ANALYZE accounts")
    conn.execute("VACUUM ANALYZE orgs")
    conn.execute("CHECKPOINT")
    return rows


def estimate(target: DatabaseTarget, statement: str, rows_affected: int | None) -> tuple[float, dict[str, Any]]:
    """The plan's estimate for `statement`, calibrated afresh on the server as `rollbook plan` does."""
    operations = [replace(op, rows_affected=rows_affected) if op.op == "update" else op
                  for op in operations_from_sql(statement)]
    with connect(target) as conn:
        started = time.perf_counter()
        calibration = calibrate(conn, operations)
        calibration_seconds = time.perf_counter() - started
    estimates = [estimate_lock(op, calibration) for op in operations if op.lock is not None]
    seconds = sum(e.seconds or 0.0 for e in estimates)
    return seconds, {"calibration": calibration.to_dict(), "calibration_seconds": calibration_seconds,
                     "work": [e.work for e in estimates], "basis": estimates[0].basis}


def measure(conn: psycopg.Connection[Any], statement: str) -> tuple[float, int]:
    """Seconds from the statement to the end of its COMMIT (the lock is held throughout); rows it changed."""
    started = time.perf_counter()
    cursor = conn.execute(statement)
    conn.commit()
    return time.perf_counter() - started, cursor.rowcount


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 100, 1000])
    parser.add_argument("--runs", type=int, default=3, help="runs per case (1 on the 1 GB table)")
    parser.add_argument("--skip-1gb", action="store_true", help="leave out the 1 GB table (disk or time short)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    options = parser.parse_args()
    sizes = [s for s in options.sizes_mb if not (options.skip_1gb and s >= 1000)]
    load_at_start = os.getloadavg()
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="rollbook-bench-lock-") as work, \
            embedded_database(Path(work), "bench_lock") as url:
        target = DatabaseTarget.from_url(url)
        plain_url = url.replace("+psycopg", "")
        with psycopg.connect(plain_url, autocommit=True) as admin:
            server_version = admin.execute("SHOW server_version").fetchone()
        for size_mb in sizes:
            with psycopg.connect(plain_url, autocommit=True) as admin:
                started = time.perf_counter()
                rows = load(admin, size_mb)
                load_seconds = time.perf_counter() - started
                sizes_row = admin.execute("SELECT pg_relation_size('accounts'), pg_indexes_size('accounts')").fetchone()
            assert sizes_row is not None
            runs = 1 if size_mb >= 1000 else options.runs
            print(f"accounts: {rows} rows, heap {sizes_row[0] / 1e6:.0f} MB, indexes {sizes_row[1] / 1e6:.0f} MB "
                  f"(loaded in {load_seconds:.0f} s); {runs} run(s) per case", flush=True)
            with psycopg.connect(plain_url) as conn:
                for name, statement, undo, in_bar in CASES:
                    estimates, measured, details = [], [], {}
                    for _ in range(runs):
                        rows_affected = rows // 10 if name == "update_tenth_of_rows" else None
                        seconds, details = estimate(target, statement, rows_affected)
                        taken, _changed = measure(conn, statement)
                        estimates.append(seconds)
                        measured.append(taken)
                        if undo:
                            conn.execute(undo)
                            conn.commit()
                    ratio = statistics.median(estimates) / statistics.median(measured)
                    case = {"size_mb": size_mb, "case": name, "in_bar": in_bar, "statement": statement,
                            "rows": rows, "heap_bytes": sizes_row[0], "index_bytes": sizes_row[1],
                            "estimated_seconds": estimates, "measured_seconds": measured,
                            "ratio": ratio, "within_bar": BAR[0] <= ratio <= BAR[1], **details}
                    cases.append(case)
                    print(f"{size_mb:>5} MB {name:24} estimated {statistics.median(estimates):8.3f} s  measured "
                          f"{statistics.median(measured):8.3f} s  ratio {ratio:5.2f}", flush=True)
    failing = [c for c in cases if c["in_bar"] and not c["within_bar"]]
    verdict = "PASS" if not failing else f"FAIL ({len(failing)} case(s) outside {BAR[0]}x-{BAR[1]}x)"
    print(verdict)
    options.results.parent.mkdir(exist_ok=True)
    options.results.write_text(json.dumps({
        "bar": {"ratio_min": BAR[0], "ratio_max": BAR[1]}, "verdict": verdict, "sizes_mb": sizes,
        "skipped_1gb": 1000 not in sizes, "runs": options.runs,
        "factors": {"rewrite": lock_time.REWRITE_SLOWDOWN, "validating_scan": lock_time.VALIDATING_SCAN_SLOWDOWN,
                    "index_build": lock_time.INDEX_BUILD_SLOWDOWN, "foreign_key": lock_time.FOREIGN_KEY_SLOWDOWN,
                    "row_change": lock_time.ROW_CHANGE_SLOWDOWN, "metadata_seconds": lock_time.METADATA_SECONDS},
        "cases": cases, "load_average_at_start": load_at_start,
        "machine": machine(postgresql=str(server_version[0] if server_version else "?")),
    }, indent=2))
    print(f"results written to {options.results}")


if __name__ == "__main__":
    main()
