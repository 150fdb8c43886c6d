"""The machine-readable summary of one runbook run, kept up to date as the run goes and filed at its end.

The summary is written to the archive after every step, so a run whose kernel dies still leaves
its last known state; it is filed (chained in the manifest) when the run ends, and it travels in the
notebook as a display output with rollbook's own MIME type.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from rollbook import markdown
from rollbook.errors import RunInterrupted
from rollbook.outcomes import Outcome
from rollbook.records.archive import RECORD_MIME, Archive
from rollbook.redaction.redact import collect_secrets, redact_value

RUN_ID_VARIABLE = "ROLLBOOK_RUN_ID"
# A file whose existence means the operator asked the run to stop: `rollbook run` names it, its papermill
# process creates it on a signal. A kernel between two cells ignores SIGINT, so the next step must look.
STOP_FILE_VARIABLE = "ROLLBOOK_STOP_FILE"


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time: 20261124T123456Z-3f9a1c."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def stop_requested() -> bool:
    """Whether the operator asked this run to stop (see STOP_FILE_VARIABLE)."""
    stop_file = os.environ.get(STOP_FILE_VARIABLE)
    return bool(stop_file and os.path.exists(stop_file))


def outcome_of_error(error: BaseException) -> Outcome:
    """How a run that stopped on `error` ended: an interrupt, or once a stop was asked for, is interrupted."""
    if isinstance(error, KeyboardInterrupt) or stop_requested():
        return Outcome.INTERRUPTED
    return Outcome(getattr(error, "outcome", Outcome.FAILED))


class RunRecorder:
    """Collects a run's facts and step outcomes, and keeps its summary in the archive current."""

    def __init__(self, runbook: str, archive: Archive, run_id: str | None = None) -> None:
        self.archive = archive
        # Passwords and tokens of this process's environment: never written into a summary.
        self.secrets = collect_secrets(os.environ, {})
        started = datetime.now(UTC)
        self.summary: dict[str, Any] = {
            "rollbook_record": 1,
            "run_id": run_id or os.environ.get(RUN_ID_VARIABLE) or new_run_id(started),
            "runbook": runbook,
            "started_at": started.isoformat(),
            "finished_at": None,
            "outcome": Outcome.RUNNING,
            "failed_step": None,
            "message": None,
            "database": None,
            "identity": None,
            "steps": [],
        }

    @classmethod
    def begin(cls, runbook: str, archive: Archive | None = None) -> RunRecorder:
        """Start recording; refuses before anything else if the archive folder cannot be written or signed in."""
        archive = archive or Archive.default()
        archive.ensure_ready()
        recorder = cls(runbook, archive)
        recorder.save()
        return recorder

    @property
    def run_id(self) -> str:
        return str(self.summary["run_id"])

    def update(self, **facts: Any) -> None:
        """Add facts (database, identity, parameters, plan, backup, ...) and save the summary."""
        if "parameters" in facts:
            self.secrets |= collect_secrets({}, facts["parameters"])
        self.summary.update(redact_value(facts, self.secrets))
        self.save()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Record one step: done, or the outcome of the exception that stopped it.

        A step never starts once the operator asked the run to stop: it is recorded as interrupted.
        """
        started = time.monotonic()
        # Saved as running first: if the kernel dies now, the archive shows which step it died in.
        entry: dict[str, Any] = {"step": name, "status": Outcome.RUNNING, "seconds": None}
        self.summary["steps"].append(entry)
        self.save()
        try:
            if stop_requested():
                raise RunInterrupted(f"The operator stopped the run before step {name} started.")
            yield
        except BaseException as exc:
            entry["status"] = outcome_of_error(exc)
            raise
        else:
            entry["status"] = "done"
        finally:
            entry["seconds"] = round(time.monotonic() - started, 3)
            self.save()

    def finish(self, outcome: Outcome, *, message: str | None = None, failed_step: str | None = None) -> dict[str, Any]:
        """Close the record with its outcome and file it in the archive's manifest."""
        self.summary.update(outcome=outcome, message=redact_value(message, self.secrets), failed_step=failed_step,
                            finished_at=datetime.now(UTC).isoformat())
        self.archive.file_summary(self.summary, secrets=self.secrets)
        return self.summary

    def save(self) -> None:
        self.archive.write_progress(self.summary, secrets=self.secrets)

    @property
    def stopped_at(self) -> str | None:
        """The step that did not complete, if any."""
        return next((s["step"] for s in reversed(self.summary["steps"]) if s["status"] != "done"), None)

    def view(self) -> RecordView:
        return RecordView(dict(self.summary))


class RecordView:
    """A record summary as a notebook display output: rollbook's MIME type plus a readable view."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.summary = summary

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {RECORD_MIME: self.summary, "text/markdown": summary_markdown(self.summary),
                "text/plain": f"rollbook record {self.summary['run_id']}: {self.summary['outcome']}"}


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short readable view of a record summary."""
    keys = ("run_id", "runbook", "outcome", "failed_step", "database", "environment", "operator", "approved_by",
            "ticket", "revision_before", "revision_after", "plan_hash", "backup", "started_at", "finished_at")
    rows = []
    for key in keys:
        value = summary.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        if isinstance(value, dict):
            value = value.get("path") or value
        rows.append((key.replace("_", " "), markdown.cell(value)))
    return "**rollbook record**\n\n" + markdown.table(["", ""], rows)
