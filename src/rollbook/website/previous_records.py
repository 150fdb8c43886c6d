"""The previous build's record pages and files, kept aside while MkDocs cleans the site, put back where unchanged.

MkDocs deletes the whole site folder before each build, so an archive of years would have thousands of record
pages and files deleted and written again, byte for byte what was there: creating a file costs several times
what reading one does on a journaled disk, and this was most of a rebuild's time. Before the clean, the plugin
moves each record's entries of the site's archive folder (its folder, and its page beside it without directory
URLs) into its cache folder; a record whose page and files this build would write exactly as they are there is
moved back instead of written. Whatever differs is written as always, and what is left aside is deleted at the
end of the build. A build that writes no record page (one that stopped halfway) puts everything back as it was.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ASIDE = "previous-site-archive"


@dataclass(frozen=True)
class PreviousRecords:
    """The previous build's record entries, kept aside in `folder` (None: nothing kept)."""

    folder: Path | None

    @classmethod
    def keep(cls, site_archive: Path, slugs: Iterable[str], cache: Path | None) -> PreviousRecords:
        """Move the records' entries of the site's archive folder into `cache` before MkDocs cleans the site (each
        record's folder `slug`, and `slug.html`); nothing without a cache."""
        if cache is None:
            return cls(None)
        aside = cache / ASIDE
        shutil.rmtree(aside, ignore_errors=True)  # left by a build that was killed halfway
        if not site_archive.is_dir():
            return cls(None)
        try:
            aside.mkdir(parents=True)
            for slug in slugs:
                for name in (slug, f"{slug}.html"):
                    if (site_archive / name).exists():
                        (site_archive / name).rename(aside / name)
        except OSError:
            return cls(aside)  # on another disk (or not movable): those records are written again, as always
        return cls(aside)

    def put_back(self, site_archive: Path, outputs: Mapping[Path, bytes]) -> bool:
        """Move back the previous entries of one record if they hold exactly `outputs` (its files in the site, under
        `site_archive`, by their bytes), nothing more or less; True if they did."""
        if self.folder is None:
            return False
        entries: dict[Path, dict[Path, bytes]] = {}
        for path, data in outputs.items():
            relative = path.relative_to(site_archive)
            entries.setdefault(Path(relative.parts[0]), {})[path] = data
        for entry, files in entries.items():
            previous = self.folder / entry
            try:
                found = ({site_archive / entry / child.name: child for child in previous.iterdir()}
                         if previous.is_dir() else {site_archive / entry: previous} if previous.is_file() else {})
                if found.keys() != files.keys() or any(found[p].read_bytes() != data for p, data in files.items()):
                    return False
            except OSError:  # a folder where a file was, or unreadable: written again
                return False
        for entry in entries:
            (self.folder / entry).rename(site_archive / entry)
        return True

    def restore(self, site_archive: Path) -> None:
        """Put every entry back as it was (a build that wrote no record page)."""
        if self.folder is None or not self.folder.is_dir():
            return
        site_archive.mkdir(parents=True, exist_ok=True)
        for entry in self.folder.iterdir():
            if not (site_archive / entry.name).exists():
                entry.rename(site_archive / entry.name)
        self.discard()

    def discard(self) -> None:
        """Delete what was not put back."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
