"""Sample data that makes every rollback risk of the demo project real.

It is loaded in stages while the demo is migrated, the way an application would have written it:
rows that exist before a migration are changed by it, rows written after it depend on it.
"""

from __future__ import annotations

import json

import psycopg

USERS = 12
ACTIVE_BEFORE_BACKFILL = 4  # 'active' before the data migration: its downgrade wrongly nulls them
DISABLED = 3
NULL_STATUS_BEFORE_BACKFILL = USERS - ACTIVE_BEFORE_BACKFILL - DISABLED  # backfilled to 'active'
OLD_SESSIONS = 4
OLD_PREFERENCES = 6  # values in users.old_preferences, destroyed when the column was dropped
PREFERENCES = 5  # users with preferences written after the add-column migration
LONG_EMAILS = 3  # emails over 100 characters, written after the email column was widened
USER_PREFERENCE_ROWS = 7
CONTENT_JOBS = 6


def load_before_migrations(conn: psycopg.Connection) -> None:
    """Rows written at the first revision (the app schema): users, their jobs, their old sessions."""
    for n in range(1, USERS + 1):
        if n <= ACTIVE_BEFORE_BACKFILL:
            status = "active"
        elif n <= ACTIVE_BEFORE_BACKFILL + DISABLED:
            status = "disabled"
        else:
            status = None
        old = f"theme=classic;n={n}" if n <= OLD_PREFERENCES else None
        conn.execute(
            "INSERT INTO users (id, email, name, status, old_preferences) VALUES (%s, %s, %s, %s, %s)",
            [n, f"user{n}@example.com", f"User {n}", status, old],
        )
    for n in range(1, OLD_SESSIONS + 1):
        conn.execute("INSERT INTO old_sessions (user_id, token) VALUES (%s, %s)", [n, f"token-{n:04d}"])
    for n in range(1, CONTENT_JOBS + 1):
        conn.execute("INSERT INTO content_jobs (user_id, title) VALUES (%s, %s)", [n, f"Job {n}"])


def load_before_backfill(conn: psycopg.Connection) -> None:
    """Rows written after the schema migrations and before the data migration."""
    for n in range(1, PREFERENCES + 1):
        conn.execute("UPDATE users SET preferences = %s WHERE id = %s", [json.dumps({"theme": "dark"}), n])
    for n in range(1, LONG_EMAILS + 1):
        conn.execute("UPDATE users SET email = %s WHERE id = %s",
                     [f"{'long.address.' * 8}{n}@example.com", USERS - n + 1])
    for n in range(1, USER_PREFERENCE_ROWS + 1):
        conn.execute(
            "INSERT INTO user_preferences (user_id, key, value) VALUES (%s, %s, %s)", [n, "language", "en"]
        )
