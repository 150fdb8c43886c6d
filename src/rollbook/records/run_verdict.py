"""The truthful verdict of a run, reconciled from its executed notebook, its summary and how papermill ended.

papermill can leave every cell marked completed after a timeout or a dead kernel. A cell that never
started has no execution count: it is marked not run here, the cell that was running when the run
ended is marked as not finished, and the verdict comes from what the run itself recorded and from
what the process that ran papermill saw, never from papermill's cell status alone.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import nbformat

from rollbook.outcomes import ExitCode, Outcome
from rollbook.records.archive_files import RECORD_MIME
from rollbook.records.model import RunRecord, read_record
from rollbook.records.run_record import RecordView

RECORD_TAG = "rollbook-record"
# How the papermill process ended, as the runner saw it; None when unknown (a notebook filed afterwards).
ENDINGS = ("completed", "error", "timeout", "interrupted", "dead_kernel", "not_started")
_STOPPED_WORDS = {Outcome.BAD_INPUT: "refused (bad input)", Outcome.UNAVAILABLE: "refused (database unavailable)"}


@dataclass(frozen=True)
class RunVerdict:
    """What happened, in one line: succeeded, refused, failed at a step, interrupted, timed out, or the kernel died."""

    outcome: Outcome
    step: str | None
    text: str

    @property
    def exit_code(self) -> ExitCode:
        return self.outcome.exit_code


def recorded_record(notebook: nbformat.NotebookNode) -> RunRecord | None:
    """The last record the run displayed in its notebook, if any (InvalidRecord if it is not one)."""
    found = None
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if RECORD_MIME in data:
                found = data[RECORD_MIME]
    return read_record(dict(found)) if found else None


def reconcile(
    notebook: nbformat.NotebookNode, record: RunRecord, ending: str | None,
) -> tuple[nbformat.NotebookNode, RunRecord, RunVerdict]:
    """Mark cells that never ran, settle the verdict, and append the record cell carrying the record.

    `record` is what the run saved last; facts the notebook's own record output holds and it lacks are kept.
    """
    notebook = copy.deepcopy(notebook)
    notebook.cells = [c for c in notebook.cells if RECORD_TAG not in c.get("metadata", {}).get("tags", [])]
    last_started = _mark_cells(notebook, ending)
    displayed = recorded_record(notebook)
    if displayed is not None:
        record = read_record({**displayed.to_json(), **record.to_json()})
    verdict = _verdict(notebook, record, ending, last_started)
    if record.outcome is Outcome.RUNNING or verdict.outcome != record.outcome:
        record = record.with_facts(outcome=verdict.outcome, failed_step=verdict.step, message=verdict.text)
    record = record.with_facts(verdict=verdict.text)
    notebook.cells.append(_record_cell(record))
    return notebook, record, verdict


def _mark_cells(notebook: nbformat.NotebookNode, ending: str | None) -> int | None:
    code = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
    started = [i for i in code if notebook.cells[i].get("execution_count") is not None]
    last_started = started[-1] if started else None
    for index in code:
        cell = notebook.cells[index]
        papermill = cell.metadata.setdefault("papermill", {})
        if cell.get("execution_count") is None:
            cell.metadata["rollbook"] = {"status": "not run"}
            papermill["status"] = "pending"
        elif index == last_started and ending in ("timeout", "dead_kernel"):
            cell.metadata["rollbook"] = {"status": "did not finish"}
            papermill["status"] = "failed"
    return last_started


def _verdict(
    notebook: nbformat.NotebookNode, record: RunRecord, ending: str | None, last_started: int | None,
) -> RunVerdict:
    step = record.stopped_at
    outcome = record.outcome
    where = f" in step {step}" if step else ""
    if ending == "not_started":
        return RunVerdict(Outcome.FAILED, None, "failed: the kernel did not start, so no step ran")
    if ending == "interrupted" or (ending is None and outcome is Outcome.INTERRUPTED):
        stopped = record.failed_step or step
        return RunVerdict(Outcome.INTERRUPTED, stopped,
                          "interrupted" + (f" in step {stopped}" if stopped else "") + ": the operator stopped the run")
    if ending == "dead_kernel":
        return RunVerdict(Outcome.KERNEL_DIED, step, "kernel died" + (f" during step {step}" if step else "")
                          + ": the run did not finish")
    if ending == "timeout" or (ending is None and outcome is Outcome.TIMED_OUT):
        return RunVerdict(Outcome.TIMED_OUT, step, f"timed out{where}: the run was interrupted")
    if outcome.succeeded and ending in (None, "completed"):
        texts = {Outcome.SUCCEEDED: "succeeded", Outcome.DRY_RUN: "dry run completed",
                 Outcome.SUCCEEDED_UNVERIFIED: "succeeded, not fully verified"}
        return RunVerdict(outcome, None, texts[outcome])
    if outcome not in (Outcome.RUNNING, Outcome.INCOMPLETE) and not outcome.succeeded:
        stopped = record.failed_step or step
        return RunVerdict(outcome, stopped, f"{_STOPPED_WORDS.get(outcome, outcome.value.replace('_', ' '))} at "
                          f"{stopped or 'an unknown step'}")
    error_cell = next((i for i, c in enumerate(notebook.cells)
                       if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
    if error_cell is not None:
        return RunVerdict(Outcome.FAILED, step,
                          f"failed at cell {error_cell + 1}" + (f" (step {step})" if step else ""))
    return RunVerdict(Outcome.INCOMPLETE, step, "incomplete: the notebook does not show the run's end"
                      + (f" (last step {step})" if step else ""))


def _record_cell(record: RunRecord) -> nbformat.NotebookNode:
    bundle = RecordView(record)._repr_mimebundle_()
    cell: nbformat.NotebookNode = nbformat.v4.new_code_cell(
        source="# The record of this run, added by rollbook when it was filed in the archive.",
        metadata={"tags": [RECORD_TAG], "rollbook": {"status": "record"}},
        outputs=[nbformat.v4.new_output("display_data", data=bundle)],
    )
    # A fixed id: filing the same notebook twice gives the same bytes, so the archive files it once.
    cell["id"] = RECORD_TAG
    return cell
