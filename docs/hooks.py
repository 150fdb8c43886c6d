"""Build hooks of the procedures site (mkdocs `hooks:`): runbooks and archived records become pages.

- Every `runbooks/*.ipynb` becomes a page rendered by mkdocs-jupyter, with how to run it, its
  parameters and a download link to the clean notebook; the nav's Runbooks section lists them all.
- With ROLLBOOK_SITE_ARCHIVE naming an archive folder, its records become pages under `archive/`,
  with an index that says whether the manifest verifies.
- `runbook:NAME#section` links in the docs point at a runbook's page (or say it is not in this build).
- Marker comments (`<!-- rollbook:cli -->`, `<!-- rollbook:policy-defaults -->`,
  `<!-- rollbook:record-fields -->`) become tables generated from the code, so the reference cannot
  drift from the program; the run record's JSON Schema is published as `run-record.schema.json`.
- No page or file of the site may contain a connection-string secret (a URL's password, `?password=`,
  `password=` or `sslpassword=` keywords): the build fails if one does.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import json
import logging
import os
import posixpath
import re
import shutil
import tokenize
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import markdown as python_markdown
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page
from mkdocs.structure.toc import AnchorLink, get_toc

from rollbook import markdown
from rollbook.records.archive import Archive, ArchivedRecord
from rollbook.records.archive_verification import ArchiveVerification
from rollbook.records.model import RunRecord, record_fields, record_json_schema_text
from rollbook.records.signing import RecordSigning
from rollbook.redaction.connection_secrets import secret_leaks
from rollbook.site.pictures import recorded_path_picture, timeline_picture

ARCHIVE_VARIABLE = "ROLLBOOK_SITE_ARCHIVE"
RUNBOOKS_INDEX = "runbooks/index.md"
ARCHIVE_INDEX = "archive/index.md"
RECORD_SCHEMA = "run-record.schema.json"  # next to records.md, which links to it
# The procedure's order; runbooks added later follow, by name.
RUNBOOK_ORDER = ("status", "plan", "backup", "rollback", "restore", "rollback-test")
_RUNBOOK_LINK = re.compile(r"\[(?P<text>[^\]]+)\]\(runbook:(?P<name>[A-Za-z0-9_.-]+)(?P<anchor>#[^)\s]*)?\)")
_SCANNED = {".html", ".json", ".ipynb", ".xml", ".txt", ".md", ".jsonl", ".svg", ".js", ".css"}
_ID = re.compile(r'\bid="([^"]+)"')
_FIRST_CODE_CELL = re.compile(r'<div[^>]*class="jp-Cell jp-CodeCell')

log = logging.getLogger("mkdocs.hooks.rollbook")


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


@dataclass(frozen=True)
class RecordPage:
    """One run of the archive: its page, the records filed for it, and what the manifest says of them."""

    run_id: str
    src_uri: str
    notebook: Path | None
    record: RunRecord | None  # None when its file is missing, damaged or not a run record
    records: tuple[ArchivedRecord, ...]
    manifest: str
    title: str
    unreadable: str = ""  # why the record could not be read

    @property
    def outcome(self) -> str:
        """The verdict in words (or the outcome), as the index and the page name it."""
        last = self.records[-1]
        text = "record unreadable" if self.record is None else self.record.verdict or self.record.outcome.value
        return f"{text} (not filed yet)" if last.kind == "in progress" else text


@dataclass(frozen=True)
class SiteInputs:
    """What the build reads besides docs/: the runbooks, and the archive when one is given."""

    runbooks: tuple[Runbook, ...]
    archive: Path | None = None
    verification: ArchiveVerification | None = None
    records: tuple[RecordPage, ...] = ()
    by_uri: Mapping[str, Runbook | RecordPage] = field(default_factory=dict)


# mkdocs calls hooks as module functions: the inputs of the current build live here between its
# events, and on_config replaces them at the start of every build.
_inputs = SiteInputs(())


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    global _inputs
    root = Path(config.config_file_path).parent
    runbooks = tuple(read_runbook(path) for path in sorted((root / "runbooks").glob("*.ipynb"), key=_runbook_order))
    given = os.environ.get(ARCHIVE_VARIABLE, "").strip()
    archive = Path(given).resolve() if given else None
    if archive is not None and not archive.is_dir():
        raise PluginError(f"{ARCHIVE_VARIABLE}={given}: there is no archive folder there. Point it at the folder "
                          "of run records (ROLLBOOK_ARCHIVE of the runs), or unset it to build without the archive.")
    verification, records = read_archive(archive) if archive else (None, ())
    by_uri: dict[str, Runbook | RecordPage] = {r.src_uri: r for r in runbooks}
    by_uri.update({r.src_uri: r for r in records})
    _inputs = SiteInputs(runbooks, archive, verification, records, by_uri)
    _extend_nav(config.nav or [], RUNBOOKS_INDEX, [r.src_uri for r in runbooks])
    _extend_nav(config.nav or [], ARCHIVE_INDEX, [{r.title: r.src_uri} for r in records])
    return config


class NotebookPage(File):
    """A notebook from outside docs/ that is a page, rendered by mkdocs-jupyter from its path."""

    def is_documentation_page(self) -> bool:
        return True


@event_priority(-100)  # after mkdocs-jupyter's on_files, whose wrapper loses a generated file's path
def on_files(files: Files, config: MkDocsConfig) -> Files:
    for runbook in _inputs.runbooks:
        files.append(NotebookPage.generated(config, runbook.src_uri, abs_src_path=str(runbook.path)))
    files.append(File.generated(config, RUNBOOKS_INDEX, content=runbooks_index(_inputs.runbooks)))
    files.append(File.generated(config, ARCHIVE_INDEX, content=archive_index(_inputs)))
    files.append(File.generated(config, RECORD_SCHEMA, content=record_json_schema_text()))
    if _inputs.archive is not None and (_inputs.archive / "manifest.jsonl").is_file():
        files.append(File.generated(config, "archive/manifest.jsonl",
                                    abs_src_path=str(_inputs.archive / "manifest.jsonl")))
    for record in _inputs.records:
        if record.notebook is not None:
            files.append(NotebookPage.generated(config, record.src_uri, abs_src_path=str(record.notebook)))
        else:
            files.append(File.generated(config, record.src_uri, content=summary_only_page(record)))
    return files


def on_page_markdown(text: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    if page.file.src_uri.endswith(".ipynb"):
        return text  # mkdocs-jupyter renders notebooks from the file, not from this text
    text = _RUNBOOK_LINK.sub(lambda m: _runbook_link(m, page), text)
    text = text.replace("<!-- rollbook:cli -->", cli_reference())
    text = text.replace("<!-- rollbook:record-fields -->", record_fields_table())
    return text.replace("<!-- rollbook:policy-defaults -->", policy_defaults())


def on_page_content(html: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    item = _inputs.by_uri.get(page.file.src_uri)
    if isinstance(item, Runbook):
        block, tokens = _render(config, runbook_block(item, page, files))
        at = _FIRST_CODE_CELL.search(html)
        html = html[:at.start()] + block + html[at.start():] if at else html + block
        _add_to_toc(page, tokens, first=True)
    elif isinstance(item, RecordPage):
        block, tokens = _render(config, record_header(item, page, files, html))
        html = block + html
        page.title = item.title
        _add_to_toc(page, tokens, first=False)
    if page.file.src_uri.endswith(".ipynb"):
        # mkdocs collects anchors only from Markdown it rendered; this lets links to runbook sections be checked.
        page.present_anchor_ids = set(_ID.findall(html))
    return html


def on_post_page(output: str, page: Page, config: MkDocsConfig) -> str:
    leaks = secret_leaks(output)
    if leaks:
        # Raised before the page is written, so the password never reaches the site folder.
        raise PluginError(f"The page built from {page.file.src_uri} contains {', '.join(leaks)}. Nothing may publish a "
                          "password: scrub the record (rollbook.redaction.redact) or fix the page, then build again.")
    return output


@event_priority(-100)  # after the search plugin has written search_index.json
def on_post_build(config: MkDocsConfig) -> None:
    site = Path(config.site_dir)
    if _inputs.archive is not None:
        _copy_archive_files(site)
    leaked = {str(path.relative_to(site)): leaks for path, leaks in scan_site(site)}
    if leaked:
        for name in leaked:
            (site / name).unlink()
        described = "; ".join(f"{name}: {', '.join(leaks)}" for name, leaks in leaked.items())
        raise PluginError(f"The built site contained a connection-string secret ({described}). Those files were "
                          "deleted and the build fails: find where the password came from, scrub it, and build again.")


# -- runbooks -----------------------------------------------------------------------------------------------


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


def runbook_block(runbook: Runbook, page: Page, files: Files) -> str:
    """How to run a runbook, its parameters, the download, and its latest runs in the archive."""
    names = {p.name for p in runbook.parameters}
    revision_args = " ".join(f"-r {p.name} {_unquoted(p.default)}" for p in runbook.parameters if "revision" in p.name)
    rollbook_args = " ".join(a for a in (revision_args, "--execute" if "execute" in names else "") if a)
    papermill_args = " ".join(a for a in (revision_args, "-p execute True" if "execute" in names else "") if a)
    environment = ("export DATABASE_URL=postgresql+psycopg://app@db.internal/app"
                   "\n    export ALEMBIC_CONFIG=alembic.ini\n    " if "database_url" in names else "")
    output = f"{runbook.name}-out.ipynb"
    parts = [
        "## Run this runbook",
        f"Download the clean notebook: [{runbook.path.name}]({runbook.path.name}){{: download }}. Pass each "
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
    runs = [r for r in _inputs.records if r.record is not None and r.record.runbook == runbook.name]
    if runs:
        parts.append("## Latest runs in the archive")
        parts.append("\n".join(f"- [{markdown.cell(r.title)}]({_url(files, r.src_uri, page)})"
                               for r in list(reversed(runs))[:5]))
    return "\n\n".join(parts)


def _runbook_link(match: re.Match[str], page: Page) -> str:
    runbook = next((r for r in _inputs.runbooks if r.name == match["name"]), None)
    if runbook is None:
        log.info("%s links to the runbook '%s', which is not in runbooks/ yet", page.file.src_uri, match["name"])
        return f"{match['text']} (the `{match['name']}` runbook, not part of this build yet)"
    target = posixpath.relpath(runbook.src_uri, posixpath.dirname(page.file.src_uri) or ".")
    return f"[{match['text']}]({target}{match['anchor'] or ''})"


# -- the archive --------------------------------------------------------------------------------------------


def read_archive(root: Path) -> tuple[ArchiveVerification, tuple[RecordPage, ...]]:
    """Each run of the archive (its notebook if filed, else its summary), oldest first, and the verification."""
    archive = Archive(root, RecordSigning.configured())  # signatures checked as `rollbook archive verify` does
    verification = archive.verify()
    runs: dict[str, list[ArchivedRecord]] = {}
    for record in archive.records():
        runs.setdefault(record.run_id, []).append(record)
    pages = []
    for run_id, records in runs.items():
        notebook = next((r for r in reversed(records) if r.kind == "notebook"), None)
        main = notebook or records[-1]
        loaded: RunRecord | None = None
        unreadable = ""
        try:
            loaded = archive.load_record(main)
        except Exception as error:  # a deleted or damaged record still gets its page, saying so
            unreadable = str(error)
        changed = [r.file for r in records if any(r.file in problem for problem in verification.problems)]
        if main.kind == "in progress":
            manifest = "not filed yet"
        elif changed:
            manifest = "✗ changed or missing"
        else:
            manifest = "✓ verified" if verification.ok else "✓ record intact (chain broken elsewhere)"
        stem = Path(main.file).name.rsplit(".", 1)[0] if main.kind != "in progress" else f"in-progress-{run_id}"
        usable = notebook is not None and notebook.path.is_file()
        uri = f"archive/{_safe_name(stem)}.{'ipynb' if usable else 'md'}"
        page = RecordPage(run_id, uri, notebook.path if usable else None, loaded, tuple(records), manifest, "",
                          unreadable)
        started = loaded.started_at.isoformat() if loaded and loaded.started_at else main.started_at
        title = " · ".join(str(v) for v in (_when(started), (loaded.runbook if loaded else main.runbook) or "run",
                                             page.outcome) if v)
        pages.append(dataclasses.replace(page, title=title))
    return verification, tuple(pages)


def archive_index(inputs: SiteInputs) -> str:
    if inputs.archive is None:
        return ("# Archive\n\nThis site was built without an archive. Every run of a runbook leaves a record in the "
                "archive folder (`ROLLBOOK_ARCHIVE`, default `./rollback-records`); build the site with "
                f"`{ARCHIVE_VARIABLE}` pointing at that folder to publish the records here:\n\n"
                f"```bash\n{ARCHIVE_VARIABLE}=rollback-records mkdocs build --strict\n```\n\n"
                "See [Records and the archive](../records.md) for what a record holds.\n")
    verification = inputs.verification
    assert verification is not None
    if verification.ok:
        banner = (f'!!! success "The manifest verifies"\n\n    {verification.entries} record file(s); the hash chain '
                  "is intact and every record matches its sha256.")
        if verification.head:
            banner += f" Head entry hash: `{verification.head}`."
        if verification.signatures:
            banner += f" Signatures: {markdown.cell(verification.signatures)}"
    else:
        banner = ('!!! failure "The manifest does not verify"\n\n    The archive was changed outside rollbook:\n\n'
                  + "\n".join(f"    - {markdown.cell(p)}" for p in verification.problems))
    rows = []
    for page in inputs.records:
        r = page.record
        rows.append((
            f"[{markdown.cell(_when(r.started_at if r else None) or '?')}]({posixpath.basename(page.src_uri)})",
            markdown.cell(r.database_name if r else ""), markdown.cell(r.runbook if r else ""),
            _moved(r), markdown.cell(page.outcome), markdown.cell(r.operator or "" if r else ""),
            markdown.cell(r.approved_by or "" if r else ""), page.manifest))
    table = markdown.table(["started (UTC)", "database", "runbook", "revision before → after", "outcome", "operator",
                            "approved by", "manifest"], list(reversed(rows)))
    return "\n\n".join([
        # The index is one wide table and has no sections: the table of contents' column goes to it.
        "---\nhide:\n  - toc\n---\n# Archive", banner,
        f"{len(inputs.records)} run(s), newest first. Each row links to the run's record: the executed notebook "
        "as it was filed (already scrubbed of passwords), with its summary, timeline and hashes."
        + (" [Download the manifest](manifest.jsonl) to check it with `rollbook archive verify`."
           if inputs.archive is not None and (inputs.archive / "manifest.jsonl").is_file() else ""),
        table if rows else "The archive holds no record yet.",
    ]) + "\n"


def record_header(record: RecordPage, page: Page, files: Files, notebook_html: str) -> str:
    """The facts of a run at a glance, its pictures (unless the notebook drew them) and its files."""
    # An unreadable record still gets its page: its run id, why it could not be read, and its files.
    s = record.record or RunRecord(run_id=record.run_id, runbook="")
    backup, identity = s.backup, s.identity
    runbook = next((r for r in _inputs.runbooks if r.name == s.runbook), None)
    facts = [
        ("run", markdown.code(record.run_id)),
        ("runbook", f"[{markdown.cell(runbook.title)}]({_url(files, runbook.src_uri, page)})" if runbook
         else markdown.cell(s.runbook)),
        ("outcome", f"**{markdown.cell(record.outcome)}**"),
        ("message", markdown.cell(s.message or record.unreadable)),
        ("database", markdown.code(s.database) if s.database else ""),
        ("server", markdown.cell(f"server_version {identity.server_version} system_identifier "
                                 f"{identity.system_identifier}") if identity else ""),
        ("environment", markdown.cell(s.environment or "")),
        ("operator", markdown.cell(s.operator or "")),
        ("approved by", markdown.cell(s.approved_by or "")),
        ("ticket", markdown.cell(s.ticket or "")),
        ("revision before → after", _moved(record.record)),
        ("plan", markdown.cell(" ".join(v for v in (s.plan_hash, s.plan_verdict) if v))),
        ("backup", markdown.cell(f"{backup.path}, {backup.size_bytes} bytes, sha256 {backup.sha256}, verified: "
                                 f"{backup.verified}") if backup else ""),
        ("started", markdown.cell(s.started_at.isoformat() if s.started_at else "")),
        ("finished", markdown.cell(s.finished_at.isoformat() if s.finished_at else "")),
        ("manifest", record.manifest),
    ]
    parts = [f"# {markdown.cell(record.title)}", "## At a glance",
             markdown.table(["recorded", "value"], [(k, v) for k, v in facts if v])]
    pictures = []
    if "rollbook-downgrade-path" not in notebook_html:
        picture = recorded_path_picture(s)
        if picture is not None:
            pictures.append(picture.to_html())
    if "rollbook-timeline" not in notebook_html and s.steps:
        pictures.append(timeline_picture(s).to_html())
    if pictures:
        parts += ["## Pictures", *pictures]
    parts.append("## Files and hashes")
    parts.append(markdown.table(["file", "kind", "sha256", "filed"], [
        (markdown.code(r.file), r.kind, markdown.code(r.sha256 or ""), markdown.cell(r.filed_at or "not filed"))
        for r in record.records]))
    downloads = [f"[{r.path.name}]({r.path.name}){{: download }}" for r in record.records
                 if r.kind != "in progress" and r.path.is_file()]
    if downloads:
        parts.append("Download: " + ", ".join(downloads) + ". Check them against the manifest with "
                     "`rollbook archive verify`.")
    if record.notebook is not None:
        parts.append("## The executed notebook\n\nAs filed in the archive: cells that never ran are marked "
                     "*not run*, and the last cell is the record rollbook added when it filed the run.")
    return "\n\n".join(parts)


def summary_only_page(record: RecordPage) -> str:
    if record.record is None:
        return f"The record of run `{record.run_id}` could not be read: {markdown.cell(record.unreadable)}\n"
    text = json.dumps(record.record.to_json(), indent=2, ensure_ascii=False)
    return ("No executed notebook was filed for this run (a plain papermill run whose notebook was not added with "
            "`rollbook archive add`, or a run that has not ended): this is its summary.\n\n"
            '??? note "The record summary (JSON)"\n\n    ```json\n'
            + "\n".join(f"    {line}" for line in text.splitlines()) + "\n    ```\n")


def _copy_archive_files(site: Path) -> None:
    """The records behind each page, and the manifest, so a reader can download and verify them."""
    assert _inputs.archive is not None
    (site / "archive").mkdir(parents=True, exist_ok=True)
    for record in _inputs.records:
        folder = site / "archive" / Path(record.src_uri).stem
        folder.mkdir(parents=True, exist_ok=True)
        for filed in record.records:
            if filed.kind != "in progress" and filed.path.is_file():
                shutil.copyfile(filed.path, folder / filed.path.name)


# -- generated reference --------------------------------------------------------------------------------------


def cli_reference() -> str:
    """Every rollbook command's --help, generated from the program itself."""
    from rollbook.cli import main

    parts = []
    for path, command, context in _commands(main, click.Context(main, info_name="rollbook", max_content_width=100)):
        parts.append(f"### `{' '.join(path)}`\n\n```text\n{command.get_help(context)}\n```")
    return "\n\n".join(parts)


