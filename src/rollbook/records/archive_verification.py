"""`archive verify`: the hash chain, every record against its sha256 (each summary against the record model too), the
signatures, files no entry names, and where a head hash kept elsewhere stands; what each check proves is said in
records/archive.py.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbook.file_digest import file_sha256
from rollbook.records.archive_files import (
    IN_PROGRESS,
    LOCK_FILE,
    MANIFEST,
    SIGNATURES,
    TEMP_PREFIX,
)
from rollbook.records.hash_chain import check_entries, given_head, place_head, strict_entries
from rollbook.records.model import InvalidRecord, read_record
from rollbook.records.signing import RecordSigning, SignatureCheck


@dataclass(frozen=True)
class ArchiveVerification:
    """What `verify` found: every problem names the record or manifest entry concerned."""

    root: Path
    ok: bool
    problems: tuple[str, ...]
    entries: int
    head: str | None = None
    in_progress: tuple[str, ...] = ()
    head_seq: int | None = None
    # What the signature check found, or why it did not run: never read as "verified" unless it ran.
    signatures: str = ""
    # Where the head hash the caller kept stands in the chain, when it is an entry of it.
    head_given: str = ""

    def to_text(self) -> str:
        if self.ok:
            lines = [f"{self.root}: {self.entries} record(s), hash chain intact, every record matches its sha256."]
        else:
            lines = [f"{self.root}: {len(self.problems)} problem(s) in {self.entries} manifest entr"
                     f"{'y' if self.entries == 1 else 'ies'}:"]
            lines += [f"- {problem}" for problem in self.problems]
        if self.signatures:
            lines.append(f"Signatures: {self.signatures}")
        if self.head_given:
            lines.append(f"Head given: {self.head_given}")
        if self.head:
            lines.append(f"archive head: {self.head} (entry #{self.head_seq})")
            if self.ok and not self.head_given:
                lines.append("Only a head kept outside this folder shows newer entries removed or the folder swapped "
                             "for an older copy: keep this one (in the ticket, a chat message, a CI log) and check "
                             "it later with `rollbook archive verify --head HASH`.")
        if not self.ok:
            lines.append("The archive was changed outside rollbook, or is not the archive you meant. Keep it as it "
                         "is, compare it with a backup copy (or the head hash noted for the last run), and restore "
                         "the named records from there.")
        if self.in_progress:
            lines.append(f"Not filed yet (running, or stopped before filing): {', '.join(self.in_progress)}.")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "ok": self.ok, "problems": list(self.problems), "entries": self.entries,
                "head": self.head, "head_seq": self.head_seq, "signatures": self.signatures,
                "head_given": self.head_given, "in_progress": list(self.in_progress)}


def verify_archive(root: Path, signing: RecordSigning, head: str | None, manifest: Callable[[], bytes],
                   in_progress: Callable[[], list[str]]) -> ArchiveVerification:
    """Check the archive at `root`: its hash chain, every record, the signatures, and that `head` is an entry of it.

    `manifest` reads the manifest's bytes, `in_progress` the run ids with an in-progress record; `head` is
    an entry_hash kept outside the folder (printed by an earlier filing). A missing folder, an archive with
    no entry, and a `head` that is not in the chain are failures, named.
    """
    wanted = given_head(head)
    if not root.is_dir():
        return ArchiveVerification(root, False, (
            f"there is no archive folder at {root}. Set ROLLBOOK_ARCHIVE to the folder the runs filed their "
            "records in; if it was this one, the archive was deleted or moved: restore it from a copy.",), 0)
    problems: list[str] = []
    raw = manifest()
    entries = strict_entries(raw, problems)
    if not entries:
        problems.append(f"no record is filed in {root} ({MANIFEST} is missing or holds no entry). If runs "
                        "were recorded here, the archive was emptied: restore it from a copy. A new archive "
                        "verifies once its first run is filed.")
    check_entries(entries, problems)
    referenced = _check_records(root, entries, problems)
    for child in sorted(root.iterdir()):
        if child.name in (MANIFEST, LOCK_FILE, IN_PROGRESS, SIGNATURES) or child.name.startswith(TEMP_PREFIX):
            continue
        if child.name not in referenced:
            problems.append(f"{child.name} is in the archive folder but not in the manifest: it was inserted "
                            "by hand, its manifest entry was deleted, or a filing was cut short by a crash.")
    signatures = _check_signatures(root, signing, entries, raw.split(b"\n"), problems)
    newest = max(entries, key=lambda item: item[1]["seq"])[1] if entries else None
    head_given = place_head(wanted, entries, newest, problems) if wanted else ""
    filed = {entry["run_id"] for _, entry in entries}
    unfiled = tuple(run_id for run_id in in_progress() if run_id not in filed)
    return ArchiveVerification(
        root, not problems, tuple(problems), len(entries), newest["entry_hash"] if newest else None, unfiled,
        newest["seq"] if newest else None, signatures, head_given,
    )


def _check_signatures(root: Path, signing: RecordSigning, entries: list[tuple[int, dict[str, Any]]],
                      lines: list[bytes], problems: list[str]) -> str:
    """Each entry's signature against the allowed signers; a sentence saying what was (or was not) checked."""
    signed = {(line, entry["seq"]): root / SIGNATURES / f"{entry['seq']}.sig" for line, entry in entries}
    present = sum(path.is_file() for path in signed.values())
    if signing.allowed_signers is None:
        if not entries:
            return ""
        return (f"not checked: no allowed signers file is configured (ROLLBOOK_ALLOWED_SIGNERS, or "
                f"`allowed_signers` in [archive] of rollbook.toml); {present} of {len(entries)} entries carry "
                "a signature.")
    signers: dict[str, int] = defaultdict(int)
    for line, entry in entries:
        path = signed[(line, entry["seq"])]
        which = f"entry #{entry['seq']} ({entry['file']})"
        if not path.is_file():
            problems.append(f"{which} is not signed: it was filed without a signing key, or its signature "
                            f"({SIGNATURES}/{path.name}) was deleted.")
            continue
        found: SignatureCheck = signing.check(lines[line - 1] + b"\n", path.read_bytes())
        if found.status == "good":
            signers[found.signer or "?"] += 1
        elif found.status == "unknown signer":
            problems.append(f"{which} is signed by a key that is not in {signing.allowed_signers}: it "
                            "was signed by someone not allowed to, or that key was removed from the file.")
        else:
            problems.append(f"{which}: its signature does not match the entry: the entry was edited, "
                            "re-chained or replaced after it was signed.")
    if not signers:
        return f"none good, checked against {signing.allowed_signers}." if entries else ""
    who = ", ".join(f"{name}: {count}" for name, count in sorted(signers.items()))
    return (f"{sum(signers.values())} of {len(entries)} entries carry a good signature by a key of "
            f"{signing.allowed_signers} ({who}).")

