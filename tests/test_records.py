"""Records of runs: `rollbook run` and plain papermill, truthful verdicts, no secrets, tamper evidence."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, quote_plus

import nbformat
import psycopg
import pytest
from pg import fingerprint, psycopg_kwargs
from runbook_runs import (
    current_revision,
    demo_at,
    kill_kernels,
    papermill,
    slow_project,
    wait_for_sleeping_downgrade,
)
from sqlalchemy.engine import make_url
from test_cli import ROLLBOOK

from rollbook.demo.server import DEMO_CONFIG
from rollbook.pg.database import DatabaseTarget
from rollbook.records.archive import Archive
from rollbook.records.archive_files import RECORD_MIME
from rollbook.records.model import RunRecord, read_record

STAGING = ("-p", "environment", "staging", "-p", "operator", "alice", "-p", "accept_data_loss", "True")


def rollbook(tmp_path: Path, *args: str, url: str, config: Path | str = DEMO_CONFIG,
             archive: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "DATABASE_URL": url, "ALEMBIC_CONFIG": str(config),
                   "ROLLBOOK_ARCHIVE": str(archive or tmp_path / "archive"), **(env or {})}
    return subprocess.run([ROLLBOOK, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=environment)


def notebook_records(archive: Path) -> list[Path]:
    return sorted(archive.glob("*.ipynb"))


def record_summary(path: Path) -> RunRecord:
    notebook = nbformat.read(path, as_version=4)
    summaries = [o["data"][RECORD_MIME] for c in notebook.cells for o in c.get("outputs", [])
                 if RECORD_MIME in o.get("data", {})]
    return read_record(summaries[-1])


def test_an_executed_run_is_archived_with_its_verdict_and_summary(tmp_path, demo_url, health_server):
    result = rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "backup_dir", str(tmp_path / "backups"),
                      "-p", "ticket", "INC-7", "-p", "health_url", f"{health_server}/health", "--execute",
                      url=demo_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("succeeded")
    # Progress on the terminal: each step as it ends, long ones also as they start.
    assert re.search(r"^  backup: done \([\d.]+ s\)$", result.stderr, re.M)
    assert re.search(r"^  verification: done", result.stderr, re.M)
    [record] = notebook_records(tmp_path / "archive")
    assert f"_{DatabaseTarget.from_url(demo_url).database}_rollback_succeeded_" in record.name
    assert str(record.relative_to(tmp_path)) in result.stdout
    summary = record_summary(record)
    backup = next((tmp_path / "backups").glob("*.dump"))
    assert summary.outcome == "succeeded"
    assert summary.verdict == "succeeded"
    assert summary.runbook == "rollback"
    assert (summary.operator, summary.ticket, summary.environment) == ("alice", "INC-7", "staging")
    assert summary.revision_before == ["0607bc5b8536"] and summary.revision_after == ["0607bc5b8535"]
    assert summary.backup.path == str(backup) and summary.backup.verified is True
    assert summary.identity.system_identifier and summary.plan_hash
    assert summary.started_at and summary.finished_at
    assert [s.step for s in summary.steps][-1] == "verification"
    verify = rollbook(tmp_path, "archive", "verify", url=demo_url)
    assert verify.returncode == 0, verify.stdout


def test_status_and_plan_are_runbooks_with_recorded_steps_and_the_plan_record_names_its_hash_and_verdict(
    tmp_path, demo_url
):
    status = rollbook(tmp_path, "run", "status", url=demo_url)
    plan = rollbook(tmp_path, "run", "plan", "-r", "target_revision", "0607bc5b8535", url=demo_url)

    assert status.returncode == 0 and plan.returncode == 0, status.stderr + plan.stderr
    status_record, plan_record = (record_summary(path) for path in notebook_records(tmp_path / "archive"))
    assert status_record.runbook == "status" and status_record.outcome == "succeeded"
    assert [s.step for s in status_record.steps] == ["parameters", "who, where, when", "current revision"]
    assert status_record.revision_before == status_record.revision_after == ["0607bc5b8536"]
    assert status_record.message == "The database is at 0607bc5b8536."
    assert plan_record.runbook == "plan" and plan_record.outcome == "succeeded"
    assert [s.step for s in plan_record.steps] == ["parameters", "who, where, when", "plan"]
    assert plan_record.plan_verdict == "do_not_downgrade" and len(plan_record.plan_hash or "") == 64
    assert plan_record.target == "0607bc5b8535" and [s.revision for s in plan_record.plan_steps or []] == [
        "0607bc5b8536"]
    assert plan_record.plan_hash[:12] in plan.stdout + plan_record.message


def test_a_run_whose_checks_could_not_all_run_is_succeeded_not_fully_verified(tmp_path, demo_url):
    result = rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "backup_dir", str(tmp_path / "backups"),
                      "--execute", url=demo_url)

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("succeeded, not fully verified\n")
    assert "application health not checked (no health_url given" in result.stdout
    # What happened, in under 15 lines: mode, database and target, revisions, backup and its check, each check.
    database = DatabaseTarget.from_url(demo_url).database
    lines = result.stdout.splitlines()
    assert len(lines) < 15, result.stdout
    assert f"  rollback of {database} (staging, executed), target 0607bc5b8535, accept_data_loss true" in lines
    assert "  revision 0607bc5b8536 -> 0607bc5b8535" in lines
    assert any(re.fullmatch(r"  backup .*\.dump \(verified by pg_restore --list\)", line) for line in lines)
    assert ("  checks: revision passed; application health not checked (no health_url given: the application was "
            "not checked); schema passed; critical tables passed") in lines
    [record] = notebook_records(tmp_path / "archive")
    summary = record_summary(record)
    assert summary.outcome == "succeeded_unverified"
    assert summary.verification["passed"] is False
    assert summary.verification["not_checked"] == ["application health"]
    assert "and verified" not in summary.message


def test_a_refused_run_exits_4_and_is_archived_as_refused(tmp_path, demo_url):
    before = fingerprint(demo_url)

    result = rollbook(tmp_path, "run", "rollback", "-p", "environment", "production", "-p", "operator", "alice",
                      "--execute", url=demo_url)

    assert result.returncode == 4
    assert result.stdout.startswith("refused at policy gate")
    # The refusal's headline, then one line per failed rule, each with the flag that would make it pass.
    lines = result.stdout.splitlines()
    assert lines[1].startswith("The rollback policy of production, from defaults (the team's rollback procedure), "
                               "refuses this rollback of plan ") and "((" not in lines[1] and "))" not in lines[1]
    rules = [line for line in lines if line.startswith("- Rule ")]
    assert [line.split(":")[0] for line in rules] == [
        "- Rule 'deployment window' fails", "- Rule 'approver' fails", "- Rule 'risk' fails",
        "- Rule 'data written' fails"]
    assert "(-p deployed_at 2026-01-13T14:05:00Z" in rules[0] and "(-p approved_by NAME)" in rules[1]
    assert "  revision 0607bc5b8536 (unchanged)" in result.stdout.splitlines()
    assert not [line for line in result.stdout.splitlines() if line.startswith("  backup ")]
    assert len(result.stdout.splitlines()) < 15, result.stdout
    [record] = notebook_records(tmp_path / "archive")
    assert "_refused_" in record.name
    summary = record_summary(record)
    assert summary.outcome == "refused" and summary.failed_step == "policy gate"
    assert fingerprint(demo_url) == before


def test_a_failed_run_exits_1_and_names_the_step_and_the_revision(tmp_path, demo_url):
    demo_at(demo_url, "0607bc5b8531")
    with psycopg.connect(**psycopg_kwargs(demo_url), autocommit=True) as conn:
        conn.execute("UPDATE users SET preferences = NULL")
    # The plan sees no obstacle; at the downgrade another session holds a lock longer than lock_timeout.
    with psycopg.connect(**psycopg_kwargs(demo_url)) as holder:
        holder.execute("LOCK TABLE users IN SHARE MODE")
        result = rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "lock_timeout", "300ms", "--execute",
                          url=demo_url)
        holder.rollback()

    assert result.returncode == 1
    assert result.stdout.startswith("failed at downgrade")
    assert "the database is at 0607bc5b8531 (read after the run stopped)" in result.stdout
    assert len(result.stdout.splitlines()) < 15, result.stdout
    summary = record_summary(notebook_records(tmp_path / "archive")[0])
    assert summary.outcome == "failed" and summary.failed_step == "downgrade"
    assert summary.revision_after == ["0607bc5b8531"]
    assert summary.diagnosis["scenario"] == "lock_timeout"


def test_a_plain_papermill_run_records_itself_and_archive_add_files_its_notebook(tmp_path, demo_url):
    archive = tmp_path / "archive"
    run = papermill(tmp_path, "rollback", *STAGING, url=demo_url, env={"ROLLBOOK_ARCHIVE": str(archive)})
    assert run.returncode == 0, run.error

    [summary_record] = archive.glob("*.json")
    recorded = read_record(json.loads(summary_record.read_text()))
    assert recorded.outcome == "dry_run" and recorded.runbook == "rollback"
    assert not notebook_records(archive)

    added = rollbook(tmp_path, "archive", "add", str(run.path), url=demo_url)

    assert added.returncode == 0, added.stderr
    [record] = notebook_records(archive)
    assert record_summary(record).run_id == recorded.run_id
    listing = rollbook(tmp_path, "archive", "list", url=demo_url).stdout
    assert listing.count(recorded.run_id) == 1  # one row for the run, its summary and notebook alike
    show = rollbook(tmp_path, "archive", "show", recorded.run_id, url=demo_url)
    assert show.returncode == 0 and show.stdout.startswith(f"run {recorded.run_id}: dry run completed\n")
    assert rollbook(tmp_path, "archive", "verify", url=demo_url).returncode == 0


def test_no_password_reaches_the_archive_the_output_or_the_terminal_whatever_the_route(tmp_path, demo_url):
    password = DatabaseTarget.from_url(demo_url).url.password
    assert password
    spellings = {password, quote(password, safe=""), quote_plus(password)}
    # By rollbook run with the password in the URL parameter, with it in DATABASE_URL, and by plain papermill.
    by_parameter = rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "database_url",
                            DatabaseTarget.from_url(demo_url).sqlalchemy_url, "--output", str(tmp_path / "out.ipynb"),
                            url="")
    by_environment = rollbook(tmp_path, "run", "plan", url=demo_url)
    plain = papermill(tmp_path, "rollback", "-p", "database_url", DatabaseTarget.from_url(demo_url).sqlalchemy_url,
                      url="", env={"ROLLBOOK_ARCHIVE": str(tmp_path / "archive")})
    added = rollbook(tmp_path, "archive", "add", str(plain.path), url="")

    assert by_parameter.returncode == 0, by_parameter.stdout + by_parameter.stderr
    assert by_environment.returncode == 0, by_environment.stdout + by_environment.stderr
    assert plain.returncode != 0 and "carries a password" in plain.error
    assert added.returncode == 0, added.stderr
    archived = [p for p in (tmp_path / "archive").rglob("*") if p.is_file()]
    assert len(notebook_records(tmp_path / "archive")) == 3
    for path in [*archived, tmp_path / "out.ipynb"]:
        data = path.read_bytes()
        assert not [s for s in spellings if s.encode() in data], path
    for text in (by_parameter.stdout, by_parameter.stderr, by_environment.stdout, by_environment.stderr,
                 added.stdout, added.stderr):
        assert not [s for s in spellings if s in text]


def test_an_edited_record_is_named_by_archive_verify(tmp_path, demo_url):
    run = rollbook(tmp_path, "run", "status", url=demo_url)
    # The run ends with the archive's head, to be kept outside the archive.
    assert run.stderr.splitlines()[-1] == f"archive head: {Archive(tmp_path / 'archive').head()}"
    [record] = notebook_records(tmp_path / "archive")
    record.write_text(record.read_text().replace("0607bc5b8536", "0607bc5b8535"))

    verify = rollbook(tmp_path, "archive", "verify", url=demo_url)

    assert verify.returncode == 1
    assert record.name in verify.stdout


def test_an_unwritable_archive_is_refused_before_the_database_is_touched(tmp_path, demo_url):
    before = fingerprint(demo_url)
    blocker = tmp_path / "a-file"
    blocker.write_text("")

    result = rollbook(tmp_path, "run", "rollback", *STAGING, "--execute", url=demo_url, archive=blocker / "records")

    assert result.returncode == 2
    assert str(blocker / "records") in result.stderr and "ROLLBOOK_ARCHIVE" in result.stderr
    assert "Traceback" not in result.stderr
    assert fingerprint(demo_url) == before
    assert not (tmp_path / "backups").exists()


def test_a_cell_timeout_is_recorded_as_timed_out_at_its_step_with_the_revision(tmp_path, demo_url):
    config = slow_project(tmp_path, demo_url)

    result = rollbook(tmp_path, "run", "rollback", *STAGING, "--execute", "--cell-timeout", "5",
                      url=demo_url, config=config)

    assert result.returncode == 1
    assert result.stdout.startswith("timed out in step downgrade")
    [record] = notebook_records(tmp_path / "archive")
    assert "_timed_out_" in record.name
    summary = record_summary(record)
    assert summary.outcome == "timed_out" and summary.failed_step == "downgrade"
    assert summary.revision_after == ["0607bc5b8537"]
    notebook = nbformat.read(record, as_version=4)
    statuses = [c.metadata.get("rollbook", {}).get("status") for c in notebook.cells if c.cell_type == "code"]
    assert "did not finish" in statuses and statuses.count("not run") >= 2
    assert current_revision(demo_url) == ["0607bc5b8537"]


def test_a_killed_kernel_is_recorded_as_kernel_died_with_the_revision_the_database_is_at(tmp_path, demo_url):
    config = slow_project(tmp_path, demo_url)
    environment = {**os.environ, "DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(config),
                   "ROLLBOOK_ARCHIVE": str(tmp_path / "archive")}
    with subprocess.Popen([ROLLBOOK, "run", "rollback", *STAGING, "--execute"], cwd=tmp_path, env=environment,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as runner:
        wait_for_sleeping_downgrade(demo_url, runner)
        kill_kernels(runner.pid)
        stdout, _ = runner.communicate(timeout=120)

    assert runner.returncode == 1
    assert stdout.startswith("kernel died during step downgrade")
    [record] = notebook_records(tmp_path / "archive")
    summary = record_summary(record)
    assert summary.outcome == "kernel_died"
    assert summary.revision_after == ["0607bc5b8537"]
    assert current_revision(demo_url) == ["0607bc5b8537"]
    assert rollbook(tmp_path, "archive", "verify", url=demo_url).returncode == 0


def test_rollbook_run_refuses_unknown_parameters_before_starting(tmp_path, demo_url):
    result = rollbook(tmp_path, "run", "rollback", "-p", "enviroment", "production", url=demo_url)

    assert result.returncode == 2
    assert "Unknown parameter(s) enviroment" in result.stderr
    assert not (tmp_path / "archive").exists() or not notebook_records(tmp_path / "archive")


def test_runs_finishing_together_are_all_archived_and_the_chain_holds(tmp_path, demo_url):
    environment = {**os.environ, "DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(DEMO_CONFIG),
                   "ROLLBOOK_ARCHIVE": str(tmp_path / "archive")}
    runners = [subprocess.Popen([ROLLBOOK, "run", "status"], cwd=tmp_path, env=environment,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [r.communicate(timeout=120)[0] for r in runners]
    assert [r.returncode for r in runners] == [0, 0, 0], outputs

    assert len(notebook_records(tmp_path / "archive")) == 3
    assert len(list((tmp_path / "archive").glob("*.json"))) == 3
    assert rollbook(tmp_path, "archive", "verify", url=demo_url).returncode == 0


def test_rollbook_run_exits_2_for_bad_input_and_3_for_an_unreachable_database(tmp_path, demo_url):
    before = fingerprint(demo_url)
    unknown = rollbook(tmp_path, "run", "rollback", "-r", "target_revision", "nosuchrev", *STAGING, "--execute",
                       url=demo_url)
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert unknown.stdout.startswith("refused (bad input) at ") and "nosuchrev" in unknown.stdout
    assert record_summary(notebook_records(tmp_path / "archive")[-1]).outcome == "bad_input"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    nowhere = f"postgresql+psycopg://app@127.0.0.1:{closed_port}/app"
    unreachable = rollbook(tmp_path, "run", "rollback", *STAGING, "--execute", url=nowhere,
                           archive=tmp_path / "archive-2")
    assert unreachable.returncode == 3, unreachable.stdout + unreachable.stderr
    assert unreachable.stdout.startswith("refused (database unavailable) at who, where, when")
    assert fingerprint(demo_url) == before


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: room for a run's summaries, not for its executed notebook (needs root to mount)."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def test_a_full_archive_after_the_database_changed_exits_1_and_keeps_the_notebook(tmp_path, demo_url, tiny_filesystem):
    result = rollbook(tmp_path, "run", "rollback", *STAGING, "-p", "backup_dir", str(tmp_path / "backups"),
                      "--execute", url=demo_url, archive=tiny_filesystem / "archive")

    assert result.returncode == 1, result.stdout + result.stderr
    assert current_revision(demo_url) == ["0607bc5b8535"]  # the rollback itself happened
    assert "could not be filed" in result.stderr and "Traceback" not in result.stderr
    [kept] = tmp_path.glob("rollbook-unfiled-*.ipynb")
    assert f"kept at {kept}" in result.stderr
    assert record_summary(kept).outcome == "succeeded_unverified"
    assert make_url(demo_url).password not in kept.read_text()


def test_a_run_that_fails_before_its_first_step_still_names_its_runbook(tmp_path, demo_url):
    runbook = tmp_path / "nightly-check.ipynb"
    parameters = nbformat.v4.new_code_cell("database_url = ''", metadata={"tags": ["parameters"]})
    notebook = nbformat.v4.new_notebook(cells=[parameters, nbformat.v4.new_code_cell("import no_such_module")])
    nbformat.write(notebook, runbook)
    # As written by hand, with no kernel named: refused as bad input before anything runs.
    unnamed = rollbook(tmp_path, "run", str(runbook), url=demo_url)
    assert unnamed.returncode == 2 and "Traceback" not in unnamed.stderr, unnamed.stderr
    assert "No kernel name found" in unnamed.stderr and not (tmp_path / "archive").exists()

    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, runbook)
    result = rollbook(tmp_path, "run", str(runbook), url=demo_url)

    assert result.returncode == 1, result.stderr
    [record] = notebook_records(tmp_path / "archive")
    assert "_nightly-check_failed_" in record.name
    assert record_summary(record).runbook == "nightly-check"


def test_rollbook_run_takes_parameters_and_the_output_as_papermill_does(tmp_path, demo_url):
    """-f FILE and -y YAML under -p and -r, a positional OUTPUT, --execution-timeout as a duration."""
    (tmp_path / "params.yaml").write_text("environment: production\noperator: alice\nticket: INC-1\n")

    result = rollbook(tmp_path, "run", "rollback", "-f", "params.yaml", "-y", "{environment: staging, accept_data_loss: true}",
                      "-p", "operator", "bob", "-r", "target_revision", "0607bc5b8535", "out.ipynb",
                      "--execution-timeout", "10min", url=demo_url)

    assert result.returncode == 0, result.stderr
    record = record_summary(tmp_path / "out.ipynb")
    assert (record.environment, record.operator, record.ticket, record.execute) == ("staging", "bob", "INC-1", False)
    assert record.target == "0607bc5b8535"


def test_bad_papermill_style_parameters_are_refused_before_anything_starts(tmp_path, demo_url):
    before = fingerprint(demo_url)
    (tmp_path / "list.yaml").write_text("- environment\n- staging\n")
    cases = {
        ("-f", "missing.yaml"): "Cannot read the parameters file missing.yaml",
        ("-f", "list.yaml"): "must be a YAML mapping of names to values",
        ("-y", "environment: [staging"): "The parameters of -y are not YAML",
        ("--execution-timeout", "soon"): "--execution-timeout must be a duration",
        ("-o", "a.ipynb", "b.ipynb"): "Two outputs given",
    }
    for args, message in cases.items():
        result = rollbook(tmp_path, "run", "rollback", *args, url=demo_url)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "archive").exists() or not notebook_records(tmp_path / "archive")
    assert fingerprint(demo_url) == before
