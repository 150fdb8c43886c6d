"""Record pages written straight into the built site, around one page MkDocs builds for them all (the shell).

An archive of years has thousands of record pages. Through MkDocs' page pipeline each one cost about 20 ms
even with its content cached (events, the theme's templates, the navigation), so a rebuild after one new
run took most of a minute at 2,000 runs. MkDocs builds one page instead, at the depth of the record pages,
with the theme's header, navigation and footer around placeholders; each record's page is that page with
its title, its folder name and its content put in. The shell's links to the rest of the site (stylesheets,
scripts, the navigation) are right for every page at that depth, and every record page looks like the
rest of the site because it is the theme's own page.
"""

from __future__ import annotations

import gzip
import html
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rollbook.website.archive_pages import RecordPage
from rollbook.website.record_notebook import NotebookHtml, NotebookRenderer
from rollbook.website.record_page import PAGE_CLASS, record_header, stop_marks, summary_only_page
from rollbook.website.record_page_cache import CachedPage, RecordPageCache
from rollbook.website.runbook_pages import Runbook, UrlOf

# The shell's folder name, title and content: placeholders no record page can contain by chance.
SHELL_SLUG = "rollbook-record-shell-7c1d"
SHELL_URI = f"archive/{SHELL_SLUG}.md"
TITLE = "ROLLBOOK-RECORD-TITLE-7c1d"
CONTENT = "<!-- ROLLBOOK-RECORD-CONTENT-7c1d -->"
_SITEMAP_ENTRY = re.compile(rf"\s*<url>\s*<loc>[^<]*{SHELL_SLUG}[^<]*</loc>.*?</url>", re.S)


def shell_markdown() -> str:
    """The shell page's source: the record's title and content as placeholders; no table of contents (a record's
    tables need the width) and no search entry (thousands of notebooks would make the index too big to load:
    the archive index's rows are searched instead)."""
    front = {"title": TITLE, "hide": ["toc"], "search": {"exclude": True}}
    return f"---\n{json.dumps(front)}\n---\n<h1>{TITLE}</h1>\n\n{CONTENT}\n"


@dataclass
class RecordPages:
    """Draws each record's page content: from the cache while the record and what its page says are unchanged."""

    cache: RecordPageCache
    convert: Callable[[str], str]  # Markdown to HTML, with the site's extensions
    runbooks: tuple[Runbook, ...]
    url_of: UrlOf  # a page's URL relative to a record page, by its source path
    directory_urls: bool
    rendered: int = 0  # notebooks drawn
    reused: int = 0  # notebooks taken from the cache
    renderer: NotebookRenderer = field(init=False)

    def __post_init__(self) -> None:
        self.renderer = NotebookRenderer()

    def content(self, record: RecordPage) -> str:
        """The page's content: how the run stopped, its facts, pictures and files, then its notebook (or summary)."""
        if record.notebook is None:
            shown = NotebookHtml(self.convert(summary_only_page(record)), stopped_cell=False)
            return self._page(record, shown, self.convert(self._header(record, shown)))
        key = record.cache_key
        cached = self.cache.page(key) if key else None
        marks = stop_marks(record)
        if cached is not None and cached.marks == [marks.stopped_at, marks.stop_words, marks.refusal]:
            shown = NotebookHtml(cached.notebook_html, cached.stopped_cell)
            self.reused += 1
        else:
            shown = self.renderer.render(json.loads(record.notebook.read_bytes()), marks)
            self.rendered += 1
            cached = None
        header = self._header(record, shown)
        if cached is not None and cached.header_markdown == header:
            return self._page(record, shown, cached.header_html)
        header_html = self.convert(header)
        if key:
            self.cache.put_page(key, CachedPage([marks.stopped_at, marks.stop_words, marks.refusal], shown.html,
                                                shown.stopped_cell, header, header_html))
        return self._page(record, shown, header_html)

    def _header(self, record: RecordPage, shown: NotebookHtml) -> str:
        # A record page's files are in its folder: beside it with directory URLs, in the folder of its name without.
        files_url = "" if self.directory_urls else f"{record.slug}/"
        return record_header(record, self.runbooks, self.url_of, shown.html, stopped_cell=shown.stopped_cell,
                             files_url=files_url)

    @staticmethod
    def _page(record: RecordPage, shown: NotebookHtml, header_html: str) -> str:
        return f'<div class="{PAGE_CLASS}">\n{header_html}\n{shown.html}\n</div>'


def record_page(shell: str, record: RecordPage, content: str) -> str:
    """The shell with the record's title, folder name and content put in."""
    return (shell.replace(TITLE, html.escape(record.title)).replace(SHELL_SLUG, record.slug)
            .replace(CONTENT, content))


def shell_output(site: Path, *, directory_urls: bool) -> Path:
    """Where MkDocs wrote the shell page (deleted once the record pages are written: it is no page of the site)."""
    return site / "archive" / (f"{SHELL_SLUG}/index.html" if directory_urls else f"{SHELL_SLUG}.html")


def list_in_sitemap(site: Path, records: tuple[RecordPage, ...]) -> None:
    """The sitemap's entry for the shell replaced by one per record page (a sitemap lists pages only when the site
    names its URL)."""
    sitemap = site / "sitemap.xml"
    if not sitemap.is_file():
        return
    text = sitemap.read_text(encoding="utf-8")
    entry = _SITEMAP_ENTRY.search(text)
    if entry is None:
        return
    entries = "".join(entry.group().replace(SHELL_SLUG, record.slug) for record in records)
    text = text[:entry.start()] + entries + text[entry.end():]
    sitemap.write_text(text, encoding="utf-8")
    packed = site / "sitemap.xml.gz"
    if packed.is_file():
        packed.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))

