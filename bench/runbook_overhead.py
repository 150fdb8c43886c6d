"""Benchmark: the executed rollback runbook vs the bare sequence an operator would type.

On an embedded PostgreSQL server, installs the bundled demo (head 0607bc5b8536, a data migration
whose downgrade is safe to repeat: the database is upgraded back to head, untimed, after every
run) and times, each as a fresh process:

- `bare_sequence`: `pg_dump -Fc -f <file>`, `pg_restore --list <file>`, `alembic downgrade -1`
  (the same pg_dump and pg_restore the runbook would pick; the sum of the three wall times)
- `executed_runbook`: `python -m papermill runbooks/rollback.ipynb ... -p execute True`
- references: `dry_run_runbook` (execute False) and `papermill_baseline` (papermill running a
  two-cell notebook: `pass`, then `import rollbook.runs.notebook`: the kernel's fixed cost)

then the same two main subjects on the demo database grown to about 1 GB (bulk rows in the demo's
`content_jobs` table). Also recorded: the client-side CPU time of each subject (less sensitive to
other load than wall time), papermill's duration of every cell, the time before the first cell,
between cells and after the last, and, on the large database, the fsync and sha256 of a dump.

Bars: on the demo database at most 3 s of overhead (runbook median minus bare median); on the
1 GB database at most 1.15x the bare sequence.

Run from the repository root:
/work/venv/bin/python bench/runbook_overhead.py [--runs 5] [--size-gb 1.0] [--large-runs 3] [--demo-only]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import alembic
import papermill
import psycopg
from bench_support import embedded_database, machine, summarize

from rollbook.demo.server import BEFORE_BACKFILL, DEMO_CONFIG, HEAD, install_demo
from rollbook.pg.client_tools import find_pg_tool, libpq_environment
from rollbook.pg.database import DatabaseTarget

OVERHEAD_BAR_SECONDS = 3.0
LARGE_RATIO_BAR = 1.15
DATABASE = "rollbook_bench"
BIN_DIR = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
RUNBOOK = ROOT / "runbooks" / "rollback.ipynb"
RESULTS = Path(__file__).resolve().parent / "results" / "runbook_overhead.json"
# Where a run's record is filed (rollbook.records.archive); pointed into the temp dir.
ARCHIVE_VARIABLE = "ROLLBOOK_ARCHIVE"
BULK_BATCH_ROWS = 250_000


# --- the database --------------------------------------------------------------------------


def plain(url: str) -> str:
    return url.replace("+psycopg", "")


def server_major(url: str) -> int:
    with psycopg.connect(plain(url)) as conn:
        return int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000


def current_revision(url: str) -> tuple[str, ...]:
    with psycopg.connect(plain(url)) as conn:
        return tuple(r[0] for r in conn.execute("SELECT version_num FROM alembic_version").fetchall())


def database_size(url: str) -> int:
    with psycopg.connect(plain(url)) as conn:
        return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])


def grow_database(url: str, size_gb: float) -> dict[str, Any]:
    """Fill the demo's content_jobs with bulk rows until the database is about `size_gb` GiB.

    Titles are 180 characters of hex digests (gzip gets them to about half, so pg_dump has real
    compression work to do). The rows reference existing users; foreign-key triggers are skipped
    during the load (session_replication_role = replica) only to keep it quick. The table and its
    schema are the demo's own: the runbook's schema check must still find nothing unexpected.
    """
    started = time.perf_counter()
    goal = int(size_gb * 1024**3)
    with psycopg.connect(plain(url), autocommit=True) as conn:
        users = [r[0] for r in conn.execute("SELECT id FROM users ORDER BY id").fetchall()]
        first = int(conn.execute("SELECT coalesce(max(id), 0) + 1 FROM content_jobs").fetchone()[0])
        conn.execute("SET session_replication_role = replica")
        rows = 0
        while database_size(url) < goal:
            conn.execute(
                "INSERT INTO content_jobs (id, user_id, title, state) "
                "SELECT i, (%(users)s::int[])[1 + i %% cardinality(%(users)s::int[])], "
                " left('Job ' || i || ': ' || md5(i::text) || md5((i * 7)::text) || md5((i * 13)::text)"
                "  || md5((i * 31)::text) || md5(random()::text), 180), "
                " (ARRAY['queued', 'running', 'done', 'failed'])[1 + i %% 4] "
                "FROM generate_series(%(lo)s::int, %(hi)s::int) AS i",
                {"users": users, "lo": first + rows, "hi": first + rows + BULK_BATCH_ROWS - 1},
            )
            rows += BULK_BATCH_ROWS
        conn.execute("RESET session_replication_role")
        conn.execute("SELECT setval(pg_get_serial_sequence('content_jobs', 'id'), max(id)) FROM content_jobs")
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
        size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
        table = int(conn.execute("SELECT pg_total_relation_size('content_jobs')").fetchone()[0])
    return {"bulk_rows": rows, "database_bytes": size, "content_jobs_bytes": table,
            "load_seconds": round(time.perf_counter() - started, 1)}


# --- the subjects --------------------------------------------------------------------------


def run(args: list[str], env: dict[str, str], cwd: Path, what: str) -> float:
    """Run one command as a fresh process, output captured; its wall time in seconds."""
    started = time.perf_counter()
    result = subprocess.run(args, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{what} exited with {result.returncode}:\n{result.stderr[-3000:]}")
    return elapsed


def children_cpu() -> float:
    """CPU seconds (user + system) of all finished child processes and their waited-for descendants."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Bench:
    """One database under test, the environments of its subjects, and the samples collected."""

    work_dir: Path
    url: str
    child_env: dict[str, str]
    samples: dict[str, list[float]] = field(default_factory=dict)
    parts: dict[str, list[float]] = field(default_factory=dict)
    cells: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    backup_bytes: list[int] = field(default_factory=list)
    backup_steps: list[dict[str, float | None]] = field(default_factory=list)
    around: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        target = DatabaseTarget.from_url(self.url)
        major = server_major(self.url)
        self.pg_dump = find_pg_tool("pg_dump", major)
        self.pg_restore = find_pg_tool("pg_restore", major)
        self.pg_env = {**self.child_env, **{k: v for k, v in libpq_environment(target).items()
                                            if k.startswith("PG")}}
        self.db_env = {**self.child_env, "DATABASE_URL": self.url, "ALEMBIC_CONFIG": str(DEMO_CONFIG)}
        self.alembic = [str(BIN_DIR / "alembic"), "-c", str(DEMO_CONFIG)]

    def record(self, name: str, seconds: float, timed: bool, cpu: float | None = None) -> None:
        if timed:
            self.samples.setdefault(name, []).append(seconds)
            if cpu is not None:
                self.cpu.setdefault(name, []).append(cpu)

    def back_to_head(self) -> None:
        """Untimed: upgrade the database back to head after a downgrade."""
        run([*self.alembic, "upgrade", "head"], self.db_env, self.work_dir, "alembic upgrade head")
        assert current_revision(self.url) == (HEAD,)

    def bare_sequence(self, timed: bool) -> None:
        dump = self.work_dir / "bare.dump"
        cpu = children_cpu()
        parts = {
            "pg_dump": run([str(self.pg_dump.path), "-Fc", "-f", str(dump)], self.pg_env, self.work_dir, "pg_dump"),
            "pg_restore_list": run([str(self.pg_restore.path), "--list", str(dump)], self.pg_env, self.work_dir,
                                   "pg_restore --list"),
            "alembic_downgrade": run([*self.alembic, "downgrade", "-1"], self.db_env, self.work_dir,
                                     "alembic downgrade -1"),
        }
        cpu = children_cpu() - cpu
        revision = current_revision(self.url)
        if revision != (BEFORE_BACKFILL,):
            raise RuntimeError(f"bare sequence left the database at {revision}")
        dump.unlink()
        self.record("bare_sequence", sum(parts.values()), timed, cpu)
        if timed:
            for name, seconds in parts.items():
                self.parts.setdefault(name, []).append(seconds)
        self.back_to_head()

    def runbook(self, name: str, execute: bool, timed: bool) -> None:
        out = self.work_dir / "notebooks" / f"{name}.ipynb"
        out.parent.mkdir(exist_ok=True)
        backups = self.work_dir / "backups"
        args = [str(sys.executable), "-m", "papermill", str(RUNBOOK), str(out), "--no-progress-bar",
                "-p", "environment", "staging", "-p", "operator", "bench", "-p", "accept_data_loss", "True",
                "-p", "execute", str(execute), "-p", "backup_dir", str(backups)]
        cpu = children_cpu()
        launched = time.time()
        seconds = run(args, self.db_env, self.work_dir, name)
        ended = time.time()
        cpu = children_cpu() - cpu
        expected = (BEFORE_BACKFILL,) if execute else (HEAD,)
        revision = current_revision(self.url)
        if revision != expected:
            raise RuntimeError(f"{name} left the database at {revision}, expected {expected}")
        dumps = list(backups.glob("*")) if backups.exists() else []
        if execute and timed:
            self.backup_bytes.append(sum(p.stat().st_size for p in dumps))
        shutil.rmtree(backups, ignore_errors=True)
        self.record(name, seconds, timed, cpu)
        if timed:
            self.cells.setdefault(name, []).append(cell_durations(out))
            self.around.setdefault(name, []).append(around_cells(out, launched, ended))
            if execute:
                self.backup_steps.append(backup_step_seconds(out))
        if execute:
            self.back_to_head()

    def imports(self, timed: bool) -> None:
        """References for the cost outside the cells: a bare interpreter, papermill's imports, the kernel's."""
        for name, code in (("python_startup", "pass"), ("python_import_papermill", "import papermill"),
                           ("python_import_ipykernel", "import ipykernel.kernelapp")):
            self.record(name, run([str(sys.executable), "-c", code], self.child_env, self.work_dir, name), timed)

    def backup_file_costs(self) -> dict[str, float]:
        """One-off: what the runbook does to its dump file beyond pg_dump (fsync, then sha256 twice), timed alone."""
        dump = self.work_dir / "costs.dump"
        seconds = run([str(self.pg_dump.path), "-Fc", "-f", str(dump)], self.pg_env, self.work_dir, "pg_dump")
        started = time.perf_counter()
        with dump.open("rb") as handle:
            os.fsync(handle.fileno())
        synced = time.perf_counter()
        digest = hashlib.sha256()
        with dump.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        hashed = time.perf_counter()
        size = dump.stat().st_size
        dump.unlink()
        return {"pg_dump_seconds": round(seconds, 3), "dump_bytes": size,
                "fsync_seconds": round(synced - started, 3), "sha256_seconds": round(hashed - synced, 3)}

    def baseline(self, notebook: Path, timed: bool) -> None:
        out = self.work_dir / "notebooks" / "papermill_baseline.ipynb"
        out.parent.mkdir(exist_ok=True)
        args = [str(sys.executable), "-m", "papermill", str(notebook), str(out), "--no-progress-bar"]
        launched = time.time()
        self.record("papermill_baseline", run(args, self.child_env, self.work_dir, "papermill baseline"), timed)
        ended = time.time()
        if timed:
            self.cells.setdefault("papermill_baseline", []).append(cell_durations(out))
            self.around.setdefault("papermill_baseline", []).append(around_cells(out, launched, ended))


