"""The archive as site pages: one page per run (its executed notebook, or its summary; record_page.py draws it)
and an index of runs that says whether the manifest verifies."""

from __future__ import annotations

import dataclasses
import html
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rollbook import markdown
from rollbook.records.archive import Archive, ArchivedRecord
from rollbook.records.archive_files import database_name, run_mode
from rollbook.records.archive_verification import ArchiveVerification
from rollbook.records.model import RunRecord, read_record
from rollbook.records.signing import RecordSigning
from rollbook.website.record_page_cache import RecordPageCache

ARCHIVE_VARIABLE = "ROLLBOOK_SITE_ARCHIVE"


@dataclass(frozen=True)
class RecordPage:
    """One run of the archive: its page, the records filed for it, and what the manifest says of them."""

    run_id: str
    slug: str  # its folder under archive/ in the site: its page and the files filed for it
    notebook: Path | None
    record: RunRecord | None  # None when its file is missing, damaged or not a run record
    records: tuple[ArchivedRecord, ...]
    manifest: str
    title: str
    unreadable: str = ""  # why the record could not be read
    cache_key: str | None = None  # its entry in the record page cache; None when its bytes are not the filed ones

    def url(self, *, directory_urls: bool) -> str:
        """The page's URL relative to the site's root."""
        return f"archive/{self.slug}/" if directory_urls else f"archive/{self.slug}.html"

    def output_path(self, *, directory_urls: bool) -> str:
        """The page's file relative to the site folder."""
        return f"archive/{self.slug}/index.html" if directory_urls else f"archive/{self.slug}.html"

    @property
    def outcome(self) -> str:
        """The verdict in words (or the outcome), as the index and the page name it."""
        last = self.records[-1]
        text = "record unreadable" if self.record is None else self.record.verdict or self.record.outcome.value
        return f"{text} (not filed yet)" if last.kind == "in progress" else text


def read_archive(root: Path, cache: RecordPageCache) -> tuple[ArchiveVerification, tuple[RecordPage, ...]]:
    """Each run of the archive (its notebook if filed, else its summary), oldest first, and the verification.

    A record whose bytes the verification found to be the filed ones is read from the cache when it is there.
    """
    archive = Archive(root, RecordSigning.configured())  # signatures checked as `rollbook archive verify` does
    verification = archive.verify()
    runs: dict[str, list[ArchivedRecord]] = {}
    for record in archive.records():
        runs.setdefault(record.run_id, []).append(record)
    pages = []
    for run_id, records in runs.items():
        notebook = next((r for r in reversed(records) if r.kind == "notebook"), None)
        main = notebook or records[-1]
        changed = [r.file for r in records if any(r.file in problem for problem in verification.problems)]
        if main.kind == "in progress":
            manifest = "not filed yet"
        elif changed:
            manifest = "✗ changed or missing"
        else:
            manifest = "✓ verified" if verification.ok else "✓ record intact (chain broken elsewhere)"
        # Only bytes the manifest vouches for are cached: a changed record is always read and shown as it is now.
        key = cache.key(main.sha256) if main.sha256 and not changed else None
        loaded, unreadable = _load(archive, main, cache, key)
        stem = Path(main.file).name.rsplit(".", 1)[0] if main.kind != "in progress" else f"in-progress-{run_id}"
        shown = notebook.path if notebook is not None and notebook.path.is_file() else None
        page = RecordPage(run_id, safe_name(stem), shown, loaded, tuple(records), manifest, "", unreadable,
                          key if shown else None)
        started = loaded.started_at.isoformat() if loaded and loaded.started_at else main.started_at
        title = " · ".join(str(v) for v in (_when(started), (loaded.runbook if loaded else main.runbook) or "run",
                                             page.outcome) if v)
        pages.append(dataclasses.replace(page, title=title))
    return verification, tuple(pages)


def _load(archive: Archive, main: ArchivedRecord, cache: RecordPageCache,
          key: str | None) -> tuple[RunRecord | None, str]:
    """The run record of a run's main record file (from the cache when there), or why it cannot be read."""
    cached = cache.record(key) if key else None
    if cached is not None:
        return read_record(cached), ""
    try:
        loaded = archive.load_record(main)
    except Exception as error:  # a deleted or damaged record still gets its page, saying so
        return None, str(error)
    if key:
        cache.put_record(key, loaded.to_json())
    return loaded, ""


