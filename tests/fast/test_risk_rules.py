"""The risk rules without a database: a migration's type from what its upgrade does, the risk of undoing it, and
what an empty downgrade means."""

from __future__ import annotations

import pytest

from rollbook.planning.operations import Operation, Risk
from rollbook.planning.risk import MIGRATION_TYPES, assess_downgrade_operations, migration_type, step_risk, type_risk
from rollbook.planning.sql_operations import operations_from_sql


def sql(text: str) -> list[Operation]:
    return operations_from_sql(text)


@pytest.mark.parametrize(("upgrade", "kind"), [
    ("UPDATE users SET status = 'active'", "data_migration"),
    ("DROP TABLE sessions", "drop_table"),
    ("ALTER TABLE users DROP COLUMN legacy", "drop_column"),
    ("ALTER TABLE users ADD COLUMN email text", "add_column"),
    ("CREATE TABLE notes (id int)", "add_table"),
    ("ALTER TABLE users ALTER COLUMN id TYPE bigint", "alter_column"),
    ("CREATE INDEX ix ON users (email)", "add_index"),
    ("COMMENT ON TABLE users IS 'people'", "other"),
    ("DO $$ BEGIN END $$", "unknown"),
    # What an upgrade does to what it adds belongs to adding it: no older data is transformed.
    ("ALTER TABLE users ADD COLUMN score int; UPDATE users SET score = 0", "add_column"),
    ("CREATE TABLE notes (id int); INSERT INTO notes VALUES (1)", "add_table"),
])
def test_the_migration_type_follows_what_the_upgrade_does(upgrade: str, kind: str) -> None:
    assert migration_type(sql(upgrade)) == kind


def test_an_upgrade_that_does_nothing_is_empty() -> None:
    assert migration_type([]) == "empty"


@pytest.mark.parametrize(("kind", "risk"), [
    ("drop_column", Risk.HIGH), ("drop_table", Risk.HIGH), ("data_migration", Risk.HIGH),
    ("alter_column", Risk.MEDIUM), ("add_column", Risk.LOW), ("add_table", Risk.LOW),
    ("unknown", Risk.UNKNOWN), ("add_index", Risk.LOW), ("other", Risk.LOW),
])
def test_each_migration_type_has_the_procedures_risk(kind: str, risk: Risk) -> None:
    assert type_risk(kind) == risk


def test_the_procedures_say_never_to_roll_back_a_drop() -> None:
    assert MIGRATION_TYPES["drop_column"].rollback_safety.startswith("NOT SAFE: the downgrade brings the column back EMPTY")
    assert MIGRATION_TYPES["drop_table"].mitigation == "Never roll back a table drop: restore from backup instead."


def test_undoing_a_drop_is_high_even_when_the_downgrade_only_adds() -> None:
    upgrade = sql("ALTER TABLE users DROP COLUMN legacy")
    downgrade = assess_downgrade_operations(upgrade, sql("ALTER TABLE users ADD COLUMN legacy text"))

    assert step_risk(migration_type(upgrade), downgrade) == Risk.HIGH


def test_undoing_an_added_column_is_low() -> None:
    upgrade = sql("ALTER TABLE users ADD COLUMN email text")
    downgrade = assess_downgrade_operations(upgrade, sql("ALTER TABLE users DROP COLUMN email"))

    assert step_risk(migration_type(upgrade), downgrade) == Risk.LOW


def test_an_alter_column_step_is_judged_by_its_type_changes() -> None:
    widening_back = assess_downgrade_operations([], sql("ALTER TABLE users ALTER COLUMN id TYPE int"))
    relaxing = assess_downgrade_operations([], sql("ALTER TABLE users ALTER COLUMN email DROP NOT NULL"))

    assert step_risk("alter_column", widening_back) == Risk.MEDIUM
    assert step_risk("alter_column", relaxing) == Risk.LOW


def test_a_data_migration_whose_downgrade_changes_no_row_is_not_high() -> None:
    leaves_rows = assess_downgrade_operations([], sql("ALTER TABLE users ALTER COLUMN status DROP NOT NULL"))
    deletes = assess_downgrade_operations([], sql("DELETE FROM users WHERE status = 'new'"))

    assert step_risk("data_migration", leaves_rows) == Risk.LOW
    assert step_risk("data_migration", deletes) == Risk.HIGH


@pytest.mark.parametrize(("upgrade", "risk", "detail", "reason"), [
    ("UPDATE users SET status = 'active'", Risk.LOW,
     "downgrade() does nothing: upgrade() changes only rows, so the schema is already right for the older revision, "
     "and the rows stay as upgrade() left them",
     "A data-only migration with an empty downgrade: nothing is removed; what upgrade() wrote stays."),
    ("ALTER TABLE users DROP COLUMN legacy", Risk.UNKNOWN,
     "downgrade() does nothing: what upgrade() dropped (users.legacy) does not come back, and the schema stays as "
     "the newer revision left it while the version moves back",
     "The data of what upgrade() dropped was lost when upgrade() ran; this downgrade neither brings it back nor "
     "loses more. Older code may need what is missing: restore from backup or fix forward."),
    ("ALTER TABLE users ADD COLUMN email text", Risk.UNKNOWN,
     "downgrade() does nothing although upgrade() changes the schema: the version would move back while the "
     "schema stays as it is",
     "An empty downgrade leaves the database out of step with its revision: review by hand."),
])
def test_an_empty_downgrade_is_judged_by_what_the_upgrade_did(
    upgrade: str, risk: Risk, detail: str, reason: str
) -> None:
    [empty] = assess_downgrade_operations(sql(upgrade), [])

    assert (empty.op, empty.risk, empty.detail, empty.reason) == ("no_op_downgrade", risk, detail, reason)


def test_a_drop_after_an_upgrade_not_read_in_full_is_unknown_not_high() -> None:
    upgrade = sql("DO $$ BEGIN EXECUTE 'ALTER TABLE users ADD COLUMN ' || 'email text'; END $$")
    [drop] = assess_downgrade_operations(upgrade, sql("ALTER TABLE users DROP COLUMN email"))

    assert drop.risk == Risk.UNKNOWN
    assert drop.reason.startswith("upgrade() could not be read in full, so whether it created this column is not known")


def test_the_worst_risk_wins_and_not_understood_is_worse_than_medium() -> None:
    assert Risk.worst([Risk.LOW, Risk.MEDIUM, Risk.LOW]) == Risk.MEDIUM
    assert Risk.worst([Risk.MEDIUM, Risk.UNKNOWN]) == Risk.UNKNOWN
    assert Risk.worst([Risk.LOW, Risk.HIGH, Risk.UNKNOWN]) == Risk.HIGH
    assert Risk.worst([]) == Risk.LOW
