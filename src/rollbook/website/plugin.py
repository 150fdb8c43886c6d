"""The `rollbook` MkDocs plugin: a team's procedures site gets its runbooks and its archive as pages.

Configured in mkdocs.yml (the `[site]` extra installs MkDocs, Material and mkdocs-jupyter):

    plugins:
      - search
      - rollbook:
          archive: rollback-records   # default: ROLLBOOK_ARCHIVE, else ./rollback-records, if it exists
          runbooks: [bundled, runbooks]   # the default: rollbook's runbooks, then the team's own notebooks
          titles:                          # page titles by runbook name (default: the notebook's heading)
            rollback: Roll back a release
          cache_dir: .cache/rollbook      # the default: rendered record pages, reused while a record is unchanged

- Every runbook notebook becomes a page rendered by mkdocs-jupyter (added with the settings below when the
  site does not configure it), with how to run it, its parameters and a download link to the clean notebook;
  the nav's section that lists `runbooks/index.md` lists them all.
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
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, cast

import markdown as python_markdown
from mkdocs.config import base
from mkdocs.config import config_options as c
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import BasePlugin, event_priority
from mkdocs.structure.files import File, Files, InclusionLevel
from mkdocs.structure.pages import Page
from mkdocs.structure.toc import AnchorLink, get_toc

from rollbook.records.archive import default_root
from rollbook.records.archive_verification import ArchiveVerification
from rollbook.records.model import record_json_schema_text
from rollbook.redaction.connection_secrets import secret_leaks
from rollbook.website.archive_pages import (
    ARCHIVE_VARIABLE,
    RecordPage,
    archive_index,
    copy_archive_files,
    read_archive,
)
from rollbook.website.clean_scans import CleanScans
from rollbook.website.record_page import PAGE_CLASS, record_page_html, summary_only_page
from rollbook.website.record_page_cache import (
    DEFAULT_CACHE_DIR,
    RecordPageCache,
    RenderedNotebook,
    renderer_settings,
    toc_tokens,
)
from rollbook.website.reference import cli_reference, policy_defaults, record_fields_table
from rollbook.website.runbook_pages import (
    RUNBOOK_LINK,
    Runbook,
    read_runbook,
    runbook_block,
    runbook_link,
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
# mkdocs-jupyter as the runbook and record pages need it, when the site does not configure it itself.
JUPYTER = "mkdocs-jupyter"
JUPYTER_SETTINGS: Mapping[str, Any] = {
    "include": ["*.ipynb"],  # the default also turns .py files into pages
    "execute": False,  # runbooks are shown as stored (no outputs) and records as filed: the build runs no notebook
    "include_source": True,
    "cache": False,  # the cache would keep copies of archived records in .cache/ of the working tree
}
# The Markdown the plugin writes into pages (tabs, admonitions, download links, tables) needs these.
MARKDOWN_EXTENSIONS: Mapping[str, Mapping[str, Any]] = {
    "admonition": {}, "attr_list": {}, "tables": {}, "pymdownx.details": {}, "pymdownx.superfences": {},
    "pymdownx.tabbed": {"alternate_style": True},
}
_SCANNED = {".html", ".json", ".ipynb", ".xml", ".txt", ".md", ".jsonl", ".svg", ".js", ".css"}
_ID = re.compile(r'\bid="([^"]+)"')
_FIRST_CODE_CELL = re.compile(r'<div[^>]*class="jp-Cell jp-CodeCell')
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
    by_uri: Mapping[str, Runbook | RecordPage] = field(default_factory=dict)
    cache: RecordPageCache = field(default_factory=lambda: RecordPageCache(None))
    clean: CleanScans = field(default_factory=lambda: CleanScans(None))


class NotebookPage(File):
    """A notebook from outside docs/ that is a page, rendered by mkdocs-jupyter from its path."""

    def is_documentation_page(self) -> bool:
        return True


class RollbookPlugin(BasePlugin[RollbookPluginConfig]):
    """Runbook pages, archive pages, generated reference tables and the secret guard of a procedures site."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs = SiteInputs(())
        self.converter = python_markdown.Markdown()

    def on_config(self, config: MkDocsConfig) -> MkDocsConfig:
        root = Path(config.config_file_path).parent
        runbooks = retitled(read_runbooks(self._runbook_folders(root)), self.config.titles)
        archive = self._archive(root, config.config_file_path)
        _add_jupyter(config)
        renderer = renderer_settings(JUPYTER, config.plugins[JUPYTER].config)
        cache_dir = self._cache_dir(root, config)
        cache = RecordPageCache(cache_dir, renderer)
        verification, records = read_archive(archive, cache) if archive else (None, ())
        by_uri: dict[str, Runbook | RecordPage] = {r.src_uri: r for r in runbooks}
        by_uri.update({r.src_uri: r for r in records})
        self.inputs = SiteInputs(runbooks, archive, verification, records, by_uri, cache, CleanScans.load(cache_dir))
        # Runbooks are a handful and each gets its nav entry; runs are thousands: the archive's index lists them.
        _extend_nav(config.nav or [], RUNBOOKS_INDEX,
                    [{r.title: r.src_uri} if r.name in self.config.titles else r.src_uri for r in runbooks])
        if STYLESHEET not in config.extra_css:
            config.extra_css.append(STYLESHEET)
        if records:
            config.extra_javascript.append(INDEX_ASSETS["javascript"])
            config.extra_css.append(INDEX_ASSETS["css"])
        for name, settings in MARKDOWN_EXTENSIONS.items():
            if name not in config.markdown_extensions:
                config.markdown_extensions.append(name)
                config.mdx_configs.setdefault(name, dict(settings))
        self.converter = python_markdown.Markdown(extensions=config.markdown_extensions,
                                                  extension_configs=config.mdx_configs or {})
        return config

    @event_priority(-100)  # after mkdocs-jupyter's on_files, whose wrapper loses a generated file's path
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
        for record in inputs.records:  # reached from the index, not the nav (which says so to no one)
            if record.notebook is not None:
                files.append(NotebookPage.generated(config, record.src_uri, abs_src_path=str(record.notebook),
                                                    inclusion=InclusionLevel.NOT_IN_NAV))
            else:
                files.append(File.generated(config, record.src_uri, content=summary_only_page(record),
                                            inclusion=InclusionLevel.NOT_IN_NAV))
        return files

    @event_priority(-100)  # after mkdocs-jupyter's on_pre_page, which sets how the notebook is rendered
    def on_pre_page(self, page: Page, /, *, config: MkDocsConfig, files: Files) -> Page:
        item = self.inputs.by_uri.get(page.file.src_uri)
        if isinstance(item, RecordPage) and item.notebook is not None:
            _render_once(page, item.cache_key, self.inputs.cache)
        return page

    def on_page_markdown(self, markdown: str, /, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        if page.file.src_uri.endswith(".ipynb"):
            return markdown  # mkdocs-jupyter renders notebooks from the file, not from this text
        text = RUNBOOK_LINK.sub(lambda m: runbook_link(m, self.inputs.runbooks, page.file.src_uri), markdown)
        text = text.replace("<!-- rollbook:cli -->", cli_reference())
        text = text.replace("<!-- rollbook:record-fields -->", record_fields_table())
        return text.replace("<!-- rollbook:policy-defaults -->", policy_defaults())

    def on_page_content(self, html: str, /, *, page: Page, config: MkDocsConfig, files: Files) -> str:
        item = self.inputs.by_uri.get(page.file.src_uri)

        def url_of(src_uri: str) -> str:
            target = files.get_file_from_path(src_uri)
            return target.url_relative_to(page.file) if target else src_uri

        if isinstance(item, Runbook):
            runs = [(r.title, url_of(r.src_uri)) for r in self.inputs.records
                    if r.record is not None and r.record.runbook == item.name]
            block, tokens = self._render(runbook_block(item, runs))
            at = _FIRST_CODE_CELL.search(html)
            html = html[:at.start()] + block + html[at.start():] if at else html + block
            _add_to_toc(page, tokens, first=True)
            if item.name in self.config.titles:
                page.title = item.title
        elif isinstance(item, RecordPage):
            header, notebook = record_page_html(item, self.inputs.runbooks, url_of, html)
            block, tokens = self._render(header)
            html = f'<div class="{PAGE_CLASS}">{block}{notebook}</div>'
            # The notebook's wide tables need the width the table of contents' column would take.
            page.meta["hide"] = [*page.meta.get("hide", []), "toc"]
            page.title = item.title
            # The index's rows are searched (and filtered); thousands of notebooks would make the search index
            # too big to load (Material's search reads this; MkDocs' own search indexes every page).
            page.meta["search"] = {"exclude": True}
            _add_to_toc(page, tokens, first=False)
        if isinstance(item, Runbook) and page.file.src_uri.endswith(".ipynb"):
            # mkdocs collects anchors only from Markdown it rendered; this lets links to runbook sections be checked.
            # (Nothing links into a record's sections: reading thousands of record pages for their ids is skipped.)
            page.present_anchor_ids = set(_ID.findall(html))
        return html

    def on_post_page(self, output: str, /, *, page: Page, config: MkDocsConfig) -> str:
        known, digest = self.inputs.clean.known_clean(output.encode("utf-8"))
        if known:
            return output
        leaks = secret_leaks(output)
        if leaks:
            # Raised before the page is written, so the password never reaches the site folder.
            raise PluginError(f"The page built from {page.file.src_uri} contains {', '.join(leaks)}. Nothing may "
                              "publish a password: scrub the record (rollbook.redaction.redact) or fix the page, "
                              "then build again.")
        self.inputs.clean.add(digest)
        return output

    @event_priority(-100)  # after the search plugin has written search_index.json
    def on_post_build(self, *, config: MkDocsConfig) -> None:
        site = Path(config.site_dir)
        if self.inputs.archive is not None:
            copy_archive_files(self.inputs.records, site)
            cache = self.inputs.cache
            if cache.folder is not None:
                evicted = cache.evict_unused()
                log.info("rollbook: %d record page(s) rendered, %d reused from the cache %s%s", cache.rendered,
                         cache.reused, cache.folder, f" ({evicted} stale entries deleted)" if evicted else "")
        leaked = {str(path.relative_to(site)): leaks for path, leaks in scan_site(site, self.inputs.clean)}
        if leaked:
            for name in leaked:
                (site / name).unlink()
            described = "; ".join(f"{name}: {', '.join(leaks)}" for name, leaks in leaked.items())
            raise PluginError(f"The built site contained a connection-string secret ({described}). Those files were "
                              "deleted and the build fails: find where the password came from, scrub it, and build "
                              "again.")
        self.inputs.clean.save()

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

    def _render(self, text: str) -> tuple[str, list[Any]]:
        """Markdown written by the plugin, rendered with the site's own extensions; its HTML and toc tokens."""
        # One converter per build, reset between pages: loading the extensions again for each of thousands of
        # record pages was a good part of their build time.
        converter = self.converter.reset()
        html = converter.convert(text)
        return html, list(getattr(converter, "toc_tokens", []))

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


def scan_site(site: Path, clean: CleanScans) -> Iterator[tuple[Path, list[str]]]:
    """Every text file of the built site (pages, search index, copied records) that holds a connection-string secret;
    a file whose bytes `clean` knows (a page scanned as it was written, a record scanned by an earlier build) is not
    scanned again."""
    for path in sorted(site.rglob("*")):
        if path.is_file() and path.suffix in _SCANNED:
            data = path.read_bytes()
            known, digest = clean.known_clean(data)
            if known:
                continue
            leaks = secret_leaks(data.decode("utf-8", errors="replace"))
            if leaks:
                yield path, leaks
            else:
                clean.add(digest)


def _add_jupyter(config: MkDocsConfig) -> None:
    """mkdocs-jupyter, which renders the runbook and record pages, unless the site configures it itself."""
    if JUPYTER in config.plugins:
        return
    found = list(entry_points(group="mkdocs.plugins", name=JUPYTER))
    if not found:
        raise PluginError("The rollbook plugin renders runbooks with mkdocs-jupyter, which is not installed: "
                          "pip install 'rollbook[site]'.")
    plugin = found[0].load()()
    errors, warnings = plugin.load_config(dict(JUPYTER_SETTINGS), config.config_file_path)
    if errors or warnings:
        raise PluginError(f"mkdocs-jupyter did not take rollbook's settings: {errors or warnings}")
    config.plugins[JUPYTER] = plugin


def _render_once(page: Page, key: str | None, cache: RecordPageCache) -> None:
    """Render a record page's notebook from the cache entry `key`, or render it and fill the entry (no key: a
    record whose bytes are not the filed ones, always rendered from the file)."""
    render = page.render  # mkdocs-jupyter's, which converts the notebook

    def cached_render(config: MkDocsConfig, files: Files) -> None:
        rendered = cache.page(key) if key else None
        if rendered is not None:
            page.content, page.toc = rendered.content, get_toc(cast(Any, rendered.toc_tokens))  # tokens it wrote
            cache.reused += 1
            return
        render(config, files)
        cache.rendered += 1
        if key and page.content is not None:
            cache.put_page(key, RenderedNotebook(page.content, toc_tokens(page.toc)))

    page.render = cached_render  # type: ignore[method-assign]


def _add_to_toc(page: Page, tokens: list[Any], *, first: bool) -> None:
    added = list(get_toc(tokens))
    toc = page.toc
    items: list[AnchorLink] = toc.items
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
