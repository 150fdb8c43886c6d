"""The at-risk backup against the real server: plan, save exactly what is at risk, downgrade, fix forward, put it back.

Also: a step the plan could not quantify is refused with the strategies that would do, a disk that fills up
mid-copy leaves no folder behind, and the restore refuses targets that do not exist yet or changed type.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic_projects import project_at_head
from runbook_runs import demo_at
from test_records import notebook_records, record_summary, rollbook

from rollbook.demo.server import DEMO_CONFIG
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.plan import plan_downgrade
from rollbook.project.migrations import MigrationProject, alembic_config_for, load_project
from rollbook.records.model import read_record
from rollbook.recovery.at_risk_backup import (
    AtRiskBackupFailed,
    AtRiskBackupUnusable,
    AtRiskInsufficient,
    load_at_risk_backup,
    take_at_risk_backup,
)
from rollbook.recovery.lost_data_restore import LostDataTargetsMissing, restore_lost_data

SCHEMA = """
CREATE TABLE items (id int PRIMARY KEY, name text, note text);
CREATE TABLE children (id int PRIMARY KEY, item_id int REFERENCES items ON DELETE CASCADE, label text);
"""
REVISIONS = {
    "aaaa00000001": (None, f"op.execute({SCHEMA!r})", 'op.execute("DROP TABLE children, items")'),
    "aaaa00000002": ("aaaa00000001", 'op.execute("ALTER TABLE items ADD COLUMN code text")',
                     'op.execute("ALTER TABLE items DROP COLUMN code")'),
    "aaaa00000003": ("aaaa00000002", 'op.execute("CREATE TABLE extras (id serial PRIMARY KEY, val numeric(8, 2))")',
                     'op.execute("DROP TABLE extras")'),
    "aaaa00000004": ("aaaa00000003", "op.execute(\"UPDATE items SET note = 'migrated' WHERE note IS NULL\")",
                     "op.execute(\"DELETE FROM items WHERE note = 'migrated'\")"),
}
ROWS = """
INSERT INTO items SELECT i, 'item ' || i, CASE WHEN i % 4 = 0 THEN 'migrated' ELSE 'kept ' || i END,
                         CASE WHEN i % 3 = 0 THEN NULL ELSE 'c' || i END FROM generate_series(1, 40) i;