def cell_durations(notebook: Path) -> dict[str, float]:
    """papermill's duration of each code cell, keyed by its last line (or which parameters cell it is)."""
    cells = json.loads(notebook.read_text())["cells"]
    durations: dict[str, float] = {}
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"]).strip().splitlines()
        tags = cell.get("metadata", {}).get("tags", [])
        if "injected-parameters" in tags:
            label = "injected parameters"
        elif "parameters" in tags:
            label = "parameters (defaults)"
        else:
            label = source[-1] if source else "(empty)"
        durations[label] = float(cell["metadata"]["papermill"]["duration"] or 0.0)
    return durations


def around_cells(notebook: Path, launched: float, ended: float) -> dict[str, float]:
    """The run's time outside the cells, from papermill's cell timestamps and the process's own start and end.

    before first cell: interpreter, papermill's imports, kernel start; between cells: papermill saving
    the notebook and messaging; after last cell: kernel shutdown, the final save, interpreter exit.
    """
    cells = [c["metadata"]["papermill"] for c in json.loads(notebook.read_text())["cells"]
             if c["cell_type"] == "code"]
    starts = [datetime.fromisoformat(c["start_time"]).timestamp() for c in cells]
    ends = [datetime.fromisoformat(c["end_time"]).timestamp() for c in cells]
    return {"before first cell": starts[0] - launched,
            "between cells": sum(s - e for s, e in zip(starts[1:], ends[:-1])),
            "after last cell": ended - ends[-1]}