def _commands(command: click.Command, context: click.Context,
              path: tuple[str, ...] = ("rollbook",)) -> Iterator[tuple[tuple[str, ...], click.Command, click.Context]]:
    yield path, command, context
    if isinstance(command, click.Group):
        for name in sorted(command.list_commands(context)):
            child = command.get_command(context, name)
            if child is not None and not child.hidden:
                yield from _commands(child, click.Context(child, info_name=name, parent=context), (*path, name))


def record_fields_table() -> str:
    """Every top-level field of the run record with its JSON type and meaning, from the model."""
    rows = [(markdown.code(name), markdown.cell(kind), markdown.cell(meaning))
            for name, kind, meaning in record_fields()]
    return markdown.table(["field", "type", "meaning"], rows)


def policy_defaults() -> str:
    """The policy rules of each environment as rollbook applies them when no file changes them."""
    from rollbook.policy.rules import default_policy

    environments = default_policy().environments
    keys = list(next(iter(environments.values())).to_dict())
    # Written as a rollbook.toml would say it: TOML has no null, and `false` switches the window off.
    values = {name: {k: False if v is None else v for k, v in rules.to_dict().items()}
              for name, rules in environments.items()}
    rows = [(markdown.code(key), *(markdown.code(json.dumps(values[name][key])) for name in environments))
            for key in keys]
    return markdown.table(["key", *environments], rows)


