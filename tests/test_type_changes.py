"""Type changes the plan must count right: one that succeeds can still change values (rounded to a
smaller scale or to an integer, rewritten by USING), and one to an enum the downgrade re-creates
fails on values the new labels lack, although today's type still has them."""

from __future__ import annotations

import pytest
import sqlalchemy.exc
from alembic import command
from alembic_projects import project_at_head

from rollbook.pg.database import connect
from rollbook.planning.plan import plan_downgrade

SCHEMA = "CREATE TABLE prices (id int PRIMARY KEY, amount numeric(12,4), qty numeric(8,2), email text)"
NARROWING = ("ALTER TABLE prices ALTER COLUMN amount TYPE numeric(10,2), ALTER COLUMN qty TYPE integer, "
             "ALTER COLUMN email TYPE varchar(20) USING left(email, 20)")
REVISIONS = {
    "dddd00000001": (None, f"op.execute({SCHEMA!r})", 'op.execute("DROP TABLE prices")'),
    "dddd00000002": ("dddd00000001", 'op.execute("COMMENT ON TABLE prices IS \'widened\'")', f"op.execute({NARROWING!r})"),
}
ROWS = """
INSERT INTO prices VALUES
  (1, 1.234, 1.5, 'short@x.io'),
  (2, 2.5, 2, 'a-very-long-address@example.com'),
  (3, 3.0001, 3.25, NULL),
  (4, NULL, NULL, 'another-long-address@example.com'),
  (5, 7, 7, 'ok@x.io')
"""


def test_rounded_and_rewritten_values_are_counted_exactly_as_the_downgrade_changes_them(tmp_path, database_url):
    project, target, config = project_at_head(tmp_path / "project", database_url, REVISIONS, ROWS)
    with connect(target) as conn:
        before = conn.execute("SELECT id, amount::text, qty::text, email FROM prices ORDER BY id").fetchall()

    plan = plan_downgrade(target, project, "-1")

    counted = {(op.op, op.column): op.rows_affected for op in plan.steps[0].operations}
    assert counted == {
        ("alter_column_type", "amount"): 0, ("convert_values", "amount"): 2,  # 1.234 and 3.0001
        ("alter_column_type", "qty"): 0, ("convert_values", "qty"): 2,  # 1.5 and 3.25
        ("alter_column_type", "email"): 0, ("convert_values", "email"): 2,  # cut to 20 characters by USING
    }
    assert plan.verdict.code == "loses_data"
    assert plan.verdict.reasons[1] == (
        "dddd00000002: rounds the values of prices.qty that integer cannot hold exactly: 2 values changed")

    command.downgrade(config, "-1")
    with connect(target) as conn:
        after = conn.execute("SELECT id, amount::numeric(12,4)::text, qty::numeric(8,2)::text, email FROM prices "
                             "ORDER BY id").fetchall()
    changed = {column: sum(1 for old, new in zip(before, after) if old[i] != new[i])
               for i, column in enumerate(("id", "amount", "qty", "email")) if i}
    assert changed == {"amount": 2, "qty": 2, "email": 2}


ENUM_REVISIONS = {
    "eeee00000001": (None, "op.execute(\"CREATE TYPE status AS ENUM ('new', 'paid'); CREATE TABLE bills (id int, s status)\")",
                     'op.execute("DROP TABLE bills; DROP TYPE status")'),
    "eeee00000002": ("eeee00000001", "op.execute(\"ALTER TYPE status ADD VALUE 'refunded'\")",
                     "op.execute(\"ALTER TYPE status RENAME TO status_old; CREATE TYPE status AS ENUM ('new', 'paid'); "
                     "ALTER TABLE bills ALTER COLUMN s TYPE status USING s::text::status; DROP TYPE status_old\")"),
}


def test_an_enum_recreated_without_a_value_counts_the_rows_holding_it_against_the_new_labels(tmp_path, database_url):
    project, target, config = project_at_head(tmp_path / "project", database_url, ENUM_REVISIONS,
                                           "INSERT INTO bills VALUES (1, 'new'), (2, 'refunded'), (3, 'refunded'), (4, NULL)")

    plan = plan_downgrade(target, project, "-1")

    step = plan.steps[0]
    assert step.migration_type == "add_enum_value"
    [retype] = [op for op in step.operations if op.op == "alter_column_type"]
    # Today's status still has 'refunded': only the labels the downgrade creates tell the truth.
    assert retype.rows_affected == 2 and retype.fails
    assert retype.count_note == "checked against the labels of status as this downgrade creates it"
    assert plan.verdict.code == "do_not_downgrade"
    with pytest.raises(sqlalchemy.exc.DataError, match="invalid input value for enum status"):
        command.downgrade(config, "-1")
