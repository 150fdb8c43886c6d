"""The archive on real files: filing, listing, finding, tamper evidence, concurrent filing, an unwritable folder."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nbformat
import pytest

from rollbook.errors import BadInput, RollbookError
from rollbook.records.archive import Archive, ArchiveUnavailable, RecordNotFiled
from rollbook.records.archive_files import MANIFEST, RECORD_MIME
from rollbook.records.hash_chain import GENESIS, entry_hash
from rollbook.records.manifest_lookup import TAIL_BYTES
from rollbook.records.model import read_record
from rollbook.records.run_listing import list_runs, runs_table
from rollbook.records.run_summary import find_run


def make_summary(started: str = "2026-11-24T12:34:56+00:00", tail: str = "3f9a1c", *, database: str = "app",
                 runbook: str = "rollback", outcome: str = "succeeded", **extra: Any) -> dict[str, Any]:
    stamp = started[:19].replace("-", "").replace(":", "") + "Z"
    return {
        "rollbook_record": 1, "run_id": f"{stamp}-{tail}", "runbook": runbook, "started_at": started,
        "outcome": outcome, "database": f"postgresql+psycopg://app:***@db.internal:5432/{database}",
        "identity": {"database": database, "server_version": "16.4", "system_identifier": "7300000000000000001"},
        "operator": "alice", "approved_by": "bob", "ticket": "OPS-1", "environment": "staging",
        "revision_before": ["0003"], "revision_after": ["0002"], "steps": [{"step": "plan", "status": "done"}],
        **extra,
    }


def listed(archive: Archive) -> str:
    """`archive list` as printed."""
    return runs_table(archive, list_runs(archive))


def make_notebook(summary: dict[str, Any]) -> bytes:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Roll back"),
        nbformat.v4.new_code_cell("run = rollbook.start_rollback_run()", execution_count=1, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="connected\n")]),
        nbformat.v4.new_code_cell("run.summary()", execution_count=2, outputs=[
            nbformat.v4.new_output("display_data", data={RECORD_MIME: summary, "text/plain": "record"})]),
    ]
    return nbformat.writes(notebook).encode()


def manifest_lines(archive: Archive) -> list[str]:
    return archive.manifest_path.read_text().splitlines()


def write_manifest(archive: Archive, lines: list[str]) -> None:
    archive.manifest_path.write_text("".join(line + "\n" for line in lines))


@pytest.fixture
def archive(tmp_path: Path) -> Archive:
    return Archive(tmp_path / "records")


@pytest.fixture
def filed(archive: Archive) -> list[str]:
    """Four records: three runs' summaries and one run's notebook; returns their file names in filing order."""
    names = []
    first = make_summary("2026-11-24T12:00:00+00:00", "aaaaaa", outcome="refused")
    names.append(archive.file_summary(first).file)
    names.append(archive.file_notebook(make_notebook(first), first).file)
    names.append(archive.file_summary(make_summary("2026-11-24T13:00:00+00:00", "bbbbbb")).file)
    names.append(archive.file_summary(make_summary("2026-11-24T14:00:00+00:00", "cccccc", outcome="failed")).file)
    return names


def test_records_are_named_by_time_database_runbook_and_outcome_and_listed_by_time(archive: Archive) -> None:
    late = make_summary("2026-11-24T15:00:00+00:00", "cccccc", database="billing", runbook="status",
                        outcome="dry_run")
    early = make_summary("2026-11-23T09:30:00Z", "aaaaaa", outcome="timed_out")
    middle = make_summary("2026-11-24T10:00:00+02:00", "bbbbbb", outcome="kernel_died")
    for summary in (late, early, middle):
        archive.write_progress(read_record(summary))
        archive.file_summary(summary)
    notebook = archive.file_notebook(make_notebook(early), early)

    assert notebook.file == "20261123T093000Z_app_rollback_timed_out_aaaaaa.ipynb"
    assert notebook.kind == "notebook" and notebook.seq == 4 and notebook.path.is_file()
    records = archive.records()
    assert [r.file for r in records] == [
        "20261123T093000Z_app_rollback_timed_out_aaaaaa.json",
        "20261123T093000Z_app_rollback_timed_out_aaaaaa.ipynb",
        "20261124T080000Z_app_rollback_kernel_died_bbbbbb.json",  # +02:00 is filed under its UTC time
        "20261124T150000Z_billing_status_dry_run_cccccc.json",
    ]
    # A plain directory listing sorts the same way.
    on_disk = sorted(p.name for p in archive.root.iterdir() if not p.name.startswith(".") and p.name != MANIFEST)
    assert on_disk == sorted(r.file for r in records)
    assert [(r.database, r.runbook, r.outcome, r.operator) for r in records][-1] == (
        "billing", "status", "dry_run", "alice")
    listing = listed(archive)
    assert listing.index("timed_out") < listing.index("kernel_died") < listing.index("dry_run")
    assert "billing" in listing and "staging" in listing
    # Filing removed the in-progress files.
    assert list((archive.root / ".in-progress").glob("*.json")) == []


def test_a_run_in_progress_is_listed_until_it_is_filed(archive: Archive) -> None:
    summary = make_summary(outcome="running")
    path = archive.write_progress(read_record(summary))
    summary["steps"].append({"step": "backup", "status": "running"})
    assert archive.write_progress(read_record(summary)) == path
    assert archive.progress(summary["run_id"]).steps[-1].step == "backup"
    [record] = archive.records()
    assert record.kind == "in progress" and record.seq is None and record.outcome == "running"
    assert "(not filed)" in listed(archive)
    assert archive.load_record(archive.find(summary["run_id"])).steps[-1].step == "backup"
    # Nothing in the folder but the in-progress file: no temporary files left behind.
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]

    archive.file_summary({**summary, "outcome": "failed"})
    assert archive.progress(summary["run_id"]) is None
    assert [r.kind for r in archive.records()] == ["summary"]
    assert archive.verify().ok


def test_a_run_has_a_summary_record_and_a_notebook_record_linked_by_run_id(archive: Archive) -> None:
    summary = make_summary()
    archive.file_summary(summary)
    archive.file_notebook(make_notebook({**summary, "verdict": "succeeded"}), summary)
    assert archive.filed_record(summary["run_id"]).outcome == "succeeded"
    assert [r.kind for r in archive.records_of(summary["run_id"])] == ["summary", "notebook"]
    assert archive.records_of("another run") == ()
    found = archive.find(summary["run_id"][:20])
    assert found.kind == "notebook"  # the record filed last
    assert archive.load_record(found).verdict == "succeeded"
    assert archive.find("1").kind == "summary"
    assert archive.find(found.file) == found
    assert archive.find(str(found.path)) == found
    assert archive.find("3f9a1c") == found  # the tail every file name ends with
    shown = find_run(archive, summary["run_id"]).to_text()
    assert shown.startswith(f"run {summary['run_id']}: succeeded\n")
    assert f"record (#1 summary): {archive.root / found.file.replace('.ipynb', '.json')}" in shown
    assert f"record (#2 notebook): {found.path}" in shown


def test_find_names_the_candidates_of_an_ambiguous_or_unknown_reference(archive: Archive, filed: list[str]) -> None:
    with pytest.raises(BadInput) as ambiguous:
        archive.find("20261124T1")
    assert "20261124T120000Z-aaaaaa" in str(ambiguous.value) and "20261124T140000Z-cccccc" in str(ambiguous.value)
    with pytest.raises(BadInput, match="The newest run ids: 20261124T140000Z-cccccc, 20261124T130000Z-bbbbbb, "):
        archive.find("nope")
    # A mistyped id or file name is answered with the runs it is closest to.
    with pytest.raises(BadInput, match=r"The closest run ids: 20261124T130000Z-bbbbbb, "):
        archive.find("20261124T130000Z-bbbbbc")
    with pytest.raises(BadInput, match=r"The closest run ids: 20261124T140000Z-cccccc"):
        archive.find("records/20261124T140000Z_app_rollback_failed_cccccd.json")
    assert archive.filed_record("nope") is None and archive.progress("nope") is None


def test_records_are_never_overwritten_and_refiling_the_same_bytes_adds_nothing(archive: Archive) -> None:
    summary = make_summary()
    first = archive.file_summary(summary)
    again = archive.file_summary(summary)
    assert again == first and len(manifest_lines(archive)) == 1
    second = archive.file_summary({**summary, "message": "filed again with different content"})
    assert second.file == first.file.replace(".json", "-2.json")
    assert archive.load_record(first).message is None
    assert archive.verify().ok


def test_file_names_are_sanitised(archive: Archive) -> None:
    summary = make_summary(database="../../etc/pass wd", runbook="my runbook!", tail="x/y\\z1")
    summary["identity"] = None
    record = archive.file_summary(summary)
    assert record.file == "20261124T123456Z_etc-pass-wd_my-runbook_succeeded_x-y-z1.json"
    assert record.path.parent == archive.root


def test_manifest_entries_chain_sha256_hashes(archive: Archive, filed: list[str]) -> None:
    entries = [json.loads(line) for line in manifest_lines(archive)]
    assert [e["seq"] for e in entries] == [1, 2, 3, 4]
    assert [e["file"] for e in entries] == filed
    assert [e["kind"] for e in entries] == ["summary", "notebook", "summary", "summary"]
    assert entries[0]["prev"] == GENESIS
    for before, entry in zip(entries, entries[1:]):
        assert entry["prev"] == before["entry_hash"]
    for entry in entries:
        assert entry["entry_hash"] == entry_hash(entry)
        assert entry["sha256"] == hashlib.sha256((archive.root / entry["file"]).read_bytes()).hexdigest()


def test_verify_passes_on_a_clean_archive(archive: Archive, filed: list[str]) -> None:
    result = archive.verify()
    assert result.ok and result.problems == () and result.entries == 4
    assert result.head == json.loads(manifest_lines(archive)[-1])["entry_hash"]
    assert "hash chain intact" in result.to_text() and result.head in result.to_text()
    assert result.head_seq == 4 and result.head == archive.head()


def problems_of(archive: Archive) -> str:
    result = archive.verify()
    assert not result.ok
    assert "problem" in result.to_text()
    return "\n".join(result.problems)


def test_verify_names_an_edited_record(archive: Archive, filed: list[str]) -> None:
    path = archive.root / filed[2]
    path.write_text(path.read_text().replace('"succeeded"', '"refused"'))
    problems = problems_of(archive)
    assert f"record {filed[2]} (entry #3) was changed" in problems
    assert len(archive.verify().problems) == 1


def test_verify_names_a_deleted_record(archive: Archive, filed: list[str]) -> None:
    (archive.root / filed[1]).unlink()
    assert f"record {filed[1]} (entry #2) is missing" in problems_of(archive)


def test_verify_names_a_deleted_manifest_line(archive: Archive, filed: list[str]) -> None:
    lines = manifest_lines(archive)
    write_manifest(archive, lines[:1] + lines[2:])
    problems = problems_of(archive)
    assert "entry #2 missing from the manifest" in problems
    assert f"entry #3 ({filed[2]}) chains to it" in problems
    assert f"{filed[1]} is in the archive folder but not in the manifest" in problems


def test_verify_names_two_swapped_manifest_lines(archive: Archive, filed: list[str]) -> None:
    lines = manifest_lines(archive)
    lines[1], lines[2] = lines[2], lines[1]
    write_manifest(archive, lines)
    problems = problems_of(archive)
    assert f"manifest line 3: entry #2 ({filed[1]}) comes after entry #3 ({filed[2]})" in problems
    assert "reordered" in problems


def test_verify_names_a_foreign_file_inserted_in_the_folder(archive: Archive, filed: list[str]) -> None:
    forged = make_summary("2026-11-24T12:30:00+00:00", "dddddd")
    name = "20261124T123000Z_app_rollback_succeeded_dddddd.json"
    (archive.root / name).write_text(json.dumps(forged))
    assert problems_of(archive).startswith(f"{name} is in the archive folder but not in the manifest: it was "
                                           "inserted by hand")
    assert len(archive.verify().problems) == 1
    # The inserted file is not a record: listing shows what the manifest holds.
    assert name not in listed(archive)


def test_verify_names_an_edited_manifest_entry(archive: Archive, filed: list[str]) -> None:
    lines = manifest_lines(archive)
    edited = json.loads(lines[2])
    edited["outcome"] = "refused"
    write_manifest(archive, lines[:2] + [json.dumps(edited, sort_keys=True, separators=(",", ":"))] + lines[3:])
    assert f"manifest line 3: entry #3 ({filed[2]}) was edited" in problems_of(archive)

    # Recomputing the edited entry's own hash does not help: the next entry still chains to the original.
    edited["entry_hash"] = entry_hash(edited)
    write_manifest(archive, lines[:2] + [json.dumps(edited, sort_keys=True, separators=(",", ":"))] + lines[3:])
    problems = problems_of(archive)
    assert f"entry #4 ({filed[3]}) does not chain to entry #3 ({filed[2]})" in problems
    assert "no longer match its entry_hash" not in problems


def test_verify_names_an_edited_record_whose_manifest_entry_was_rehashed_to_match(
    archive: Archive, filed: list[str],
) -> None:
    path = archive.root / filed[0]
    path.write_text(path.read_text().replace('"refused"', '"succeeded"'))
    lines = manifest_lines(archive)
    entry = json.loads(lines[0])
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    entry["entry_hash"] = entry_hash(entry)
    write_manifest(archive, [json.dumps(entry)] + lines[1:])
    assert f"entry #2 ({filed[1]}) does not chain to entry #1 ({filed[0]})" in problems_of(archive)


def test_verify_names_an_inserted_manifest_line_and_malformed_lines(archive: Archive, filed: list[str]) -> None:
    lines = manifest_lines(archive)
    copied = lines[1]
    write_manifest(archive, lines[:3] + [copied, "{not json"] + lines[3:])
    problems = problems_of(archive)
    assert f"entry #2 appears 2 times, on line 2 ({filed[1]}), line 4 ({filed[1]})" in problems
    assert "manifest line 5 is not a valid entry (not JSON)" in problems


def test_filing_continues_the_chain_after_a_torn_last_line(archive: Archive, filed: list[str]) -> None:
    with archive.manifest_path.open("a") as manifest:
        manifest.write('{"seq": 5, "file": "torn')
    record = archive.file_summary(make_summary("2026-11-24T16:00:00+00:00", "eeeeee"))
    assert record.seq == 5
    assert json.loads(manifest_lines(archive)[-1])["prev"] == json.loads(manifest_lines(archive)[-3])["entry_hash"]
    problems = archive.verify().problems
    assert problems == ("manifest line 5 is not a valid entry (not JSON): it was edited, inserted or torn by a crash.",)


def test_filing_after_damaged_lines_longer_than_the_tail_read_chains_to_the_last_good_entry(
    archive: Archive, filed: list[str],
) -> None:
    good = json.loads(manifest_lines(archive)[-1])
    # Well-formed JSON that is not an entry, then a torn line far longer than the first read of the end.
    with archive.manifest_path.open("a") as manifest:
        manifest.write('{"seq": "five", "file": "x"}\n' + '{"seq": 5, "ticket": "' + "x" * (3 * TAIL_BYTES))
    assert archive.head() == good["entry_hash"]
    record = archive.file_summary(make_summary("2026-11-24T16:00:00+00:00", "eeeeee"))
    assert record.seq == 5
    last = json.loads(manifest_lines(archive)[-1])
    assert last["seq"] == 5 and last["prev"] == good["entry_hash"]
    assert archive.head() == record.entry_hash == last["entry_hash"]
    problems = archive.verify().problems
    assert len(problems) == 2
    assert problems[0].startswith("manifest line 5 is not a valid entry (missing or malformed seq, kind,")
    assert problems[1].startswith("manifest line 6 is not a valid entry (not JSON)")


def test_a_manifest_of_damaged_lines_only_starts_the_chain(archive: Archive) -> None:
    archive.root.mkdir()
    write_manifest(archive, ["{not json", '{"seq": 1}'])
    assert archive.head() is None
    record = archive.file_summary(make_summary())
    assert record.seq == 1 and json.loads(manifest_lines(archive)[-1])["prev"] == GENESIS


def test_filing_after_reordered_lines_never_gives_a_number_twice(archive: Archive, filed: list[str]) -> None:
    lines = manifest_lines(archive)
    lines[2], lines[3] = lines[3], lines[2]  # the last line is now entry #3; #4 is the one before it
    write_manifest(archive, lines)
    record = archive.file_summary(make_summary("2026-11-24T16:00:00+00:00", "eeeeee"))
    assert record.seq == 5
    assert json.loads(manifest_lines(archive)[-1])["prev"] == json.loads(lines[2])["entry_hash"]
    assert sorted(json.loads(line)["seq"] for line in manifest_lines(archive)) == [1, 2, 3, 4, 5]


def file_runs(archive: Archive, count: int) -> list[dict[str, Any]]:
    """`count` runs filed, each a summary and its notebook, an hour apart; their summaries."""
    summaries = []
    for number in range(count):
        started = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(hours=number)
        summary = make_summary(started.isoformat(), f"{number:06x}", ticket=f"OPS-{number}")
        archive.file_summary(summary)
        archive.file_notebook(make_notebook(summary), summary)
        summaries.append(summary)
    return summaries


def test_many_filings_keep_the_chain_and_refiling_the_first_run_adds_nothing(archive: Archive) -> None:
    summaries = file_runs(archive, 200)
    lines = manifest_lines(archive)
    assert len(lines) == 400 and archive.manifest_path.stat().st_size > 2 * TAIL_BYTES  # the first run is far back
    result = archive.verify()
    assert result.ok, result.to_text()
    assert result.entries == 400 and result.head == archive.head() == json.loads(lines[-1])["entry_hash"]
    assert [json.loads(line)["seq"] for line in lines] == list(range(1, 401))

    first = summaries[0]
    [summary, notebook] = archive.records_of(first["run_id"])
    assert archive.file_summary(first) == summary
    assert archive.file_notebook(notebook.path.read_bytes(), first) == notebook
    assert manifest_lines(archive) == lines
    assert archive.knows_run(first["run_id"]) and not archive.knows_run(first["run_id"][:-1])
    assert archive.filed_record(first["run_id"]).ticket == "OPS-0"

    # Other bytes of the same run are a new record, chained after the newest entry.
    changed = archive.file_summary({**first, "message": "filed again with different content"})
    assert changed.seq == 401 and changed.file == summary.file.replace(".json", "-2.json")
    assert archive.filed_record(first["run_id"]).message == "filed again with different content"
    assert archive.verify().ok


def test_a_run_id_or_sha256_another_entry_carries_in_its_ticket_is_not_taken_for_it(archive: Archive) -> None:
    first = make_summary("2026-11-24T12:00:00+00:00", "aaaaaa")
    filed = archive.file_summary(first)
    # A later run whose ticket names the first run, then its sha256: their lines hold both strings.
    archive.file_summary(make_summary("2026-11-24T13:00:00+00:00", "bbbbbb", ticket=first["run_id"]))
    archive.file_summary(make_summary("2026-11-24T14:00:00+00:00", "cccccc", ticket=filed.sha256))
    assert archive.filed_record(first["run_id"]).started_at.hour == 12
    assert not archive.knows_run("20261124T130000Z") and archive.knows_run(first["run_id"])
    assert archive.file_summary(first) == filed and len(manifest_lines(archive)) == 3


CONCURRENT_FILER = """
import sys, time
from pathlib import Path
from rollbook.records.archive import Archive