INSERT INTO children SELECT i, (i % 40) + 1, 'child ' || i FROM generate_series(1, 90) i;
INSERT INTO extras SELECT i, i * 1.25 FROM generate_series(1, 25) i;
"""
TABLES = ("items", "children", "extras")
# Undoing this demo revision drops users.preferences and its values.
DROPS_A_COLUMN = "0607bc5b8531"


def contents(target: DatabaseTarget) -> dict[str, str | None]:
    """A checksum of every row of each table, in key order: equal only if every value is."""
    with connect(target) as conn:
        found = {}
        for table in TABLES:
            exists = conn.execute("SELECT to_regclass(%s)", [table]).fetchone()
            row = conn.execute(f"SELECT count(*) || ':' || md5(string_agg(t::text, ',' ORDER BY id)) FROM {table} t"
                               ).fetchone() if exists and exists[0] else None
            found[table] = row[0] if row else None
        return found


Project = tuple[MigrationProject, DatabaseTarget, Config]


@pytest.fixture
def project(tmp_path: Path, database_url: str) -> Project:
    return project_at_head(tmp_path / "project", database_url, REVISIONS, ROWS)


def test_at_risk_backup_saves_exactly_what_is_lost_and_puts_it_back(
        project: Project, tmp_path: Path) -> None:
    migrations, target, config = project
    original = contents(target)
    plan = plan_downgrade(target, migrations, "aaaa00000001")

    backup = take_at_risk_backup(target, plan, tmp_path / "backups")

    assert [p.name for p in (tmp_path / "backups").iterdir()] == [backup.folder.name]
    assert backup.folder.name.startswith("at-risk_") and (backup.folder / "manifest.json").is_file()
    held = {(f.table, f.keep, f.columns[-1][0] if f.keep != "whole_rows" else None): f.rows for f in backup.files}
    # The DELETE's 10 rows, the 22 children its cascade reaches (those whose item_id is a multiple of 4), the 25
    # rows of extras, and the non-NULL values of items.code (27 of 40).
    assert held[("items", "whole_rows", None)] == 10
    assert held[("children", "whole_rows", None)] == 22
    assert held[("extras", "whole_rows", None)] == 25
    assert held[("items", "key_and_columns", "code")] == 27
    schema = (backup.folder / "schema.sql").read_text()
    assert "CREATE TABLE public.extras" in schema and "CREATE TABLE public.items" in schema
    manifest = json.loads((backup.folder / "manifest.json").read_text())
    assert manifest["plan_hash"] == plan.plan_hash and all(len(f["sha256"]) == 64 for f in manifest["files"])
    assert "password" not in (backup.folder / "manifest.json").read_text().lower()

    command.downgrade(config, "aaaa00000001")
    assert contents(target) != original
    with pytest.raises(LostDataTargetsMissing, match="re-create it first by upgrading") as refused:
        restore_lost_data(target, load_at_risk_backup(backup.folder), execute=True)
    assert "items.code" in str(refused.value) and "extras" in str(refused.value)

    command.upgrade(config, "head")  # the fix-forward: column and table back, empty
    assert contents(target) != original
    dry = restore_lost_data(target, load_at_risk_backup(backup.folder), execute=False)
    assert not dry.executed and not dry.verified

    restored = restore_lost_data(target, load_at_risk_backup(backup.folder), execute=True)

    assert restored.verified, restored.to_text()
    assert contents(target) == original
    by_table = {(f.table, f.keep): f for f in restored.files}
    assert by_table[("public.extras", "whole_rows")].rows_written == 25
    assert by_table[("public.items", "key_and_columns")].rows_written == 27
    json.dumps(restored.to_dict())
    with connect(target) as conn:  # the re-created sequence moved past the restored keys
        assert conn.execute("INSERT INTO extras (val) VALUES (1) RETURNING id").fetchone() == (26,)


def test_restore_refuses_a_column_whose_type_changed_and_a_damaged_file(
        project: Project, tmp_path: Path) -> None:
    migrations, target, config = project
    plan = plan_downgrade(target, migrations, "aaaa00000002")
    backup = take_at_risk_backup(target, plan, tmp_path / "backups")
    command.downgrade(config, "aaaa00000002")
    command.upgrade(config, "head")
    with connect(target) as conn:
        conn.execute("ALTER TABLE extras ALTER COLUMN val TYPE numeric(10, 3)")
    before = contents(target)
    with pytest.raises(LostDataTargetsMissing, match=r"extras.val is numeric\(10,3\) now, but the saved values are "
                                                    r"numeric\(8,2\)"):
        restore_lost_data(target, load_at_risk_backup(backup.folder), execute=True)
    assert contents(target) == before

    saved = backup.folder / backup.files[0].name
    saved.write_bytes(saved.read_bytes()[:-3])
    with pytest.raises(AtRiskBackupUnusable, match="differs from its manifest"):
        load_at_risk_backup(backup.folder)


def test_a_step_the_plan_cannot_quantify_is_refused_with_the_strategies_that_would_do(
        tmp_path: Path, database_url: str) -> None:
    revisions = {**REVISIONS, "aaaa00000005": (
        "aaaa00000004", "pass", 'op.execute("DO $$ BEGIN DELETE FROM children WHERE id < 5; END $$")')}
    migrations, target, config = project_at_head(tmp_path / "project", database_url, revisions, ROWS)
    plan = plan_downgrade(target, migrations, "-1")

    with pytest.raises(AtRiskInsufficient) as refused:
        take_at_risk_backup(target, plan, tmp_path / "backups")

    message = str(refused.value)
    assert "aaaa00000005" in message and "full, parallel, pitr" in message and "Nothing was written" in message
    assert refused.value.exit_code == 2
    assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").iterdir())


def test_a_table_without_primary_key_cannot_have_a_column_saved(tmp_path: Path, database_url: str) -> None:
    revisions = {
        "cccc00000001": (None, 'op.execute("CREATE TABLE loose (name text)")', 'op.execute("DROP TABLE loose")'),
        "cccc00000002": ("cccc00000001", 'op.execute("ALTER TABLE loose ADD COLUMN extra text")',
                         'op.execute("ALTER TABLE loose DROP COLUMN extra")'),
    }
    migrations, target, config = project_at_head(tmp_path / "project", database_url, revisions,
                                        "INSERT INTO loose VALUES ('a', 'x'), ('b', 'y')")
    plan = plan_downgrade(target, migrations, "-1")
    with pytest.raises(AtRiskInsufficient, match="has no primary key to write the values back by"):
        take_at_risk_backup(target, plan, tmp_path / "backups")
    assert not (tmp_path / "backups").exists()


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs: a copy bigger than that fills it up."""
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_full_disk_mid_copy_leaves_no_folder_and_changes_nothing(
        project: Project, tiny_disk: Path) -> None:
    migrations, target, config = project
    with connect(target) as conn:
        conn.execute("UPDATE items SET code = repeat(md5(id::text), 2000)")  # 40 x 64 kB, more than the disk
    before = contents(target)
    plan = plan_downgrade(target, migrations, "aaaa00000001")

    with pytest.raises(AtRiskBackupFailed, match="ran out of space") as failed:
        take_at_risk_backup(target, plan, tiny_disk / "backups")

    assert "nothing was rolled back" in str(failed.value)
    assert list((tiny_disk / "backups").iterdir()) == []
    assert contents(target) == before
    with connect(target) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("aaaa00000004",)


