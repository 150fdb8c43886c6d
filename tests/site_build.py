"""Building the procedures site the way CI and a user do: `mkdocs build --strict`, optionally with an archive."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MKDOCS = str(Path(sys.executable).parent / "mkdocs")
ROLLBOOK = str(Path(sys.executable).parent / "rollbook")


@dataclass
class SiteBuild:
    """One `mkdocs build --strict`: its exit code, what it logged, and the site folder."""

    returncode: int
    output: str
    site: Path

    def page(self, path: str) -> str:
        return (self.site / path).read_text(encoding="utf-8")


def build_site(site: Path, archive: Path | None = None) -> SiteBuild:
    """`mkdocs build --strict` of the repository's mkdocs.yml into `site`, with `archive` as the records."""
    environment = {key: value for key, value in os.environ.items() if key != "ROLLBOOK_SITE_ARCHIVE"}
    environment["NO_MKDOCS_2_WARNING"] = "1"  # Material's end-of-life banner, not a build warning
    if archive is not None:
        environment["ROLLBOOK_SITE_ARCHIVE"] = str(archive)
    result = subprocess.run(
        [MKDOCS, "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"), "--site-dir", str(site)],
        cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300,
    )
    return SiteBuild(result.returncode, result.stdout + result.stderr, site)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def served(site: Path) -> Iterator[str]:
    """The site served over HTTP on 127.0.0.1 (a random port), as a browser reads it; yields its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=site))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
