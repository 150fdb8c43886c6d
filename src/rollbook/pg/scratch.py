"""Throwaway databases on the target's server, for restore checks and for building expected schemas.

Each is named `rollbook_scratch_<random>` and carries, in its COMMENT, the identity of the process that
made it (SCRATCH_MARKER and rollbook.pg.process_identity): a run killed outright (SIGKILL) cannot drop
its own, and the next run tells from the comment that its creator is gone (rollbook.pg.stale_scratch).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from rollbook.errors import RollbookError
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.process_identity import current_process

SCRATCH_PREFIX = "rollbook_scratch_"
# The COMMENT ON DATABASE of a scratch database starts with this, followed by its creator's identity as JSON.
SCRATCH_MARKER = "rollbook scratch database, made by "


class ScratchUnavailable(RollbookError):
    """No scratch database could be created; checks that need one are reported as not checked."""


def create_scratch_database(conn: psycopg.Connection, template: str = "template0") -> str:
    """Create a scratch database from `template`, marked with this process's identity; return its name."""
    name = f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"
    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(template)))
    marker = SCRATCH_MARKER + json.dumps(current_process().to_dict(), sort_keys=True)
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(marker)))
    return name


def drop_scratch_database(conn: psycopg.Connection, name: str) -> None:
    """Drop this process's own scratch database, ending any session still in it."""
    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_database(target: DatabaseTarget) -> Iterator[DatabaseTarget]:
    """Create an empty database next to `target`'s, yield a target for it, and drop it afterwards."""
    with connect(target) as conn:
        try:
            name = create_scratch_database(conn)
        except psycopg.errors.InsufficientPrivilege:
            raise ScratchUnavailable(
                f"The role {target.url.username or '(default user)'} may not create databases, so no scratch "
                "database could be made. Grant it CREATEDB, or run with a role that has it, to get this check."
            ) from None
        except psycopg.Error as exc:
            raise ScratchUnavailable(
                f"No scratch database could be created: {target.scrub(str(exc)).strip()}"
            ) from None
        try:
            yield DatabaseTarget(target.url.set(database=name))
        finally:
            drop_scratch_database(conn, name)
