"""The runbooks as site pages: each notebook's title, summary and parameters, read without running it, and
the Markdown the site adds to its page (how to run it, its parameters, its latest runs) and to the index."""

from __future__ import annotations

import ast
import html
import io
import json
import logging
import posixpath
import re
import tokenize
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbook import markdown

# The procedure's order; runbooks added later follow, by name.
RUNBOOK_ORDER = ("status", "plan", "backup", "rollback", "restore", "restore-lost-data", "rollback-test")
RUNBOOK_LINK = re.compile(r"\[(?P<text>[^\]]+)\]\(runbook:(?P<name>[A-Za-z0-9_.-]+)(?P<anchor>#[^)\s]*)?\)")

# A page's relative URL of another page of the site, given by its source path (src_uri).
UrlOf = Callable[[str], str]

log = logging.getLogger("mkdocs.plugins.rollbook")


@dataclass(frozen=True)
class Parameter:
    """One line of a runbook's parameters cell."""

    name: str
    default: str
    help: str


@dataclass(frozen=True)
class Runbook:
    """A notebook of runbooks/ as the site shows it."""

    name: str
    path: Path
    title: str
    summary: str
    parameters: tuple[Parameter, ...]

    @property
    def src_uri(self) -> str:
        return f"runbooks/{self.path.name}"



