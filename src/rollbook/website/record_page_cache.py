"""Record pages rendered once: a record's drawn notebook, page header and run record, kept outside the site folder.

A filed record never changes (the manifest holds its sha256, and a changed file is shown as changed, never
from the cache), so what its page shows is a function of its bytes, of rollbook (which reads the record and
draws the page) and of the Markdown settings of the site. The cache key is the sha256 of those three. What
else a page says (the manifest's state, the runbook's title and URL, how the run stopped) is kept in the
entry beside what was drawn from it, and drawn again when it differs. Drawing a page is most of its build
time, so an archive of years builds in the time of its new records.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

# Bumped whenever a cached entry changes shape (its files and their fields): older entries are never read again.
PAGE_TEMPLATE_VERSION = 2
# The code that reads records and draws record pages: a change to it (even without a new version number, as in a
# working tree) renders every page again.
_PAGE_CODE = Path(__file__).parent
DEFAULT_CACHE_DIR = ".cache/rollbook"
_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
_ENTRY = re.compile(r"[0-9a-f]{64}\.(record|page)\.json")

log = logging.getLogger("mkdocs.plugins.rollbook")


@dataclass(frozen=True)
class CachedPage:
    """A record page as drawn: its notebook (drawn for `marks`, how the run stopped) and its header (Markdown, and
    its HTML)."""

    marks: list[Any]
    notebook_html: str
    stopped_cell: bool
    header_markdown: str
    header_html: str


@dataclass
class RecordPageCache:
    """A folder of drawn record pages, keyed by record sha256, rollbook's version and code and the settings.

    Each entry is two files: `<key>.record.json`, the run record (read for the index, small), and
    `<key>.page.json`, the drawn notebook and header (read only when its page is written). `folder` None is no cache:
    every lookup misses and nothing is stored.
    """

    folder: Path | None
    renderer: str = ""  # the Markdown converter's settings, as text
    used: set[str] = field(default_factory=set)

    def key(self, sha256: str) -> str:
        """The entry of a record whose bytes have this sha256."""
        return hashlib.sha256(f"{sha256}\0{self.drawn_by}".encode()).hexdigest()

    @functools.cached_property
    def drawn_by(self) -> str:
        """What draws every page, as part of every key: rollbook's version, the cache's layout, the sha256 of
        rollbook's site code and record model, and the settings."""
        digest = hashlib.sha256()
        for path in [*sorted(_PAGE_CODE.glob("*.py")), *sorted(_PAGE_CODE.parent.joinpath("records").glob("*.py"))]:
            digest.update(path.read_bytes())
        return "\0".join((version("rollbook"), str(PAGE_TEMPLATE_VERSION), digest.hexdigest(), self.renderer))

    def record(self, key: str) -> dict[str, Any] | None:
        """The run record of the entry, or None when there is none or it cannot be read."""
        data = self._read(key, "record")
        return data if isinstance(data, dict) else None

    def page(self, key: str) -> CachedPage | None:
        """The drawn page of the entry, or None when there is none or it cannot be read."""
        data = self._read(key, "page")
        try:
            return CachedPage(**data) if isinstance(data, dict) else None
        except TypeError:
            return None

    def put_record(self, key: str, record: dict[str, Any]) -> None:
        self._write(key, "record", record)

    def put_page(self, key: str, page: CachedPage) -> None:
        self._write(key, "page", dataclasses.asdict(page))

    def evict_unused(self) -> int:
        """Delete the entries this build did not use (records of another rollbook version or renderer setting)."""
        if self.folder is None or not self.folder.is_dir():
            return 0
        stale = [path for path in self.folder.iterdir()
                 if _ENTRY.fullmatch(path.name) and path.name[:64] not in self.used]
        for path in stale:
            path.unlink(missing_ok=True)
        return len({path.name[:64] for path in stale})

    def _read(self, key: str, part: str) -> Any:
        if self.folder is None:
            return None
        try:
            data = json.loads((self.folder / f"{key}.{part}.json").read_bytes())
        except (OSError, ValueError):
            return None  # none yet, or damaged: rendered again
        self.used.add(key)
        return data

    def _write(self, key: str, part: str, data: Any) -> None:
        """Write a part atomically (a build killed halfway leaves no half entry). A cache that cannot be written
        costs the next build its time, not this one its pages: said, not raised."""
        if self.folder is None:
            return
        self.used.add(key)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".json")
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(data, stream)
            os.replace(temporary, self.folder / f"{key}.{part}.json")
        except OSError as error:
            log.warning("rollbook: the record page cache %s cannot be written (%s): pages will be rendered "
                        "again next build. Make it writable, or set cache_dir to another folder (false: none).",
                        self.folder, error.strerror or error)


def renderer_settings(settings: Mapping[str, Any]) -> str:
    """The settings pages are drawn with, as part of the key: a changed setting draws them again."""
    # A setting can be a function (an extension's formatter): its repr's address differs in every build.
    return json.dumps({k: _ADDRESS.sub("", repr(v)) for k, v in settings.items()}, sort_keys=True)
