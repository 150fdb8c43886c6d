"""Live counts straight from the library: read-only, one scan per table, honest when a count fails."""

from __future__ import annotations

import psycopg
from pg import fingerprint

from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.data_loss import count_affected_rows
from rollbook.planning.operations import LiveCheck, TableName

USERS = TableName(None, "users")


def test_a_failing_check_is_not_counted_and_does_not_hide_the_others(demo_url):
    preferences = LiveCheck("non_null_values", USERS, ("preferences",))
    broken = LiveCheck("matching_rows", USERS, predicate="status::integer = 1")  # 'active' is no integer
    with connect(DatabaseTarget.from_url(demo_url)) as conn:
        counts = count_affected_rows(conn, [preferences, broken])

    assert counts.checks[preferences].rows == 5
    assert counts.checks[broken].rows is None
    # Said in words, not in PostgreSQL's own message ("invalid input syntax for type integer: ...").
    assert counts.checks[broken].note == ("users could not be counted (a value in the table cannot be evaluated by "
                                          "the migration's condition): not counted, review by hand")
    assert counts.tables[USERS].rows == 12


def test_a_check_cannot_write_even_if_its_predicate_tries(demo_url):
    before = fingerprint(demo_url)
    sneaky = LiveCheck("matching_rows", USERS, predicate="(SELECT count(*) FROM (DELETE FROM users RETURNING 1) d) > 0")
    nextval = LiveCheck("matching_rows", USERS, predicate="nextval('users_id_seq') > 0")
    with connect(DatabaseTarget.from_url(demo_url)) as conn:
        counts = count_affected_rows(conn, [sneaky, nextval])

    assert counts.checks[sneaky].rows is None and counts.checks[nextval].rows is None
    assert "would write, and live checks only read" in counts.checks[nextval].note
    assert fingerprint(demo_url) == before


def test_a_locked_table_is_reported_not_waited_for(demo_url):
    check = LiveCheck("all_rows", USERS)
    target = DatabaseTarget.from_url(demo_url)
    with psycopg.connect(**target.connect_kwargs()) as locker:
        locker.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE")
        with connect(target) as conn:
            counts = count_affected_rows(conn, [check], lock_timeout_ms=200)

    assert counts.checks[check].rows is None
    assert "locked by another session" in counts.checks[check].note
