"""The `rollbook` MkDocs plugin: a team's procedures site gets its runbooks and its archive as pages.

Configured in mkdocs.yml (the `[site]` extra installs MkDocs and Material):

    plugins:
      - search
      - rollbook:
          archive: rollback-records   # default: ROLLBOOK_ARCHIVE, else ./rollback-records, if it exists
          runbooks: [bundled, runbooks]   # the default: rollbook's runbooks, then the team's own notebooks
          titles:                          # page titles by runbook name (default: the notebook's heading)
            rollback: Roll back a release
          cache_dir: .cache/rollbook      # the default: rendered record pages, reused while a record is unchanged

- Every runbook notebook becomes a page of the site's Markdown (its Markdown cells as written, its code cells as
  code blocks), with how to run it, its parameters and a download link to the clean notebook; the nav's
  section that lists `runbooks/index.md` lists them all.
- The archive's records become pages under `archive/`, with an index that says whether the manifest verifies
  and lists every run in one table, sorted, filtered and paged in the browser (archive_index.js and .css,
  shipped as the site's own assets: no CDN). Record pages are not in the navigation: the index is. A record
  page calls out a refusal or failure, says its facts at a glance and marks the cells that never ran
  (record_page.py; its look is the plugin's stylesheet, rollbook.css, added to every site). Its notebook is
  rendered once and kept in the cache folder, reused while the record's sha256 is the one filed.
  ROLLBOOK_SITE_ARCHIVE, when set, names the archive of this build whatever mkdocs.yml says.
- `runbook:NAME#section` links in the docs point at a runbook's page (or say it is not in this build).
- Marker comments (`<!-- rollbook:cli -->`, `<!-- rollbook:policy-defaults -->`,
  `<!-- rollbook:record-fields -->`) become tables generated from the code, so the reference cannot
  drift from the program; the run record's JSON Schema is published as `run-record.schema.json`.
- No page or file of the site may contain a connection-string secret (a URL's password, `?password=`,
  `password=` or `sslpassword=` keywords): the build fails if one does.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import markdown as python_markdown
from mkdocs.config import base
from mkdocs.config import config_options as c
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin, event_priority
from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.pages import Page
from mkdocs.utils import get_relative_url

from rollbook.records.archive import default_root
from rollbook.records.archive_verification import ArchiveVerification
from rollbook.records.model import record_json_schema_text
from rollbook.redaction.connection_secrets import secret_leaks
from rollbook.website.archive_pages import (
    ARCHIVE_VARIABLE,
    RecordPage,
    archive_index,
    published_files,
    read_archive,
)
from rollbook.website.clean_scans import CleanScans
from rollbook.website.previous_records import PreviousRecords
from rollbook.website.record_page_cache import DEFAULT_CACHE_DIR, RecordPageCache, renderer_settings
from rollbook.website.record_shell import (
    SHELL_URI,
    RecordPages,
    list_in_sitemap,
    record_page,
    shell_markdown,
    shell_output,
)
from rollbook.website.reference import cli_reference, policy_defaults, record_fields_table
from rollbook.website.runbook_pages import (
    RUNBOOK_LINK,
    Runbook,
    read_runbook,
    runbook_block,
    runbook_link,
    runbook_markdown,
    runbook_order,
    runbooks_index,
)

RUNBOOKS_INDEX = "runbooks/index.md"
ARCHIVE_INDEX = "archive/index.md"
# The index's sorting, filtering and paging, shipped with the package and published as the site's own files.
ASSETS = Path(__file__).parent / "assets"
INDEX_ASSETS = {"javascript": "assets/rollbook/archive_index.js", "css": "assets/rollbook/archive_index.css"}
RECORD_SCHEMA = "run-record.schema.json"  # next to records.md, which links to it
# The plugin's stylesheet (record pages: where a run stopped, steps never run, wide tables), added to every site.
STYLESHEET = "assets/rollbook.css"
STYLESHEET_SOURCE = Path(__file__).parent / "rollbook.css"
# The runbooks shipped in the package (`rollbook run NAME` runs them), named `bundled` in the plugin's `runbooks`.
BUNDLED_RUNBOOKS = Path(__file__).parents[1] / "runbooks"
BUNDLED = "bundled"
DEFAULT_RUNBOOKS = (BUNDLED, "runbooks")
# The Markdown the plugin writes into pages (tabs, admonitions, download links, tables) needs these.
MARKDOWN_EXTENSIONS: Mapping[str, Mapping[str, Any]] = {
    "admonition": {}, "attr_list": {}, "tables": {}, "pymdownx.details": {}, "pymdownx.superfences": {},
    "pymdownx.tabbed": {"alternate_style": True},
}
GENERATED_TABLES: Mapping[str, Callable[[], str]] = {
    "<!-- rollbook:cli -->": cli_reference, "<!-- rollbook:record-fields -->": record_fields_table,
    "<!-- rollbook:policy-defaults -->": policy_defaults,
}
_SCANNED = {".html", ".json", ".ipynb", ".xml", ".txt", ".md", ".jsonl", ".svg", ".js", ".css"}
log = logging.getLogger("mkdocs.plugins.rollbook")


class RollbookPluginConfig(base.Config):
    # A folder of run records (relative to mkdocs.yml), or false for none. Unset: ROLLBOOK_ARCHIVE or
    # ./rollback-records, as the runs file them, when that folder exists.
    archive = c.Optional(c.Type((str, bool)))
    # Folders whose notebooks are runbook pages (relative to mkdocs.yml); `bundled` is rollbook's own runbooks.
    # A runbook of a later folder replaces one of the same name. Unset: bundled, then runbooks/ if it exists.
    runbooks = c.Optional(c.ListOfItems(c.Type(str)))
    # Page titles by runbook name (its notebook's file name without .ipynb), in place of the notebook's first
    # heading: in the nav, on the page, in the runbooks' index.
    titles = c.Type(dict, default={})
    # Where rendered record pages are kept between builds (relative to mkdocs.yml), or false for no cache.
    # Unset: .cache/rollbook next to mkdocs.yml. Keep it out of the site folder and out of version control.
    cache_dir = c.Optional(c.Type((str, bool)))


@dataclass(frozen=True)
class SiteInputs:
    """What the build reads besides docs/: the runbooks, and the archive when one is given."""

    runbooks: tuple[Runbook, ...]
    archive: Path | None = None
    verification: ArchiveVerification | None = None
    records: tuple[RecordPage, ...] = ()
    by_uri: Mapping[str, Runbook] = field(default_factory=dict)
    cache: RecordPageCache = field(default_factory=lambda: RecordPageCache(None))
    clean: CleanScans = field(default_factory=lambda: CleanScans(None))


class NotebookPage(File):
    """A runbook notebook from outside docs/ that is a page (its Markdown is written by the plugin)."""

    def is_documentation_page(self) -> bool:
        return True


class RollbookPlugin(BasePlugin[RollbookPluginConfig]):
    """Runbook pages, archive pages, generated reference tables and the secret guard of a procedures site."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs = SiteInputs(())
        self.converter = python_markdown.Markdown()
        # This build's record pages: drawn from the shell page MkDocs built for them (record_shell.py), and the
        # previous build's, kept aside from MkDocs' clean to be put back where unchanged (previous_records.py).
        self.record_pages: RecordPages | None = None
        self.shell = ""
        self.previous = PreviousRecords(None)

    def on_config(self, config: MkDocsConfig) -> MkDocsConfig:
        root = Path(config.config_file_path).parent
        runbooks = retitled(read_runbooks(self._runbook_folders(root)), self.config.titles)
        archive = self._archive(root, config.config_file_path)
        for name, settings in MARKDOWN_EXTENSIONS.items():
            if name not in config.markdown_extensions:
                config.markdown_extensions.append(name)
                config.mdx_configs.setdefault(name, dict(settings))
        self.converter = python_markdown.Markdown(extensions=config.markdown_extensions,
                                                  extension_configs=config.mdx_configs or {})
        cache_dir = self._cache_dir(root, config)
        cache = RecordPageCache(cache_dir, renderer_settings({
            "markdown_extensions": config.markdown_extensions, "mdx_configs": config.mdx_configs,
            "use_directory_urls": config.use_directory_urls}))
        verification, records = read_archive(archive, cache) if archive else (None, ())
        by_uri = {r.src_uri: r for r in runbooks}
        self.inputs = SiteInputs(runbooks, archive, verification, records, by_uri, cache, CleanScans.load(cache_dir))
        # Runbooks are a handful and each gets its nav entry; runs are thousands: the archive's index lists them.
        _extend_nav(config.nav or [], RUNBOOKS_INDEX,
                    [{r.title: r.src_uri} if r.name in self.config.titles else r.src_uri for r in runbooks])
        if STYLESHEET not in config.extra_css:
            config.extra_css.append(STYLESHEET)
        if records:
            config.extra_javascript.append(INDEX_ASSETS["javascript"])
            config.extra_css.append(INDEX_ASSETS["css"])
        return config

    def on_pre_build(self, *, config: MkDocsConfig) -> None:
        if self.inputs.records:
            self.previous = PreviousRecords.keep(Path(config.site_dir) / "archive",
                                                 (r.slug for r in self.inputs.records), self.inputs.cache.folder)

    def on_files(self, files: Files, /, *, config: MkDocsConfig) -> Files:
        inputs = self.inputs
        for runbook in inputs.runbooks:
            files.append(NotebookPage.generated(config, runbook.src_uri, abs_src_path=str(runbook.path)))
        files.append(File.generated(config, RUNBOOKS_INDEX, content=runbooks_index(inputs.runbooks)))
        files.append(File.generated(config, ARCHIVE_INDEX, content=archive_index(
            inputs.archive, inputs.verification, inputs.records, directory_urls=config.use_directory_urls)))
        if inputs.records:
            for uri in INDEX_ASSETS.values():
                files.append(File.generated(config, uri, abs_src_path=str(ASSETS / Path(uri).name)))
        files.append(File.generated(config, RECORD_SCHEMA, content=record_json_schema_text()))
        files.append(File.generated(config, STYLESHEET, abs_src_path=str(STYLESHEET_SOURCE)))
        if inputs.archive is not None and (inputs.archive / "manifest.jsonl").is_file():
            files.append(File.generated(config, "archive/manifest.jsonl",
                                        abs_src_path=str(inputs.archive / "manifest.jsonl")))
        if inputs.records:
            # The one page MkDocs builds for the records; each record's page is written from it after the build.
            # Reached from the index, not the nav (which says so to no one).
            files.append(File.generated(config, SHELL_URI, content=shell_markdown(),
                                        inclusion=InclusionLevel.NOT_IN_NAV))
        return files

    def on_page_markdown(self, markdown: str, /, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        item = self.inputs.by_uri.get(page.file.src_uri)
        if item is not None:  # a runbook notebook: its page is written from the notebook, not read from the file
            runs = [(r.title, get_relative_url(r.url(directory_urls=config.use_directory_urls), page.url))
                    for r in self.inputs.records if r.record is not None and r.record.runbook == item.name]
            markdown = runbook_markdown(item, runbook_block(item, runs))
        text = RUNBOOK_LINK.sub(lambda m: runbook_link(m, self.inputs.runbooks, page.file.src_uri), markdown)
        for marker, table in GENERATED_TABLES.items():
            if marker in text:  # each table is drawn from the code, for the page that asks for it only
                text = text.replace(marker, table())
        return text

    def on_page_content(self, html: str, /, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        if page.file.src_uri == SHELL_URI:
            def url_of(src_uri: str) -> str:  # from the shell, which is where every record page is
                target = files.get_file_from_path(src_uri)
                return target.url_relative_to(page.file) if target else src_uri

            self.record_pages = RecordPages(self.inputs.cache, self._render, self.inputs.runbooks, url_of,
                                            config.use_directory_urls)
        return html

    def on_post_page(self, output: str, /, *, page: Page, config: MkDocsConfig) -> str:
        if page.file.src_uri == SHELL_URI:
            self.shell = output
        self._check(output.encode("utf-8"), f"the page built from {page.file.src_uri}")
        runbook = self.inputs.by_uri.get(page.file.src_uri)
        if runbook is not None:  # the clean notebook, which the page's download link names, beside the page
            folder = Path(page.file.abs_dest_path).parent
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(runbook.path, folder / runbook.path.name)
        return output

    @event_priority(-100)  # after the search plugin has written search_index.json
    def on_post_build(self, *, config: MkDocsConfig) -> None:
        site = Path(config.site_dir)
        written = self._write_record_pages(site, directory_urls=config.use_directory_urls)
        leaked = {str(path.relative_to(site)): leaks for path, leaks in scan_site(site, self.inputs.clean, written)}
        if leaked:
            for name in leaked:
                (site / name).unlink()
            described = "; ".join(f"{name}: {', '.join(leaks)}" for name, leaks in leaked.items())
            raise PluginError(f"The built site contained a connection-string secret ({described}). Those files were "
                              "deleted and the build fails: find where the password came from, scrub it, and build "
                              "again.")
        self.inputs.clean.save()

    def _write_record_pages(self, site: Path, *, directory_urls: bool) -> set[Path]:
        """Each record's page, written from the shell page MkDocs built for them (in place of the shell), and the
        record files beside it; each checked for secrets before it is written. The files written."""
        pages = self.record_pages
        if pages is None or not self.shell:
            self.previous.restore(site / "archive")
            return set()
        written: set[Path] = set()
        for record in self.inputs.records:
            folder = site / "archive" / record.slug
            outputs = [(folder / path.name, path.read_bytes(), f"the record file {path.name}")
                       for path in published_files(record)]
            page = record_page(self.shell, record, pages.content(record)).encode("utf-8")
            outputs.append((site / record.output_path(directory_urls=directory_urls), page,
                            f"the page of the record {record.slug}"))
            for _, data, source in outputs:
                self._check(data, source)
            if not self.previous.put_back(site / "archive", {path: data for path, data, _ in outputs}):
                folder.mkdir(parents=True, exist_ok=True)
                for path, data, _ in outputs:
                    path.write_bytes(data)
            written.update(path for path, _, _ in outputs)
        self.previous.discard()
        shell = shell_output(site, directory_urls=directory_urls)
        shell.unlink(missing_ok=True)
        if directory_urls:
            shell.parent.rmdir()
        list_in_sitemap(site, self.inputs.records)
        cache = self.inputs.cache
        evicted = cache.evict_unused()
        log.info("rollbook: %d record page(s) rendered, %d reused from the cache %s%s", pages.rendered, pages.reused,
                 cache.folder or "(none)", f" ({evicted} stale entries deleted)" if evicted else "")
        return written

    def _check(self, data: bytes, source: str) -> None:
        """Refuse a page or file that would publish a connection-string secret, before it is written."""
        known, digest = self.inputs.clean.known_clean(data)
        if known:
            return
        leaks = secret_leaks(data.decode("utf-8", errors="replace"))
        if leaks:
            # Raised before the page is written, so the password never reaches the site folder.
            raise PluginError(f"{source[:1].upper()}{source[1:]} contains {', '.join(leaks)}. Nothing may "
                              "publish a password: scrub the record (rollbook.redaction.redact) or fix the page, "
                              "then build again.")
        self.inputs.clean.add(digest)

    def _runbook_folders(self, root: Path) -> list[Path]:
        given = self.config.runbooks
        folders = []
        for name in DEFAULT_RUNBOOKS if given is None else given:
            folder = BUNDLED_RUNBOOKS if name == BUNDLED else root / name
            if folder.is_dir():
                folders.append(folder)
            elif given is not None:
                raise PluginError(f"rollbook plugin, runbooks: there is no folder {folder}. Name folders of notebooks "
                                  f"relative to mkdocs.yml, or `{BUNDLED}` for rollbook's own runbooks.")
        return folders

    def _render(self, text: str) -> str:
        """Markdown written by the plugin, rendered with the site's own extensions."""
        # One converter per build, reset between pages: loading the extensions again for each of thousands of
        # record pages was a good part of their build time.
        return self.converter.reset().convert(text)

    def _cache_dir(self, root: Path, config: MkDocsConfig) -> Path | None:
        option = self.config.cache_dir
        if option is False or option == "":
            return None
        given = option if isinstance(option, str) else DEFAULT_CACHE_DIR
        folder = (root / given).resolve()
        for name, inside in (("docs_dir", config.docs_dir), ("site_dir", config.site_dir)):
            if folder.is_relative_to(Path(inside).resolve()):
                # In docs/ its entries would become pages; in site/ each build would delete them.
                raise PluginError(f"rollbook plugin, cache_dir: {given} is inside the site's {name} ({inside}). "
                                  f"Name a folder outside both, such as the default {DEFAULT_CACHE_DIR}, or "
                                  "`cache_dir: false` for no cache.")
        return folder

    def _archive(self, root: Path, config_file: str | None) -> Path | None:
        given = os.environ.get(ARCHIVE_VARIABLE, "").strip()
        if given:
            archive = Path(given).resolve()
            if not archive.is_dir():
                raise PluginError(f"{ARCHIVE_VARIABLE}={given}: there is no archive folder there. Point it at the "
                                  "folder of run records (ROLLBOOK_ARCHIVE of the runs), or unset it to build "
                                  "without the archive.")
            return archive
        option = self.config.archive
        if option is False or option == "":
            return None
        if not isinstance(option, str):  # unset (or true): where the runs file their records
            default = default_root().resolve()  # where the runs file their records: none filed yet is no error
            return default if default.is_dir() else None
        archive = (root / option).resolve()
        if not archive.is_dir():
            raise PluginError(f"rollbook plugin, archive: {option} ({config_file}): there is no archive folder "
                              f"{archive}. Name the folder of run records, or `archive: false` to build without one.")
        return archive


def read_runbooks(folders: list[Path]) -> tuple[Runbook, ...]:
    """The notebooks of the folders, in the procedure's order; a later folder's runbook replaces an earlier one's."""
    by_name = {path.stem: path for folder in folders for path in sorted(folder.glob("*.ipynb"))}
    return tuple(read_runbook(path) for path in sorted(by_name.values(), key=runbook_order))


def retitled(runbooks: tuple[Runbook, ...], titles: Mapping[str, Any]) -> tuple[Runbook, ...]:
    """The runbooks with the titles mkdocs.yml gives them; a title for a runbook not in the build fails it."""
    names = {r.name for r in runbooks}
    for name, title in titles.items():
        if name not in names:
            raise PluginError(f"rollbook plugin, titles: there is no runbook {name!r} in this build. Name a runbook by "
                              f"its notebook's file name without .ipynb: {', '.join(sorted(names))}.")
        if not isinstance(title, str) or not title.strip():
            raise PluginError(f"rollbook plugin, titles: the title of {name} must be text, not {title!r}.")
    return tuple(replace(r, title=titles[r.name].strip()) if r.name in titles else r for r in runbooks)


def scan_site(site: Path, clean: CleanScans, checked: set[Path]) -> Iterator[tuple[Path, list[str]]]:
    """Every text file of the built site (pages, search index, copied records) that holds a connection-string secret;
    a file checked as it was written (`checked`) or whose bytes `clean` knows (scanned by an earlier build) is not
    scanned again."""
    for path in sorted(site.rglob("*")):
        if path not in checked and path.is_file() and path.suffix in _SCANNED:
            data = path.read_bytes()
            known, digest = clean.known_clean(data)
            if known:
                continue
            leaks = secret_leaks(data.decode("utf-8", errors="replace"))
            if leaks:
                yield path, leaks
            else:
                clean.add(digest)


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
