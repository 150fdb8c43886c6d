"""The schema check after a rollback: the live schema against the schema the target revision builds from scratch.

Everything runs against the real server: the expected schema is built in a scratch database by the
migrations themselves, through rollbook's own Alembic context (never the project's env.py).
"""

from __future__ import annotations

import json
import secrets
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from pg import PgServer, database_name, psycopg_kwargs
from psycopg import sql

from rollbook.execution.expected_schema import SchemaBuildFailed, SchemaCheck, build_schema_at, check_schema_matches
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.schema_comparison import compare_schemas
from rollbook.pg.schema_objects import SchemaSnapshot
from rollbook.pg.schema_snapshot import OWNED_SEQUENCE, read_schema
from rollbook.project.migrations import MigrationProject, alembic_config_for, load_project

HEAD = "0607bc5b8536"
BEFORE_BACKFILL = "0607bc5b8535"
BEFORE_USER_PREFERENCES = "0607bc5b8533"
WITH_OLD_PREFERENCES = "0607bc5b8531"

REALWORLD = Path(__file__).parent / "projects" / "realworld"


def run_sql(url: str, statements: str) -> None:
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
        conn.execute(statements)


def snapshot(url: str, **kwargs) -> SchemaSnapshot:
    with connect(DatabaseTarget.from_url(url)) as conn:
        return read_schema(conn, **kwargs)


def test_demo_at_head_matches_head(demo_url, demo_project):
    check = check_schema_matches(DatabaseTarget.from_url(demo_url), demo_project, "head")

    assert check.status == "passed", check.to_text()
    assert check.revision == HEAD and check.differences == ()
    assert "3 tables, 14 columns, 6 constraints" in check.reason
    assert json.loads(json.dumps(check.to_dict()))["status"] == "passed"
    assert check._repr_markdown_().startswith(f"**Schema check against revision `{HEAD}`: PASSED**")


def test_snapshot_reads_the_catalog_and_round_trips_through_json(demo_url):
    snap = snapshot(demo_url, exclude=("alembic_version",))

    assert [t.name for t in snap.tables] == ["content_jobs", "user_preferences", "users"]
    users = snap.table("users")
    assert users is not None
    columns = {c.name: c for c in users.columns}
    assert columns["email"].type == "character varying(255)" and not columns["email"].nullable
    assert columns["created_at"].default == "now()"
    assert columns["id"].default == f"nextval({OWNED_SEQUENCE})"
    assert {(k.name, k.kind, k.definition) for k in users.constraints} == {
        ("users_pkey", "primary key", "PRIMARY KEY (id)"),
        ("users_email_key", "unique", "UNIQUE (email)"),
    }
    jobs = snap.table("content_jobs")
    assert jobs is not None
    assert {c.name: c.default for c in jobs.columns}["state"] == "'queued'::character varying"
    assert SchemaSnapshot.from_dict(json.loads(json.dumps(snap.to_dict()))) == snap
    assert snap.table("alembic_version") is None
    assert snapshot(demo_url).table("alembic_version") is not None


def test_after_a_rollback_the_database_matches_the_target_and_not_head(demo_url, demo_project):
    target = DatabaseTarget.from_url(demo_url)
    config = alembic_config_for(demo_project, target)

    command.downgrade(config, BEFORE_BACKFILL)
    assert check_schema_matches(target, demo_project, BEFORE_BACKFILL).status == "passed"
    # The last revision is a data migration: no schema check can tell it was undone.
    assert check_schema_matches(target, demo_project, HEAD).status == "passed"

    command.downgrade(config, BEFORE_USER_PREFERENCES)
    assert check_schema_matches(target, demo_project, BEFORE_USER_PREFERENCES).status == "passed"
    against_head = check_schema_matches(target, demo_project, HEAD)

    assert against_head.status == "failed"
    assert against_head.differences == (
        "table old_sessions: not expected (present in the database)",
        "table user_preferences: missing (the target revision has it)",
    )
    assert "2 difference(s)" in against_head.reason
    assert "- table user\\_preferences: missing" in against_head._repr_markdown_()


def test_a_rollback_that_re_adds_columns_matches_although_column_order_differs(database_url, demo_project):
    target = DatabaseTarget.from_url(database_url)
    config = alembic_config_for(demo_project, target)
    command.upgrade(config, HEAD)
    command.downgrade(config, WITH_OLD_PREFERENCES)  # re-adds users.old_preferences as the last column

    assert check_schema_matches(target, demo_project, WITH_OLD_PREFERENCES).status == "passed"
    against_head = check_schema_matches(target, demo_project, HEAD)
    assert against_head.differences == (
        "table old_sessions: not expected (present in the database)",
        "table user_preferences: missing (the target revision has it)",
        "users.email: type character varying(255) expected, character varying(100) found",
        "column users.old_preferences: not expected (present in the database)",
    )


