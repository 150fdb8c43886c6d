"""A filed notebook as its record page shows it: its cells as HTML, where the run stopped, which steps never ran.

rollbook draws its records' notebooks itself instead of through nbconvert. A record is read, never re-run,
and its outputs are the few kinds the runbooks display (Markdown, HTML pictures and tables, text, errors);
nbconvert's JupyterLab template cost about 0.3 s of CPU and 700 kB (mostly its inlined stylesheet) per
page, which an archive of thousands of runs cannot pay. Here a cell is Material's own markup: code is
highlighted as Material highlights any code block, Markdown is converted by mistune (as nbconvert does it,
at less than half Python-Markdown's time: a notebook's outputs are mostly Markdown tables), so a record reads
like the rest of the site and its style is the site's (plus rollbook.css). A runbook's narrative and code
repeat in every one of its runs: each distinct Markdown cell and code cell is converted once per build.

papermill marks a failed run with two red Markdown cells of its own ("An Exception was encountered at
In [8]" on top, "Execution using papermill encountered an exception here and stopped" above the cell).
A policy refusal is how the rollback runbook is meant to stop, and it reads as a crash there. The page
leaves those cells out and says it in rollbook's words instead: the cell the run stopped in, and each code
cell that never ran (rollbook.records.run_verdict marks them when the run is filed). Only the page
changes: the filed notebook, whose sha256 the archive's manifest holds, is published byte for byte.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import mistune
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexer import Lexer
from pygments.lexers import PythonLexer, get_lexer_by_name
from pygments.util import ClassNotFound

PAPERMILL_ERROR_TAG = "papermill-error-cell-tag"
CELL_CLASS = "rollbook-cell"
OUTPUT_CLASS = "rollbook-output"
NOT_RUN_CLASS = "rollbook-not-run"
STOPPED_CLASS = "rollbook-stopped-here"
# Added to the stopping cell of a refusal, which is how a runbook is meant to stop: not styled as a crash.
REFUSAL_CLASS = "rollbook-refusal"
# The anchor of the cell the run stopped in, which the page's callout links to.
STOPPED_ANCHOR = "rollbook-stopped"
# What an output shows, best first, as Jupyter chooses among a display's representations. Scripts
# (application/javascript) are never run from a record.
_SHOWN = ("text/html", "image/svg+xml", "text/markdown", "image/png", "image/jpeg", "text/plain")
# Terminal colours in tracebacks and streams: the page shows the text.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_FORMATTER: HtmlFormatter[str] = HtmlFormatter(nowrap=True)


@dataclass(frozen=True)
class StopMarks:
    """How the run stopped, as the marked cells say it."""

    stopped_at: str  # the step it stopped at ("policy gate")
    stop_words: str  # how it stopped ("refused at policy gate")
    refusal: bool = False  # a rule refused it: its message is a notice, not an error


@dataclass(frozen=True)
class NotebookHtml:
    """A notebook's cells as HTML, and whether one of them is marked as where the run stopped."""

    html: str
    stopped_cell: bool


class _NotebookMarkdown(mistune.HTMLRenderer):
    """mistune's HTML, with fenced code highlighted as Material highlights it (a migration's source in a plan),
    and headings one level down: the record page's own title is its one `<h1>`, the runbook's title comes under it."""

    def heading(self, text: str, level: int, **attrs: Any) -> str:
        return super().heading(text, min(level + 1, 6), **attrs)

    def block_code(self, code: str, info: str | None = None) -> str:
        try:
            lexer = get_lexer_by_name((info or "text").split()[0])
        except ClassNotFound:
            lexer = get_lexer_by_name("text")
        return _highlighted(code, lexer) + "\n"


