"""The run record's model: its shipped JSON Schema, records of the older format, and records refused when filed.

No database: the fixtures are records as rollbook wrote them (tests/fixtures/archive-v1 is the demo tour's
archive filed by the version-1 format, before the model).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

from rollbook.records.archive import Archive
from rollbook.records.hash_chain import entry_hash
from rollbook.records.model import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    InvalidRecord,
    RunRecord,
    read_record,
    record_json_schema,
    record_json_schema_text,
)
from rollbook.records.run_record import RunRecorder
from rollbook.recovery.archived_backups import ArchivedBackup, archived_backups

VERSION_1_ARCHIVE = Path(__file__).parents[1] / "fixtures" / "archive-v1"
ROLLED_BACK = "20261201T171252Z_rollbook_demo_rollback_succeeded_unverified_8f1acd.json"


@pytest.fixture
def version_1_archive(tmp_path: Path) -> Archive:
    copy = tmp_path / "archive-v1"
    shutil.copytree(VERSION_1_ARCHIVE, copy)
    return Archive(copy)


def version_1_record() -> dict[str, object]:
    return json.loads((VERSION_1_ARCHIVE / ROLLED_BACK).read_text())


def test_the_shipped_json_schema_is_the_one_the_model_generates() -> None:
    assert SCHEMA_PATH.read_text() == record_json_schema_text(), (
        "src/rollbook/records/run-record.schema.json is out of date: regenerate it with .venv/bin/python -c "
        "'from rollbook.records.model import SCHEMA_PATH, record_json_schema_text; "
        "SCHEMA_PATH.write_text(record_json_schema_text())'")


def test_an_archive_filed_in_the_version_1_format_verifies_and_reads(version_1_archive: Archive) -> None:
    verification = version_1_archive.verify()
    assert verification.ok, verification.to_text()
    outcomes = [(r.kind, version_1_archive.load_record(r).outcome) for r in version_1_archive.records()]
    assert outcomes == [("summary", "refused"), ("notebook", "refused"), ("summary", "succeeded_unverified"),
                        ("notebook", "succeeded_unverified")]
    [backup] = archived_backups(version_1_archive)
    assert backup.run_id.endswith("8f1acd") and backup.verified and backup.verification == "list"
    assert backup.revisions == ("0607bc5b8536",) and backup.database == "rollbook_demo"
    assert dict(backup.table_rows or ())["public.users"] == 12 and backup.write_horizon == "798"


def test_a_version_1_record_is_read_in_the_current_version_and_valid_against_the_shipped_schema() -> None:
    record = read_record(version_1_record())
    assert record.schema_version == SCHEMA_VERSION
    assert record.backup is not None and record.backup.identity is not None
    assert record.plan_steps is not None and record.plan_steps[0].revision == "0607bc5b8536"
    written = record.to_json()
    assert written["schema_version"] == SCHEMA_VERSION and "rollbook_record" not in written
    # What an auditor can do without rollbook: check a record against the published schema.
    jsonschema.validate(written, json.loads(SCHEMA_PATH.read_text()))
    assert read_record(written) == record


def test_a_short_backup_of_a_version_1_rollback_record_takes_its_database_revision_and_time_from_the_run() -> None:
    # Before the rollback runbook recorded its backup as the backup runbook does, it wrote only these.
    older = version_1_record()
    full = older["backup"]
    assert isinstance(full, dict)
    older["backup"] = {key: full[key] for key in ("path", "size_bytes", "sha256")} | {
        "verified": True, "verification": "list", "verification_detail": "pg_restore --list read 31 entries"}

    backup = ArchivedBackup.from_record(read_record(older), "old.json")

    assert backup is not None and backup.verified and backup.path == Path(str(full["path"]))
    assert backup.database == "rollbook_demo" and backup.system_identifier == full["identity"]["system_identifier"]
    assert backup.revisions == ("0607bc5b8536",) and backup.taken_at == older["started_at"]
    assert backup.table_rows is None and backup.write_horizon is None  # not recorded: a restore asks


def test_records_that_are_not_run_records_are_refused_with_the_field_named() -> None:
    with pytest.raises(InvalidRecord, match="outcome"):
        read_record({**version_1_record(), "outcome": "mostly fine"})
    with pytest.raises(InvalidRecord, match="backup.sha256"):
        read_record({**version_1_record(), "backup": {"path": "/b.dump", "size_bytes": 1, "verified": True}})
    with pytest.raises(InvalidRecord, match="notes"):
        read_record({**version_1_record(), "notes": "an unknown fact"})
    with pytest.raises(InvalidRecord, match="schema_version 4"):
        read_record({"schema_version": 4, "run_id": "x", "runbook": "rollback"})


def test_a_version_2_record_reads_as_the_current_version() -> None:
    record = read_record({"schema_version": 2, "run_id": "20261124T123456Z-3f9a1c", "runbook": "rollback",
                          "outcome": "succeeded"})
    assert record.schema_version == SCHEMA_VERSION == 3 and record.backup_strategy is None


def test_a_record_that_does_not_match_the_model_is_not_filed(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "records")
    with pytest.raises(InvalidRecord):
        archive.file_summary({**version_1_record(), "outcome": "mostly fine"})
    assert not archive.manifest_path.exists()


def test_a_fact_the_model_does_not_know_is_refused_where_the_run_records_it(tmp_path: Path) -> None:
    recorder = RunRecorder.begin("rollback", Archive(tmp_path / "records"))
    recorder.update(revision_before=["0607bc5b8536"])
    with pytest.raises(InvalidRecord, match="revision_befor"):
        recorder.update(revision_befor=["0607bc5b8536"])
    with pytest.raises(InvalidRecord, match="revision_after"):
        recorder.update(revision_after="0607bc5b8535")
    progress = recorder.archive.progress(recorder.run_id)
    assert progress is not None and progress.revision_before == ["0607bc5b8536"] and progress.revision_after is None


def test_verify_names_a_record_rewritten_with_its_hashes_recomputed_that_is_no_run_record(tmp_path: Path) -> None:
    archive = Archive(tmp_path / "records")
    filed = archive.file_summary(version_1_record())
    edited = json.loads(filed.path.read_text()) | {"outcome": "fine, trust me"}
    filed.path.write_text(json.dumps(edited))
    entry = json.loads(archive.manifest_path.read_text())
    entry["sha256"] = hashlib.sha256(filed.path.read_bytes()).hexdigest()
    entry["entry_hash"] = entry_hash(entry)
    archive.manifest_path.write_text(json.dumps(entry, sort_keys=True, separators=(",", ":")) + "\n")

    verification = archive.verify()

    assert not verification.ok
    assert any(filed.file in problem and "not a valid run record" in problem and "outcome" in problem
               for problem in verification.problems), verification.problems


def test_the_schema_describes_every_field_of_the_model() -> None:
    schema = record_json_schema()
    assert set(schema["properties"]) == set(RunRecord.model_fields)
    assert schema["additionalProperties"] is False and "run_id" in schema["required"]