def test_hand_made_drift_is_reported_by_object(demo_url, demo_project):
    run_sql(demo_url, """
        ALTER TABLE users ALTER COLUMN email TYPE varchar(300);
        ALTER TABLE users ALTER COLUMN status SET DEFAULT 'active';
        ALTER TABLE users ALTER COLUMN status SET NOT NULL;
        ALTER TABLE users DROP CONSTRAINT users_email_key;
        ALTER TABLE content_jobs RENAME CONSTRAINT content_jobs_user_id_fkey TO fk_jobs_user;
        CREATE INDEX ix_users_status ON users (status);
        CREATE TABLE user_settings (id serial PRIMARY KEY);
        CREATE TYPE mood AS ENUM ('ok', 'meh');
        CREATE SCHEMA legacy;
        CREATE TABLE legacy.old_users (id int);
        -- Not drift: the serial sequence of users.id under another name.
        ALTER SEQUENCE users_id_seq RENAME TO legacy_users_id_seq;
    """)

    check = check_schema_matches(DatabaseTarget.from_url(demo_url), demo_project, HEAD)

    assert check.status == "failed"
    assert check.differences == (
        "schema legacy: not expected (present in the database)",
        "table legacy.old_users: not expected (present in the database)",
        "constraint FOREIGN KEY (user_id) REFERENCES users(id) on content_jobs: "
        "named content_jobs_user_id_fkey expected, fk_jobs_user found",
        "table user_settings: not expected (present in the database)",
        "users.email: type character varying(255) expected, character varying(300) found",
        "users.status: nullable expected, NOT NULL found",
        "users.status: no default expected, default 'active'::character varying found",
        "index ix_users_status on users: not expected (present in the database: btree (status))",
        "constraint users_email_key on users: missing (UNIQUE (email))",
        "enum type mood: not expected (present in the database)",
    )
    text = check.to_text()
    assert text.startswith(f"Schema check against revision {HEAD}: FAILED")
    assert "  - index ix_users_status on users: not expected" in text


def test_dropped_index_and_changed_index_are_named(database_url, demo_project):
    run_sql(database_url, "CREATE TABLE things (a int, b int); CREATE INDEX ix_things_a ON things (a);"
                          "CREATE INDEX ix_things_b ON things (b)")
    expected = snapshot(database_url)
    run_sql(database_url, "DROP INDEX ix_things_a; DROP INDEX ix_things_b; CREATE INDEX ix_things_b ON things (b, a)")

    difference = compare_schemas(expected, snapshot(database_url))

    assert not difference.matches
    assert difference.differences == (
        "index ix_things_b on things: btree (b) expected, btree (b, a) found",
        "index ix_things_a on things: missing (btree (a))",
    )
    assert difference.to_dict() == {"matches": False, "differences": list(difference.differences)}
    assert compare_schemas(expected, expected).to_text() == "The schemas match."


def test_revision_none_on_an_empty_database_passes(database_url, demo_project):
    empty = check_schema_matches(DatabaseTarget.from_url(database_url), demo_project, None)

    assert empty.status == "passed" and empty.revision is None
    assert "base (no migrations: an empty schema)" in empty.to_text()
    assert "0 tables, 0 columns compared" in empty.reason


def test_revision_none_compares_against_an_empty_schema(demo_url, demo_project):
    demo = check_schema_matches(DatabaseTarget.from_url(demo_url), demo_project, None)

    assert demo.status == "failed"
    assert demo.differences == (
        "table content_jobs: not expected (present in the database)",
        "table user_preferences: not expected (present in the database)",
        "table users: not expected (present in the database)",
    )


def test_a_role_without_createdb_gets_not_checked(pg_server: PgServer, demo_url, demo_project):
    admin = pg_server.admin()
    row = admin.execute(
        "SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = %s", [pg_server.app_user]
    ).fetchone()
    user, password, extra_role = pg_server.app_user, pg_server.app_password, None
    if row is None or row[0]:
        # The fixture's app role may create databases here: make one that may not.
        extra_role = user = f"rollbook_nocreatedb_{secrets.token_hex(4)}"
        password = f"p%ss@rd:{secrets.token_hex(4)}"
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOCREATEDB PASSWORD {}").format(
            sql.Identifier(user), sql.Literal(password)))
    try:
        url = pg_server.url(database_name(demo_url), user=user, password=password)
        check = check_schema_matches(DatabaseTarget.from_url(url), demo_project, HEAD)
    finally:
        if extra_role:
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(extra_role)))

    assert check.status == "not_checked" and check.differences == ()
    assert "CREATEDB" in check.reason and user in check.reason
    for view in (check.to_text(), check._repr_markdown_(), json.dumps(check.to_dict())):
        assert password not in view
    assert "NOT CHECKED" in check.to_text()


def test_an_unknown_revision_is_not_checked(demo_url, demo_project):
    check = check_schema_matches(DatabaseTarget.from_url(demo_url), demo_project, "feedface")
    assert check.status == "not_checked" and "feedface" in check.reason