def test_the_restore_lost_data_runbook_refuses_before_the_fix_forward_then_puts_the_data_back(
        project: Project, tmp_path: Path, database_url: str) -> None:
    migrations, target, config = project
    original = contents(target)
    backup = take_at_risk_backup(target, plan_downgrade(target, migrations, "aaaa00000001"), tmp_path / "backups")
    command.downgrade(config, "aaaa00000001")
    arguments = ("run", "restore-lost-data", "-p", "at_risk_backup", str(backup.folder), "-p", "operator", "alice")

    early = rollbook(tmp_path, *arguments, "--execute", url=database_url, config=migrations.config_path)
    assert early.returncode == 2, early.stdout + early.stderr
    assert "re-create it first by upgrading" in early.stdout + early.stderr

    command.upgrade(config, "head")
    fixed_forward = contents(target)
    dry = rollbook(tmp_path, *arguments, url=database_url, config=migrations.config_path)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert contents(target) == fixed_forward

    done = rollbook(tmp_path, *arguments, "--execute", url=database_url, config=migrations.config_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert contents(target) == original
    record = record_summary(notebook_records(tmp_path / "archive")[-1])
    assert record.outcome == "succeeded" and record.lost_data_restore is not None
    assert record.lost_data_restore["verified"] is True
    assert record.at_risk_backup is not None and record.at_risk_backup["folder"] == str(backup.folder)
    password = DatabaseTarget.from_url(database_url).url.password
    archived = b"".join(p.read_bytes() for p in (tmp_path / "archive").iterdir() if p.is_file())
    assert password and password.encode() not in archived


def test_the_rollback_runbook_takes_an_at_risk_backup_that_restore_lost_data_puts_back(
        demo_url: str, tmp_path: Path) -> None:
    demo_at(demo_url, DROPS_A_COLUMN)  # undoing it drops users.preferences, with its values
    before = users(demo_url)

    rolled_back = rollbook(tmp_path, "run", "rollback", "-p", "environment", "staging", "-p", "operator", "alice",
                           "-p", "accept_data_loss", "True", "-p", "backup_strategy", "at-risk",
                           "-p", "backup_dir", str(tmp_path / "backups"), "--execute", url=demo_url)

    assert rolled_back.returncode == 0, rolled_back.stdout + rolled_back.stderr
    [summary] = (tmp_path / "archive").glob("*_rollback_succeeded_*.json")
    record = read_record(json.loads(summary.read_text()))
    assert record.backup_strategy == "at-risk" and record.backup is None and record.at_risk_backup is not None
    folder = Path(record.at_risk_backup["folder"])
    [saved] = record.at_risk_backup["files"]
    # The 5 users whose preferences hold a value (NULLs need no saving).
    assert (saved["table"], [c for c, _ in saved["columns"]], saved["rows"]) == ("users", ["id", "preferences"], 5)
    assert f"rollbook run restore-lost-data -p at_risk_backup {folder}" in rolled_back.stdout

    command.upgrade(alembic_config_for(load_project(DEMO_CONFIG), DatabaseTarget.from_url(demo_url)), DROPS_A_COLUMN)
    assert users(demo_url) != before  # the fix-forward brings the column back empty (and last)
    restored = rollbook(tmp_path, "run", "restore-lost-data", "-p", "at_risk_backup", str(folder),
                        "-p", "operator", "alice", "--execute", url=demo_url)
    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert users(demo_url) == before


def users(url: str) -> list[tuple[object, ...]]:
    """Every user's values by column name: the fix-forward re-creates preferences as the last column."""
    with connect(DatabaseTarget.from_url(url)) as conn:
        return conn.execute("SELECT id, email, name, status, old_preferences, preferences::text FROM users "
                            "ORDER BY id").fetchall()


def test_the_gate_refuses_an_at_risk_backup_of_a_plan_it_cannot_protect(tmp_path: Path, database_url: str) -> None:
    revisions = {**REVISIONS, "aaaa00000005": (
        "aaaa00000004", "pass", 'op.execute("DO $$ BEGIN DELETE FROM children WHERE id < 5; END $$")')}
    migrations, target, _ = project_at_head(tmp_path / "project", database_url, revisions, ROWS)
    before = contents(target)

    run = rollbook(tmp_path, "run", "rollback", "-p", "environment", "staging", "-p", "operator", "alice",
                   "-p", "accept_data_loss", "True", "-p", "backup_strategy", "at-risk",
                   "-p", "backup_dir", str(tmp_path / "backups"), "--execute", url=database_url,
                   config=migrations.config_path)

    assert run.returncode == 4, run.stdout + run.stderr
    assert "an at-risk backup cannot protect this downgrade" in run.stdout
    assert "pass -p backup_strategy full (a copy of the whole database)" in run.stdout
    assert contents(target) == before and not (tmp_path / "backups").exists()


def test_a_default_at_risk_strategy_falls_back_to_a_whole_copy_for_a_plan_it_cannot_protect(
        tmp_path: Path, database_url: str) -> None:
    revisions = {**REVISIONS, "aaaa00000005": (
        "aaaa00000004", "pass", 'op.execute("DO $$ BEGIN DELETE FROM children WHERE id < 5; END $$")')}
    migrations, target, _ = project_at_head(tmp_path / "project", database_url, revisions, ROWS)
    (tmp_path / "project" / "rollbook.toml").write_text('[policy.staging]\nbackup_strategies = ["at-risk", "full"]\n')

    run = rollbook(tmp_path, "run", "rollback", "-p", "environment", "staging", "-p", "operator", "alice",
                   "-p", "accept_data_loss", "True", "-p", "backup_dir", str(tmp_path / "backups"), "--execute",
                   url=database_url, config=migrations.config_path)

    assert run.returncode == 0, run.stdout + run.stderr
    [summary] = (tmp_path / "archive").glob("*_rollback_succeeded*.json")
    record = read_record(json.loads(summary.read_text()))
    # The policy's default could not cover the DO block, so the next strategy it accepts was taken: a full dump.
    assert record.backup_strategy == "full" and record.backup is not None and record.at_risk_backup is None
    [rule] = [r for r in record.policy["results"] if r["rule"] == "backup strategy"]
    assert rule["outcome"] == "pass" and "at-risk (the default) cannot protect this downgrade" in rule["reason"]
    assert "full, the next strategy staging accepts, is taken instead" in rule["reason"]
