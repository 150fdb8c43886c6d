"""A filed notebook as its record page shows it: where the run stopped, which steps never ran, no papermill banner.

papermill marks a failed run with two red Markdown cells of its own ("An Exception was encountered at
In [8]" on top, "Execution using papermill encountered an exception here and stopped" above the cell).
A policy refusal is how the rollback runbook is meant to stop, and it reads as a crash there. The page
drops those cells and says it in rollbook's words instead: the cell the run stopped in, and each code
cell that never ran (rollbook.records.run_verdict marks them when the run is filed).

Only the rendered page changes: the filed notebook, whose sha256 the archive's manifest holds, is
published byte for byte as its download. Cells are found by their id (`id="cell-id=..."`, which
nbconvert writes for every cell of an nbformat 4.5 notebook); a notebook without ids is shown as filed.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat

PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"
NOT_RUN_CLASS = "rollbook-not-run"
STOPPED_CLASS = "rollbook-stopped-here"
# Added to the stopping cell of a refusal, which is how a runbook is meant to stop: not styled as a crash.
REFUSAL_CLASS = "rollbook-refusal"
# The anchor of the cell the run stopped in, which the page's callout links to.
STOPPED_ANCHOR = "rollbook-stopped"
_DIV = re.compile(r"<div\b|</div>")


@dataclass(frozen=True)
class NotebookCells:
    """What the page marks in a filed notebook, by cell id."""

    papermill_banners: tuple[str, ...]
    not_run: tuple[str, ...]
    stopped: str | None  # the cell that raised, or the one still running when the run ended


def read_cells(path: Path) -> NotebookCells:
    """papermill's banner cells, the code cells that never ran, and the cell the run stopped in."""
    notebook = nbformat.read(path, as_version=4)
    banners, not_run, stopped = [], [], None
    for cell in notebook.cells:
        cell_id = str(cell.get("id") or "")
        status = cell.get("metadata", {}).get("rollbook", {}).get("status")
        if PAPERMILL_ERROR_TAG in cell.get("metadata", {}).get("tags", []):
            banners.append(cell_id)
        elif status == "not run":
            not_run.append(cell_id)
        elif stopped is None and (status == "did not finish" or any(
                output.get("output_type") == "error" for output in cell.get("outputs", []))):
            stopped = cell_id
    return NotebookCells(tuple(c for c in banners if c), tuple(c for c in not_run if c), stopped or None)


def mark_cells(rendered: str, cells: NotebookCells, *, stopped_at: str, stop_words: str, refusal: bool = False) -> str:
    """The notebook's HTML without papermill's banners, the stopping cell and the cells that never ran marked.

    `stopped_at` names the step the run stopped at; `stop_words` says how it stopped ("refused at policy gate");
    `refusal` when a rule refused the run (its message is then shown as a notice, not as an error).
    """
    for cell_id in cells.papermill_banners:
        start, end = _cell_span(rendered, cell_id)
        if start >= 0:
            rendered = rendered[:start] + rendered[end:]
    if cells.stopped:
        rendered = _mark(rendered, cells.stopped, f"{STOPPED_CLASS} {REFUSAL_CLASS}" if refusal else STOPPED_CLASS,
                         f'<p class="rollbook-cell-note" id="{STOPPED_ANCHOR}">The run stopped here: '
                         f"{html.escape(stop_words)}.</p>")
    for cell_id in cells.not_run:
        rendered = _mark(rendered, cell_id, NOT_RUN_CLASS,
                         f'<p class="rollbook-cell-note">not run: the run stopped at {html.escape(stopped_at)}</p>')
    return rendered


def _opening_tag(rendered: str, cell_id: str) -> re.Match[str] | None:
    return re.search(rf'<div class="(jp-Cell [^"]*)" id="cell-id={re.escape(html.escape(cell_id))}">', rendered)


def _cell_span(rendered: str, cell_id: str) -> tuple[int, int]:
    """Where the cell's div starts and ends in the page, or (-1, -1)."""
    opening = _opening_tag(rendered, cell_id)
    if opening is None:
        return -1, -1
    depth = 0
    for tag in _DIV.finditer(rendered, opening.start()):
        depth += 1 if tag.group() == "<div" else -1
        if depth == 0:
            return opening.start(), tag.end()
    return -1, -1


def _mark(rendered: str, cell_id: str, css_class: str, note: str) -> str:
    opening = _opening_tag(rendered, cell_id)
    if opening is None:
        return rendered
    tag = opening.group().replace(opening.group(1), f"{opening.group(1)} {css_class}", 1)
    return rendered[:opening.start()] + tag + note + rendered[opening.end():]
