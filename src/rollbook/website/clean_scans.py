"""Site files already scanned clean of connection-string secrets, remembered by sha256 between builds.

The build scans every page it writes and every file of the site for a secret (plugin.py). An archive of years
makes that most of a rebuild's time, though almost every file is byte for byte what the last build scanned:
the same bytes give the same answer from the same scanner, so a file whose sha256 was found clean by this
rollbook version is not scanned again. Anything new or changed is scanned, and a file with a secret is never
remembered.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

from rollbook.redaction import connection_secrets

MEMO_FILE = "clean-sha256.txt"


@dataclass
class CleanScans:
    """The sha256 of contents found clean: those of earlier builds (in `folder`) and of this one."""

    folder: Path | None  # None: remembered for this build only
    earlier: frozenset[str] = frozenset()
    now: set[str] = field(default_factory=set)

    @classmethod
    def load(cls, folder: Path | None) -> CleanScans:
        """The memo of `folder`, if it was written by this rollbook version (a newer scanner scans again)."""
        if folder is None:
            return cls(None)
        try:
            lines = (folder / MEMO_FILE).read_text(encoding="ascii").splitlines()
        except (OSError, UnicodeDecodeError):
            return cls(folder)
        if not lines or lines[0] != _scanner():
            return cls(folder)
        return cls(folder, frozenset(lines[1:]))

    def known_clean(self, data: bytes) -> tuple[bool, str]:
        """Whether these bytes were found clean before, and their sha256 (to `add` once they are)."""
        digest = hashlib.sha256(data).hexdigest()
        if digest in self.earlier:
            self.now.add(digest)  # still in the site: remembered for the next build too
            return True, digest
        return digest in self.now, digest

    def add(self, digest: str) -> None:
        self.now.add(digest)

    def save(self) -> None:
        """Keep the digests of this build (only: files no longer in the site are forgotten)."""
        if self.folder is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".txt")
            with os.fdopen(handle, "w", encoding="ascii") as stream:
                stream.write("\n".join([_scanner(), *sorted(self.now)]) + "\n")
            os.replace(temporary, self.folder / MEMO_FILE)
        except OSError:
            pass  # the next build scans everything again: slower, never less safe


def _scanner() -> str:
    """Which scanner found them clean: rollbook's version and the scanner's own source (a changed pattern)."""
    source = hashlib.sha256(Path(connection_secrets.__file__).read_bytes()).hexdigest()
    return f"rollbook {version('rollbook')} connection_secrets {source}"
