"""The rollback test (library, `rollbook test-rollback`, runbook, pytest plugin) against the real server."""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import psycopg
import pytest
from pg import psycopg_kwargs
from test_records import notebook_records, record_summary, rollbook

from rollbook.demo.server import DEMO_CONFIG
from rollbook.pg.scratch import SCRATCH_PREFIX
from rollbook.project.migrations import load_project
from rollbook.recovery.rehearsal import rehearsal_order

pytest_plugins = ["pytester"]

NO_OP = '''
"""Add users.nickname; the downgrade forgets to undo it."""
import sqlalchemy as sa
from alembic import op

revision = "0607bc5b8537"
down_revision = "0607bc5b8536"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("nickname", sa.String(50)))


def downgrade():
    pass
'''
FORGOTTEN_INDEX = '''
"""Index users.name and add table tags; the downgrade drops the table but forgets the index."""
import sqlalchemy as sa
from alembic import op

revision = "0607bc5b8538"
down_revision = "0607bc5b8537"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_users_name", "users", ["name"])
    op.create_table("tags", sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.String(20)))


def downgrade():
    op.drop_table("tags")
'''


FOLDERS = '''
"""Folders and their files, deleted with their folder; thumbnails, emptied by a trigger when a folder goes."""
import sqlalchemy as sa
from alembic import op

revision = "0607bc5b8539"
down_revision = "0607bc5b8538"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("folders", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))
    op.create_table("files", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("folder_id", sa.Integer, sa.ForeignKey("folders.id", ondelete="CASCADE")))
    op.create_table("thumbnails", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("CREATE FUNCTION forget_thumbnails() RETURNS trigger LANGUAGE plpgsql AS "
               "$$ BEGIN DELETE FROM thumbnails; RETURN NULL; END $$")
    op.execute("CREATE TRIGGER folders_forget AFTER DELETE ON folders "
               "FOR EACH STATEMENT EXECUTE FUNCTION forget_thumbnails()")


def downgrade():
    op.execute("DROP TRIGGER folders_forget ON folders")
    op.execute("DROP FUNCTION forget_thumbnails()")
    op.drop_table("thumbnails")
    op.drop_table("files")
    op.drop_table("folders")
'''
CASCADING_CLEANUP = '''
"""Name every folder; the downgrade deletes the folders it named, their files, and (by trigger) thumbnails."""
from alembic import op

revision = "0607bc5b8540"
down_revision = "0607bc5b8539"
branch_labels = None
depends_on = None


def upgrade():
    op.execute("UPDATE folders SET name = 'rollbook seed' WHERE name IS NULL")


def downgrade():
    op.execute("DELETE FROM folders WHERE name LIKE 'rollbook seed%'")
'''


def demo_with(tmp_path: Path, **files: str) -> Path:
    """A copy of the demo project with extra migration files; returns its alembic.ini."""
    project = tmp_path / "project"
    shutil.copytree(Path(DEMO_CONFIG).parent, project, ignore=shutil.ignore_patterns("__pycache__"))
    for name, source in files.items():
        (project / "versions" / f"{name}.py").write_text(textwrap.dedent(source))
    return project / "alembic.ini"


def scratch_databases(url: str) -> int:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE %s",
                            [SCRATCH_PREFIX + "%"]).fetchone()[0]