# A project whose env.py refuses to run: rollbook must build its schema without it.
ENV_PY = 'raise RuntimeError("env.py was run; rollbook must never run it")\n'
FIRST = '''
import sqlalchemy as sa
from alembic import op

revision = "aaa111"
down_revision = None


def upgrade():
    op.create_table(
        "things",
        sa.Column("id", sa.Integer, sa.Identity(always=True), primary_key=True),
        sa.Column("name", sa.String(20), server_default="x"),
    )
    op.create_index("ix_things_name", "things", ["name"])
    op.execute("CREATE TYPE mood AS ENUM ('ok', 'meh')")
    op.execute("CREATE SEQUENCE ticket_numbers START 1000")
'''
SECOND = '''
from alembic import op

revision = "bbb222"
down_revision = "aaa111"


def upgrade():
    op.execute("ALTER TABLE things ADD COLUMN broken no_such_type")
'''


@pytest.fixture
def strict_project(tmp_path: Path) -> MigrationProject:
    (tmp_path / "versions").mkdir()
    (tmp_path / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\npath_separator = os\n")
    (tmp_path / "env.py").write_text(ENV_PY)
    (tmp_path / "versions" / "aaa111_first.py").write_text(textwrap.dedent(FIRST))
    (tmp_path / "versions" / "bbb222_broken.py").write_text(textwrap.dedent(SECOND))
    project = load_project(tmp_path / "alembic.ini")
    project.version_table, project.version_table_schema = "rb_version", "meta"
    return project


def test_build_runs_migrations_without_env_py_and_uses_the_version_table(database_url, strict_project):
    build_schema_at(strict_project, "aaa111", DatabaseTarget.from_url(database_url))

    snap = snapshot(database_url)
    assert [t.display_name for t in snap.tables] == ["meta.rb_version", "things"]
    things = snap.table("things")
    assert things is not None
    assert [(c.name, c.identity, c.default) for c in things.columns] == [
        ("id", "always", None), ("name", None, "'x'::character varying")]
    assert [(i.name, i.description) for i in things.indexes] == [("ix_things_name", "btree (name)")]
    assert [(e.name, e.labels) for e in snap.enums] == [("mood", ("ok", "meh"))]
    assert [(s.name, s.start) for s in snap.sequences] == [("ticket_numbers", 1000)]
    with psycopg.connect(**psycopg_kwargs(database_url)) as conn:
        assert conn.execute("SELECT version_num FROM meta.rb_version").fetchall() == [("aaa111",)]

    check = check_schema_matches(DatabaseTarget.from_url(database_url), strict_project, "aaa111")
    assert check.status == "passed", check.to_text()
    assert "1 sequence, 1 enum type" in check.reason


def test_a_migration_that_cannot_be_built_gives_not_checked(database_url, strict_project):
    target = DatabaseTarget.from_url(database_url)
    with pytest.raises(SchemaBuildFailed, match="upgrade of revision bbb222 failed after 1 of 2"):
        build_schema_at(strict_project, "bbb222", target)

    check = check_schema_matches(target, strict_project, "bbb222")

    assert check.status == "not_checked" and check.revision == "bbb222"
    assert "bbb222" in check.reason and 'type "no_such_type" does not exist' in check.reason
    assert check.differences == ()


def test_realworld_project_migrated_by_its_own_env_py_matches(database_url, monkeypatch):
    """Identity columns, a second schema and named constraints, migrated the way the team does it."""
    monkeypatch.chdir(REALWORLD)
    monkeypatch.setenv("REALWORLD_DB_URL", database_url)
    monkeypatch.setattr(sys, "path", [*sys.path])
    command.upgrade(Config(str(REALWORLD / "alembic.ini")), "head")
    command.downgrade(Config(str(REALWORLD / "alembic.ini")), "c4d5e6f7a8b9")
    project = load_project(REALWORLD / "alembic.ini")
    target = DatabaseTarget.from_url(database_url)

    assert check_schema_matches(target, project, "c4d5e6f7a8b9").status == "passed"
    against_head = check_schema_matches(target, project, "head")
    assert against_head.status == "failed"
    assert "column customers.email_domain: missing (the target revision has it)" in against_head.differences
    assert any(d.startswith("index ix_customers_email_domain on customers: missing") for d in against_head.differences)
    assert "billing.invoices.amount: type numeric(14,2) expected, numeric(10,2) found" in against_head.differences


def test_schema_check_result_views_agree():
    check = SchemaCheck("failed", "abc", ("table _tmp_: missing (the target revision has it)",), "1 difference")
    assert check.to_dict() == {"status": "failed", "revision": "abc",
                               "differences": ["table _tmp_: missing (the target revision has it)"],
                               "reason": "1 difference", "drift": []}
    assert "- table \\_tmp\\_: missing" in check._repr_markdown_()
    assert not check.passed