# -- secrets ----------------------------------------------------------------------------------------------------


def scan_site(site: Path) -> Iterator[tuple[Path, list[str]]]:
    """Every text file of the built site (pages, search index, copied records) that holds a connection-string secret."""
    for path in sorted(site.rglob("*")):
        if path.is_file() and path.suffix in _SCANNED:
            leaks = secret_leaks(path.read_text(encoding="utf-8", errors="replace"))
            if leaks:
                yield path, leaks


# -- helpers ----------------------------------------------------------------------------------------------------


def _render(config: MkDocsConfig, text: str) -> tuple[str, list[dict[str, Any]]]:
    """Markdown written by the hooks, rendered with the site's own extensions; its HTML and toc tokens."""
    converter = python_markdown.Markdown(extensions=config.markdown_extensions,
                                         extension_configs=config.mdx_configs or {})
    html = converter.convert(text)
    return html, getattr(converter, "toc_tokens", [])


def _add_to_toc(page: Page, tokens: list[dict[str, Any]], *, first: bool) -> None:
    added = list(get_toc(tokens))
    toc = page.toc
    items: list[AnchorLink] = toc.items  # type: ignore[attr-defined]
    if first and items and items[0].level == 1:
        items[0].children[0:0] = added  # the notebook's title stays on top
    elif first:
        items[0:0] = added
    else:
        # A record's own title leads; the notebook's headings follow under it.
        head = added[0] if added and added[0].level == 1 else None
        if head is not None:
            head.children.extend(items)
            items[:] = added
        else:
            items[0:0] = added


