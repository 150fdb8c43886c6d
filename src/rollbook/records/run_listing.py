"""`archive list`: one row per run, read from the manifest (and the in-progress folder), never from the notebooks.

A run has up to two records (its summary, then its executed notebook); the manifest repeats the facts a
listing shows in each entry, so listing the archive reads one file however many runs it holds. Entries
filed before mode and target were listed lack them: for those runs alone the small summary record is read.
The rows print as a table for a terminal, or as JSON (`--json`) for scripts, with each run's record files.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rollbook.errors import BadInput
from rollbook.records.archive import Archive, ArchivedRecord
from rollbook.records.archive_files import parse_time, run_mode, short_time

_COLUMNS = ("run id", "started (UTC)", "database", "environment", "runbook", "mode", "target", "outcome")


@dataclass(frozen=True)
class RunRow:
    """One run as `archive list` shows it; facts the run did not record are None."""

    run_id: str
    started_at: str | None
    database: str | None
    environment: str | None
    runbook: str | None
    mode: str | None
    target: str | None
    outcome: str | None
    filed: bool
    # The run's records in filing order (its summary, then its notebook), or its in-progress summary.
    records: tuple[ArchivedRecord, ...] = ()

    def cells(self) -> tuple[str, ...]:
        outcome = (self.outcome or "") + ("" if self.filed else " (not filed)")
        return (self.run_id, short_time(self.started_at), *(value or "-" for value in (
            self.database, self.environment, self.runbook, self.mode, self.target)), outcome)

    def to_json(self) -> dict[str, Any]:
        """The row as `archive list --json` prints it: the table's columns (the start in UTC, ISO 8601), its files."""
        started = parse_time(self.started_at)
        return {
            "run_id": self.run_id, "started_at": started.isoformat() if started else self.started_at,
            "database": self.database, "environment": self.environment, "runbook": self.runbook, "mode": self.mode,
            "target": self.target, "outcome": self.outcome, "filed": self.filed,
            "records": [{"kind": record.kind, "seq": record.seq, "file": record.file, "path": str(record.path),
                         "sha256": record.sha256} for record in self.records],
        }


@dataclass(frozen=True)
class RunFilter:
    """Which runs to list: each given fact must match exactly; `limit` keeps the newest runs."""

    environment: str | None = None
    runbook: str | None = None
    outcome: str | None = None
    limit: int | None = None

    def matches(self, row: RunRow) -> bool:
        return all(wanted is None or wanted == found for wanted, found in (
            (self.environment, row.environment), (self.runbook, row.runbook), (self.outcome, row.outcome)))


def list_runs(archive: Archive, only: RunFilter | None = None) -> list[RunRow]:
    """Every run of the archive, oldest first, one row each (its summary's facts, else its latest record's)."""
    only = only or RunFilter()
    rows = [row for row in (_row(archive, records) for records in _by_run(archive.records()))
            if only.matches(row)]
    return rows[max(0, len(rows) - only.limit):] if only.limit is not None else rows


def runs_table(archive: Archive, rows: list[RunRow]) -> str:
    """The rows as an aligned table, or a sentence saying why there is none."""
    nothing = why_no_rows(archive, rows)
    if nothing is not None:
        return nothing
    table = [_COLUMNS, *(row.cells() for row in rows)]
    widths = [max(len(cells[i]) for cells in table) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(cells, widths)).rstrip() for cells in table)


def runs_json(rows: list[RunRow]) -> str:
    """The rows as one JSON array of objects (RunRow.to_json), oldest run first; `[]` for none."""
    return json.dumps([row.to_json() for row in rows], indent=2, ensure_ascii=False)


def why_no_rows(archive: Archive, rows: list[RunRow]) -> str | None:
    """A sentence saying why there is no row to list (no archive, no record, no match); None if there are rows."""
    if not archive.root.is_dir():
        return f"There is no archive at {archive.root} yet (set ROLLBOOK_ARCHIVE if the records are elsewhere)."
    if not rows:
        return f"No run in {archive.root} matches." if archive.records() else f"No records in {archive.root} yet."
    return None


def _by_run(records: Iterable[ArchivedRecord]) -> list[list[ArchivedRecord]]:
    """The records grouped by run, in the order of each run's first record (records() sorts by start time)."""
    runs: dict[str, list[ArchivedRecord]] = {}
    for record in records:
        runs.setdefault(record.run_id, []).append(record)
    return list(runs.values())


def _row(archive: Archive, records: list[ArchivedRecord]) -> RunRow:
    # The record filed last speaks for the run: a notebook's entry carries the verdict reconciled with how
    # papermill ended, which the summary the runbook filed first may not know.
    last = records[-1]
    mode, target = last.mode, last.target
    if not last.listing_complete:
        summary = next((r for r in records if r.kind == "summary"), last)
        try:
            loaded = archive.load_record(summary)
        except BadInput:
            loaded = None  # a damaged or missing file: `archive verify` names it; the listing goes on
        if loaded is not None:
            mode, target = run_mode(loaded), loaded.target
    return RunRow(run_id=last.run_id, started_at=last.started_at, database=last.database,
                  environment=last.environment, runbook=last.runbook, mode=mode, target=target,
                  outcome=last.outcome, filed=last.kind != "in progress", records=tuple(records))
