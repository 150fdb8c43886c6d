"""Finding the manifest entries a filing needs without parsing every line, so that a filing in an archive of years
costs what it costs in a new one, but for a search through the manifest's bytes.

The manifest is only ever appended to, so its newest entry is its last well-formed line: lines torn by a crash
(or otherwise damaged) at its end are skipped, as lenient_entries skips them. The entries that carry a value (a
record's sha256, a run id) are found by searching the bytes for the value as the archive writes it (a JSON
string) and parsing only the lines that hold it. Searching bytes still reads the whole manifest, but at memory
speed (bench/filing.py: 0.6 µs a filing per entry, against 8 µs when every line was parsed).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rollbook.records.hash_chain import canonical, lenient_entries, parse_entry

# How much of the manifest's end is read first for its newest entry: about 100 entries. More is read only
# when no well-formed line is in it (a damaged end).
TAIL_BYTES = 64 * 1024


def newest_entry(raw: bytes) -> dict[str, Any] | None:
    """The last well-formed entry in the manifest's bytes (a torn or damaged line after it skipped)."""
    end = len(raw)
    while end > 0:
        start = raw.rfind(b"\n", 0, end) + 1
        entry, _ = parse_entry(raw[start:end])
        if entry is not None:
            return entry
        end = start - 1
    return None


def read_newest_entry(path: Path) -> dict[str, Any] | None:
    """newest_entry of the manifest at `path`, reading only its end; None if there is no manifest (OSError else)."""
    try:
        manifest = path.open("rb")
    except (FileNotFoundError, NotADirectoryError):
        return None
    with manifest:
        size = manifest.seek(0, os.SEEK_END)
        length = TAIL_BYTES
        while True:
            start = max(0, size - length)
            manifest.seek(start)
            tail = manifest.read(size - start)
            if start > 0:
                # The first line of a tail cut from the middle may be the end of a line: it is left out.
                cut = tail.find(b"\n")
                tail = tail[cut + 1:] if cut >= 0 else b""
            entry = newest_entry(tail)
            if entry is not None or start == 0:
                return entry
            length *= 4


def chain_tip(raw: bytes) -> dict[str, Any] | None:
    """The entry a new one is chained to (its prev) and numbered after (its seq); None for an empty manifest.

    That is the newest entry. Only in a manifest whose lines were reordered or inserted (which verify
    reports) can the number after the newest entry's be taken already; then every entry is read and the
    highest-numbered one is the tip, as it always was, so that no number is given twice: the entry's
    signature file is named by it.
    """
    newest = newest_entry(raw)
    if newest is None or not _seq_taken(raw, newest["seq"] + 1):
        return newest
    return max(lenient_entries(raw), key=lambda entry: entry["seq"])


def entries_holding(raw: bytes, value: str) -> list[dict[str, Any]]:
    """The well-formed entries, in manifest order, whose line holds `value` as a JSON string (as it is filed).

    A superset of the entries with a field equal to `value`: the caller checks the field it means.
    """
    return list(_entries_at(raw, _occurrences(raw, canonical(value))))


def _seq_taken(raw: bytes, seq: int) -> bool:
    # Searched as the archive writes it (canonical JSON): a plain byte search is faster than a pattern.
    matches = _occurrences(raw, b'"seq":%d' % seq)
    return any(entry["seq"] == seq for entry in _entries_at(raw, matches))


def _occurrences(raw: bytes, needle: bytes) -> Iterator[int]:
    at = raw.find(needle)
    while at >= 0:
        yield at
        at = raw.find(needle, at + len(needle))


def _entries_at(raw: bytes, positions: Iterator[int]) -> Iterator[dict[str, Any]]:
    """The well-formed entries on the lines holding the given (ascending) byte positions, each line once."""
    end = -1
    for at in positions:
        if at <= end:
            continue  # on the line already read
        start = raw.rfind(b"\n", 0, at) + 1
        end = raw.find(b"\n", at)
        if end < 0:
            end = len(raw)
        entry, _ = parse_entry(raw[start:end])
        if entry is not None:
            yield entry