def archive_index(archive: Path | None, verification: ArchiveVerification | None,
                  records: tuple[RecordPage, ...], *, directory_urls: bool = True) -> str:
    """The archive's index: whether the manifest verifies, and one row per run, newest first, sortable,
    filterable and paged in the browser (archive_index.js; without it, the whole table)."""
    if archive is None:
        return ("# Archive\n\nThis site was built without an archive. Every run of a runbook leaves a record in the "
                "archive folder (`ROLLBOOK_ARCHIVE`, default `./rollback-records`); name that folder as the "
                "`archive` of the rollbook plugin in `mkdocs.yml`, or build the site with "
                f"`{ARCHIVE_VARIABLE}` pointing at it, to publish the records here:\n\n"
                f"```bash\n{ARCHIVE_VARIABLE}=rollback-records mkdocs build --strict\n```\n\n"
                "See [Records and the archive](../records.md) for what a record holds.\n")
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
    return "\n\n".join([
        # The index is one wide table and has no sections: the table of contents' column goes to it.
        "---\nhide:\n  - toc\n---\n# Archive", banner,
        f"{len(records)} run(s), newest first. Each row links to the run's record: the executed notebook "
        "as it was filed (already scrubbed of passwords), with its summary, timeline and hashes. Click a column's "
        "name to sort by it; type in the boxes under the names to keep only the rows that contain that text."
        + (" [Download the manifest](manifest.jsonl) to check it with `rollbook archive verify`."
           if (archive / "manifest.jsonl").is_file() else ""),
        runs_table(records, directory_urls=directory_urls) if records else "The archive holds no record yet.",
    ]) + "\n"


INDEX_COLUMNS = ("run", "started (UTC)", "database", "environment", "runbook", "mode", "target", "outcome",
                 "manifest")
INDEX_PAGE_SIZE = 50  # rows the browser shows at a time; the filters and sorting see every run


def runs_table(records: tuple[RecordPage, ...], *, directory_urls: bool = True) -> str:
    """The index's table as HTML: one row per run, newest first; each cell's text is what the filters match,
    and `data-sort` what the sorting compares when the text would sort wrongly."""
    head = "".join(f"<th>{html.escape(name)}</th>" for name in INDEX_COLUMNS)
    rows = []
    for page in reversed(records):
        r = page.record
        main = page.records[-1]
        started = r.started_at.isoformat() if r and r.started_at else main.started_at
        cells = [
            # The index is archive/index.md: a record's page is next to it.
            f'<td><a href="{html.escape(page.slug + ("/" if directory_urls else ".html"))}"><code>'
            f"{html.escape(page.run_id)}</code></a></td>",
            f'<td data-sort="{html.escape(_when(started))}">{html.escape(_when(started) or "?")}</td>',
            _td((database_name(r) if r else None) or main.database),
            _td((r.environment if r else None) or main.environment),
            _td((r.runbook if r else None) or main.runbook),
            _td(run_mode(r) if r else None),
            _td(r.target if r else None),
            _td(page.outcome),
            _td(page.manifest),
        ]
        rows.append("<tr>" + "".join(cells) + "</tr>")
    # In Material's scrolling wrapper, as it wraps its own tables: a narrow window scrolls the table, not the page.
    return ('<div class="md-typeset__scrollwrap"><div class="md-typeset__table">\n'
            f'<table class="rollbook-archive" data-page-size="{INDEX_PAGE_SIZE}">\n<thead><tr>{head}</tr></thead>\n'
            "<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>\n</div></div>")


def _td(value: str | None) -> str:
    return f"<td>{html.escape(value or '')}</td>"


def published_files(record: RecordPage) -> list[Path]:
    """The records behind a run's page, published beside it so a reader can download and verify them."""
    return [filed.path for filed in record.records if filed.kind != "in progress" and filed.path.is_file()]


def safe_name(name: str) -> str:
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