def _check_records(root: Path, entries: list[tuple[int, dict[str, Any]]], problems: list[str]) -> set[str]:
    """Each entry's record file: named, present, matching its sha256, read by the record model; the names seen."""
    referenced = set()
    for line, entry in entries:
        name, seq = entry["file"], entry["seq"]
        if name != Path(name).name or name in (MANIFEST, LOCK_FILE, IN_PROGRESS, "", ".", ".."):
            problems.append(f"manifest line {line}: entry #{seq} names '{name}', which is not a record file "
                            "of this folder: the entry was edited or inserted.")
            continue
        referenced.add(name)
        path = root / name
        if not path.is_file():
            problems.append(f"record {name} (entry #{seq}) is missing: it was deleted or renamed.")
            continue
        actual = file_sha256(path)
        if actual != entry["sha256"]:
            problems.append(f"record {name} (entry #{seq}) was changed after it was filed: its sha256 is "
                            f"{actual[:16]}..., the manifest says {entry['sha256'][:16]}....")
            continue
        # A notebook whose bytes are the filed ones carries the record checked when it was filed (and its run's
        # summary, checked here, holds the same facts): re-parsing thousands of notebooks would make verify slow.
        unreadable = _schema_problem(path) if entry["kind"] != "notebook" else ""
        if unreadable:
            problems.append(f"record {name} (entry #{seq}) matches its sha256 but is not a valid run record: "
                            f"{unreadable}")
    return referenced




def _schema_problem(path: Path) -> str:
    """Why a summary record file does not hold a run record the model reads."""
    try:
        read_record(json.loads(path.read_bytes()))
    except (OSError, ValueError) as error:
        return f"it cannot be read as JSON ({error})."
    except InvalidRecord as error:
        return str(error)
    return ""
