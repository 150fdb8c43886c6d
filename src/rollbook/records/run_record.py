"""The machine-readable summary of one runbook run, kept up to date as the run goes and filed at its end.

The record (rollbook.records.model.RunRecord) is written to the archive after every step, so a run whose
kernel dies still leaves its last known state; it is filed (chained in the manifest) when the run ends,
and it travels in the notebook as a display output with rollbook's own MIME type.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_jsonable_python

from rollbook import markdown
from rollbook.errors import RunInterrupted
from rollbook.outcomes import Outcome
from rollbook.records.archive import Archive
from rollbook.records.archive_files import RECORD_MIME
from rollbook.records.model import RecordedStep, RunRecord
from rollbook.records.run_ids import new_run_id, run_id_time
from rollbook.redaction.redact import collect_secrets, redact_value

RUN_ID_VARIABLE = "ROLLBOOK_RUN_ID"
# A file whose existence means the operator asked the run to stop: `rollbook run` names it, its papermill
# process creates it on a signal. A kernel between two cells ignores SIGINT, so the next step must look.
STOP_FILE_VARIABLE = "ROLLBOOK_STOP_FILE"


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
    """Collects a run's facts and step outcomes as a RunRecord, and keeps its summary in the archive current."""

    def __init__(self, runbook: str, archive: Archive, run_id: str | None = None) -> None:
        self.archive = archive
        # Passwords and tokens of this process's environment: never written into a record.
        self.secrets = collect_secrets(os.environ, {})
        now = datetime.now(UTC)
        given = run_id or os.environ.get(RUN_ID_VARIABLE)
        # One clock: an id made by `rollbook run` before the kernel started names the run's start, so
        # started_at (and the file name made from it) carry the id's second, not the kernel's a moment later.
        started = (run_id_time(given) or now) if given else now
        self.record = RunRecord(run_id=given or new_run_id(now), runbook=runbook, started_at=started)

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
        return self.record.run_id

    def update(self, **facts: Any) -> None:
        """Add facts (database, identity, parameters, plan, backup, ...), secrets removed, and save the record.

        Each fact is a field of RunRecord: an unknown name or a value of the wrong type raises here.
        """
        if "parameters" in facts:
            self.secrets |= collect_secrets({}, facts["parameters"])
        self.record = self.record.with_facts(**redact_value(to_jsonable_python(facts), self.secrets))
        self.save()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        """Record one step: done, or the outcome of the exception that stopped it.

        A step never starts once the operator asked the run to stop: it is recorded as interrupted.
        """
        started = time.monotonic()
        # Saved as running first: if the kernel dies now, the archive shows which step it died in.
        index = len(self.record.steps)
        self.record.steps.append(RecordedStep(step=name, status=Outcome.RUNNING))
        self.save()
        status: str = Outcome.RUNNING
        try:
            if stop_requested():
                raise RunInterrupted(f"The operator stopped the run before step {name} started.")
            yield
        except BaseException as exc:
            status = outcome_of_error(exc)
            raise
        else:
            status = "done"
        finally:
            # By index: facts recorded during the step replaced the record, and its list of steps with it.
            self.record.steps[index] = RecordedStep(step=name, status=status,
                                                    seconds=round(time.monotonic() - started, 3))
            self.save()

    def finish(self, outcome: Outcome, *, message: str | None = None, failed_step: str | None = None) -> RunRecord:
        """Close the record with its outcome and file it in the archive's manifest."""
        self.update(outcome=outcome, message=message, failed_step=failed_step,
                    finished_at=datetime.now(UTC))
        self.archive.file_summary(self.record.to_json(), secrets=self.secrets)
        return self.record

    def save(self) -> None:
        self.archive.write_progress(self.record, secrets=self.secrets)

    @property
    def stopped_at(self) -> str | None:
        """The step that did not complete, if any."""
        return self.record.stopped_at

    def view(self) -> RecordView:
        return RecordView(self.record)


class RecordView:
    """A record as a notebook display output: rollbook's MIME type plus a readable view."""

    def __init__(self, record: RunRecord) -> None:
        self.record = record

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {RECORD_MIME: self.record.to_json(), "text/markdown": record_markdown(self.record),
                "text/plain": f"rollbook record {self.record.run_id}: {self.record.outcome}"}


def record_markdown(record: RunRecord) -> str:
    """A short readable view of a record."""
    facts = record.to_json()
    keys = ("run_id", "runbook", "outcome", "failed_step", "database", "environment", "operator", "approved_by",
            "ticket", "revision_before", "revision_after", "plan_hash", "backup", "started_at", "finished_at")
    rows = []
    for key in keys:
        value = facts.get(key)
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            value = ", ".join(map(str, value))
        if isinstance(value, dict):
            value = value.get("path") or value
        rows.append((key.replace("_", " "), markdown.cell(value)))
    return "**rollbook record**\n\n" + markdown.table(["", ""], rows)
