"""The archive folder's files: their layout and names, a record file's bytes and the run record it carries, and
the primitives that write them (under a lock, never over an existing file, appended without rewriting).

The layout (see records/archive.py for what each file is for): record files named by record_name, the
manifest (MANIFEST), signatures/<seq>.sig (SIGNATURES), .in-progress/<run_id>.json (IN_PROGRESS) and the lock
file (LOCK_FILE); temporary files start with TEMP_PREFIX and are never records.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import secrets as token_source
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rollbook.file_publishing import fsync_directory, publish_new, write_all, write_durably
from rollbook.records.model import RunRecord, read_record

RECORD_MIME = "application/vnd.rollbook.record+json"
MANIFEST = "manifest.jsonl"
LOCK_FILE = ".manifest.lock"
IN_PROGRESS = ".in-progress"
SIGNATURES = "signatures"
TEMP_PREFIX = ".tmp-"
EXTENSIONS = {"summary": ".json", "notebook": ".ipynb"}
LISTING_FIELDS = ("started_at", "finished_at", "runbook", "database", "outcome", "operator", "approved_by",
                  "ticket", "environment", "mode", "target")
# Listing fields a manifest entry filed before them lacks: `archive list` reads them from the summary record.
LATER_LISTING_FIELDS = ("mode", "target")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# -- names and contents -------------------------------------------------------------------------------------

def record_name(record: RunRecord) -> str:
    """A record's file name without extension: time_database_runbook_outcome_runid-tail, in [A-Za-z0-9._-]."""
    started = utc(record.started_at) if record.started_at else datetime.now(UTC)
    parts = (
        f"{started:%Y%m%dT%H%M%SZ}",
        safe_name(database_name(record), 63) or "unknown",
        safe_name(record.runbook, 40) or "runbook",
        safe_name(record.outcome.value, 20) or "unknown",
        safe_name(record.run_id[-6:], 6) or "run",
    )
    return "_".join(parts)


def database_name(record: RunRecord) -> str | None:
    """The database a record is about: from its identity, else the path of its (masked) URL."""
    if record.identity is not None and record.identity.database:
        return record.identity.database
    url = record.database
    if not url:
        return None
    if "://" not in url:
        return url
    try:
        return urlsplit(url).path.strip("/") or None
    except ValueError:
        return None



def progress_path(root: Path, run_id: str) -> Path:
    """Where a run's in-progress record is kept."""
    return root / IN_PROGRESS / f"{safe_name(run_id, 80)}.json"


def listing_fields(record: RunRecord) -> dict[str, str | None]:
    """The fields of a run that its manifest entry repeats, for `archive list` (database by name, not URL)."""
    facts = record.to_json()
    fields = {key: listing_text(facts.get(key)) for key in LISTING_FIELDS}
    fields["database"] = listing_text(database_name(record))
    fields["mode"] = run_mode(record)
    return fields


def run_mode(record: RunRecord) -> str | None:
    """Whether the run changed the database ("executed") or only looked ("dry run"); None for a runbook with no mode."""
    if record.execute is None:
        return None
    return "executed" if record.execute else "dry run"


def notebook_record(notebook: Any) -> RunRecord | None:
    """The last rollbook record output in a notebook's cells (InvalidRecord if it is not a run record)."""
    found = None
    for cell in notebook.get("cells", []) if isinstance(notebook, dict) else []:
        for output in cell.get("outputs", []) if isinstance(cell, dict) else []:
            data = output.get("data", {}) if isinstance(output, dict) else {}
            if isinstance(data, dict) and isinstance(data.get(RECORD_MIME), dict):
                found = data[RECORD_MIME]
    return read_record(found) if found is not None else None


def summary_bytes(summary: Mapping[str, Any]) -> bytes:
    """A summary record's bytes as filed: indented JSON, UTF-8, ending in a newline."""
    return (json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def safe_name(value: Any, limit: int) -> str:
    """`value` as a piece of a file name: [A-Za-z0-9._-] only, at most `limit` characters."""
    if value is None:
        return ""
    return _UNSAFE.sub("-", str(value)).strip(".-")[:limit]


def listing_text(value: Any) -> str | None:
    """A listing field as text of at most 200 characters; None for nothing."""
    if value is None or value == "":
        return None
    return (value if isinstance(value, str) else json.dumps(value, default=str))[:200]


def parse_time(value: Any) -> datetime | None:
    """An ISO time of a record, in UTC; None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def utc(moment: datetime) -> datetime:
    """A time in UTC."""
    # A naive time in a record was written as UTC (rollbook records nothing else).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def short_time(value: str | None) -> str:
    """A time as `archive list` shows it (to the second), or the text as it is."""
    parsed = parse_time(value)
    return f"{parsed:%Y-%m-%d %H:%M:%S}" if parsed else (value or "")



def reason(error: OSError) -> str:
    """What an OSError says, with the file it is about."""
    reason = error.strerror or type(error).__name__
    return f"{reason}: {error.filename}" if error.filename else reason


# -- writing ------------------------------------------------------------------------------------------------

@contextmanager
def locked(root: Path) -> Iterator[None]:
    """Hold the archive's lock file, serialising appends across processes."""
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_new_record(root: Path, name: str, data: bytes) -> str:
    """Write `data` under `name`, or name-2, name-3, ... if taken; never replaces an existing file."""
    temporary = root / f"{TEMP_PREFIX}{token_source.token_hex(8)}.part"
    write_durably(temporary, data)
    stem, suffix = os.path.splitext(name)
    try:
        for attempt in range(1, 10_000):
            candidate = name if attempt == 1 else f"{stem}-{attempt}{suffix}"
            if publish_new(temporary, root / candidate):
                fsync_directory(root)
                return candidate
        raise OSError(errno.EEXIST, "no free record name", name)
    finally:
        temporary.unlink(missing_ok=True)


def replace_file(folder: Path, name: str, data: bytes) -> Path:
    """Write `data` durably and put it in place of folder/name atomically; the folder is created if needed."""
    folder.mkdir(parents=True, exist_ok=True)
    temporary = folder / f"{TEMP_PREFIX}{token_source.token_hex(8)}"
    write_durably(temporary, data)
    os.replace(temporary, folder / name)
    fsync_directory(folder)
    return folder / name


def append_line(manifest_path: Path, line: bytes) -> None:
    """Append one line to the manifest, after a newline if the last line was torn; nothing before it is rewritten."""
    existing = manifest_path.exists()
    fd = os.open(manifest_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size:
            with manifest_path.open("rb") as manifest:
                manifest.seek(size - 1)
                if manifest.read(1) != b"\n":
                    # A torn last line (a crash mid-append) stays as it is, for verify to report.
                    line = b"\n" + line
        write_all(fd, line)
    finally:
        os.close(fd)
    if not existing:
        fsync_directory(manifest_path.parent)