def test_a_no_op_downgrade_a_forgotten_index_and_an_unplanned_loss_fail_naming_each(tmp_path, database_url):
    config = demo_with(tmp_path, **{"0607bc5b8537_nickname": NO_OP, "0607bc5b8538_tags": FORGOTTEN_INDEX,
                                    "0607bc5b8539_folders": FOLDERS, "0607bc5b8540_cleanup": CASCADING_CLEANUP})

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), url=database_url)

    assert result.returncode == 1, result.stderr
    out = result.stdout
    for revision, kind in (("0607bc5b8537", "add_column"), ("0607bc5b8538", "add_table"),
                           ("0607bc5b8540", "data_migration")):
        assert re.search(rf"{revision} +{kind} .* FAIL", out), revision
    assert re.search(r"0607bc5b8536 +data_migration +high +passed +passed +passed +PASS", out)
    assert re.search(r"0607bc5b8539 +add_table .* passed +PASS", out)
    assert "column users.nickname: not expected (present in the database)" in out
    assert "index ix_users_name on users: not expected (present in the database: btree (name))" in out
    assert 'relation "ix_users_name" already exists' in out  # and upgrading again fails on it
    # The plan counts what ON DELETE CASCADE takes from files, but a trigger's deletions only get named.
    assert "    - files:" not in out
    assert "thumbnails: 3 of its 3 rows changed or lost; the plan predicted 0" in out
    assert out.rstrip().endswith("FAILED: 3 of 12 check(s) failed.")
    assert scratch_databases(database_url) == 0


BALANCE = '''
"""Add users.balance."""
import sqlalchemy as sa
from alembic import op

revision = "0607bc5b8537"
down_revision = "0607bc5b8536"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("users", sa.Column("balance", sa.Numeric(10, 2)))


def downgrade():
    op.drop_column("users", "balance")
'''
WIDER_BALANCE = '''
"""Keep users.balance to four decimals; the downgrade rounds it back to two."""
import sqlalchemy as sa
from alembic import op

revision = "0607bc5b8538"
down_revision = "0607bc5b8537"
branch_labels = None
depends_on = None


def upgrade():
    op.alter_column("users", "balance", type_=sa.Numeric(12, 4), existing_type=sa.Numeric(10, 2))


def downgrade():
    op.alter_column("users", "balance", type_=sa.Numeric(10, 2), existing_type=sa.Numeric(12, 4))
'''


def test_a_scale_change_that_rounds_no_value_passes_although_every_value_is_written_differently(
        tmp_path, database_url):
    # 5.0000 in numeric(12,4) comes back as 5.00 in numeric(10,2): the same value, as the plan says.
    config = demo_with(tmp_path, **{"0607bc5b8537_balance": BALANCE, "0607bc5b8538_wider": WIDER_BALANCE})

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), url=database_url)

    assert result.returncode == 0, result.stdout
    assert re.search(r"0607bc5b8538 +alter_column .* PASS", result.stdout)


@pytest.mark.parametrize("shape", ["two heads", "branch point"])
def test_branches_that_never_merge_are_walked_in_upgrade_order(tmp_path, shape):
    down = "0607bc5b8536" if shape == "two heads" else "0607bc5b8535"
    branch = f'''
        """A second line of migrations."""
        revision = "a1b2c3d4e5f6"
        down_revision = "{down}"
        branch_labels = None
        depends_on = None


        def upgrade():
            pass


        def downgrade():
            pass
        '''
    files = {"a1b2c3d4e5f6_branch": branch}
    if shape == "two heads":
        files["0607bc5b8537_nickname"] = NO_OP
    config = demo_with(tmp_path, **files)

    history = rehearsal_order(load_project(config))

    assert len(history) == 8 + (shape == "two heads") and "a1b2c3d4e5f6" in history
    assert history.index("a1b2c3d4e5f6") > history.index(down)