def backup_step_seconds(notebook: Path) -> dict[str, float | None]:
    """The backup cell's own timings as it shows them (0.1 s resolution): taking the backup, verifying it."""
    cell = next(c for c in json.loads(notebook.read_text())["cells"]
                if c["cell_type"] == "code" and "".join(c["source"]).strip() == "run.backup()")
    text = "".join("".join(o.get("data", {}).get("text/markdown", "")) for o in cell["outputs"])
    taken = re.search(r"\| Taken \|[^|]*\(([0-9.]+) s\)", text)
    verified = re.search(r"\| Time \| ([0-9.]+) s", text)
    return {"take_backup": float(taken.group(1)) if taken else None,
            "verify_backup": float(verified.group(1)) if verified else None}


def write_baseline_notebook(path: Path) -> Path:
    """A notebook of two cells: `pass` (the kernel alone) and `import rollbook.runs.notebook` (the runbook's
    imports)."""
    def cell(source: str) -> dict[str, Any]:
        return {"cell_type": "code", "execution_count": None, "metadata": {}, "outputs": [], "source": source}
    nb = {"cells": [cell("pass"), cell("import rollbook.runs.notebook")],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                       "language_info": {"name": "python"}},
          "nbformat": 4, "nbformat_minor": 5}
    path.write_text(json.dumps(nb))
    return path


