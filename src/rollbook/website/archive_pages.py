"""The archive as site pages: one page per run (its executed notebook, or its summary; record_page.py draws it)
and an index of runs that says whether the manifest verifies."""

from __future__ import annotations

import dataclasses
import posixpath
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rollbook import markdown
from rollbook.records.archive import Archive, ArchivedRecord
from rollbook.records.archive_verification import ArchiveVerification
from rollbook.records.model import RunRecord
from rollbook.records.signing import RecordSigning

ARCHIVE_VARIABLE = "ROLLBOOK_SITE_ARCHIVE"


@dataclass(frozen=True)
class RecordPage:
    """One run of the archive: its page, the records filed for it, and what the manifest says of them."""

    run_id: str
    src_uri: str
    notebook: Path | None
    record: RunRecord | None  # None when its file is missing, damaged or not a run record
    records: tuple[ArchivedRecord, ...]
    manifest: str
    title: str
    unreadable: str = ""  # why the record could not be read

    @property
    def outcome(self) -> str:
        """The verdict in words (or the outcome), as the index and the page name it."""
        last = self.records[-1]
        text = "record unreadable" if self.record is None else self.record.verdict or self.record.outcome.value
        return f"{text} (not filed yet)" if last.kind == "in progress" else text



def read_archive(root: Path) -> tuple[ArchiveVerification, tuple[RecordPage, ...]]:
    """Each run of the archive (its notebook if filed, else its summary), oldest first, and the verification."""
    archive = Archive(root, RecordSigning.configured())  # signatures checked as `rollbook archive verify` does
    verification = archive.verify()
    runs: dict[str, list[ArchivedRecord]] = {}
    for record in archive.records():
        runs.setdefault(record.run_id, []).append(record)
    pages = []
    for run_id, records in runs.items():
        notebook = next((r for r in reversed(records) if r.kind == "notebook"), None)
        main = notebook or records[-1]
        loaded: RunRecord | None = None
        unreadable = ""
        try:
            loaded = archive.load_record(main)
        except Exception as error:  # a deleted or damaged record still gets its page, saying so
            unreadable = str(error)
        changed = [r.file for r in records if any(r.file in problem for problem in verification.problems)]
        if main.kind == "in progress":
            manifest = "not filed yet"
        elif changed:
            manifest = "✗ changed or missing"
        else:
            manifest = "✓ verified" if verification.ok else "✓ record intact (chain broken elsewhere)"
        stem = Path(main.file).name.rsplit(".", 1)[0] if main.kind != "in progress" else f"in-progress-{run_id}"
        shown = notebook.path if notebook is not None and notebook.path.is_file() else None
        uri = f"archive/{safe_name(stem)}.{'ipynb' if shown else 'md'}"
        page = RecordPage(run_id, uri, shown, loaded, tuple(records), manifest, "",
                          unreadable)
        started = loaded.started_at.isoformat() if loaded and loaded.started_at else main.started_at
        title = " · ".join(str(v) for v in (_when(started), (loaded.runbook if loaded else main.runbook) or "run",
                                             page.outcome) if v)
        pages.append(dataclasses.replace(page, title=title))
    return verification, tuple(pages)


def archive_index(archive: Path | None, verification: ArchiveVerification | None,
                  records: tuple[RecordPage, ...]) -> str:
    """The archive's index: whether the manifest verifies, and one row per run, newest first."""
    if archive is None:
        return ("# Archive\n\nThis site was built without an archive. Every run of a runbook leaves a record in the "
                "archive folder (`ROLLBOOK_ARCHIVE`, default `./rollback-records`); name that folder as the "
                "`archive` of the rollbook plugin in `mkdocs.yml`, or build the site with "
                f"`{ARCHIVE_VARIABLE}` pointing at it, to publish the records here:\n\n"
                f"```bash\n{ARCHIVE_VARIABLE}=rollback-records mkdocs build --strict\n```\n\n"
                "See [Records and the archive](../records.md) for what a record holds.\n")
    assert verification is not None
    if verification.ok:
        banner = (f'!!! success "The manifest verifies"\n\n    {verification.entries} record file(s); the hash chain '
                  "is intact and every record matches its sha256.")
        if verification.head:
            banner += f" Head entry hash: `{verification.head}`."
        if verification.signatures:
            banner += f" Signatures: {markdown.cell(verification.signatures)}"
    else:
        banner = ('!!! failure "The manifest does not verify"\n\n    The archive was changed outside rollbook:\n\n'
                  + "\n".join(f"    - {markdown.cell(p)}" for p in verification.problems))
    rows = []
    for page in records:
        r = page.record
        rows.append((
            f"[{markdown.cell(_when(r.started_at if r else None) or '?')}]({posixpath.basename(page.src_uri)})",
            markdown.cell(r.database_name if r else ""), markdown.cell(r.runbook if r else ""),
            _moved(r), markdown.cell(page.outcome), markdown.cell(r.operator or "" if r else ""),
            markdown.cell(r.approved_by or "" if r else ""), page.manifest))
    table = markdown.table(["started (UTC)", "database", "runbook", "revision before → after", "outcome", "operator",
                            "approved by", "manifest"], list(reversed(rows)))
    return "\n\n".join([
        # The index is one wide table and has no sections: the table of contents' column goes to it.
        "---\nhide:\n  - toc\n---\n# Archive", banner,
        f"{len(records)} run(s), newest first. Each row links to the run's record: the executed notebook "
        "as it was filed (already scrubbed of passwords), with its summary, timeline and hashes."
        + (" [Download the manifest](manifest.jsonl) to check it with `rollbook archive verify`."
           if (archive / "manifest.jsonl").is_file() else ""),
        table if rows else "The archive holds no record yet.",
    ]) + "\n"


def copy_archive_files(records: tuple[RecordPage, ...], site: Path) -> None:
    """The records behind each page, so a reader can download and verify them."""
    (site / "archive").mkdir(parents=True, exist_ok=True)
    for record in records:
        folder = site / "archive" / Path(record.src_uri).stem
        folder.mkdir(parents=True, exist_ok=True)
        for filed in record.records:
            if filed.kind != "in progress" and filed.path.is_file():
                shutil.copyfile(filed.path, folder / filed.path.name)



def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)


def _when(value: datetime | str | None) -> str:
    if value is None or value == "":
        return ""
    try:
        parsed = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    except ValueError:
        return value if isinstance(value, str) else ""
    parsed = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    return f"{parsed:%Y-%m-%d %H:%M:%S}"


def _revisions(value: list[str] | None) -> str:
    if value is None:
        return "?"
    return ", ".join(value) or "base"


def _moved(record: RunRecord | None) -> str:
    if record is None:
        return "? → ?"
    before, after = _revisions(record.revision_before), _revisions(record.revision_after)
    return f"{markdown.cell(before)} → {markdown.cell(after)}"