def test_the_runbook_rolls_back_every_demo_revision_and_records_where_rows_were_lost(tmp_path, database_url):
    run = rollbook(tmp_path, "run", "rollback-test", url=database_url)

    assert run.returncode == 0, run.stdout
    [record] = notebook_records(tmp_path / "archive")
    summary = record_summary(record)
    assert summary.outcome == "succeeded" and summary.runbook == "rollback-test"
    report = summary.rollback_test
    assert report["passed"] and report["team_test"]["status"] == "passed"
    assert [(r["revision"], r["migration_type"], r["status"]) for r in report["revisions"]] == [
        ("0607bc5b8530", "add_table", "PASS"), ("0607bc5b8531", "add_column", "PASS"),
        ("0607bc5b8532", "drop_column", "PASS"), ("0607bc5b8533", "alter_column", "PASS"),
        ("0607bc5b8534", "add_table", "PASS"), ("0607bc5b8535", "drop_table", "PASS"),
        ("0607bc5b8536", "data_migration", "PASS")]
    rows = {r["revision"]: r["rows_as_planned"]["detail"] for r in report["revisions"]}
    assert "users.preferences: dropped, 3 values lost as predicted" in rows["0607bc5b8531"]
    assert "user_preferences: dropped, 3 rows lost as predicted" in rows["0607bc5b8534"]
    assert "users: all 3 rows kept" in rows["0607bc5b8536"]
    assert "| `0607bc5b8536` |" in record.read_text()
    assert scratch_databases(database_url) == 0
    assert rollbook(tmp_path, "archive", "verify", url=database_url).returncode == 0


def test_the_pytest_plugin_runs_only_when_a_project_opts_in(pytester, tmp_path, database_url):
    pytester.makepyfile(test_app="def test_app():\n    pass\n")
    server = f"--rollbook-database-url={database_url}"

    off = pytester.runpytest(server, "-p", "no:cacheprovider")
    off.assert_outcomes(passed=1)

    pytester.makeini(f"[pytest]\nrollbook_rollback_test = true\nrollbook_alembic_config = {DEMO_CONFIG}\n")
    on = pytester.runpytest(server, "-p", "no:cacheprovider", "-v")
    on.assert_outcomes(passed=9)
    on.stdout.fnmatch_lines(["*rollbook-rollback-test?team test? PASSED*",
                             "*rollbook-rollback-test?0607bc5b8536? PASSED*"])
    pytester.runpytest(server, "-p", "no:cacheprovider", "test_app.py").assert_outcomes(passed=1)
    pytester.runpytest(server, "-p", "no:cacheprovider", "-m", "not rollbook").assert_outcomes(passed=1, deselected=8)

    broken = demo_with(tmp_path, **{"0607bc5b8537_nickname": NO_OP})
    pytester.makeini(f"[pytest]\nrollbook_rollback_test = true\nrollbook_alembic_config = {broken}\n")
    failing = pytester.runpytest(server, "-p", "no:cacheprovider")
    failing.assert_outcomes(passed=8, failed=2)  # the revision, and the team's test (the head's downgrade)
    failing.stdout.fnmatch_lines(["*column users.nickname: not expected (present in the database)*"])


def test_a_revision_that_only_applies_together_with_the_next_does_not_hide_the_later_ones(tmp_path, database_url):
    """r2 leaves an orphan that a deferred foreign key rejects at commit, and r3 adds the missing parent:
    applied one at a time r2 fails, in one `alembic upgrade` (one transaction) the line applies cleanly."""
    from alembic_projects import write_project

    config = write_project(tmp_path / "project", {
        "r1": (None, "op.execute('CREATE TABLE parent (id int PRIMARY KEY)')", "op.execute('DROP TABLE parent')"),
        "r2": ("r1", "op.execute('CREATE TABLE child (id int, parent_id int REFERENCES parent DEFERRABLE INITIALLY "
                     "DEFERRED); INSERT INTO child VALUES (1, 1)')", "op.execute('DROP TABLE child')"),
        "r3": ("r2", "op.execute('INSERT INTO parent VALUES (1)')", "pass"),
        "r4": ("r3", "op.execute('CREATE TABLE notes (id int)')", "op.execute('DROP TABLE notes')"),
    })

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    trips = {trip["revision"]: trip for trip in report["revisions"]}
    assert trips["r1"]["passed"]
    assert not trips["r2"]["passed"] and "the upgrade to it failed" in trips["r2"]["downgrade"]["detail"]
    assert trips["r3"]["downgrade"]["status"] == "not_checked"  # the schema r2 builds on its own is unknown
    assert trips["r4"]["passed"], trips["r4"]  # rehearsed, not hidden behind r2
    assert "r2 failed when applied on its own" in " ".join(report["team_test"]["lines"])
    assert scratch_databases(database_url) == 0


