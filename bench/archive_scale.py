"""Benchmark: an archive of years (2,000 runs) on the site and on the command line.

Real records first: `rollbook demo` (a production rollback the policy refuses, then an executed staging
rollback) and a dry run of the rollback runbook on a `rollbook demo up` database, each filed in a source
archive by the runbooks themselves. The bench then files N runs into a fresh archive through the archive's
own filing code (Archive.file_summary, then Archive.file_notebook, as `rollbook run` files them): each a
copy of one of the real runs, cycling through them, with a new run id and start time (three hours apart).

Timed, each as a fresh process as a user runs it (interpreter start-up and imports included), on the site
that `rollbook init` writes (Material theme, the rollbook plugin with its defaults):

- site_build_s: `mkdocs build --strict` with an empty page cache (every record page rendered);
- rebuild_unchanged_s: the same build again (every record page reused from the cache);
- rebuild_after_one_s: one more run filed, then the build again (that run's page alone rendered);
- verify_s: `rollbook archive verify`; list_s: `rollbook archive list`.

filing_per_run_ms is the mean wall time of filing one run (its summary and its notebook) over the first and the
last 100 runs filed.

Each is reported as wall time and, in cpu_s, as the CPU time (user + system) the command and its children used:
on a machine shared with other work the wall time includes waiting for a CPU.

Bars at 2,000 runs: site build <= 60 s, rebuild after one new record <= 10 s, verify <= 5 s, list <= 1 s.

Run from the repository root: .venv/bin/python bench/archive_scale.py [--records 2000] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench_support import cpu_probe, machine

from rollbook.records.archive import Archive
from rollbook.records.archive_files import RECORD_MIME
from rollbook.records.run_record import new_run_id

RESULTS = Path(__file__).resolve().parent / "results" / "archive_scale.json"
BARS = {"site_build_s": 60.0, "rebuild_after_one_s": 10.0, "verify_s": 5.0, "list_s": 1.0}
BIN = Path(sys.executable).parent
FIRST_START = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
SPACING = timedelta(hours=3)


@dataclass(frozen=True)
class RealRun:
    """One run filed by a runbook: its summary record and its executed notebook, as filed."""

    summary: dict[str, Any]
    notebook: dict[str, Any]


def run(command: list[str], environment: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """A command as a user runs it; its output is kept for the error message should it fail."""
    done = subprocess.run(command, env=environment, cwd=cwd, capture_output=True, text=True, timeout=3600)
    if done.returncode not in (0, 4):  # 4: the demo's production rollback is refused, as it should be
        raise SystemExit(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def real_runs(work: Path) -> list[RealRun]:
    """A refused, an executed and a dry-run rollback, executed by the runbooks on demo databases."""
    source = work / "source"
    environment = {**os.environ, "ROLLBOOK_ARCHIVE": str(source), "ROLLBOOK_DEMO_DIR": str(work / "demo")}
    environment.pop("ROLLBOOK_SITE_ARCHIVE", None)
    run([str(BIN / "rollbook"), "demo"], environment, work)
    exports = run([str(BIN / "rollbook"), "demo", "up"], environment, work).stdout
    for line in exports.splitlines():  # export NAME=VALUE (shell-quoted; the demo's values need no quotes)
        name, _, value = line.removeprefix("export ").partition("=")
        environment[name] = value.strip("'")
    try:
        run([str(BIN / "rollbook"), "run", "rollback", "-p", "environment", "staging", "-p", "accept_data_loss",
             "True", "-r", "target_revision", "-1"], environment, work)
    finally:
        run([str(BIN / "rollbook"), "demo", "down"], environment, work)
    archive = Archive(source)
    runs = []
    for record in archive.records():
        if record.kind == "notebook":
            summary = json.loads(archive.records_of(record.run_id)[0].path.read_bytes())
            runs.append(RealRun(summary, json.loads(record.path.read_bytes())))
    return runs


def renamed(value: Any, old: str, new: str) -> Any:
    """`value` with every occurrence of the run id `old` replaced by `new` (the notebook prints it)."""
    return json.loads(json.dumps(value).replace(old, new))


def file_copy(archive: Archive, real: RealRun, started: datetime) -> None:
    """File a copy of a real run as a new run started at `started`, through the archive's filing code."""
    run_id = new_run_id(started)
    summary = renamed(real.summary, real.summary["run_id"], run_id)
    took = (datetime.fromisoformat(summary["finished_at"]) - datetime.fromisoformat(summary["started_at"])
            if summary.get("finished_at") else timedelta(seconds=2))
    summary["started_at"], summary["finished_at"] = started.isoformat(), (started + took).isoformat()
    notebook = renamed(real.notebook, real.summary["run_id"], run_id)
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            if RECORD_MIME in output.get("data", {}):
                output["data"][RECORD_MIME] = summary
    archive.file_summary(summary)
    archive.file_notebook(json.dumps(notebook, indent=1, ensure_ascii=False).encode(), summary)


