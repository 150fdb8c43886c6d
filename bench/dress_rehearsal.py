"""Benchmark: a rollback with `rehearse copy`, estimate against rehearsal against real, and the copy's restore time.

On an embedded PostgreSQL server, for a table of about 10 MB and 100 MB (a primary key and an index on
`email`), a two-revision project whose head widened `accounts.email`; undoing it narrows the column with
a rewrite. Each run is `rollbook run rollback -p rehearse copy --execute` as an operator types it (the
database upgraded to the head again, untimed, between runs). From the run's record:

- the step's lock-time estimate, its measured time on the copy and in the real run (`step_timings`);
- the copy's estimated restore time (`rehearsal.cost.estimated_restore_seconds`) against the restore's
  measured time (`rehearsal.restore.seconds`): the figure the "too big for rehearsal_budget" decision
  rests on;
- the whole rehearsal's time (restore, settle, downgrade, checks, drop) and the whole run's.

Bar: the rewrite's estimate within 0.5x-2x of the rehearsal and of the real run (the issue's bar). The
restore estimate is reported, not held to a bar: it decides only whether a copy is attempted.

Run from the repository root: .venv/bin/python bench/dress_rehearsal.py [--sizes-mb 10 100] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from bench_support import embedded_database, machine, write_project

from rollbook.pg.database import DatabaseTarget
from rollbook.project.migrations import alembic_config_for, load_project

RESULTS = Path(__file__).resolve().parent / "results" / "dress_rehearsal.json"
ROLLBOOK = shutil.which("rollbook", path=str(Path(sys.executable).parent)) or "rollbook"
BYTES_PER_ROW = 120  # heap and index bytes per row of this table, measured once: rows for a size
REVISIONS = {
    "a1": (None, 'op.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, email varchar(100) NOT NULL, '
                 'note text NOT NULL); CREATE INDEX ix_accounts_email ON accounts (email)")',
           'op.execute("DROP TABLE accounts")'),
    "b2": ("a1", 'op.execute("ALTER TABLE accounts ALTER COLUMN email TYPE varchar(255)")',
           'op.execute("ALTER TABLE accounts ALTER COLUMN email TYPE varchar(100)")'),
}


def one_run(work: Path, url: str, config: Path, index: int) -> dict[str, Any]:
    """`rollbook run rollback -p rehearse copy --execute`, then the database put back at the head."""
    archive = work / f"archive-{index}"
    started = time.perf_counter()
    completed = subprocess.run(
        [ROLLBOOK, "run", "rollback", "-p", "environment", "staging", "-p", "operator", "bench",
         "-p", "accept_data_loss", "True", "-p", "backup_dir", str(work / "backups"), "-p", "rehearse", "copy",
         "--execute"],
        env={**os.environ, "DATABASE_URL": url, "ALEMBIC_CONFIG": str(config), "ROLLBOOK_ARCHIVE": str(archive)},
        cwd=work, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        raise SystemExit(f"the run failed ({completed.returncode}):\n{completed.stdout}\n{completed.stderr}")
    [filed] = archive.glob("*.json")
    record = json.loads(filed.read_text())
    [timing] = record["step_timings"]
    rehearsal = record["rehearsal"]
    command.upgrade(alembic_config_for(load_project(config), DatabaseTarget.from_url(url)), "head")
    shutil.rmtree(work / "backups")
    return {"estimated_seconds": timing["estimated_seconds"], "rehearsal_seconds": timing["rehearsal_seconds"],
            "real_seconds": timing["real_seconds"],
            "estimated_restore_seconds": rehearsal["cost"]["estimated_restore_seconds"],
            "restore_seconds": rehearsal["restore"]["seconds"], "rehearsal_total_seconds": rehearsal["seconds"],
            "database_bytes": rehearsal["cost"]["database_bytes"], "run_wall_seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    cases = []
    with tempfile.TemporaryDirectory(prefix="rollbook-bench-rehearsal-") as tmp:
        for size in args.sizes_mb:
            work = Path(tmp) / f"{size}mb"
            work.mkdir()
            with embedded_database(work, "bench") as url:
                config = write_project(work / "project", REVISIONS)
                command.upgrade(alembic_config_for(load_project(config), DatabaseTarget.from_url(url)), "head")
                rows = size * 1_000_000 // BYTES_PER_ROW
                with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                    conn.execute("INSERT INTO accounts SELECT i, 'user' || i || '@example.com', repeat('n', 60) "
                                 "FROM generate_series(1, %s) i", [rows])
                    conn.execute("VACUUM ANALYZE accounts")
                runs = [one_run(work, url, config, index) for index in range(args.runs)]
            median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            ratios = {"estimate_over_rehearsal": median["estimated_seconds"] / median["rehearsal_seconds"],
                      "estimate_over_real": median["estimated_seconds"] / median["real_seconds"],
                      "restore_estimate_over_measured": median["estimated_restore_seconds"]
                      / median["restore_seconds"]}
            within = all(0.5 <= ratios[key] <= 2.0 for key in ("estimate_over_rehearsal", "estimate_over_real"))
            cases.append({"size_mb": size, "rows": rows, "runs": runs, "median": median, "ratios": ratios,
                          "within_bar": within})
            print(f"{size} MB: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items())
                  + f" ({'within' if within else 'OUTSIDE'} 0.5x-2x)")
    RESULTS.write_text(json.dumps({"machine": machine(), "bar": [0.5, 2.0], "cases": cases}, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
