"""A downgrade's DELETE or TRUNCATE: its own rows counted as written, and what it does to other tables.

Foreign keys' actions are counted; triggers and rules are named for review by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic_projects import write_project

from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.plan import DowngradePlan, plan_downgrade
from rollbook.project.migrations import alembic_config_for, load_project

SCHEMA = """
CREATE TABLE folders (id int PRIMARY KEY, name text);
CREATE TABLE files (id int PRIMARY KEY, folder_id int REFERENCES folders ON DELETE CASCADE);
CREATE TABLE comments (id int PRIMARY KEY, file_id int REFERENCES files ON DELETE CASCADE);
CREATE TABLE shares (id int PRIMARY KEY, folder_id int REFERENCES folders ON DELETE SET NULL);
CREATE TABLE tags (id int PRIMARY KEY, name text, parent_id int REFERENCES tags ON DELETE CASCADE);
"""
# Folders 1 and 2 are unnamed, so the data migration names them and its downgrade deletes them.
DATA = """
INSERT INTO folders VALUES (1, NULL), (2, NULL), (3, 'keep'), (4, 'keep');
INSERT INTO files SELECT i, CASE WHEN i <= 10 THEN 1 WHEN i <= 15 THEN 2 ELSE 3 END FROM generate_series(1, 22) i;
INSERT INTO comments SELECT i, (i + 1) / 2 FROM generate_series(1, 44) i;
INSERT INTO shares SELECT i, CASE WHEN i <= 3 THEN 1 ELSE 3 END FROM generate_series(1, 7) i;
INSERT INTO tags VALUES (1, 'old', NULL), (2, 'child', 1), (3, 'grandchild', 2);
"""


def write_data_project(root: Path, downgrade: str) -> Path:
    """Two revisions: the schema, then a data migration whose downgrade runs `downgrade`."""
    return write_project(root, {
        "bbbb00000001": (None, f"op.execute({SCHEMA!r})", 'op.execute("DROP TABLE comments, files, shares, folders, tags")'),
        "bbbb00000002": ("bbbb00000001", "op.execute(\"UPDATE folders SET name = 'seed ' || id WHERE name IS NULL\")",
                         f"op.execute({downgrade!r})"),
    })


def planned(tmp_path: Path, database_url: str, downgrade: str, extra_sql: str = "") -> tuple[DowngradePlan, Config]:
    """Bring a database to head with the sample rows (and `extra_sql`), and plan its last revision's downgrade."""
    project = load_project(write_data_project(tmp_path / "project", downgrade))
    target = DatabaseTarget.from_url(database_url)
    config = alembic_config_for(project, target)
    command.upgrade(config, "bbbb00000001")
    with connect(target) as conn:
        conn.execute(DATA + extra_sql)
    command.upgrade(config, "head")
    return plan_downgrade(target, project, "-1"), config


def operations(plan: DowngradePlan) -> dict[tuple[str, str], int | None]:
    return {(op.op, str(op.table)): op.rows_affected for op in plan.steps[0].operations}


def table_rows(database_url: str) -> dict[str, int]:
    with connect(DatabaseTarget.from_url(database_url)) as conn:
        return {table: conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("folders", "files", "comments", "shares", "tags")} | {
            "shares without a folder": conn.execute("SELECT count(*) FROM shares WHERE folder_id IS NULL").fetchone()[0]}


def test_a_delete_counts_the_rows_its_foreign_keys_delete_and_rewrite_exactly_as_the_downgrade_does(
        tmp_path, database_url):
    # Qualified by its table, as SQLAlchemy renders a WHERE clause.
    plan, config = planned(tmp_path, database_url, "DELETE FROM folders WHERE folders.name LIKE 'seed%'")

    assert operations(plan) == {
        ("delete", "folders"): 2,
        ("cascade_delete", "files"): 15,
        ("cascade_delete", "comments"): 30,
        ("cascade_set_null", "shares"): 3,
    }
    assert plan.verdict.code == "do_not_downgrade"
    assert any("deletes rows of comments that reference the deleted rows of files "
               "(comments_file_id_fkey, ON DELETE CASCADE): 30 rows deleted" in r for r in plan.verdict.reasons)
    assert "sets folder_id to NULL in rows of shares" in plan.to_text()

    before = table_rows(database_url)
    command.downgrade(config, "-1")
    after = table_rows(database_url)
    assert {table: before[table] - after[table] for table in ("folders", "files", "comments")} == {
        "folders": 2, "files": 15, "comments": 30}
    assert after["shares without a folder"] - before["shares without a folder"] == 3


def test_a_percent_sign_in_the_migration_sql_is_counted_and_printed_as_written(tmp_path, database_url):
    plan, _ = planned(tmp_path, database_url, "DELETE FROM files WHERE id IN (SELECT id FROM folders WHERE name = '100%')",
                      "INSERT INTO folders VALUES (5, '100%');")

    assert operations(plan)[("delete", "files")] == 1
    assert "WHERE name = '100%')" in plan.downgrade_sql()