def test_tables_whose_foreign_keys_point_at_each_other_are_all_seeded(tmp_path, database_url):
    """Prefect's shape: flow_run.state_id -> flow_run_state, flow_run_state.flow_run_id (NOT NULL) -> flow_run."""
    from alembic_projects import write_project

    config = write_project(tmp_path / "project", {
        "r1": (None, "op.execute('CREATE TABLE flow_run (id int PRIMARY KEY, state_id int); "
                     "CREATE TABLE flow_run_state (id int PRIMARY KEY, flow_run_id int NOT NULL "
                     "REFERENCES flow_run ON DELETE CASCADE); ALTER TABLE flow_run ADD FOREIGN KEY (state_id) "
                     "REFERENCES flow_run_state ON DELETE SET NULL')",
               "op.execute('DROP TABLE flow_run, flow_run_state CASCADE')"),
        "r2": ("r1", "op.execute('ALTER TABLE flow_run_state ADD COLUMN name text')",
               "op.execute('ALTER TABLE flow_run_state DROP COLUMN name')"),
    })

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    assert result.returncode == 0, result.stdout
    report = json.loads(result.stdout)
    [r2] = [trip for trip in report["revisions"] if trip["revision"] == "r2"]
    assert {s["table"]: s["rows"] for s in r2["seeded"]} == {"flow_run": 3, "flow_run_state": 3}
    # The dropped column's values were lost where the plan said, and counted: the state rows were there.
    assert r2["rows_as_planned"]["status"] == "passed", r2["rows_as_planned"]


def test_renames_keep_their_rows_and_a_table_dropped_and_re_created_is_read_as_re_created(tmp_path, database_url):
    from alembic_projects import write_project

    config = write_project(tmp_path / "project", {
        "r1": (None, "op.execute('CREATE TABLE a (id int, nick text)')", "op.execute('DROP TABLE a')"),
        "r2": ("r1", "op.execute('ALTER TABLE a RENAME COLUMN nick TO nickname')",
               "op.execute('ALTER TABLE a RENAME COLUMN nickname TO nick')"),
        # Prefect's shape: the downgrade renames the table, then a column of it under its new name.
        "r3": ("r2", "op.execute('ALTER TABLE a RENAME TO accounts; ALTER TABLE accounts RENAME nickname TO handle')",
               "op.execute('ALTER TABLE accounts RENAME TO a; ALTER TABLE a RENAME handle TO nickname')"),
        "r4": ("r3", "op.execute('ALTER TABLE accounts ADD COLUMN note text')",
               "op.execute('DROP TABLE accounts; CREATE TABLE accounts (id int, handle text)')"),
        # MLflow's 5d2d30f0abce: a column renamed back in a batch operation.
        "r5": ("r4", "with op.batch_alter_table('accounts') as batch: batch.alter_column('handle', new_column_name="
               "'alias')", "with op.batch_alter_table('accounts') as batch: batch.alter_column('alias', "
               "new_column_name='handle')"),
    })

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    trips = {trip["revision"]: trip for trip in json.loads(result.stdout)["revisions"]}
    for revision in ("r2", "r3", "r4", "r5"):
        assert trips[revision]["rows_as_planned"]["status"] == "passed", trips[revision]["rows_as_planned"]
    assert "all 3 rows kept" in trips["r2"]["rows_as_planned"]["detail"]
    assert "accounts (renamed to a): all 3 rows kept" in trips["r3"]["rows_as_planned"]["detail"]
    assert "dropped and re-created, 3 rows lost as predicted" in trips["r4"]["rows_as_planned"]["detail"]
    assert trips["r5"]["rows_as_planned"]["detail"].startswith("accounts: all 3 rows kept")
    assert result.returncode == 0, result.stdout


