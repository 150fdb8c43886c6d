"""The restore-lost-data runbook's policy gate against the real server: nothing is written back until the
environment's rules allow it (an approver in production, the approved restore hash where the policy asks for it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from alembic import command
from alembic_projects import project_at_head
from test_at_risk_backup import REVISIONS, ROWS, Project, contents
from test_records import notebook_records, record_summary, rollbook

from rollbook.planning.plan import plan_downgrade
from rollbook.records.model import RunRecord
from rollbook.recovery.at_risk_backup import AtRiskBackup, load_at_risk_backup, take_at_risk_backup
from rollbook.recovery.lost_data_restore_policy import lost_data_restore_hash

HEAD = "aaaa00000004"


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    return project_at_head(tmp_path / "project", database_url, REVISIONS, ROWS)


def fixed_forward(project: Project, tmp_path: Path) -> tuple[dict[str, str | None], AtRiskBackup]:
    """The rows before the downgrade, and the at-risk backup taken of them; the database downgraded and upgraded
    again (the fix-forward: the table and column are back, empty)."""
    migrations, target, config = project
    original = contents(target)
    taken = take_at_risk_backup(target, plan_downgrade(target, migrations, "aaaa00000001"), tmp_path / "backups")
    command.downgrade(config, "aaaa00000001")
    command.upgrade(config, "head")
    return original, load_at_risk_backup(taken.folder)


def restore_lost_data(tmp_path: Path, project: Project, backup: AtRiskBackup, url: str, *args: str):
    return rollbook(tmp_path, "run", "restore-lost-data", "-p", "at_risk_backup", str(backup.folder),
                    "-p", "operator", "alice", *args, url=url, config=project[0].config_path)


def last_record(tmp_path: Path) -> RunRecord:
    return record_summary(notebook_records(tmp_path / "archive")[-1])


def test_production_refuses_without_an_approver_or_the_approved_hash_and_writes_nothing(
        project: Project, tmp_path: Path, database_url: str) -> None:
    migrations, target, _ = project
    (migrations.config_path.parent / "rollbook.toml").write_text("[policy.production]\nrequire_approved_plan = true\n")
    original, backup = fixed_forward(project, tmp_path)
    before = contents(target)
    assert before != original
    expected = lost_data_restore_hash(backup, (HEAD,))

    alone = restore_lost_data(tmp_path, project, backup, database_url, "-p", "environment", "production",
                              "--execute")

    assert alone.returncode == 4, alone.stdout + alone.stderr
    assert contents(target) == before  # the saved rows were not written back
    assert "The lost-data restore policy of production" in alone.stdout
    assert "Rule 'approver' fails: production requires explicit approval and nobody is named" in alone.stdout
    assert "(-p approved_by NAME)" in alone.stdout
    assert "Rule 'approved restore' fails" in alone.stdout and f"(-r approved_plan {expected[:12]})" in alone.stdout
    assert f"restore hash {expected}" in alone.stdout
    record = last_record(tmp_path)
    assert record.outcome == "refused" and record.failed_step == "policy gate"
    assert record.policy is not None and record.policy["status"] == "refused"
    assert record.policy["plan_hash"] == expected and record.lost_data_restore is None
    assert record.at_risk_backup is not None and record.at_risk_backup["manifest_sha256"] == backup.manifest_sha256

    wrong = restore_lost_data(tmp_path, project, backup, database_url, "-p", "environment", "production",
                              "-p", "approved_by", "bob", "-r", "approved_plan", "0123456789ab", "--execute")

    assert wrong.returncode == 4, wrong.stdout + wrong.stderr
    assert contents(target) == before
    assert "approved_plan '0123456789ab' does not name this lost-data restore" in wrong.stdout
    assert f"(-r approved_plan {expected[:12]})" in wrong.stdout
    assert "Rule 'approver'" not in wrong.stdout

    own = restore_lost_data(tmp_path, project, backup, database_url, "-p", "environment", "production",
                            "-p", "approved_by", "Alice", "-r", "approved_plan", expected[:12], "--execute")

    assert own.returncode == 4, own.stdout + own.stderr
    assert contents(target) == before
    assert "Rule 'approver' fails: Alice would approve their own lost-data restore" in own.stdout

    approved = restore_lost_data(tmp_path, project, backup, database_url, "-p", "environment", "production",
                                 "-p", "approved_by", "bob", "-r", "approved_plan", expected[:12], "--execute")

    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert contents(target) == original
    record = last_record(tmp_path)
    assert record.outcome == "succeeded" and record.policy is not None and record.policy["status"] == "allowed"
    assert record.lost_data_restore is not None and record.lost_data_restore["verified"] is True
    [rule] = [r for r in record.policy["results"] if r["rule"] == "approved restore"]
    assert rule["outcome"] == "pass" and expected[:12] in rule["reason"]


def test_staging_needs_no_approver_and_its_dry_run_shows_the_hash_to_approve(
        project: Project, tmp_path: Path, database_url: str) -> None:
    _, target, _ = project
    original, backup = fixed_forward(project, tmp_path)
    before = contents(target)
    expected = lost_data_restore_hash(backup, (HEAD,))

    dry = restore_lost_data(tmp_path, project, backup, database_url, "-p", "environment", "staging")

    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert contents(target) == before
    assert f"policy allowed; restore hash {expected} (an approval names it: -r approved_plan {expected[:12]})" \
        in dry.stdout
    record = last_record(tmp_path)
    assert record.outcome == "dry_run" and record.policy is not None
    assert [(r["rule"], r["outcome"]) for r in record.policy["results"]] == [
        ("operator", "pass"), ("approver", "pass"), ("approved restore", "pass")]
    assert "no approval required in staging" in json.dumps(record.policy)

    done = restore_lost_data(tmp_path, project, backup, database_url, "-p", "environment", "staging", "--execute")

    assert done.returncode == 0, done.stdout + done.stderr
    assert contents(target) == original


def test_an_unknown_environment_or_a_hash_turned_into_a_number_is_bad_input_and_writes_nothing(
        project: Project, tmp_path: Path, database_url: str) -> None:
    _, target, _ = project
    _, backup = fixed_forward(project, tmp_path)
    before = contents(target)

    unknown = restore_lost_data(tmp_path, project, backup, database_url, "-p", "environment", "prod", "--execute")

    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "Unknown environment 'prod'" in unknown.stdout + unknown.stderr
    assert "Traceback" not in unknown.stdout + unknown.stderr
    assert contents(target) == before

    number = restore_lost_data(tmp_path, project, backup, database_url, "-p", "environment", "production",
                               "-p", "approved_by", "bob", "-p", "approved_plan", "12345678", "--execute")

    assert number.returncode == 2, number.stdout + number.stderr
    assert "pass it with -r approved_plan VALUE" in number.stdout + number.stderr
    assert contents(target) == before