def median_cells(rounds: list[dict[str, float]]) -> dict[str, float]:
    labels = dict.fromkeys(label for r in rounds for label in r)
    return {label: round(statistics.median(r[label] for r in rounds if label in r), 3) for label in labels}


def runbook_sha256() -> str:
    return hashlib.sha256(RUNBOOK.read_bytes()).hexdigest()


# --- the two cases -------------------------------------------------------------------------


def measure(bench: Bench, runs: int, with_references: bool, baseline_nb: Path) -> None:
    """One untimed round, then `runs` rounds with the subjects interleaved."""
    for round_number in range(runs + 1):
        timed = round_number > 0
        bench.bare_sequence(timed)
        bench.runbook("executed_runbook", True, timed)
        if with_references:
            bench.runbook("dry_run_runbook", False, timed)
            bench.baseline(baseline_nb, timed)
            bench.imports(timed)
        print(f"  round {round_number}{'' if timed else ' (warm-up)'}: "
              + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in bench.samples.items() if timed), flush=True)


def report(bench: Bench) -> dict[str, Any]:
    medians, ratios = summarize(bench.samples, "bare_sequence")
    overhead = medians["executed_runbook"] - medians["bare_sequence"]
    cells = {name: median_cells(rounds) for name, rounds in bench.cells.items()}
    outside = {name: round(medians[name] - sum(cells[name].values()), 3) for name in cells}
    around = {name: median_cells(rounds) for name, rounds in bench.around.items()}
    return {
        "samples_seconds": bench.samples,
        "median_seconds": medians,
        "min_seconds": {k: min(v) for k, v in bench.samples.items()},
        "ratio_to_bare": ratios,
        "overhead_seconds": overhead,
        # Client-side CPU (every process the subject starts, the server's not included): robust to other load.
        "cpu_samples_seconds": bench.cpu,
        "cpu_median_seconds": {k: statistics.median(v) for k, v in bench.cpu.items()},
        "cpu_ratio_to_bare": {k: statistics.median(v) / statistics.median(bench.cpu["bare_sequence"])
                              for k, v in bench.cpu.items()},
        "bare_parts_median_seconds": {k: statistics.median(v) for k, v in bench.parts.items()},
        "cell_median_seconds": cells,
        "outside_cells_seconds": outside,
        "outside_cells_median_seconds": around,
        "outside_cells_samples_seconds": bench.around,
        "backup_bytes": bench.backup_bytes,
        "backup_cell_steps_seconds": bench.backup_steps,
    }