def test_a_column_dropped_and_added_again_by_the_same_downgrade_is_read_as_re_created(tmp_path, database_url):
    """CKAN's 008: the downgrade drops the key columns and adds them back with their old types (a new serial)."""
    from alembic_projects import write_project

    config = write_project(tmp_path / "project", {
        "r1": (None, "op.execute('CREATE TABLE revision (id serial PRIMARY KEY, author text); CREATE TABLE package "
                     "(id int PRIMARY KEY, name text, revision_id int REFERENCES revision)')",
               "op.execute('DROP TABLE package, revision')"),
        "r2": ("r1", "op.execute('ALTER TABLE package DROP COLUMN revision_id; ALTER TABLE revision ALTER id TYPE "
                     "text; ALTER TABLE package ADD COLUMN revision_id text REFERENCES revision')",
               "op.execute('ALTER TABLE package DROP COLUMN revision_id; ALTER TABLE revision DROP COLUMN id; "
               "ALTER TABLE revision ADD COLUMN id serial PRIMARY KEY; "
               "ALTER TABLE package ADD COLUMN revision_id int REFERENCES revision')"),
    })

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    [r2] = [trip for trip in json.loads(result.stdout)["revisions"] if trip["revision"] == "r2"]
    assert r2["rows_as_planned"]["status"] == "passed", r2
    detail = r2["rows_as_planned"]["detail"]
    assert "package.revision_id: dropped and added again, 3 values lost as predicted" in detail
    assert "revision.id: dropped and added again, 3 values lost as predicted" in detail
    # The rows themselves are kept: only the re-created columns lost their values.
    assert "package: all 3 rows kept" in detail and "revision: all 3 rows kept" in detail
    assert result.returncode == 0, result.stdout


FLAT_EXTRAS = """jsonb_typeof(extras) = 'object' AND NOT jsonb_path_exists(extras, '$.* ? (@.type() <> "string")')"""


def test_tables_with_check_constraints_on_their_columns_are_seeded(tmp_path, database_url):
    """CKAN's 106: package.extras must be a JSON object of strings; other CHECKs reject made-up numbers."""
    from alembic_projects import write_project

    config = write_project(tmp_path / "project", {
        "r1": (None, "op.execute('CREATE TABLE package (id int PRIMARY KEY, name text NOT NULL, "
                     "size int CHECK (size < 100))')", "op.execute('DROP TABLE package')"),
        "r2": ("r1", f"op.execute({f'ALTER TABLE package ADD COLUMN extras jsonb CHECK ({FLAT_EXTRAS})'!r})",
               "op.execute('ALTER TABLE package DROP COLUMN extras')"),
    })

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    [r2] = [trip for trip in json.loads(result.stdout)["revisions"] if trip["revision"] == "r2"]
    assert r2["seeded"] == [{"table": "package", "rows": 3}], r2["rows_as_planned"]
    assert "package.extras: dropped, 3 values lost as predicted" in r2["rows_as_planned"]["detail"]
    assert result.returncode == 0, result.stdout


BRANCH_FORGETTING_ITS_INDEX = '''
"""Index users.email and add users.nickname, on a branch; the downgrade forgets the index."""
import sqlalchemy as sa
from alembic import op

revision = "a1b2c3d4e5f6"
down_revision = "0607bc5b8535"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_users_email_branch", "users", ["email"])
    op.add_column("users", sa.Column("nickname", sa.Text))


def downgrade():
    op.drop_column("users", "nickname")
'''
MERGE = '''
"""Merge the branch back."""
revision = "b1b2c3d4e5f6"
down_revision = ("0607bc5b8536", "a1b2c3d4e5f6")
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
'''
AFTER_MERGE = '''
"""Add table tags after the merge."""
import sqlalchemy as sa
from alembic import op

revision = "c1b2c3d4e5f6"
down_revision = "b1b2c3d4e5f6"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table("tags", sa.Column("id", sa.Integer, primary_key=True), sa.Column("label", sa.Text))


def downgrade():
    op.drop_table("tags")
'''


