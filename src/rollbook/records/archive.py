"""The archive of run records: one folder, append-only, tamper-evident.

This module is the store: filing a record, keeping a run's progress, and finding and reading records back.
It is one idea (what the folder holds and how it is used) at a little over 400 lines; its parts live beside
it: the folder's files and write primitives in records/archive_files.py, the manifest's hash chain in
records/hash_chain.py, what a filing reads of the manifest in records/manifest_lookup.py, `archive verify` in
records/archive_verification.py.

Layout of the folder (ROLLBOOK_ARCHIVE, default ./rollback-records):

    20261124T123456Z_app_rollback_refused_3f9a1c.json    a run's summary, filed when the run ended
    20261124T123456Z_app_rollback_refused_3f9a1c.ipynb   the same run's executed notebook, filed after it
    manifest.jsonl                                        one entry per record, each chained to the one before
    signatures/<seq>.sig                                  the SSH signature of manifest entry #seq (when a key is set)
    .in-progress/<run_id>.json                            a running run's latest summary (replaced each step)
    .manifest.lock                                        serialises appends across processes

A record's name starts with its start time, so a plain `ls` sorts by time and shows the database, the
runbook and the outcome; it is built from those fields only, so it cannot carry a secret.

Each manifest line is a JSON object: seq, file, kind ("summary" or "notebook"), run_id, sha256 (of the
record's bytes), filed_at, prev (the previous entry's entry_hash, or 64 zeros), the listing fields of the
run (started_at, finished_at, runbook, database, outcome, operator, approved_by, ticket, environment, mode,
target; entries filed before mode and target lack them) and
entry_hash: the sha256 of `json.dumps(entry_without_entry_hash, sort_keys=True, separators=(",", ":"))`
in UTF-8. The listing fields are in the entry so that `archive list` reads one file, and so that they
are covered by the chain as well.

Records are written (atomically, never over an existing file) before their entry is appended, and this
module never rewrites or deletes a record or a manifest line. What each check proves, and what it cannot:

- the chain shows a record edited, deleted, reordered or inserted before the last entry, by someone who
  did not recompute the hashes; anyone can recompute them, so on its own it proves nothing against intent;
- the signatures (record_signing: each manifest line signed with an SSH key kept outside the folder) show
  an entry edited or re-chained by someone without the key;
- neither sees the newest entries removed with their files, or the folder swapped for an older copy:
  only a head hash kept elsewhere does. `head()` gives it for the caller to show after each filing, and
  `verify(head=...)` says whether a head noted earlier is still an entry of the chain, and which.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets as token_source
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from pydantic_core import to_jsonable_python

from rollbook.errors import BadInput, RollbookError
from rollbook.outcomes import Outcome
from rollbook.records.archive_files import (
    EXTENSIONS,
    IN_PROGRESS,
    LATER_LISTING_FIELDS,
    LISTING_FIELDS,
    MANIFEST,
    SIGNATURES,
    TEMP_PREFIX,
    append_line,
    listing_fields,
    listing_text,
    locked,
    notebook_record,
    parse_time,
    progress_path,
    reason,
    record_name,
    replace_file,
    summary_bytes,
    write_new_record,
)
from rollbook.records.archive_verification import ArchiveVerification, verify_archive
from rollbook.records.hash_chain import GENESIS, canonical, entry_hash, lenient_entries
from rollbook.records.manifest_lookup import chain_tip, entries_holding, read_newest_entry
from rollbook.records.model import InvalidRecord, RunRecord, read_record
from rollbook.records.signing import RecordSigning, SigningUnavailable
from rollbook.redaction.redact import find_secrets, redact_value

ARCHIVE_VARIABLE = "ROLLBOOK_ARCHIVE"
DEFAULT_ARCHIVE = Path("rollback-records")
# How many run ids a wrong reference is answered with.
CLOSEST = 5


class ArchiveUnavailable(RollbookError):
    """The archive folder cannot be created or written."""

    outcome = Outcome.BAD_INPUT


class RecordNotFiled(RollbookError):
    """A run ended but its record could not be filed (a full or unwritable archive): the run is not a bad input."""


class SecretInRecord(RollbookError):
    """A record still holds a secret after redaction; it was not filed."""


@dataclass(frozen=True)
class ArchivedRecord:
    """One record of the archive: a manifest entry, or a run still in progress (kind "in progress", no seq)."""

    file: str
    path: Path
    kind: str
    run_id: str
    seq: int | None = None
    sha256: str | None = None
    filed_at: str | None = None
    entry_hash: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    runbook: str | None = None
    database: str | None = None
    outcome: str | None = None
    operator: str | None = None
    approved_by: str | None = None
    ticket: str | None = None
    environment: str | None = None
    mode: str | None = None
    target: str | None = None
    # False for a manifest entry filed before mode and target were listed: read them from the record.
    listing_complete: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


@dataclass(frozen=True)
class Archive:
    """The folder of run records and its manifest."""

    root: Path
    # How entries are signed and signatures checked; by default neither (see record_signing).
    signing: RecordSigning = field(default_factory=RecordSigning)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @classmethod
    def default(cls, environ: Mapping[str, str] | None = None) -> Archive:
        """The archive named by ROLLBOOK_ARCHIVE (or ./rollback-records), signed as the settings say."""
        environ = os.environ if environ is None else environ
        return cls(default_root(environ), RecordSigning.configured(environ))

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    def ensure_ready(self) -> None:
        """Refuse before a run starts unless its records can be filed: the folder writable, the key able to sign."""
        self.ensure_writable()
        self.signing.ensure_can_sign()

    def ensure_writable(self) -> None:
        """Create the folder if needed and prove it can be written; refuse before anything else happens."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f"{TEMP_PREFIX}{token_source.token_hex(8)}.probe"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            probe.unlink()
            (self.root / IN_PROGRESS).mkdir(exist_ok=True)
            if self.manifest_path.exists():
                # Opening for append changes nothing, and fails if the manifest itself is read-only.
                with self.manifest_path.open("ab"):
                    pass
        except OSError as error:
            raise ArchiveUnavailable(
                f"The archive folder {self.root} cannot be written ({reason(error)}). Every run must leave its "
                "record there, so nothing was started and the database was not touched. Set ROLLBOOK_ARCHIVE "
                "to a writable folder (or make this one writable) and run again."
            ) from None

    # -- a run in progress ---------------------------------------------------------------------------------

    def write_progress(self, record: RunRecord, *, secrets: frozenset[str] = frozenset()) -> Path:
        """Replace the run's in-progress record atomically, so a killed run still leaves its last state.

        Called after every step; URL passwords and `secrets` are scrubbed rather than refused, because
        stopping a run halfway over its progress file would do more harm than the scrub.
        """
        run_id = record.run_id
        folder = self.root / IN_PROGRESS
        target = progress_path(self.root, run_id)
        try:
            replace_file(folder, target.name, summary_bytes(redact_value(record.to_json(), secrets)))
        except OSError as error:
            raise ArchiveUnavailable(
                f"The progress of run {run_id} could not be saved in {folder} ({reason(error)}). The run stops "
                "here so that nothing happens unrecorded: make the archive folder writable, check the database "
                "with the status runbook, and run again."
            ) from None
        return target

    def progress(self, run_id: str) -> RunRecord | None:
        """The latest in-progress record of a run, if it has a readable one."""
        path = progress_path(self.root, run_id)
        try:
            return read_record(json.loads(path.read_bytes()))
        except (OSError, ValueError, InvalidRecord):
            return None

    # -- filing --------------------------------------------------------------------------------------------

    def file_summary(self, summary: Mapping[str, Any], *, secrets: frozenset[str] = frozenset()) -> ArchivedRecord:
        """File a run's record, checked against the record model, chain it in the manifest, drop its in-progress file.

        An older record version is filed in the current one. URL passwords are masked; a record that does
        not match the model (InvalidRecord), or any of `secrets` still present, makes it refuse, writing nothing.
        """
        clean = read_record(redact_value(to_jsonable_python(dict(summary)), frozenset()))
        return self._file("summary", summary_bytes(clean.to_json()), clean, secrets)

    def file_notebook(
        self, notebook_bytes: bytes, summary: Mapping[str, Any], *, secrets: frozenset[str] = frozenset(),
    ) -> ArchivedRecord:
        """File a run's executed notebook (already scrubbed) as a record linked to its summary by run_id.

        Refuses, writing nothing, if any of `secrets` is still in the notebook: scrubbing is the caller's
        job (redaction.redact_notebook), this is the last check.
        """
        clean = read_record(redact_value(to_jsonable_python(dict(summary)), frozenset()))
        try:
            notebook = json.loads(notebook_bytes)
        except ValueError:
            notebook = None
        if not isinstance(notebook, dict) or not isinstance(notebook.get("cells"), list):
            raise BadInput(f"The notebook of run {clean.run_id} is not a Jupyter notebook (JSON with cells): "
                           "give the .ipynb file papermill wrote. Nothing was filed.")
        carried = notebook_record(notebook)
        if carried is not None and carried.run_id != clean.run_id:
            # A notebook filed under another run's summary would make both records lie.
            raise BadInput(f"The notebook records run {carried.run_id}, but it was to be filed as run "
                           f"{clean.run_id}. Nothing was filed: file it with its own run's summary.")
        return self._file("notebook", bytes(notebook_bytes), clean, secrets)

    def _file(self, kind: str, data: bytes, record: RunRecord, secrets: frozenset[str]) -> ArchivedRecord:
        run_id = record.run_id
        about = listing_fields(record)
        base = record_name(record)
        # The manifest entry and the file name are checked too: the archive is every byte in the folder.
        leaks = find_secrets(b"\n".join((data, base.encode(), run_id.encode(), canonical(about))), secrets)
        if leaks:
            raise SecretInRecord(
                f"The {kind} record of run {run_id} still contains {'; '.join(leaks)} after redaction, so it was "
                f"not filed and nothing was written to {self.root}. Scrub it with rollbook.redaction.redact."
                "redact_notebook (or remove the value from the summary) and file it again; the run's last state "
                f"stays in {self.root / IN_PROGRESS}."
            )
        digest = hashlib.sha256(data).hexdigest()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with locked(self.root):
                # Only the lines that hold the record's sha256, and the manifest's end, are parsed: a
                # filing's cost does not grow with the archive (see records/manifest_lookup.py).
                manifest = self._manifest_bytes()
                same = next((e for e in entries_holding(manifest, digest) if e["kind"] == kind
                             and e["run_id"] == run_id and e["sha256"] == digest), None)
                if same is not None:
                    # Filing the same bytes twice (`archive add` run again) adds nothing.
                    return self._record(same)
                name = write_new_record(self.root, base + EXTENSIONS[kind], data)
                last = chain_tip(manifest)
                entry: dict[str, Any] = {
                    "seq": (last["seq"] + 1) if last else 1, "file": name, "kind": kind, "run_id": run_id,
                    "sha256": digest, "filed_at": datetime.now(UTC).isoformat(timespec="microseconds"),
                    "prev": last["entry_hash"] if last else GENESIS, **about,
                }
                entry["entry_hash"] = entry_hash(entry)
                line = canonical(entry) + b"\n"
                self._write_signature(entry["seq"], line)
                append_line(self.manifest_path, line)
            self._drop_progress(run_id)
        except OSError as error:
            raise RecordNotFiled(
                f"The {kind} record of run {run_id} could not be filed in {self.root} ({reason(error)}). The run "
                f"has ended; its last state is in {self.root / IN_PROGRESS} if that could be written. Make the "
                "folder writable, then file the executed notebook with `rollbook archive add`."
            ) from None
        return self._record(entry)

    def _manifest_bytes(self) -> bytes:
        try:
            return self.manifest_path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return b""  # nothing filed yet (or no archive there at all)
        except OSError as error:
            raise self._unreadable(error) from None

    def _unreadable(self, error: OSError) -> ArchiveUnavailable:
        return ArchiveUnavailable(
            f"The manifest of the archive {self.root} cannot be read ({reason(error)}). Check the folder's "
            "permissions, or set ROLLBOOK_ARCHIVE to the archive you meant."
        )

    def _write_signature(self, seq: int, line: bytes) -> None:
        """Sign a manifest line before it is appended, so no entry is ever there without its signature.

        A signature left by a filing that crashed before its append names a seq not in the manifest; the
        next filing takes that seq and replaces it. Without a key, or if the key stopped signing since the
        run began, the entry is filed unsigned (losing the record would be worse) and `verify` says so.
        """
        if self.signing.key is None:
            return
        try:
            signature = self.signing.sign(line)
        except SigningUnavailable:
            return
        replace_file(self.root / SIGNATURES, f"{seq}.sig", signature)

    def _drop_progress(self, run_id: str) -> None:
        progress_path(self.root, run_id).unlink(missing_ok=True)

    def _record(self, entry: Mapping[str, Any]) -> ArchivedRecord:
        fields = {key: listing_text(entry.get(key)) for key in LISTING_FIELDS}
        return ArchivedRecord(
            file=entry["file"], path=self.root / entry["file"], kind=entry["kind"], run_id=entry["run_id"],
            seq=entry["seq"], sha256=entry["sha256"], filed_at=entry["filed_at"], entry_hash=entry["entry_hash"],
            listing_complete=all(key in entry for key in LATER_LISTING_FIELDS), **fields,
        )

    # -- reading -------------------------------------------------------------------------------------------

    def head(self) -> str | None:
        """The entry_hash of the newest manifest entry: what to keep outside the folder; None if nothing is filed.

        Read from the manifest's end (its last well-formed line), so it costs the same however many entries
        the archive holds.
        """
        try:
            newest = read_newest_entry(self.manifest_path)
        except OSError as error:
            raise self._unreadable(error) from None
        return newest["entry_hash"] if newest else None

    def knows_run(self, run_id: str) -> bool:
        """Whether a runbook of this archive started the run: it has an in-progress summary or a filed record."""
        return (progress_path(self.root, run_id)).is_file() or any(
            entry["run_id"] == run_id for entry in entries_holding(self._manifest_bytes(), run_id))

    def records(self) -> tuple[ArchivedRecord, ...]:
        """Every manifest entry, plus runs not filed yet (kind "in progress"), sorted by start time."""
        filed = [self._record(e) for e in lenient_entries(self._manifest_bytes())]
        filed_runs = {r.run_id for r in filed}
        unfiled = [r for r in self._in_progress() if r.run_id not in filed_runs]
        return tuple(sorted(filed + unfiled, key=_time_order))

    def _in_progress(self) -> list[ArchivedRecord]:
        folder = self.root / IN_PROGRESS
        found = []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                running = read_record(json.loads(path.read_bytes()))
            except (OSError, ValueError, InvalidRecord):
                continue
            found.append(ArchivedRecord(file=f"{IN_PROGRESS}/{path.name}", path=path, kind="in progress",
                                        run_id=running.run_id, seq=None, listing_complete=True,
                                        **listing_fields(running)))
        return found

    def records_of(self, run_id: str) -> tuple[ArchivedRecord, ...]:
        """A run's records in filing order (its summary, its notebook), or its in-progress state if unfiled."""
        return tuple(r for r in sorted(self.records(), key=lambda r: (r.seq is None, r.seq or 0))
                     if r.run_id == run_id)

    def find(self, ref: str) -> ArchivedRecord:
        """A record by manifest number, file name, run id, or a unique prefix (or 4+ character tail) of one.

        A run with several records (its summary, then its notebook) gives the one filed last.
        """
        ref = ref.strip()
        records = self.records()
        if ref.isdigit():
            by_seq = [r for r in records if r.seq == int(ref)]
            if by_seq:
                return by_seq[0]
        name = Path(ref).name
        by_file = [r for r in records if name and (r.file == ref or r.path.name == name)]
        if len(by_file) == 1:
            return by_file[0]
        runs = (sorted({r.run_id for r in records if r.run_id == ref})
                or sorted({r.run_id for r in records if ref and r.run_id.startswith(ref)})
                # The tail of a run id, as the end of every record's file name shows it.
                or sorted({r.run_id for r in records if len(ref) >= 4 and r.run_id.endswith(ref)}))
        if len(runs) == 1:
            of_run = [r for r in records if r.run_id == runs[0]]
            return max(of_run, key=lambda r: -1 if r.seq is None else r.seq)
        if not runs:
            raise BadInput(f"No record in {self.root} matches '{ref}'. {_closest_runs(ref, records)}Give a run id "
                           "(or a unique prefix of one), a record's file name or its manifest number.")
        shown = ", ".join(runs[:10]) + (f" and {len(runs) - 10} more" if len(runs) > 10 else "")
        raise BadInput(f"'{ref}' matches {len(runs)} runs in {self.root}: {shown}. Give more of the run id.")

    def load_record(self, record: ArchivedRecord) -> RunRecord:
        """The run record a record file carries (the file itself, the notebook's record output, or the progress file).

        Older record versions are upgraded; a file that is not a run record raises InvalidRecord (a BadInput).
        """
        try:
            loaded = json.loads(record.path.read_bytes())
        except FileNotFoundError:
            raise BadInput(f"The record {record.file} is missing from {self.root}: it was deleted or renamed. "
                           "Run `rollbook archive verify` and restore it from a copy of the archive.") from None
        except ValueError:
            raise BadInput(f"The record {record.file} in {self.root} is not valid JSON: it was damaged or edited. "
                           "Run `rollbook archive verify` and restore it from a copy of the archive.") from None
        if record.kind != "notebook":
            return read_record(loaded)
        found = notebook_record(loaded)
        if found is not None:
            return found
        filed = self.filed_record(record.run_id)
        if filed is not None:
            return filed
        raise BadInput(f"The notebook {record.file} carries no rollbook record output and run {record.run_id} has "
                       "no summary record: open the notebook itself to see what happened.")

    def filed_record(self, run_id: str) -> RunRecord | None:
        """The summary record filed for a run, if any and readable (the last one, should there be several)."""
        summaries = [e for e in entries_holding(self._manifest_bytes(), run_id)
                     if e["kind"] == "summary" and e["run_id"] == run_id]
        if not summaries:
            return None
        try:
            return self.load_record(self._record(summaries[-1]))
        except BadInput:
            return None

    # -- verification --------------------------------------------------------------------------------------

    def verify(self, head: str | None = None) -> ArchiveVerification:
        """Check the archive: its hash chain, every record, the signatures, and that `head` is an entry of it.

        `head` is an entry_hash kept outside the folder (printed by an earlier filing). A missing folder,
        an archive with no entry, and a `head` that is not in the chain are failures, named.
        """
        return verify_archive(self.root, self.signing, head, self._manifest_bytes,
                              lambda: [record.run_id for record in self._in_progress()])


