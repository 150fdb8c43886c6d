"""Benchmark: the cost of filing one run, at the start of an archive and after thousands of entries.

Files N runs (each a summary, then its executed notebook, as `rollbook run` files them) into a fresh archive
through the archive's own code (Archive.file_summary, Archive.file_notebook). The records are synthetic but
valid: a rollback run record checked by the record model, and a small notebook carrying it as its record
output, with a new run id and start time (three hours apart) for each run. The manifest entries are the
size real runs give them: every listing field filled in.

Timed per run, wall and CPU (process time: the fsyncs of a filing wait for the disk, not a core):

- filing: file_summary + file_notebook of one run;
- head: Archive.head(), which `rollbook run` and `rollbook archive add` call before and after filing;
- filed_record: Archive.filed_record(run_id), which a run's end calls and the step watcher polls.

Reported as the mean of the first 100 runs (manifest of 0 to 200 entries) and of the last 100 (the
archive's last 200 entries): a filing whose cost does not grow with the archive gives a ratio near 1.

Run from the repository root: .venv/bin/python bench/filing.py [--runs 2000] [--results FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import nbformat
from bench_support import machine

from rollbook.records.archive import Archive
from rollbook.records.archive_files import RECORD_MIME
from rollbook.records.run_record import new_run_id

RESULTS = Path(__file__).resolve().parent / "results" / "filing.json"
FIRST_START = datetime(2024, 1, 1, 8, 0, tzinfo=UTC)
SPACING = timedelta(hours=3)
WINDOW = 100  # runs averaged at each end of the archive


def run_record(number: int) -> dict[str, Any]:
    """A finished rollback run's record, every listing field filled in."""
    started = FIRST_START + number * SPACING
    return {
        "run_id": new_run_id(started), "runbook": "rollback", "started_at": started.isoformat(),
        "finished_at": (started + timedelta(seconds=42)).isoformat(), "outcome": "succeeded",
        "message": "rolled back one revision", "operator": "alice", "approved_by": "bob",
        "ticket": f"OPS-{number}", "environment": "staging", "execute": True,
        "database": "postgresql+psycopg://app@db.internal:5432/app", "target": "-1",
        "revision_before": ["0003"], "revision_after": ["0002"],
        "steps": [{"step": step, "status": "done", "seconds": 0.5} for step in
                  ("status", "plan", "policy", "backup", "downgrade", "verification")],
    }


def notebook_of(record: dict[str, Any]) -> bytes:
    """A small executed notebook whose record output is the run's record."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Roll back one revision"),
        nbformat.v4.new_code_cell("run.summary()", execution_count=1, outputs=[
            nbformat.v4.new_output("display_data", data={RECORD_MIME: record, "text/plain": "record"})]),
    ]
    return nbformat.writes(notebook).encode()


def file_run(archive: Archive, record: dict[str, Any], notebook: bytes) -> None:
    """File one run as `rollbook run` does: its summary, then its notebook."""
    archive.file_summary(record)
    archive.file_notebook(notebook, record)


def timed(action: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU milliseconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    action()
    return (time.perf_counter() - wall) * 1000, (time.process_time() - cpu) * 1000


def ends(samples: list[tuple[float, float]]) -> dict[str, float]:
    """Mean wall and CPU ms of the first and the last WINDOW samples, and the ratio of the last to the first."""
    first, last = samples[:WINDOW], samples[-WINDOW:]
    result = {
        "first_ms": statistics.fmean(wall for wall, _ in first), "last_ms": statistics.fmean(wall for wall, _ in last),
        "first_cpu_ms": statistics.fmean(cpu for _, cpu in first),
        "last_cpu_ms": statistics.fmean(cpu for _, cpu in last),
    }
    result["last_to_first_cpu"] = result["last_cpu_ms"] / result["first_cpu_ms"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000, help="runs filed (each a summary and a notebook)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    options = parser.parse_args()
    if options.runs < 2 * WINDOW:
        parser.error(f"--runs must be at least {2 * WINDOW}")
    filing: list[tuple[float, float]] = []
    head: list[tuple[float, float]] = []
    filed_record: list[tuple[float, float]] = []
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rollbook-filing-") as temp:
        archive = Archive(Path(temp) / "records")
        for number in range(options.runs):
            record = run_record(number)
            filing.append(timed(partial(file_run, archive, record, notebook_of(record))))
            head.append(timed(archive.head))
            filed_record.append(timed(partial(archive.filed_record, record["run_id"])))
        entries = len(archive.manifest_path.read_bytes().splitlines())
        manifest_bytes = archive.manifest_path.stat().st_size
        verified = archive.verify().ok
    result: dict[str, Any] = {
        "runs": options.runs, "manifest_entries": entries, "manifest_bytes": manifest_bytes,
        "total_s": time.perf_counter() - began, "verify_ok": verified, "window_runs": WINDOW,
        "filing_per_run_ms": ends(filing), "head_ms": ends(head), "filed_record_ms": ends(filed_record),
        "machine": machine(note="2 cores shared with other sessions running tests and builds"),
    }
    options.results.parent.mkdir(exist_ok=True)
    options.results.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({key: result[key] for key in ("runs", "manifest_entries", "total_s", "filing_per_run_ms",
                                                   "head_ms", "filed_record_ms", "verify_ok")}, indent=2))
    print(f"results written to {options.results}", file=sys.stderr)


if __name__ == "__main__":
    main()
