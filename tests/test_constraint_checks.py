"""Keys a downgrade restores or inserts into: the rows that would make it fail are counted (for a partial
unique index on an expression, a primary key, NULLs included, and rows an INSERT brings back), and the
counts hold when the downgrade runs."""

from __future__ import annotations

import pytest
import sqlalchemy.exc
from alembic import command
from alembic_projects import project_at_head

from rollbook.pg.database import connect
from rollbook.planning.plan import plan_downgrade

RESTORE_KEYS = ("CREATE UNIQUE INDEX ux_live_email ON accounts (lower(email)) WHERE deleted_at IS NULL; "
                "ALTER TABLE accounts ADD PRIMARY KEY (id)")
REVISIONS = {
    "ffff00000001": (None, 'op.execute("CREATE TABLE accounts (id int, email text, deleted_at timestamptz)")',
                     'op.execute("DROP TABLE accounts")'),
    "ffff00000002": ("ffff00000001", 'op.execute("COMMENT ON TABLE accounts IS \'keys dropped for an import\'")',
                     f"op.execute({RESTORE_KEYS!r})"),
}
ROWS = """
INSERT INTO accounts VALUES
  (1, 'Ann@example.com', NULL),
  (2, 'ann@example.com', NULL),      -- the same live address as row 1, once lower-cased
  (2, 'ann@example.com', now()),     -- repeats id 2; a deleted row is outside the index
  (NULL, 'bob@example.com', NULL),   -- no id
  (5, NULL, NULL)
"""


def test_partial_expression_index_and_primary_key_count_exactly_what_makes_them_fail(tmp_path, database_url):
    project, target, config = project_at_head(tmp_path / "project", database_url, REVISIONS, ROWS)

    plan = plan_downgrade(target, project, "-1")

    counted = {op.op: op.rows_affected for op in plan.steps[0].operations}
    assert counted == {"create_unique_index": 1, "add_primary_key": 2}
    assert plan.verdict.code == "do_not_downgrade"
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="ux_live_email"):
        command.downgrade(config, "-1")

    with connect(target) as conn:
        conn.execute("DELETE FROM accounts WHERE id IS NULL OR (id = 2 AND deleted_at IS NOT NULL)")
        conn.execute("UPDATE accounts SET email = 'ann.b@example.com' WHERE id = 2")

    fixed = plan_downgrade(target, project, "-1")

    assert {op.op: op.rows_affected for op in fixed.steps[0].operations} == {
        "create_unique_index": 0, "add_primary_key": 0}
    command.downgrade(config, "-1")


PLAN_REVISIONS = {
    "ffff00000011": (None, 'op.execute("CREATE TABLE plans (id serial PRIMARY KEY, code text UNIQUE, name text)")',
                     'op.execute("DROP TABLE plans")'),
    "ffff00000012": ("ffff00000011", "op.execute(\"DELETE FROM plans WHERE code IN ('free', 'pro')\")",
                     "op.execute(\"INSERT INTO plans (code, name) VALUES ('free', 'Free'), ('pro', 'Pro')\")"),
}


def test_rows_a_downgrade_inserts_are_counted_when_their_key_is_taken(tmp_path, database_url):
    # Since the upgrade removed the 'pro' plan, somebody created it again.
    project, target, config = project_at_head(tmp_path / "project", database_url, PLAN_REVISIONS,
                                              "INSERT INTO plans (code, name) VALUES ('pro', 'Pro (new)')")

    plan = plan_downgrade(target, project, "-1")

    [insert] = plan.steps[0].operations
    assert insert.rows_affected == 1 and insert.fails
    assert plan.verdict.code == "do_not_downgrade"
    with pytest.raises(sqlalchemy.exc.IntegrityError, match="plans_code_key"):
        command.downgrade(config, "-1")

    with connect(target) as conn:
        conn.execute("DELETE FROM plans")
    assert plan_downgrade(target, project, "-1").steps[0].operations[0].rows_affected == 0
    command.downgrade(config, "-1")