@dataclass
class NotebookRenderer:
    """Draws filed notebooks. Keeps each distinct Markdown cell and code cell it has drawn: the runs of one
    runbook share them."""

    _seen: dict[tuple[str, str], str] = field(default_factory=dict)
    _lexer: PythonLexer = field(default_factory=PythonLexer)
    # Raw HTML in Markdown is kept (escape=False), as Jupyter shows it: a runbook's Markdown is the team's own.
    _markdown: mistune.Markdown = field(default_factory=lambda: mistune.create_markdown(
        renderer=_NotebookMarkdown(escape=False), plugins=["table", "strikethrough", "url"]))

    def markdown(self, text: str) -> str:
        """Markdown as HTML."""
        return str(self._markdown(text))

    def render(self, notebook: Mapping[str, Any], marks: StopMarks) -> NotebookHtml:
        """The notebook's cells (papermill's banners left out), the stopping cell and the cells never run marked."""
        parts, stopped = [], False
        for number, cell in enumerate(_cells(notebook)):
            metadata = _mapping(cell.get("metadata"))
            if PAPERMILL_ERROR_TAG in (metadata.get("tags") or []):
                continue
            status = _mapping(metadata.get("rollbook")).get("status")
            outputs = [o for o in cell.get("outputs") or [] if isinstance(o, dict)]
            classes, note = [CELL_CLASS, f"{CELL_CLASS}--{cell.get('cell_type')}"], ""
            if status == "not run":
                classes.append(NOT_RUN_CLASS)
                note = (f'<p class="rollbook-cell-note">not run: the run stopped at '
                        f"{html.escape(marks.stopped_at)}</p>")
            elif not stopped and (status == "did not finish" or any(o.get("output_type") == "error" for o in outputs)):
                stopped = True
                classes += [STOPPED_CLASS, REFUSAL_CLASS] if marks.refusal else [STOPPED_CLASS]
                note = (f'<p class="rollbook-cell-note" id="{STOPPED_ANCHOR}">The run stopped here: '
                        f"{html.escape(marks.stop_words)}.</p>")
            cell_id = str(cell.get("id") or number)
            body = (self._once("markdown", _text(cell.get("source"))) if cell.get("cell_type") == "markdown"
                    else self._once("code", _text(cell.get("source"))) + self._outputs(outputs)
                    if cell.get("cell_type") == "code" else f"<pre>{html.escape(_text(cell.get('source')))}</pre>")
            parts.append(f'<div class="{" ".join(classes)}" id="cell-{html.escape(cell_id)}">{note}{body}</div>')
        return NotebookHtml('<div class="rollbook-notebook">\n' + "\n".join(parts) + "\n</div>", stopped)

    def _once(self, kind: str, source: str) -> str:
        key = (kind, source)
        if key not in self._seen:
            self._seen[key] = self.markdown(source) if kind == "markdown" else self._code(source)
        return self._seen[key]

    def _code(self, source: str) -> str:
        return _highlighted(source, self._lexer) if source.strip() else ""

    def _outputs(self, outputs: list[dict[str, Any]]) -> str:
        shown = [self._output(o) for o in outputs]
        return f'<div class="rollbook-outputs">{"".join(shown)}</div>' if any(shown) else ""

    def _output(self, output: Mapping[str, Any]) -> str:
        kind = output.get("output_type")
        if kind == "stream":
            name = "stderr" if output.get("name") == "stderr" else "stdout"
            return _box(f"{OUTPUT_CLASS}--{name}", _pre(_text(output.get("text"))))
        if kind == "error":
            trace = "\n".join(_text(line) for line in output.get("traceback") or []) \
                or f"{output.get('ename', '')}: {output.get('evalue', '')}"
            return _box(f"{OUTPUT_CLASS}--error", _pre(trace))
        data = _mapping(output.get("data"))
        mime = next((m for m in _SHOWN if m in data), None)
        if mime is None:
            return ""
        value = data[mime]
        if mime in ("text/html", "image/svg+xml"):
            shown = _text(value)
        elif mime == "text/markdown":
            shown = self.markdown(_text(value))
        elif mime == "text/plain":
            shown = _pre(_text(value))
        else:
            shown = f'<img src="data:{mime};base64,{html.escape(_base64(value))}" alt="a picture the run displayed">'
        return _box(f"{OUTPUT_CLASS}--{mime.replace('/', '-').replace('+', '-')}", shown)


def _highlighted(code: str, lexer: Lexer) -> str:
    # Material's own code block markup: its colours, and its copy button.
    return f'<div class="highlight"><pre><span></span><code>{highlight(code, lexer, _FORMATTER)}</code></pre></div>'


def _cells(notebook: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    cells = notebook.get("cells")
    return [c for c in cells if isinstance(c, dict)] if isinstance(cells, list) else []


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str:
    """A notebook's multi-line text: one string, or a list of lines (nbformat stores either)."""
    return "".join(str(v) for v in value) if isinstance(value, list) else str(value or "")


def _pre(text: str) -> str:
    return f"<pre><code>{html.escape(_ANSI.sub('', text))}</code></pre>"


def _box(kind: str, content: str) -> str:
    return f'<div class="{OUTPUT_CLASS} {kind}">{content}</div>'


def _base64(value: Any) -> str:
    """A picture's base64 text as filed; anything that is not base64 is shown as nothing rather than as markup."""
    text = _text(value).replace("\n", "")
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return ""
    return text