root, who, count, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
(go.parent / f"ready-{who}").touch()
while not go.exists():
    time.sleep(0.0005)
archive = Archive(root)
for i in range(count):
    # Both processes use the same start time and run id tail: their records want the same file names.
    summary = {"run_id": f"20261124T123456Z-{who}-{i:06d}", "runbook": "rollback", "outcome": "succeeded",
               "started_at": "2026-11-24T12:34:56+00:00", "database": "postgresql://app:***@db/app", "operator": who}
    archive.file_summary(summary)
    if i % 5 == 0:
        archive.file_notebook(b'{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5, "operator": "%s"}'
                              % who.encode(), summary)
"""


def test_two_processes_filing_at_the_same_moment_are_both_archived_and_the_chain_holds(archive: Archive) -> None:
    count = 40
    go = archive.root.parent / "go"
    filers = [subprocess.Popen([sys.executable, "-c", CONCURRENT_FILER, str(archive.root), who, str(count), str(go)])
              for who in ("a", "b")]
    deadline = time.monotonic() + 60
    while not all((go.parent / f"ready-{who}").exists() for who in ("a", "b")) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # both are started and waiting: they file at the same moment
    assert [filer.wait(timeout=120) for filer in filers] == [0, 0]

    result = archive.verify()
    assert result.ok, result.to_text()
    per_process = count + count // 5
    assert result.entries == 2 * per_process
    entries = [json.loads(line) for line in manifest_lines(archive)]
    assert [e["seq"] for e in entries] == list(range(1, 2 * per_process + 1))
    first_half = {e["run_id"].split("-")[1] for e in entries[:per_process]}
    assert first_half == {"a", "b"}, "the two processes did not file concurrently"
    assert len({e["file"] for e in entries}) == len(entries)
    for who in ("a", "b"):
        run_ids = {e["run_id"] for e in entries if e["kind"] == "summary" and f"-{who}-" in e["run_id"]}
        assert len(run_ids) == count
    # Each record holds the content its own process wrote.
    for entry in entries:
        content = json.loads((archive.root / entry["file"]).read_text())
        assert content["operator"] in entry["run_id"]


def test_an_unwritable_folder_is_refused_with_a_helpful_message_and_nothing_is_created(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")
    archive = Archive(blocker / "records")
    with pytest.raises(ArchiveUnavailable) as refused:
        archive.ensure_writable()
    message = str(refused.value)
    assert str(blocker / "records") in message
    assert "Not a directory" in message
    assert "ROLLBOOK_ARCHIVE" in message and "database was not touched" in message
    assert refused.value.exit_code == 2 and isinstance(refused.value, RollbookError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]
    assert blocker.read_text() == "a regular file"

    with pytest.raises(ArchiveUnavailable, match="cannot be written"):
        Archive(blocker).ensure_writable()
    # Filing into it fails the same way, and says what to do with the run's record.
    # A run that has ended is not a bad input: filing it fails as a failure (exit 1), saying what to do.
    with pytest.raises(RecordNotFiled, match="rollbook archive add") as not_filed:
        archive.file_summary(make_summary())
    assert not_filed.value.exit_code == 1
    with pytest.raises(ArchiveUnavailable, match="could not be saved"):
        archive.write_progress(read_record(make_summary()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-folder"]


def test_ensure_writable_creates_the_folder(archive: Archive) -> None:
    archive.ensure_writable()
    assert archive.root.is_dir()
    assert sorted(p.name for p in archive.root.iterdir()) == [".in-progress"]
    assert archive.records() == () and archive.head() is None
    # Nothing filed yet is not "verified": an emptied archive looks just the same.
    assert archive.verify().problems[0].startswith(f"no record is filed in {archive.root}")
    assert "No records" in listed(archive)


def test_default_archive_comes_from_the_environment() -> None:
    assert Archive.default({"ROLLBOOK_ARCHIVE": "/srv/records"}).root == Path("/srv/records")
    assert Archive.default({}).root == Path("rollback-records")


def test_reading_a_missing_archive_says_so(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    for root in (tmp_path / "absent", tmp_path / "file" / "records"):
        archive = Archive(root)
        assert archive.records() == ()
        assert "no archive at" in listed(archive)
        verification = archive.verify()
        assert not verification.ok and verification.entries == 0 and archive.head() is None
        assert verification.problems[0].startswith(f"there is no archive folder at {root}")
        with pytest.raises(BadInput):
            archive.find("1")


def test_malformed_input_is_refused(archive: Archive) -> None:
    with pytest.raises(BadInput, match="not a Jupyter notebook"):
        archive.file_notebook(b"not json", make_summary())
    with pytest.raises(BadInput, match="run_id"):
        archive.file_summary({"runbook": "status"})
    with pytest.raises(BadInput, match="records run 20261124T123456Z-3f9a1c, but it was to be filed as run"):
        archive.file_notebook(make_notebook(make_summary()), make_summary(tail="999999"))
    assert not archive.root.exists() or not any(archive.root.iterdir())


def test_records_written_by_this_module_are_never_rewritten(archive: Archive, filed: list[str]) -> None:
    before = {name: (archive.root / name).read_bytes() for name in filed}
    lines = manifest_lines(archive)
    archive.file_summary(make_summary("2026-11-24T17:00:00+00:00", "ffffff"))
    archive.verify()
    listed(archive)
    find_run(archive, "1")
    assert {name: (archive.root / name).read_bytes() for name in filed} == before
    assert manifest_lines(archive)[:4] == lines