def default_root(environ: Mapping[str, str] | None = None) -> Path:
    """The archive folder: ROLLBOOK_ARCHIVE, or ./rollback-records."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(ARCHIVE_VARIABLE) or DEFAULT_ARCHIVE)


def _time_order(record: ArchivedRecord) -> tuple[datetime, float, str]:
    started = parse_time(record.started_at) or datetime.max.replace(tzinfo=UTC)
    return started, float("inf") if record.seq is None else record.seq, record.file


def _closest_runs(ref: str, records: tuple[ArchivedRecord, ...]) -> str:
    """The run ids nearest to a ref that matched none (by run id, or by file name), else the newest ones."""
    if not records:
        return "The archive holds no record yet. "
    by_file = {Path(r.file).stem: r.run_id for r in records}
    close = get_close_matches(ref, list(dict.fromkeys(r.run_id for r in records)), n=CLOSEST, cutoff=0.5)
    close += [by_file[found] for found in get_close_matches(Path(ref).stem, list(by_file), n=CLOSEST, cutoff=0.5)]
    shown = list(dict.fromkeys(close))[:CLOSEST]
    if shown:
        return f"The closest run ids: {', '.join(shown)}. "
    newest = list(dict.fromkeys(r.run_id for r in reversed(records)))[:CLOSEST]
    return f"The newest run ids: {', '.join(newest)}. "
