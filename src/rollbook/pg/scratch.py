"""Throwaway databases on the target's server, for restore checks and for building expected schemas."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from rollbook.errors import RollbookError
from rollbook.pg.database import DatabaseTarget, connect

SCRATCH_PREFIX = "rollbook_scratch_"


class ScratchUnavailable(RollbookError):
    """No scratch database could be created; checks that need one are reported as not checked."""


@contextmanager
def scratch_database(target: DatabaseTarget) -> Iterator[DatabaseTarget]:
    """Create an empty database next to `target`'s, yield a target for it, and drop it afterwards."""
    name = f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"
    with connect(target) as conn:
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
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
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