def timed(command: list[str], environment: dict[str, str], cwd: Path, cpu: dict[str, list[float]], name: str) -> float:
    """The wall time of a command; its CPU time (user + system, of the process and its children) goes to `cpu`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    run(command, environment, cwd)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu.setdefault(name, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="runs in the archive (each a summary + notebook)")
    parser.add_argument("--runs", type=int, default=3, help="timed rounds of verify and list (median)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--no-site", action="store_true", help="time verify and list only (no site builds)")
    options = parser.parse_args()
    probe_at_start = cpu_probe()
    with tempfile.TemporaryDirectory(prefix="rollbook-archive-scale-") as temp:
        work = Path(temp)
        # Every command runs with its bytecode cached, as on a normal install (a session that sets
        # PYTHONDONTWRITEBYTECODE would have each one compile rollbook again), in the temp dir, not the source tree.
        os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
        os.environ["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        reals = real_runs(work)
        archive = Archive(work / "team" / "rollback-records")
        began = time.perf_counter()
        per_run: list[float] = []
        for number in range(options.records):
            filed = time.perf_counter()
            file_copy(archive, reals[number % len(reals)], FIRST_START + number * SPACING)
            per_run.append((time.perf_counter() - filed) * 1000)
        filing_s = time.perf_counter() - began
        print(f"filed {options.records} runs in {filing_s:.1f} s", file=sys.stderr)
        environment = {key: value for key, value in os.environ.items()
                       if key not in ("ROLLBOOK_SITE_ARCHIVE", "ROLLBOOK_ARCHIVE")}
        environment["NO_MKDOCS_2_WARNING"] = "1"
        run([str(BIN / "rollbook"), "init", str(work / "team")], environment, work)
        team = work / "team"
        build = [str(BIN / "mkdocs"), "build", "--strict", "--quiet"]
        cpu: dict[str, list[float]] = {}
        site: dict[str, Any] = {}
        if not options.no_site:
            site["site_build_s"] = timed(build, environment, team, cpu, "site_build_s")
            print(f"site built in {site['site_build_s']:.1f} s", file=sys.stderr)
            site["rebuild_unchanged_s"] = timed(build, environment, team, cpu, "rebuild_unchanged_s")
            file_copy(archive, reals[0], FIRST_START + options.records * SPACING)
            site["rebuild_after_one_s"] = timed(build, environment, team, cpu, "rebuild_after_one_s")
            site["record_pages_built"] = len(list((team / "site" / "archive").glob("*/index.html")))
            shutil.rmtree(team / "site")
        samples: dict[str, list[float]] = {"verify_s": [], "list_s": []}
        for _ in range(options.runs):
            samples["verify_s"].append(timed([str(BIN / "rollbook"), "archive", "verify"], environment, team, cpu,
                                             "verify_s"))
            samples["list_s"].append(timed([str(BIN / "rollbook"), "archive", "list"], environment, team, cpu,
                                           "list_s"))
        size = sum(path.stat().st_size for path in archive.root.iterdir() if path.is_file())
    result: dict[str, Any] = {
        "records": options.records, "record_files": 2 * options.records, "archive_bytes": size,
        "real_runs": [r.summary.get("outcome") for r in reals], "filing_s": filing_s,
        # One run's filing (summary and notebook) at the start of the archive and at its end: equal when
        # filing does not grow with the archive.
        "filing_per_run_ms": {"first_100": statistics.fmean(per_run[:100]),
                              "last_100": statistics.fmean(per_run[-100:])},
        **site,
        **{name: statistics.median(times) for name, times in samples.items()},
        "samples": samples, "bars": BARS,
        # CPU seconds (user + system) of each command: on a machine shared with other work, wall time waits for
        # the CPU; this is what the command itself cost (the median for verify and list).
        "cpu_s": {name: statistics.median(times) for name, times in cpu.items()},
        "machine": machine(note="2 cores shared with other sessions running tests and builds",
                           cpu_probe_at_start=probe_at_start),
    }
    result["meets_bars"] = {name: result[name] <= bar for name, bar in BARS.items() if name in result}
    options.results.parent.mkdir(exist_ok=True)
    options.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result.get(key) for key in ("records", *BARS, "rebuild_unchanged_s", "cpu_s", "meets_bars")},
                     indent=2))
    print(f"results written to {options.results}")


if __name__ == "__main__":
    main()