@pytest.mark.parametrize("head", ["after the merge", "the merge"])
def test_a_branch_merged_again_is_rehearsed_revision_by_revision(tmp_path, database_url, head):
    """Zou's shape: the history branches and merges again into one head; every revision is rehearsed."""
    after = {"c1b2c3d4e5f6_tags": AFTER_MERGE} if head == "after the merge" else {}
    config = demo_with(tmp_path, a1b2c3d4e5f6_branch=BRANCH_FORGETTING_ITS_INDEX, b1b2c3d4e5f6_merge=MERGE, **after)

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    report = json.loads(result.stdout)
    trips = {trip["revision"]: trip for trip in report["revisions"]}
    # The team's test rolls back the head: a merge head goes down to both of its parents.
    assert len(trips) == 9 + len(after) and report["team_test"]["status"] == "passed", report["team_test"]
    # The branch revision goes down to its own parent, with the other branch not applied, and its
    # forgotten index is found.
    branch = trips["a1b2c3d4e5f6"]
    assert branch["status"] == "FAIL" and "ix_users_email_branch" in " ".join(branch["downgrade"]["differences"])
    assert branch["downgrade"]["detail"] == "the schema differs from the schema 0607bc5b8535 builds (1 difference(s))"
    assert "users.nickname: dropped, 3 values lost as predicted" in branch["rows_as_planned"]["detail"]
    # Undoing the merge leaves both of its parents as heads, with the schema they build together.
    merge = trips["b1b2c3d4e5f6"]
    assert merge["status"] == "PASS", merge
    assert merge["downgrade"]["detail"].startswith("at 0607bc5b8536, a1b2c3d4e5f6; the schema equals")
    assert [r for r, trip in trips.items() if trip["status"] != "PASS"] == ["a1b2c3d4e5f6"]
    assert scratch_databases(database_url) == 0


PARSES_ITS_OWN_JSON = '''
"""Rewrite every trial_params.distribution_json (Optuna's v3.0.0.a shape): the downgrade parses the JSON Optuna wrote."""
import json

import sqlalchemy as sa
from alembic import op
from sqlalchemy import orm

revision = "p2"
down_revision = "p1"


def rewrite(upgrade):
    session = orm.Session(bind=op.get_bind())
    try:
        rows = session.execute(sa.text("SELECT param_id, distribution_json FROM trial_params")).all()
        for param_id, text in rows:
            distribution = json.loads(text)
            distribution["name"] = "FloatDistribution" if upgrade else "UniformDistribution"
            session.execute(sa.text("UPDATE trial_params SET distribution_json = :j WHERE param_id = :i"),
                            {"j": json.dumps(distribution), "i": param_id})
        session.commit()
    finally:
        session.close()


def upgrade():
    rewrite(True)


def downgrade():
    rewrite(False)
'''


