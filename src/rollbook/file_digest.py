"""The sha256 of a file, as records name backups and archived runs, and of a folder of files (a manifest)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    """Hex sha256 of the file's bytes (hashlib reads it in blocks, so a large dump never sits in memory)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def folder_manifest(folder: Path) -> tuple[tuple[str, int, str], ...]:
    """(name relative to `folder`, size, sha256) of every file under it, sorted by name."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return tuple((p.relative_to(folder).as_posix(), p.stat().st_size, file_sha256(p)) for p in files)


def manifest_sha256(manifest: tuple[tuple[str, int, str], ...]) -> str:
    """One digest for a manifest: the sha256 of its `sha256sum` lines, so `sha256sum -c` can check each file."""
    lines = "".join(f"{digest}  {name}\n" for name, _, digest in manifest)
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def path_sha256(path: Path) -> str:
    """A backup's digest whatever its form: a file's sha256, or a folder's manifest sha256."""
    return manifest_sha256(folder_manifest(path)) if path.is_dir() else file_sha256(path)