def test_rows_still_referencing_the_deleted_rows_are_counted_as_a_failure_and_triggers_and_rules_named(
        tmp_path, database_url):
    extra = """
        CREATE TABLE holds (folder_id int REFERENCES folders);
        INSERT INTO holds VALUES (2), (3);
        CREATE FUNCTION forget_folder() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$;
        CREATE TRIGGER folders_audit AFTER DELETE ON folders FOR EACH ROW EXECUTE FUNCTION forget_folder();
        CREATE RULE folders_hold AS ON DELETE TO folders DO ALSO INSERT INTO holds VALUES (NULL);
    """
    plan, config = planned(tmp_path, database_url, "DELETE FROM folders WHERE name LIKE 'seed%'", extra)

    ops = {op.op: op for op in plan.steps[0].operations if op.op in ("restricted_delete", "trigger")}
    assert ops["restricted_delete"].rows_affected == 1
    assert ops["restricted_delete"].check.effect == "blocks"
    assert ops["trigger"].risk.value == "unknown"
    reasons = "\n".join(plan.verdict.reasons)
    assert "holds_folder_id_fkey, ON DELETE NO ACTION): 1 rows that would make it fail" in reasons
    assert "fires trigger folders_audit on folders (AFTER DELETE, calls forget_folder)" in reasons
    assert "is rewritten by rule folders_hold on folders (ON DELETE DO ALSO)" in reasons

    before = table_rows(database_url)
    with pytest.raises(Exception, match="holds_folder_id_fkey"):
        command.downgrade(config, "-1")
    assert table_rows(database_url) == before


@pytest.mark.parametrize("cascade", [True, False])
def test_truncate_cascade_empties_every_referencing_table_and_plain_truncate_is_refused(
        tmp_path, database_url, cascade):
    statement = "TRUNCATE folders CASCADE" if cascade else "TRUNCATE folders"
    plan, _ = planned(tmp_path, database_url, statement)

    ops = operations(plan)
    if cascade:
        assert ops == {("truncate", "folders"): 4, ("cascade_truncate", "files"): 22,
                       ("cascade_truncate", "shares"): 7, ("cascade_truncate", "comments"): 44}
    else:
        refused = [op.detail for op in plan.steps[0].operations if op.op == "truncate_refused"]
        assert refused == [
            "fails: files references folders (files_folder_id_fkey) and the TRUNCATE has no CASCADE",
            "fails: shares references folders (shares_folder_id_fkey) and the TRUNCATE has no CASCADE",
        ]
    assert plan.verdict.code == "do_not_downgrade"


def test_a_cascade_that_refers_back_into_its_own_table_is_never_counted_as_if_it_stopped(tmp_path, database_url):
    plan, _ = planned(tmp_path, database_url, "DELETE FROM tags WHERE name = 'old'")

    [self_reference] = [op for op in plan.steps[0].operations if op.op == "cascade_delete"]
    assert self_reference.risk.value == "unknown" and self_reference.rows_affected is None
    assert "how far this reaches was not counted: review by hand" in self_reference.detail
    assert any("tags_parent_id_fkey" in reason for reason in plan.verdict.reasons)


def test_with_live_checks_off_the_foreign_keys_are_still_named(tmp_path, database_url):
    project = load_project(write_data_project(tmp_path / "project", "DELETE FROM folders WHERE name LIKE 'seed%'"))
    target = DatabaseTarget.from_url(database_url)
    command.upgrade(alembic_config_for(project, target), "head")

    plan = plan_downgrade(target, project, "-1", live_checks=False)

    assert [(op.op, str(op.table), op.rows_affected) for op in plan.steps[0].operations] == [
        ("delete", "folders", None), ("cascade_delete", "files", None), ("cascade_delete", "comments", None),
        ("cascade_set_null", "shares", None)]
    assert plan.verdict.code == "do_not_downgrade"


@pytest.mark.parametrize("order", ["key dropped first", "key dropped after"])
def test_a_foreign_key_the_downgrade_drops_first_sets_nothing_off(tmp_path, database_url, order):
    """Prefect's 0a1250a5aa25 drops a work queue's key to its pool, then deletes pools: nothing cascades. Dropped
    after the DELETE, the key still cascades. The plan follows the statements in order, as PostgreSQL does."""
    drop_key = "ALTER TABLE files DROP CONSTRAINT files_folder_id_fkey"
    delete = "DELETE FROM folders WHERE folders.name LIKE 'seed%'"
    statements = [drop_key, delete] if order == "key dropped first" else [delete, drop_key]
    plan, config = planned(tmp_path, database_url, "; ".join(statements))

    cascades = {(op, table) for op, table in operations(plan) if op.startswith("cascade")}
    before = table_rows(database_url)
    command.downgrade(config, "-1")
    lost_files = before["files"] - table_rows(database_url)["files"]
    if order == "key dropped first":
        assert ("cascade_delete", "files") not in cascades and lost_files == 0
    else:
        assert operations(plan)[("cascade_delete", "files")] == 15 and lost_files == 15
