"""The archive of run records: one folder, append-only, tamper-evident.

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
run (started_at, finished_at, runbook, database, outcome, operator, approved_by, ticket, environment) and
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

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets as token_source
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic_core import to_jsonable_python

from rollbook.errors import BadInput, RollbookError
from rollbook.file_digest import file_sha256
from rollbook.file_publishing import fsync_directory, publish_new, write_all, write_durably
from rollbook.outcomes import Outcome
from rollbook.records.model import InvalidRecord, RunRecord, read_record
from rollbook.records.signing import RecordSigning, SignatureCheck, SigningUnavailable
from rollbook.redaction.redact import find_secrets, redact_value

RECORD_MIME = "application/vnd.rollbook.record+json"
ARCHIVE_VARIABLE = "ROLLBOOK_ARCHIVE"
DEFAULT_ARCHIVE = Path("rollback-records")
MANIFEST = "manifest.jsonl"
LOCK_FILE = ".manifest.lock"
IN_PROGRESS = ".in-progress"
SIGNATURES = "signatures"
GENESIS = "0" * 64
KINDS = ("summary", "notebook")
LISTING_FIELDS = ("started_at", "finished_at", "runbook", "database", "outcome", "operator", "approved_by",
                  "ticket", "environment")
_ENTRY_FIELDS = {"seq": int, "file": str, "kind": str, "run_id": str, "sha256": str, "filed_at": str,
                 "prev": str, "entry_hash": str}
_TEMP_PREFIX = ".tmp-"
_EXTENSIONS = {"summary": ".json", "notebook": ".ipynb"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


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

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "path": str(self.path)}


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
            probe = self.root / f"{_TEMP_PREFIX}{token_source.token_hex(8)}.probe"
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            probe.unlink()
            (self.root / IN_PROGRESS).mkdir(exist_ok=True)
            if self.manifest_path.exists():
                # Opening for append changes nothing, and fails if the manifest itself is read-only.
                with self.manifest_path.open("ab"):
                    pass
        except OSError as error:
            raise ArchiveUnavailable(
                f"The archive folder {self.root} cannot be written ({_reason(error)}). Every run must leave its "
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
        target = folder / f"{_safe(run_id, 80)}.json"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            temporary = folder / f"{_TEMP_PREFIX}{token_source.token_hex(8)}"
            write_durably(temporary, _summary_bytes(redact_value(record.to_json(), secrets)))
            os.replace(temporary, target)
            fsync_directory(folder)
        except OSError as error:
            raise ArchiveUnavailable(
                f"The progress of run {run_id} could not be saved in {folder} ({_reason(error)}). The run stops "
                "here so that nothing happens unrecorded: make the archive folder writable, check the database "
                "with the status runbook, and run again."
            ) from None
        return target

    def progress(self, run_id: str) -> RunRecord | None:
        """The latest in-progress record of a run, if it has a readable one."""
        path = self.root / IN_PROGRESS / f"{_safe(run_id, 80)}.json"
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
        return self._file("summary", _summary_bytes(clean.to_json()), clean, secrets)

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
        carried = _notebook_record(notebook)
        if carried is not None and carried.run_id != clean.run_id:
            # A notebook filed under another run's summary would make both records lie.
            raise BadInput(f"The notebook records run {carried.run_id}, but it was to be filed as run "
                           f"{clean.run_id}. Nothing was filed: file it with its own run's summary.")
        return self._file("notebook", bytes(notebook_bytes), clean, secrets)

    def _file(self, kind: str, data: bytes, record: RunRecord, secrets: frozenset[str]) -> ArchivedRecord:
        run_id = record.run_id
        about = _listing_fields(record)
        base = record_name(record)
        # The manifest entry and the file name are checked too: the archive is every byte in the folder.
        leaks = find_secrets(b"\n".join((data, base.encode(), run_id.encode(), _canonical(about))), secrets)
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
            with self._locked():
                entries = _lenient_entries(self._manifest_bytes())
                same = next((e for e in entries if e["kind"] == kind and e["run_id"] == run_id
                             and e["sha256"] == digest), None)
                if same is not None:
                    # Filing the same bytes twice (`archive add` run again) adds nothing.
                    return self._record(same)
                name = self._write_new_record(base + _EXTENSIONS[kind], data)
                last = max(entries, key=lambda e: e["seq"], default=None)
                entry: dict[str, Any] = {
                    "seq": (last["seq"] + 1) if last else 1, "file": name, "kind": kind, "run_id": run_id,
                    "sha256": digest, "filed_at": datetime.now(UTC).isoformat(timespec="microseconds"),
                    "prev": last["entry_hash"] if last else GENESIS, **about,
                }
                entry["entry_hash"] = entry_hash(entry)
                line = _canonical(entry) + b"\n"
                self._write_signature(entry["seq"], line)
                self._append(line)
            self._drop_progress(run_id)
        except OSError as error:
            raise RecordNotFiled(
                f"The {kind} record of run {run_id} could not be filed in {self.root} ({_reason(error)}). The run "
                f"has ended; its last state is in {self.root / IN_PROGRESS} if that could be written. Make the "
                "folder writable, then file the executed notebook with `rollbook archive add`."
            ) from None
        return self._record(entry)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _manifest_bytes(self) -> bytes:
        try:
            return self.manifest_path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            return b""  # nothing filed yet (or no archive there at all)
        except OSError as error:
            raise ArchiveUnavailable(
                f"The manifest of the archive {self.root} cannot be read ({_reason(error)}). Check the folder's "
                "permissions, or set ROLLBOOK_ARCHIVE to the archive you meant."
            ) from None

    def _write_new_record(self, name: str, data: bytes) -> str:
        """Write `data` under `name`, or name-2, name-3, ... if taken; never replaces an existing file."""
        temporary = self.root / f"{_TEMP_PREFIX}{token_source.token_hex(8)}.part"
        write_durably(temporary, data)
        stem, suffix = os.path.splitext(name)
        try:
            for attempt in range(1, 10_000):
                candidate = name if attempt == 1 else f"{stem}-{attempt}{suffix}"
                if publish_new(temporary, self.root / candidate):
                    fsync_directory(self.root)
                    return candidate
            raise OSError(errno.EEXIST, "no free record name", name)
        finally:
            temporary.unlink(missing_ok=True)

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
        folder = self.root / SIGNATURES
        folder.mkdir(exist_ok=True)
        temporary = folder / f"{_TEMP_PREFIX}{token_source.token_hex(8)}"
        write_durably(temporary, signature)
        os.replace(temporary, folder / f"{seq}.sig")
        fsync_directory(folder)

    def _append(self, line: bytes) -> None:
        existing = self.manifest_path.exists()
        fd = os.open(self.manifest_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:
                with self.manifest_path.open("rb") as manifest:
                    manifest.seek(size - 1)
                    if manifest.read(1) != b"\n":
                        # A torn last line (a crash mid-append) stays as it is, for verify to report.
                        line = b"\n" + line
            write_all(fd, line)
        finally:
            os.close(fd)
        if not existing:
            fsync_directory(self.root)

    def _drop_progress(self, run_id: str) -> None:
        (self.root / IN_PROGRESS / f"{_safe(run_id, 80)}.json").unlink(missing_ok=True)

    def _record(self, entry: Mapping[str, Any]) -> ArchivedRecord:
        fields = {key: _text(entry.get(key)) for key in LISTING_FIELDS}
        return ArchivedRecord(
            file=entry["file"], path=self.root / entry["file"], kind=entry["kind"], run_id=entry["run_id"],
            seq=entry["seq"], sha256=entry["sha256"], filed_at=entry["filed_at"], entry_hash=entry["entry_hash"],
            **fields,
        )

    # -- reading -------------------------------------------------------------------------------------------

    def head(self) -> str | None:
        """The entry_hash of the newest manifest entry: what to keep outside the folder; None if nothing is filed."""
        entries = _lenient_entries(self._manifest_bytes())
        return max(entries, key=lambda entry: entry["seq"])["entry_hash"] if entries else None

    def knows_run(self, run_id: str) -> bool:
        """Whether a runbook of this archive started the run: it has an in-progress summary or a filed record."""
        return (self.root / IN_PROGRESS / f"{_safe(run_id, 80)}.json").is_file() or any(
            entry["run_id"] == run_id for entry in _lenient_entries(self._manifest_bytes()))

    def records(self) -> tuple[ArchivedRecord, ...]:
        """Every manifest entry, plus runs not filed yet (kind "in progress"), sorted by start time."""
        filed = [self._record(e) for e in _lenient_entries(self._manifest_bytes())]
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
                                        run_id=running.run_id, seq=None, **_listing_fields(running)))
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
            raise BadInput(f"No record in {self.root} matches '{ref}'. Give a run id (or a unique prefix of one), "
                           "a record's file name or its manifest number; `rollbook archive list` shows them.")
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
        found = _notebook_record(loaded)
        if found is not None:
            return found
        filed = self.filed_record(record.run_id)
        if filed is not None:
            return filed
        raise BadInput(f"The notebook {record.file} carries no rollbook record output and run {record.run_id} has "
                       "no summary record: open the notebook itself to see what happened.")

    def filed_record(self, run_id: str) -> RunRecord | None:
        """The summary record filed for a run, if any and readable (the last one, should there be several)."""
        summaries = [e for e in _lenient_entries(self._manifest_bytes())
                     if e["kind"] == "summary" and e["run_id"] == run_id]
        if not summaries:
            return None
        try:
            return self.load_record(self._record(summaries[-1]))
        except BadInput:
            return None

    def listing(self) -> str:
        """Every record as a table, oldest first: when, database, runbook, outcome, who, approver, file."""
        if not self.root.is_dir():
            return f"There is no archive at {self.root} yet (set ROLLBOOK_ARCHIVE if the records are elsewhere)."
        records = self.records()
        if not records:
            return f"No records in {self.root} yet."
        header = ("#", "started (UTC)", "database", "runbook", "outcome", "operator", "approved by", "file")
        rows = [(str(r.seq) if r.seq is not None else "-", _short_time(r.started_at), r.database or "",
                 r.runbook or "", (r.outcome or "") + (" (not filed)" if r.kind == "in progress" else ""),
                 r.operator or "", r.approved_by or "", r.file) for r in records]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip()
                         for row in (header, *rows))

    def show(self, ref: str) -> str:
        """One record: where it is, its manifest entry, the run's other records, and its summary."""
        record = self.find(ref)
        loaded = self.load_record(record)
        where = f"#{record.seq} {record.kind}" if record.seq is not None else record.kind
        lines = [f"{record.file} ({where}, run {record.run_id})"]
        if record.sha256:
            lines.append(f"sha256 {record.sha256}, filed {record.filed_at}")
        others = [r.file for r in self.records() if r.run_id == record.run_id and r.file != record.file]
        if others:
            lines.append(f"also filed for this run: {', '.join(others)}")
        lines.append(json.dumps(loaded.to_json(), indent=2, ensure_ascii=False))
        return "\n".join(lines)

    # -- verification --------------------------------------------------------------------------------------

    def verify(self, head: str | None = None) -> ArchiveVerification:
        """Check the archive: its hash chain, every record, the signatures, and that `head` is an entry of it.

        `head` is an entry_hash kept outside the folder (printed by an earlier filing). A missing folder,
        an archive with no entry, and a `head` that is not in the chain are failures, named.
        """
        wanted = _given_head(head)
        if not self.root.is_dir():
            return ArchiveVerification(self.root, False, (
                f"there is no archive folder at {self.root}. Set ROLLBOOK_ARCHIVE to the folder the runs filed their "
                "records in; if it was this one, the archive was deleted or moved: restore it from a copy.",), 0)
        problems: list[str] = []
        raw = self._manifest_bytes()
        entries = _strict_entries(raw, problems)
        if not entries:
            problems.append(f"no record is filed in {self.root} ({MANIFEST} is missing or holds no entry). If runs "
                            "were recorded here, the archive was emptied: restore it from a copy. A new archive "
                            "verifies once its first run is filed.")
        _check_entries(entries, problems)
        referenced = self._check_records(entries, problems)
        for child in sorted(self.root.iterdir()):
            if child.name in (MANIFEST, LOCK_FILE, IN_PROGRESS, SIGNATURES) or child.name.startswith(_TEMP_PREFIX):
                continue
            if child.name not in referenced:
                problems.append(f"{child.name} is in the archive folder but not in the manifest: it was inserted "
                                "by hand, its manifest entry was deleted, or a filing was cut short by a crash.")
        signatures = self._check_signatures(entries, raw.split(b"\n"), problems)
        newest = max(entries, key=lambda item: item[1]["seq"])[1] if entries else None
        head_given = _place_head(wanted, entries, newest, problems) if wanted else ""
        filed = {entry["run_id"] for _, entry in entries}
        unfiled = tuple(r.run_id for r in self._in_progress() if r.run_id not in filed)
        return ArchiveVerification(
            self.root, not problems, tuple(problems), len(entries), newest["entry_hash"] if newest else None, unfiled,
            newest["seq"] if newest else None, signatures, head_given,
        )

    def _check_signatures(self, entries: list[tuple[int, dict[str, Any]]], lines: list[bytes],
                          problems: list[str]) -> str:
        """Each entry's signature against the allowed signers; a sentence saying what was (or was not) checked."""
        signed = {(line, entry["seq"]): self.root / SIGNATURES / f"{entry['seq']}.sig" for line, entry in entries}
        present = sum(path.is_file() for path in signed.values())
        if self.signing.allowed_signers is None:
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
            found: SignatureCheck = self.signing.check(lines[line - 1] + b"\n", path.read_bytes())
            if found.status == "good":
                signers[found.signer or "?"] += 1
            elif found.status == "unknown signer":
                problems.append(f"{which} is signed by a key that is not in {self.signing.allowed_signers}: it "
                                "was signed by someone not allowed to, or that key was removed from the file.")
            else:
                problems.append(f"{which}: its signature does not match the entry: the entry was edited, "
                                "re-chained or replaced after it was signed.")
        if not signers:
            return f"none good, checked against {self.signing.allowed_signers}." if entries else ""
        who = ", ".join(f"{name}: {count}" for name, count in sorted(signers.items()))
        return (f"{sum(signers.values())} of {len(entries)} entries carry a good signature by a key of "
                f"{self.signing.allowed_signers} ({who}).")

    def _check_records(self, entries: list[tuple[int, dict[str, Any]]], problems: list[str]) -> set[str]:
        referenced = set()
        for line, entry in entries:
            name, seq = entry["file"], entry["seq"]
            if name != Path(name).name or name in (MANIFEST, LOCK_FILE, IN_PROGRESS, "", ".", ".."):
                problems.append(f"manifest line {line}: entry #{seq} names '{name}', which is not a record file "
                                "of this folder: the entry was edited or inserted.")
                continue
            referenced.add(name)
            path = self.root / name
            if not path.is_file():
                problems.append(f"record {name} (entry #{seq}) is missing: it was deleted or renamed.")
                continue
            actual = file_sha256(path)
            if actual != entry["sha256"]:
                problems.append(f"record {name} (entry #{seq}) was changed after it was filed: its sha256 is "
                                f"{actual[:16]}..., the manifest says {entry['sha256'][:16]}....")
                continue
            unreadable = _schema_problem(path, entry["kind"])
            if unreadable:
                problems.append(f"record {name} (entry #{seq}) matches its sha256 but is not a valid run record: "
                                f"{unreadable}")
        return referenced


