"""The previous build's record pages and files, kept aside while MkDocs cleans the site, put back where unchanged.

MkDocs deletes the whole site folder before each build, so an archive of years would have thousands of record
pages and files deleted and written again, byte for byte what was there: creating a file costs several times
what reading one does on a journaled disk, and this was most of a rebuild's time. The plugin moves the site's
archive folder aside (into its cache folder) before the clean; a record whose page and files this build would
write exactly as they are there is moved back instead of written. Whatever differs is written as always, and
what is left aside is deleted at the end of the build.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ASIDE = "previous-site-archive"


@dataclass(frozen=True)
class PreviousRecords:
    """The previous build's archive folder, kept aside (`folder` None: nothing kept)."""

    folder: Path | None

    @classmethod
    def keep(cls, site_archive: Path, cache: Path | None) -> PreviousRecords:
        """Move the site's archive folder into `cache` before MkDocs cleans the site; nothing without a cache."""
        if cache is None:
            return cls(None)
        aside = cache / ASIDE
        shutil.rmtree(aside, ignore_errors=True)  # left by a build that failed halfway
        if not site_archive.is_dir():
            return cls(None)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            site_archive.rename(aside)
        except OSError:
            return cls(None)  # on another disk (or not movable): every record is written again, as always
        return cls(aside)

    def put_back(self, site_archive: Path, outputs: Mapping[Path, bytes]) -> bool:
        """Move back the previous files of one record if they are exactly `outputs` (its files in the site, under
        `site_archive`, by their bytes), nothing more or less; True if they were."""
        if self.folder is None:
            return False
        entries: dict[Path, dict[Path, bytes]] = {}
        for path, data in outputs.items():
            relative = path.relative_to(site_archive)
            entries.setdefault(Path(relative.parts[0]), {})[path] = data
        for entry, files in entries.items():
            previous = self.folder / entry
            if previous.is_dir():
                found = {site_archive / entry / child.name: child for child in previous.iterdir()}
            else:
                found = {site_archive / entry: previous} if previous.is_file() else {}
            try:
                if found.keys() != files.keys() or any(found[p].read_bytes() != data for p, data in files.items()):
                    return False
            except OSError:  # a folder where a file was, or unreadable: written again
                return False
        for entry in entries:
            (self.folder / entry).rename(site_archive / entry)
        return True

    def discard(self) -> None:
        """Delete what was not put back."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