def print_case(title: str, result: dict[str, Any]) -> None:
    print(title)
    for name, times in result["samples_seconds"].items():
        print(f"  {name:20} median {result['median_seconds'][name]:7.3f} s  min {min(times):7.3f} s  "
              f"ratio {result['ratio_to_bare'][name]:.2f}x")
    print("  client CPU (median): " + ", ".join(
        f"{k} {v:.2f} s ({result['cpu_ratio_to_bare'][k]:.2f}x)" for k, v in result["cpu_median_seconds"].items()))
    print("  bare parts (median): "
          + ", ".join(f"{k} {v:.3f} s" for k, v in result["bare_parts_median_seconds"].items()))
    if result["backup_cell_steps_seconds"]:
        print("  backup cell steps: " + ", ".join(
            f"{k} {statistics.median(r[k] for r in result['backup_cell_steps_seconds'] if r[k] is not None):.1f} s"
            for k in result["backup_cell_steps_seconds"][0]))
    if "backup_file_costs" in result:
        print(f"  one-off file costs: {result['backup_file_costs']}")
    for name, cells in result["cell_median_seconds"].items():
        print(f"  {name} cells (median), outside cells {result['outside_cells_seconds'][name]:.3f} s "
              f"({', '.join(f'{k} {v:.3f} s' for k, v in result['outside_cells_median_seconds'][name].items())}):")
        for label, seconds in cells.items():
            print(f"    {seconds:7.3f} s  {label}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed rounds on the demo database")
    parser.add_argument("--size-gb", type=float, default=1.0, help="size of the large database, GiB")
    parser.add_argument("--large-runs", type=int, default=3, help="timed rounds on the large database")
    parser.add_argument("--demo-only", action="store_true", help="skip the large database")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write the JSON results")
    options = parser.parse_args()

    results: dict[str, Any] = {"benchmark": "runbook_overhead", "bars": {
        "demo_overhead_seconds": OVERHEAD_BAR_SECONDS, "large_ratio": LARGE_RATIO_BAR}}
    load_at_start = os.getloadavg()
    results["runbook_sha256_at_start"] = runbook_sha256()
    with tempfile.TemporaryDirectory(prefix="rollbook-bench-runbook-") as work:
        work_dir = Path(work)
        # Bytecode is cached as for a normal user, but in the temp dir; records are filed there too.
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "ALEMBIC_CONFIG", "PYTHONDONTWRITEBYTECODE", "ROLLBOOK_RUN_ID")}
        env["PYTHONPYCACHEPREFIX"] = str(work_dir / "pycache")
        env[ARCHIVE_VARIABLE] = str(work_dir / "archive")
        baseline_nb = write_baseline_notebook(work_dir / "baseline.ipynb")

        with embedded_database(work_dir / "demo", DATABASE) as url:
            install_demo(DatabaseTarget.from_url(url))
            bench = Bench(work_dir, url, env)
            size = database_size(url)
            print(f"demo database: {size / 1024**2:.1f} MiB; pg_dump {bench.pg_dump.to_text()}; "
                  f"{options.runs} rounds after one warm-up", flush=True)
            measure(bench, options.runs, True, baseline_nb)
            demo = report(bench)
            demo.update(runs=options.runs, database_bytes=size, pg_dump=bench.pg_dump.to_dict(),
                        pg_restore=bench.pg_restore.to_dict())
            demo["verdict"] = "PASS" if demo["overhead_seconds"] <= OVERHEAD_BAR_SECONDS else "FAIL"
        results["demo"] = demo
        print_case("demo database:", demo)
        print(f"overhead {demo['overhead_seconds']:.2f} s (bar {OVERHEAD_BAR_SECONDS} s), ratio "
              f"{demo['ratio_to_bare']['executed_runbook']:.2f}x: {demo['verdict']}", flush=True)

        if not options.demo_only:
            with embedded_database(work_dir / "large", DATABASE) as url:
                install_demo(DatabaseTarget.from_url(url))
                grown = grow_database(url, options.size_gb)
                print(f"large database: {grown['database_bytes'] / 1024**3:.2f} GiB "
                      f"({grown['bulk_rows']} bulk rows in {grown['load_seconds']} s); "
                      f"{options.large_runs} rounds after one warm-up", flush=True)
                bench = Bench(work_dir, url, env)
                measure(bench, options.large_runs, False, baseline_nb)
                large = report(bench)
                large["backup_file_costs"] = bench.backup_file_costs()
                large.update(runs=options.large_runs, size_gb=options.size_gb, **grown)
                ratio = large["ratio_to_bare"]["executed_runbook"]
                large["verdict"] = "PASS" if ratio <= LARGE_RATIO_BAR else "FAIL"
            results["large"] = large
            print_case("large database:", large)
            print(f"ratio {ratio:.2f}x (bar {LARGE_RATIO_BAR}x), overhead {large['overhead_seconds']:.2f} s: "
                  f"{large['verdict']}")

    results["runbook_sha256_at_end"] = runbook_sha256()
    if results["runbook_sha256_at_end"] != results["runbook_sha256_at_start"]:
        print("WARNING: runbooks/rollback.ipynb changed during the measurement")
    results["machine"] = machine(alembic=alembic.__version__, papermill=papermill.__version__)
    results["machine"]["load_average_at_start"] = load_at_start
    options.results.parent.mkdir(exist_ok=True)
    options.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results written to {options.results}")


if __name__ == "__main__":
    main()