def test_a_downgrade_that_only_fails_on_made_up_rows_is_rehearsed_without_them(tmp_path, database_url):
    """Made-up rows are not JSON: a Python downgrade the plan cannot read fails on them, but not on the rows
    the project writes. Its schema round trip is rehearsed without the rows and passes; a downgrade that
    fails whatever the rows still fails, naming its own error."""
    from alembic_projects import write_project

    config = write_project(tmp_path / "project", {
        "p1": (None, "op.execute('CREATE TABLE trial_params (param_id serial PRIMARY KEY, distribution_json text)')",
               "op.execute('DROP TABLE trial_params')"),
        "p2": ("p1", "pass", "pass"),
        "p3": ("p2", "op.execute('CREATE TABLE notes (id int)')",
               "op.execute('DROP TABLE notes'); raise RuntimeError('this downgrade is broken')"),
    })
    (tmp_path / "project" / "versions" / "p2.py").write_text(PARSES_ITS_OWN_JSON)

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    report = json.loads(result.stdout)
    trips = {trip["revision"]: trip for trip in report["revisions"]}
    assert trips["p2"]["passed"], trips["p2"]
    assert trips["p2"]["downgrade"]["status"] == "passed"
    assert "without seeded rows" in trips["p2"]["downgrade"]["detail"]
    assert trips["p2"]["rows_as_planned"]["status"] == "not_checked"
    assert "rows the rehearsal made up" in trips["p2"]["rows_as_planned"]["detail"]
    assert "JSONDecodeError" in trips["p2"]["rows_as_planned"]["detail"]
    assert not trips["p3"]["passed"]
    assert trips["p3"]["rows_as_planned"]["detail"].startswith("the plan predicted that the downgrade fails")
    assert "RuntimeError: this downgrade is broken" in trips["p3"]["downgrade"]["detail"]
    assert result.returncode == 1
    assert scratch_databases(database_url) == 0
def test_a_column_dropped_then_replaced_by_a_rename_and_seeding_refusals_are_reported_as_such(tmp_path, database_url):
    """Airflow's shapes: e39a26ac59f6 drops dag_run.conf, then renames conf_pickle to conf; default_pool already
    holds slot_pool id 1 (a made-up key takes the next free values); a CHECK refusing made-up rows is about the
    seeding, not about the plan; e00344393f31 brings back dag_run.external_trigger and fills it, which changes no
    value that was there."""
    from alembic_projects import write_project

    config = write_project(tmp_path / "project", {
        "r1": (None, "op.execute(\"CREATE TABLE dag_run (id int PRIMARY KEY, conf text, run_type text, external_trigger "
                     "boolean); CREATE TABLE slot_pool "
                     "(id int PRIMARY KEY, pool text); INSERT INTO slot_pool VALUES (1, 'default_pool'); "
                     "CREATE TABLE note (id int, body text NOT NULL CHECK (body LIKE 'x%'))\")",
               "op.execute('DROP TABLE dag_run, slot_pool, note')"),
        "r2": ("r1", "op.execute('ALTER TABLE dag_run ADD COLUMN conf_pickle text')",
               "op.execute('ALTER TABLE dag_run DROP COLUMN conf; ALTER TABLE dag_run RENAME conf_pickle TO conf')"),
        "r3": ("r2", "op.execute('ALTER TABLE dag_run DROP COLUMN external_trigger')",
               "op.execute(\"ALTER TABLE dag_run ADD COLUMN external_trigger boolean; UPDATE dag_run SET "
               "external_trigger = (run_type = 'manual')\")"),
    })

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    trips = {trip["revision"]: trip for trip in json.loads(result.stdout)["revisions"]}
    r2, r3 = trips["r2"], trips["r3"]
    assert r3["rows_as_planned"]["status"] == "passed", r3["rows_as_planned"]
    assert "dag_run: all 3 rows kept" in r3["rows_as_planned"]["detail"]
    rows = r2["rows_as_planned"]
    assert rows["status"] == "passed", rows
    assert "dag_run.conf: dropped, 3 values lost as predicted" in rows["detail"]
    assert "dag_run: all 3 rows kept" in rows["detail"]  # conf_pickle's values, now called conf
    assert {s["table"]: s["rows"] for s in r2["seeded"]}["slot_pool"] == 3
    assert "seeding" not in rows["detail"] and "check constraint" not in rows["detail"]
    assert r2["seeding_notes"] == ['note: a row was rejected: new row for relation "note" violates check constraint '
                                   '"note_body_check"']