def _schema_problem(path: Path, kind: str) -> str:
    """Why a record file does not hold a run record the model reads (a notebook's record output, if it has one)."""
    try:
        loaded = json.loads(path.read_bytes())
        if kind == "notebook":
            _notebook_record(loaded)
        else:
            read_record(loaded)
    except (OSError, ValueError) as error:
        return f"it cannot be read as JSON ({error})."
    except InvalidRecord as error:
        return str(error)
    return ""


def default_root(environ: Mapping[str, str] | None = None) -> Path:
    """The archive folder: ROLLBOOK_ARCHIVE, or ./rollback-records."""
    environ = os.environ if environ is None else environ
    return Path(environ.get(ARCHIVE_VARIABLE) or DEFAULT_ARCHIVE)


def _given_head(head: str | None) -> str | None:
    if head is None:
        return None
    wanted = head.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", wanted):
        raise BadInput("--head takes the 64 hexadecimal characters printed as `archive head: ...` by a filing or by "
                       "`rollbook archive head`; check the copy you kept. Nothing was checked.")
    return wanted


def _place_head(wanted: str, entries: list[tuple[int, dict[str, Any]]], newest: dict[str, Any] | None,
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


def record_name(record: RunRecord) -> str:
    """A record's file name without extension: time_database_runbook_outcome_runid-tail, in [A-Za-z0-9._-]."""
    started = _utc(record.started_at) if record.started_at else datetime.now(UTC)
    parts = (
        f"{started:%Y%m%dT%H%M%SZ}",
        _safe(database_name(record), 63) or "unknown",
        _safe(record.runbook, 40) or "runbook",
        _safe(record.outcome.value, 20) or "unknown",
        _safe(record.run_id[-6:], 6) or "run",
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


def entry_hash(entry: Mapping[str, Any]) -> str:
    """The sha256 of a manifest entry's canonical JSON, its own entry_hash left out."""
    return hashlib.sha256(_canonical({k: v for k, v in entry.items() if k != "entry_hash"})).hexdigest()


def _check_entries(entries: list[tuple[int, dict[str, Any]]], problems: list[str]) -> None:
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


def _strict_entries(raw: bytes, problems: list[str]) -> list[tuple[int, dict[str, Any]]]:
    """(line number, entry) for every well-formed manifest line; a problem for every other line."""
    entries = []
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        entry, why = _parse_entry(line)
        if entry is None:
            problems.append(f"manifest line {number} is not a valid entry ({why}): it was edited, inserted or "
                            "torn by a crash.")
        else:
            entries.append((number, entry))
    return entries


def _lenient_entries(raw: bytes) -> list[dict[str, Any]]:
    return [entry for entry, _ in map(_parse_entry, raw.split(b"\n")) if entry is not None]


def _parse_entry(line: bytes) -> tuple[dict[str, Any] | None, str]:
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


def _listing_fields(record: RunRecord) -> dict[str, str | None]:
    facts = record.to_json()
    fields = {key: _text(facts.get(key)) for key in LISTING_FIELDS}
    fields["database"] = _text(database_name(record))
    return fields


def _notebook_record(notebook: Any) -> RunRecord | None:
    """The last rollbook record output in a notebook's cells (InvalidRecord if it is not a run record)."""
    found = None
    for cell in notebook.get("cells", []) if isinstance(notebook, dict) else []:
        for output in cell.get("outputs", []) if isinstance(cell, dict) else []:
            data = output.get("data", {}) if isinstance(output, dict) else {}
            if isinstance(data, dict) and isinstance(data.get(RECORD_MIME), dict):
                found = data[RECORD_MIME]
    return read_record(found) if found is not None else None


def _summary_bytes(summary: Mapping[str, Any]) -> bytes:
    return (json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _safe(value: Any, limit: int) -> str:
    if value is None:
        return ""
    return _UNSAFE.sub("-", str(value)).strip(".-")[:limit]


def _text(value: Any) -> str | None:
    if value is None or value == "":
        return None
    return (value if isinstance(value, str) else json.dumps(value, default=str))[:200]


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return _utc(datetime.fromisoformat(value))
    except ValueError:
        return None


def _utc(moment: datetime) -> datetime:
    # A naive time in a record was written as UTC (rollbook records nothing else).
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _time_order(record: ArchivedRecord) -> tuple[datetime, float, str]:
    started = _parse_time(record.started_at) or datetime.max.replace(tzinfo=UTC)
    return started, float("inf") if record.seq is None else record.seq, record.file


def _short_time(value: str | None) -> str:
    parsed = _parse_time(value)
    return f"{parsed:%Y-%m-%d %H:%M:%S}" if parsed else (value or "")


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


def _reason(error: OSError) -> str:
    reason = error.strerror or type(error).__name__
    return f"{reason}: {error.filename}" if error.filename else reason