def _extend_nav(nav: list[Any], anchor: str, entries: list[Any]) -> bool:
    """Append `entries` to the nav section that lists `anchor`; True if it was found."""
    for item in nav:
        children = next(iter(item.values())) if isinstance(item, dict) and len(item) == 1 else None
        if item == anchor or (isinstance(item, dict) and anchor in item.values()):
            nav.extend(e for e in entries if e not in nav)
            return True
        if isinstance(children, list) and _extend_nav(children, anchor, entries):
            return True
    return False


def _one_line(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _runbook_order(path: Path) -> tuple[int, str]:
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


def _url(files: Files, src_uri: str, page: Page) -> str:
    target = files.get_file_from_path(src_uri)
    return target.url_relative_to(page.file) if target else src_uri


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def _when(value: datetime | str | None) -> str:
    if value is None or value == "":
        return ""
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except ValueError:
        return value if isinstance(value, str) else ""
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return f"{parsed:%Y-%m-%d %H:%M:%S}"


def _revisions(value: list[str] | None) -> str:
    if value is None:
        return "?"
    return ", ".join(value) or "base"


def _moved(record: RunRecord | None) -> str:
    if record is None:
        return "? → ?"
    before, after = _revisions(record.revision_before), _revisions(record.revision_after)
    return f"{markdown.cell(before)} → {markdown.cell(after)}"
