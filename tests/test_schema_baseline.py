"""The schema check compares the change a rollback made, against a snapshot taken before it.

The shape comes from a real history whose database also holds a table `create_all` made and no
migration makes: checked against the target's schema alone, a correct rollback was "verification
failed", with advice to restore. Drift that was there before the run is named as drift, not a failure.
"""

from __future__ import annotations

import psycopg
from alembic import command
from alembic_projects import project_at_head
from pg import psycopg_kwargs
from runbook_runs import current_revision, papermill

from rollbook.execution.expected_schema import check_schema_matches
from rollbook.pg.database import connect
from rollbook.pg.schema_snapshot import read_schema
from rollbook.planning.plan import plan_downgrade

REVISIONS = {
    "ffff00000001": (None, 'op.execute("CREATE TABLE accounts (id int PRIMARY KEY, name text)")',
                     'op.execute("DROP TABLE accounts")'),
    # MLflow's spans: a CHECK constraint, a generated column, a default, an index and a serial sequence.
    "ffff00000002": ("ffff00000001", 'op.execute("CREATE TABLE spans (id serial PRIMARY KEY, start_ns bigint NOT NULL, '
                     "end_ns bigint, created timestamptz DEFAULT now(), "
                     "duration_ns bigint GENERATED ALWAYS AS (end_ns - start_ns) STORED, "
                     "CONSTRAINT ck_spans_order CHECK (end_ns >= start_ns)); "
                     'CREATE INDEX ix_spans_start ON spans (start_ns)")',
                     'op.execute("DROP TABLE spans")'),
}
# What create_all made next to the migrations: a table no migration makes, and an extra index.
DRIFT = "CREATE TABLE legacy_audit (id int); CREATE INDEX accounts_name_idx ON accounts (name)"


def test_drift_from_before_the_rollback_is_reported_and_does_not_fail_the_check(tmp_path, database_url):
    project, target, config = project_at_head(tmp_path / "project", database_url, REVISIONS, DRIFT)
    with connect(target) as conn:
        before = read_schema(conn)
    command.downgrade(config, "-1")

    check = check_schema_matches(target, project, "ffff00000001", before=before, start="ffff00000002")
    without_baseline = check_schema_matches(target, project, "ffff00000001")

    assert check.status == "passed", check.to_text()
    assert check.drift == (
        "index accounts_name_idx on accounts: not made by the migrations (in the database before the rollback: "
        "btree (name))",
        "table legacy_audit: not made by the migrations (in the database before the rollback)",
    )
    assert "the change from ffff00000002 to ffff00000001" in check.reason
    assert "2 difference(s) were there before the rollback began: drift" in check.reason
    assert "Drift: already different" in check.to_text()
    assert without_baseline.status == "failed"  # the same database, judged without its baseline


def test_a_change_the_rollback_did_not_make_right_still_fails_next_to_the_drift(tmp_path, database_url):
    project, target, config = project_at_head(tmp_path / "project", database_url, REVISIONS, DRIFT)
    with connect(target) as conn:
        before = read_schema(conn)
    command.downgrade(config, "-1")
    with psycopg.connect(**psycopg_kwargs(database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE spans (id int)")  # as if the downgrade had left a table behind

    check = check_schema_matches(target, project, "ffff00000001", before=before, start="ffff00000002")

    assert check.status == "failed"
    assert check.differences == ("table spans: not expected (present in the database)",)
    assert len(check.drift) == 2


def test_a_rollback_dropping_a_table_with_a_check_and_a_generated_column_runs_and_verifies_despite_drift(
        tmp_path, database_url):
    project, target, _ = project_at_head(tmp_path / "project", database_url, REVISIONS,
                                         f"{DRIFT}; INSERT INTO spans (start_ns, end_ns) VALUES (1, 5)")
    assert plan_downgrade(target, project, "-1").verdict.code == "loses_data"

    run = papermill(tmp_path, "rollback", "-p", "environment", "staging", "-p", "operator", "alice",
                    "-p", "accept_data_loss", "True", "-p", "execute", "True",
                    "-p", "backup_dir", str(tmp_path / "backups"), url=database_url, config=project.config_path)

    assert run.returncode == 0, run.error or run.stderr
    assert current_revision(database_url) == ["ffff00000001"]
    assert "| schema | passed |" in run.text
    assert "table legacy_audit: not made by the migrations (in the database before the rollback)" in run.text