def test_a_timestamptz_made_timestamp_again_changes_no_value(tmp_path, database_url):
    """Airflow's 038dc8bc6284: the downgrade makes task_instance.trigger_timeout `timestamp` again; every value's
    text loses its offset, but no value changes, as the plan says."""
    from alembic_projects import write_project

    config = write_project(tmp_path / "project", {
        "r1": (None, "op.execute('CREATE TABLE task_instance (id int PRIMARY KEY, trigger_timeout timestamp)')",
               "op.execute('DROP TABLE task_instance')"),
        "r2": ("r1", "op.execute('ALTER TABLE task_instance ALTER trigger_timeout TYPE timestamptz')",
               "op.execute('ALTER TABLE task_instance ALTER trigger_timeout TYPE timestamp')"),
    })

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    [r2] = [trip for trip in json.loads(result.stdout)["revisions"] if trip["revision"] == "r2"]
    assert r2["rows_as_planned"]["status"] == "passed", r2["rows_as_planned"]
    assert "task_instance: all 3 rows kept" in r2["rows_as_planned"]["detail"]


DECOMPRESSES_ITS_OWN_BYTES = '''
"""Move serialized_dag.data_compressed back into data (Airflow's 55297ae24532): the downgrade decompresses it."""
import zlib

import sqlalchemy as sa
from alembic import op

revision = "s2"
down_revision = "s1"


def upgrade():
    op.add_column("serialized_dag", sa.Column("data_compressed", sa.LargeBinary, nullable=True))


def downgrade():
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT id, data_compressed FROM serialized_dag WHERE data_compressed IS NOT NULL"))
    for id_, blob in rows.all():
        bind.execute(sa.text("UPDATE serialized_dag SET data = :d WHERE id = :i"),
                     {"d": zlib.decompress(blob).decode(), "i": id_})
    op.drop_column("serialized_dag", "data_compressed")
'''


def test_a_nullable_binary_column_is_seeded_null_not_with_made_up_bytes(tmp_path, database_url):
    """Made-up bytes are no zlib stream: a downgrade that decompresses what the project wrote would fail on
    them alone. Nullable bytea columns are left NULL, so the round trip rehearses the migration itself."""
    from alembic_projects import write_project

    config = write_project(tmp_path / "project", {
        "s1": (None, "op.execute('CREATE TABLE serialized_dag (id int PRIMARY KEY, data text)')",
               "op.execute('DROP TABLE serialized_dag')"),
        "s2": ("s1", "pass", "pass"),
    })
    (tmp_path / "project" / "versions" / "s2.py").write_text(DECOMPRESSES_ITS_OWN_BYTES)

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    [s2] = [trip for trip in json.loads(result.stdout)["revisions"] if trip["revision"] == "s2"]
    assert {s["table"]: s["rows"] for s in s2["seeded"]}["serialized_dag"] == 3
    assert s2["downgrade"]["status"] == "passed", s2["downgrade"]
    assert "without seeded rows" not in s2["downgrade"]["detail"]


def test_ids_a_table_makes_itself_are_left_to_it_when_seeding(tmp_path, database_url):
    """Prefect's 9e83011d1f2a copies concurrency_limit rows into concurrency_limit_v2 keeping their ids: made-up
    ids shared by both tables would collide when the upgrade runs again; ids from gen_random_uuid() do not."""
    from alembic_projects import write_project

    config = write_project(tmp_path / "project", {
        "u1": (None, "op.execute('CREATE TABLE limit_v1 (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text); "
                     "CREATE TABLE limit_v2 (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text)')",
               "op.execute('DROP TABLE limit_v1, limit_v2')"),
        "u2": ("u1", "op.execute('INSERT INTO limit_v2 (id, name) SELECT id, name FROM limit_v1')", "pass"),
    })

    result = rollbook(tmp_path, "test-rollback", "--config", str(config), "--json", url=database_url)

    [u2] = [trip for trip in json.loads(result.stdout)["revisions"] if trip["revision"] == "u2"]
    assert {s["table"]: s["rows"] for s in u2["seeded"]} == {"limit_v1": 3, "limit_v2": 3}
    assert u2["upgrade_again"]["status"] == "passed", u2["upgrade_again"]