def read_runbook(path: Path) -> Runbook:
    """A runbook's title, first paragraph and parameters, read from the notebook without running it."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = notebook.get("cells", [])
    title, summary = path.stem, ""
    for cell in cells:
        if cell.get("cell_type") != "markdown":
            continue
        lines = _source(cell).splitlines()
        heading = next((line[2:].strip() for line in lines if line.startswith("# ")), None)
        if heading:
            title = heading
            after = "\n".join(lines[lines.index(f"# {heading}") + 1:]).strip()
            summary = " ".join(after.split("\n\n")[0].split()) if after else ""
            break
    parameters_cell = next((c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    parameters = read_parameters(_source(parameters_cell)) if parameters_cell else ()
    return Runbook(path.stem, path, title, summary, parameters)


def read_parameters(source: str) -> tuple[Parameter, ...]:
    """`name = default  # help` lines of a parameters cell (papermill's own listing skips defaults with '=')."""
    parameters = []
    for line in source.splitlines():
        code, comment = line, ""
        try:
            for token in tokenize.generate_tokens(io.StringIO(line).readline):
                if token.type == tokenize.COMMENT:
                    code, comment = line[:token.start[1]], token.string.lstrip("#").strip()
                    break
        except (tokenize.TokenError, IndentationError):
            continue
        try:
            statement = ast.parse(code.strip()).body
        except SyntaxError:
            continue
        if len(statement) == 1 and isinstance(statement[0], ast.Assign | ast.AnnAssign):
            target = statement[0].targets[0] if isinstance(statement[0], ast.Assign) else statement[0].target
            if isinstance(target, ast.Name) and statement[0].value is not None:
                parameters.append(Parameter(target.id, ast.get_source_segment(code.strip(), statement[0].value) or "",
                                            comment))
    return tuple(parameters)


def runbooks_index(runbooks: tuple[Runbook, ...]) -> str:
    # Titles and summaries are the runbooks' own Markdown, from the repository: kept as written, on one line.
    rows = [(f"[{_one_line(r.title)}]({r.path.name})", markdown.code(r.src_uri), _one_line(r.summary))
            for r in runbooks]
    return "\n\n".join([
        "# Runbooks",
        "Each procedure on this site is carried out by a runbook: a Jupyter notebook that `rollbook run` (or plain "
        "papermill) executes against one database. The executed copy is the record of the run, filed in the "
        "archive. Every notebook in the repository's `runbooks/` folder has a page here, with how to run it, its "
        "parameters and the clean notebook to download.",
        markdown.table(["runbook", "file", "what it does"], rows) if rows else "No runbook was found in `runbooks/`.",
        "Runbooks are stored without outputs; the [archive](../archive/index.md) shows them as they ran.",
    ]) + "\n"


def runbook_block(runbook: Runbook, runs: Iterable[tuple[str, str]]) -> str:
    """How to run a runbook, its parameters, the download, and its latest runs in the archive (title, URL each,
    oldest first)."""
    names = {p.name for p in runbook.parameters}
    revision_args = " ".join(f"-r {p.name} {_unquoted(p.default)}" for p in runbook.parameters if "revision" in p.name)
    rollbook_args = " ".join(a for a in (revision_args, "--execute" if "execute" in names else "") if a)
    papermill_args = " ".join(a for a in (revision_args, "-p execute True" if "execute" in names else "") if a)
    environment = ("export DATABASE_URL=postgresql+psycopg://app@db.internal/app"
                   "\n    export ALEMBIC_CONFIG=alembic.ini\n    " if "database_url" in names else "")
    output = f"{runbook.name}-out.ipynb"
    parts = [
        "## Run this runbook",
        # Raw HTML: as a Markdown link, MkDocs would take the notebook's name for this page's own source file.
        f'Download the clean notebook: <a download href="{runbook.path.name}">{runbook.path.name}</a>. Pass each '
        "parameter you change as `-p NAME VALUE`, and revision ids (and any other text papermill would read as a "
        "number) as `-r NAME VALUE`. Keep passwords out of parameters: use `PGPASSWORD` or `~/.pgpass`."
        + (" Without `--execute` (`execute` False) the run is a dry run." if "execute" in names else ""),
        '=== "rollbook"\n\n    ```bash\n    ' + environment + f"rollbook run {runbook.name} {rollbook_args}".rstrip()
        + "\n    ```\n\n    `rollbook run` files the reconciled, scrubbed notebook in the archive itself.",
        '=== "papermill"\n\n    ```bash\n    ' + environment
        + f"papermill runbooks/{runbook.path.name} {output} {papermill_args}".rstrip()
        + f"\n    rollbook archive add {output}\n    ```\n\n    The runbook records its summary as it runs; "
        "`rollbook archive add` files the executed notebook next to it.",
        "## Parameters",
    ]
    rows = [(markdown.code(p.name), markdown.code(p.default), markdown.cell(p.help)) for p in runbook.parameters]
    parts.append(markdown.table(["parameter", "default", "meaning"], rows) if rows else "This runbook takes none.")
    latest = list(reversed(list(runs)))[:5]
    if latest:
        parts.append("## Latest runs in the archive")
        # Raw HTML: record pages are written after the build, so MkDocs cannot check links to them.
        parts.append("<ul>\n" + "\n".join(f'<li><a href="{html.escape(url)}">{html.escape(title)}</a></li>'
                                          for title, url in latest) + "\n</ul>")
    return "\n\n".join(parts)


def runbook_markdown(runbook: Runbook, block: str) -> str:
    """A runbook's page as Markdown: its Markdown cells as written (its title heading as the site titles it), its
    code cells as Python code blocks, and `block` (how to run it) before the first code cell. A runbook page is
    a page of the site like any other: its headings are its table of contents and the anchors links point at."""
    notebook = json.loads(runbook.path.read_text(encoding="utf-8"))
    parts, titled = [], False
    for cell in notebook.get("cells", []):
        source = _source(cell).strip("\n")
        if cell.get("cell_type") == "markdown":
            if not titled:
                source, titled = _retitled(source, runbook.title)
            parts.append(source)
        elif cell.get("cell_type") == "code" and source.strip():
            if block:
                parts.append(block)
                block = ""
            fence = "`" * max([3, *(len(run) + 1 for run in re.findall(r"`{3,}", source))])
            parts.append(f"{fence}python\n{source}\n{fence}")
    if not titled:
        parts.insert(0, f"# {runbook.title}")
    return "\n\n".join([*parts, block] if block else parts) + "\n"


def _retitled(source: str, title: str) -> tuple[str, bool]:
    """A Markdown cell with its first `# ` heading replaced by `title`, and whether it had one."""
    lines = source.splitlines()
    at = next((i for i, line in enumerate(lines) if line.startswith("# ")), None)
    if at is None:
        return source, False
    lines[at] = f"# {title}"
    return "\n".join(lines), True


def runbook_link(match: re.Match[str], runbooks: Iterable[Runbook], src_uri: str) -> str:
    """A `[text](runbook:NAME#section)` link of the page `src_uri` pointed at the runbook's page; text that says so
    when the runbook is not part of this build."""
    runbook = next((r for r in runbooks if r.name == match["name"]), None)
    if runbook is None:
        log.info("%s links to the runbook '%s', which is not part of this build", src_uri, match["name"])
        return f"{match['text']} (the `{match['name']}` runbook, not part of this build yet)"
    target = posixpath.relpath(runbook.src_uri, posixpath.dirname(src_uri) or ".")
    return f"[{match['text']}]({target}{match['anchor'] or ''})"


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def runbook_order(path: Path) -> tuple[int, str]:
    return (RUNBOOK_ORDER.index(path.stem) if path.stem in RUNBOOK_ORDER else len(RUNBOOK_ORDER), path.stem)


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def _unquoted(default: str) -> str:
    try:
        value = ast.literal_eval(default)
    except (ValueError, SyntaxError):
        return default
    return str(value) if value != "" else "''"
