"""The archive manifest's hash chain: entries parsed, hashed, checked link by link, and a kept head placed in it.

Each manifest line is a JSON object whose entry_hash is the sha256 of its canonical JSON (its own entry_hash
left out) and whose prev is the entry_hash of the entry numbered before it (64 zeros for the first).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from rollbook.errors import BadInput

GENESIS = "0" * 64
KINDS = ("summary", "notebook")
_ENTRY_FIELDS = {"seq": int, "file": str, "kind": str, "run_id": str, "sha256": str, "filed_at": str,
                 "prev": str, "entry_hash": str}


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The sha256 of a manifest entry's canonical JSON, its own entry_hash left out."""
    return hashlib.sha256(canonical({k: v for k, v in entry.items() if k != "entry_hash"})).hexdigest()


def canonical(value: Any) -> bytes:
    """The JSON an entry is hashed (and written) as: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def check_entries(entries: list[tuple[int, dict[str, Any]]], problems: list[str]) -> None:
    """Each entry's own hash, its place in line order, and its link to the entry numbered before it."""
    by_seq: dict[int, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    highest: dict[str, Any] | None = None
    for line, entry in entries:
        by_seq[entry["seq"]].append((line, entry))
        if entry_hash(entry) != entry["entry_hash"]:
            problems.append(f"manifest line {line}: entry #{entry['seq']} ({entry['file']}) was edited: its fields "
                            "no longer match its entry_hash.")
        if highest is not None and entry["seq"] <= highest["seq"]:
            problems.append(f"manifest line {line}: entry #{entry['seq']} ({entry['file']}) comes after entry "
                            f"#{highest['seq']} ({highest['file']}): manifest lines were reordered or inserted.")
        else:
            highest = entry
    for seq, group in sorted(by_seq.items()):
        if len(group) > 1:
            where = ", ".join(f"line {line} ({entry['file']})" for line, entry in group)
            problems.append(f"entry #{seq} appears {len(group)} times, on {where}: a manifest line was inserted "
                            "or copied.")
    if not by_seq:
        return
    missing = [seq for seq in range(1, max(by_seq) + 1) if seq not in by_seq]
    for first, last in _runs(missing):
        after = by_seq.get(last + 1)
        named = f"; entry #{last + 1} ({after[0][1]['file']}) chains to it" if after else ""
        which = f"entry #{first}" if first == last else f"entries #{first} to #{last}"
        problems.append(f"{which} missing from the manifest: the line was deleted{named}.")
    for seq, group in sorted(by_seq.items()):
        before = by_seq.get(seq - 1)
        if len(group) != 1 or (seq > 1 and (before is None or len(before) != 1)):
            continue  # already reported as missing or duplicated
        entry = group[0][1]
        # `before` is None only for entry #1 (any other without one was skipped above).
        expected = GENESIS if seq == 1 or before is None else before[0][1]["entry_hash"]
        if entry["prev"] != expected:
            previous = "the start of the chain" if seq == 1 or before is None else \
                f"entry #{seq - 1} ({before[0][1]['file']})"
            problems.append(f"entry #{seq} ({entry['file']}) does not chain to {previous}: one of them was edited "
                            "or replaced.")


def strict_entries(raw: bytes, problems: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """(line number, entry) for every well-formed manifest line; a problem for every other line."""
    entries = []
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        entry, why = parse_entry(line)
        if entry is None:
            problems.append(f"manifest line {number} is not a valid entry ({why}): it was edited, inserted or "
                            "torn by a crash.")
        else:
            entries.append((number, entry))
    return entries


def lenient_entries(raw: bytes) -> list[dict[str, Any]]:
    """Every well-formed manifest entry, the others skipped (for filing and listing, not for verify)."""
    return [entry for entry, _ in map(parse_entry, raw.split(b"\n")) if entry is not None]


def parse_entry(line: bytes) -> tuple[dict[str, Any] | None, str]:
    """A manifest line's entry if it is well-formed, else None and why not."""
    if not line.strip():
        return None, "empty line"
    try:
        entry = json.loads(line)
    except ValueError:
        return None, "not JSON"
    if not isinstance(entry, dict):
        return None, "not a JSON object"
    wrong = [key for key, kind in _ENTRY_FIELDS.items()
             if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool)]
    if wrong:
        return None, f"missing or malformed {', '.join(wrong)}"
    if entry["kind"] not in KINDS:
        return None, f"unknown kind {entry['kind'][:20]!r}"
    return entry, ""


def given_head(head: str | None) -> str | None:
    """A head hash given by the user, normalised; BadInput unless it is 64 hexadecimal characters."""
    if head is None:
        return None
    wanted = head.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", wanted):
        raise BadInput("--head takes the 64 hexadecimal characters printed as `archive head: ...` by a filing or by "
                       "`rollbook archive head`; check the copy you kept. Nothing was checked.")
    return wanted


def place_head(wanted: str, entries: list[tuple[int, dict[str, Any]]], newest: dict[str, Any] | None,
                problems: list[str]) -> str:
    """Where a head kept elsewhere stands in the chain; a problem if it is not an entry of it."""
    found = [entry for _, entry in entries if entry["entry_hash"] == wanted]
    if not found:
        now = f"its head is now entry #{newest['seq']}, {newest['entry_hash']}" if newest else "it holds no entry"
        problems.append(f"the head {wanted} is not an entry of this archive's chain ({now}): newer entries were "
                        "removed (the archive was truncated), the entries were rewritten and their hashes "
                        "recomputed, or the folder was replaced by another copy.")
        return ""
    entry = found[0]
    after = sum(1 for _, other in entries if other["seq"] > entry["seq"])
    later = ("it is the newest entry" if after == 0
             else f"{after} entr{'y was' if after == 1 else 'ies were'} filed after it")
    return f"{wanted} is entry #{entry['seq']} ({entry['file']}); {later}."


def _runs(numbers: list[int]) -> Iterator[tuple[int, int]]:
    """Consecutive stretches of sorted numbers, as (first, last)."""
    stretch: tuple[int, int] | None = None
    for number in numbers:
        if stretch is not None and number == stretch[1] + 1:
            stretch = (stretch[0], number)
            continue
        if stretch is not None:
            yield stretch
        stretch = (number, number)
    if stretch is not None:
        yield stretch
