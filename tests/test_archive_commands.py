"""`rollbook archive list` and `archive show` on runs a user made with `rollbook run`, and `run --log-output`."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
from test_records import STAGING, rollbook

from rollbook.pg.database import DatabaseTarget
from rollbook.records.run_ids import run_id_time


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_runs_are_listed_once_each_and_shown_by_id_or_file_name(tmp_path, demo_url):
    dry_run = rollbook(tmp_path, "run", "rollback", *STAGING, url=demo_url)
    status = rollbook(tmp_path, "run", "status", url=demo_url)
    assert (dry_run.returncode, status.returncode) == (0, 0), dry_run.stderr + status.stderr
    archive = tmp_path / "archive"
    database = DatabaseTarget.from_url(demo_url).database

    listing = rollbook(tmp_path, "archive", "list", url=demo_url)

    assert listing.returncode == 0, listing.stderr
    header, *rows = listing.stdout.splitlines()
    assert header.split()[:3] == ["run", "id", "started"]
    # One row per run although each run filed a summary and a notebook.
    rollback_row, status_row = (row.split() for row in rows)
    assert rollback_row[3:] == [database, "staging", "rollback", "dry", "run", "0607bc5b8535", "dry_run"]
    assert status_row[3:] == [database, "-", "status", "dry", "run", "-", "succeeded"]
    # One clock: the run id, the start shown and both file names carry the same UTC second.
    for row in (rollback_row, status_row):
        run_id, day, second = row[:3]
        started = run_id_time(run_id)
        assert started is not None and f"{started:%Y-%m-%d %H:%M:%S}" == f"{day} {second}"
        files = sorted(archive.glob(f"*_{run_id[-6:]}.*"))
        assert [f.suffix for f in files] == [".ipynb", ".json"]
        assert all(f.name.startswith(run_id.split("-")[0] + "_") for f in files), files
        assert json.loads(files[1].read_text())["started_at"].startswith(f"{started:%Y-%m-%dT%H:%M:%S}")
    only_status = rollbook(tmp_path, "archive", "list", "--runbook", "status", url=demo_url).stdout.splitlines()
    assert [row.split() for row in only_status[1:]] == [status_row]

    run_id = rollback_row[0]
    shown = rollbook(tmp_path, "archive", "show", run_id, url=demo_url)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert len(lines) <= 25, shown.stdout
    assert lines[0] == f"run {run_id}: dry run completed"
    assert f"  rollback of {database} (staging, dry run), target 0607bc5b8535, accept_data_loss true" in lines
    assert "  revision 0607bc5b8536 (unchanged)" in lines
    assert "  operator alice, approved by none, ticket none" in lines
    notebook = next(archive.glob(f"*_{run_id[-6:]}.ipynb"))
    assert f"record (#2 notebook): {notebook}" in lines
    for ref in (notebook.name, str(notebook), f"archive/{notebook.name}", run_id[:19]):
        assert rollbook(tmp_path, "archive", "show", ref, url=demo_url).stdout == shown.stdout, ref

    raw = rollbook(tmp_path, "archive", "show", "--json", run_id, url=demo_url)
    record = json.loads(raw.stdout)
    assert record["run_id"] == run_id and record["outcome"] == "dry_run" and record["execute"] is False


def test_a_wrong_reference_exits_2_names_the_closest_runs_and_leaves_the_archive_alone(tmp_path, demo_url):
    status = rollbook(tmp_path, "run", "status", url=demo_url)
    assert status.returncode == 0, status.stderr
    archive = tmp_path / "archive"
    [notebook] = archive.glob("*.ipynb")
    run_id = json.loads(next(archive.glob("*.json")).read_text())["run_id"]
    before = folder_bytes(archive)

    typo = rollbook(tmp_path, "archive", "show", run_id[:-1] + ("0" if run_id[-1] != "0" else "1"), url=demo_url)
    wrong_file = rollbook(tmp_path, "archive", "show", notebook.name.replace("status", "statu"), url=demo_url)

    for result in (typo, wrong_file):
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
        assert f"The closest run ids: {run_id}." in result.stderr
        assert result.stdout == ""
    assert folder_bytes(archive) == before


def test_log_output_streams_each_cells_output_while_it_runs_without_secrets(tmp_path, demo_url):
    password = DatabaseTarget.from_url(demo_url).url.password
    assert password
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.cells = [
        nbformat.v4.new_code_cell("database_url = ''", metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os\nprint('hello from the cell')\nprint(os.environ.get('PGPASSWORD'))"),
    ]
    runbook = tmp_path / "talkative.ipynb"
    nbformat.write(notebook, runbook)
    url_with_password = DatabaseTarget.from_url(demo_url).sqlalchemy_url

    logged = rollbook(tmp_path, "run", str(runbook), "-p", "database_url", url_with_password, "--log-output",
                      url="")
    quiet = rollbook(tmp_path, "run", str(runbook), "-p", "database_url", url_with_password, url="")

    assert "Executing Cell 2" in logged.stderr and "hello from the cell" in logged.stderr, logged.stderr
    assert password not in logged.stderr + logged.stdout and "***" in logged.stderr  # scrubbed, not unprinted
    assert "hello from the cell" not in quiet.stderr + quiet.stdout
