"""`rollbook archive list` and `archive show` on an archive the demo tour filed (tests/fixtures/archive-v1).

No database: the commands read the archive folder only, and never change it.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from rollbook.cli import main
from rollbook.records.archive import Archive
from rollbook.records.model import RunRecord

VERSION_1_ARCHIVE = Path(__file__).parents[1] / "fixtures" / "archive-v1"
REFUSED = "20261201T171248Z-36da2d"
SUCCEEDED = "20261201T171250Z-8f1acd"
SUCCEEDED_NOTEBOOK = "20261201T171252Z_rollbook_demo_rollback_succeeded_unverified_8f1acd.ipynb"


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    copy = tmp_path / "records"
    shutil.copytree(VERSION_1_ARCHIVE, copy)
    return copy


def rollbook(archive: Path, *args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"ROLLBOOK_ARCHIVE": str(archive)})


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_archive_list_shows_one_row_per_run_with_its_mode_and_target(archive: Path) -> None:
    result = rollbook(archive, "archive", "list")

    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split() == ["run", "id", "started", "(UTC)", "database", "environment", "runbook", "mode",
                              "target", "outcome"]
    # Two runs, each filed as a summary and a notebook: two rows, not four.
    assert [row.split() for row in rows] == [
        [REFUSED, "2026-12-01", "17:12:50", "rollbook_demo", "production", "rollback", "executed", "0607bc5b8535",
         "refused"],
        [SUCCEEDED, "2026-12-01", "17:12:52", "rollbook_demo", "staging", "rollback", "executed", "0607bc5b8535",
         "succeeded_unverified"],
    ]


def test_archive_list_filters_by_environment_runbook_and_outcome_and_keeps_the_newest(archive: Path) -> None:
    def run_ids(*args: str) -> list[str]:
        result = rollbook(archive, "archive", "list", *args)
        assert result.exit_code == 0, result.output
        return [row.split()[0] for row in result.output.splitlines()[1:]]

    assert run_ids("--environment", "production") == [REFUSED]
    assert run_ids("--outcome", "succeeded_unverified") == [SUCCEEDED]
    assert run_ids("--runbook", "rollback", "--limit", "1") == [SUCCEEDED]
    assert run_ids("--limit", "5") == [REFUSED, SUCCEEDED]
    nothing = rollbook(archive, "archive", "list", "--runbook", "backup")
    assert nothing.output == f"No run in {archive} matches.\n"
    zero = rollbook(archive, "archive", "list", "--limit", "0")
    assert zero.exit_code == 2 and "0 is not in the range x>=1" in zero.output


def test_archive_list_json_prints_the_rows_with_their_record_files(archive: Path) -> None:
    result = rollbook(archive, "archive", "list", "--json")

    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    refused, succeeded = json.loads(result.stdout)
    assert {key: value for key, value in succeeded.items() if key != "records"} == {
        "run_id": SUCCEEDED, "started_at": "2026-12-01T17:12:52.064569+00:00", "database": "rollbook_demo",
        "environment": "staging", "runbook": "rollback", "mode": "executed", "target": "0607bc5b8535",
        "outcome": "succeeded_unverified", "filed": True,
    }
    assert refused["run_id"] == REFUSED and refused["outcome"] == "refused"
    summary, notebook = succeeded["records"]
    assert (summary["kind"], summary["seq"], notebook["kind"], notebook["seq"]) == ("summary", 3, "notebook", 4)
    assert notebook["file"] == SUCCEEDED_NOTEBOOK and notebook["path"] == str(archive / SUCCEEDED_NOTEBOOK)
    manifest = [json.loads(line) for line in (archive / "manifest.jsonl").read_text().splitlines()]
    assert [(r["file"], r["sha256"]) for r in (summary, notebook)] == [(e["file"], e["sha256"]) for e in manifest[2:]]


def test_archive_list_json_takes_the_filters_and_limit_and_a_run_not_filed(archive: Path) -> None:
    def run_ids(*args: str) -> list[str]:
        result = rollbook(archive, "archive", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return [row["run_id"] for row in json.loads(result.stdout)]

    assert run_ids("--environment", "production") == [REFUSED]
    assert run_ids("--outcome", "succeeded_unverified") == [SUCCEEDED]
    assert run_ids("--runbook", "rollback", "--limit", "1") == [SUCCEEDED]
    running = RunRecord(run_id="20261201T180000Z-0a0b0c", runbook="status",
                        started_at=datetime(2026, 12, 1, 19, 0, tzinfo=timezone(timedelta(hours=1))))
    Archive(archive).write_progress(running)
    [row] = json.loads(rollbook(archive, "archive", "list", "--json", "--limit", "1").stdout)
    assert (row["run_id"], row["outcome"], row["filed"], row["started_at"]) == (
        running.run_id, "running", False, "2026-12-01T18:00:00+00:00")
    assert [(r["kind"], r["seq"], r["file"]) for r in row["records"]] == [
        ("in progress", None, f".in-progress/{running.run_id}.json")]


def test_archive_list_json_of_nothing_is_an_empty_list_and_says_why_on_stderr(archive: Path, tmp_path: Path) -> None:
    before = folder_bytes(archive)
    nothing = rollbook(archive, "archive", "list", "--json", "--runbook", "backup")
    assert (nothing.exit_code, nothing.stdout, nothing.stderr) == (0, "[]\n", f"No run in {archive} matches.\n")
    missing = rollbook(tmp_path / "elsewhere", "archive", "list", "--json")
    assert (missing.exit_code, missing.stdout) == (0, "[]\n")
    assert missing.stderr.startswith(f"There is no archive at {tmp_path / 'elsewhere'} yet")
    zero = rollbook(archive, "archive", "list", "--json", "--limit", "0")
    assert zero.exit_code == 2 and zero.stdout == "" and "0 is not in the range x>=1" in zero.stderr
    assert folder_bytes(archive) == before


def test_archive_show_renders_the_run_for_a_terminal(archive: Path) -> None:
    result = rollbook(archive, "archive", "show", SUCCEEDED)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) <= 25
    assert lines[0] == f"run {SUCCEEDED}: succeeded, not fully verified"
    assert "  rollback of rollbook_demo (staging, executed), target 0607bc5b8535, accept_data_loss true" in lines
    assert "  revision 0607bc5b8536 -> 0607bc5b8535" in lines
    assert any(line.startswith("  backup /tmp/") and line.endswith(".dump (verified by pg_restore --list)")
               for line in lines)
    assert any(line.startswith("  checks: revision passed; application health not checked") for line in lines)
    assert "  operator demo-operator, approved by none, ticket DEMO-2" in lines
    assert f"record (#4 notebook): {archive / SUCCEEDED_NOTEBOOK}" in lines
    # What the record holds in detail (the catalog queries of the plan, the SQL) is left to --json.
    assert "SELECT" not in result.output and "pg_catalog" not in result.output


def test_archive_show_of_a_refusal_says_why(archive: Path) -> None:
    result = rollbook(archive, "archive", "show", "1")

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"run {REFUSED}: refused at policy gate"
    assert "Rule 'risk' fails: production allows no HIGH-risk step" in lines[1]
    assert "  revision 0607bc5b8536 (unchanged)" in lines


def test_a_run_is_found_by_id_prefix_tail_or_file_name_with_or_without_its_folder(archive: Path) -> None:
    expected = rollbook(archive, "archive", "show", SUCCEEDED).output
    for ref in (SUCCEEDED[:18], "8f1acd", SUCCEEDED_NOTEBOOK, str(archive / SUCCEEDED_NOTEBOOK),
                f"records/{SUCCEEDED_NOTEBOOK}"):
        result = rollbook(archive, "archive", "show", ref)
        assert (result.exit_code, result.output) == (0, expected), ref


def test_archive_show_json_prints_the_raw_record(archive: Path) -> None:
    result = rollbook(archive, "archive", "show", "--json", REFUSED)

    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["run_id"] == REFUSED and record["outcome"] == "refused" and record["schema_version"] == 3
    assert [r["rule"] for r in record["policy"]["results"] if r["outcome"] == "fail"] == ["risk", "data written"]


def test_a_wrong_ref_exits_2_naming_the_closest_runs_and_changes_nothing(archive: Path) -> None:
    before = folder_bytes(archive)

    typo = rollbook(archive, "archive", "show", "20261201T171250Z-8f1acf")
    unknown = rollbook(archive, "archive", "show", "yesterday")

    assert typo.exit_code == 2 and "Traceback" not in typo.output
    assert f"matches '20261201T171250Z-8f1acf'. The closest run ids: {SUCCEEDED}, " in typo.output
    assert unknown.exit_code == 2
    assert f"The newest run ids: {SUCCEEDED}, {REFUSED}. Give a run id" in unknown.output
    assert folder_bytes(archive) == before
