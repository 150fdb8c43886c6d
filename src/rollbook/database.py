"""The database being rolled back: its URL (never shown with a password) and rollbook's own connection."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, quote_plus

import psycopg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from rollbook.errors import BadInput, DatabaseUnreachable

CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class DatabaseTarget:
    """Where rollbook connects. `url` keeps the password; `redacted` is what may be shown or recorded."""

    url: URL = field(repr=False)

    @classmethod
    def from_url(cls, url: str | None) -> DatabaseTarget:
        """Parse a URL given on the command line or taken from DATABASE_URL."""
        text = url or os.environ.get("DATABASE_URL", "")
        if not text:
            raise BadInput(
                "No database given. Pass --database-url (a runbook: the database_url parameter) or set DATABASE_URL to the "
                "database to roll back, "
                "for example postgresql+psycopg://app@db.internal/app (put the password in PGPASSWORD "
                "or ~/.pgpass, not in the URL)."
            )
        try:
            parsed = make_url(text)
        except ArgumentError:
            raise BadInput(
                "The database URL could not be read. Use the form postgresql+psycopg://USER@HOST:PORT/DATABASE; "
                "a password containing '@', ':', '/' or '%' must be percent-encoded (%40, %3A, %2F, %25)."
            ) from None
        if parsed.get_backend_name() != "postgresql":
            raise BadInput(
                f"rollbook works with PostgreSQL only, but the URL names the '{parsed.get_backend_name()}' backend. "
                "Use a postgresql:// or postgresql+psycopg:// URL."
            )
        if parsed.drivername != "postgresql+psycopg":
            # SQLAlchemy's default driver for postgresql:// differs between versions; rollbook ships psycopg 3.
            parsed = parsed.set(drivername="postgresql+psycopg")
        return cls(parsed)

    @property
    def redacted(self) -> str:
        """The URL with its password masked: safe for messages, records and logs."""
        return self.url.render_as_string(hide_password=True)

    @property
    def database(self) -> str:
        return self.url.database or ""

    @property
    def sqlalchemy_url(self) -> str:
        """The full URL for SQLAlchemy and Alembic; never display it."""
        return self.url.render_as_string(hide_password=False)

    def connect_kwargs(self) -> dict[str, Any]:
        """libpq connection parameters; unset ones fall back to PG* variables and ~/.pgpass as usual."""
        params: dict[str, Any] = {
            "host": self.url.host,
            "port": self.url.port,
            "user": self.url.username,
            "password": self.url.password,
            "dbname": self.url.database,
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": "rollbook",
        }
        params.update({k: v for k, v in self.url.query.items() if isinstance(v, str)})
        return {k: v for k, v in params.items() if v is not None}

    def scrub(self, text: str) -> str:
        """Remove this target's password, as typed or URL-encoded, from a text that may echo it."""
        password = str(self.url.password or "")
        if password:
            for variant in sorted({password, quote(password, safe=""), quote_plus(password)}, key=len, reverse=True):
                text = text.replace(variant, "***")
        return text


@contextmanager
def connect(target: DatabaseTarget, *, autocommit: bool = True) -> Iterator[psycopg.Connection]:
    """rollbook's own connection to the target, independent of the project's env.py."""
    try:
        conn = psycopg.connect(autocommit=autocommit, **target.connect_kwargs())
    except psycopg.OperationalError as exc:
        raise DatabaseUnreachable(_unreachable_message(target, exc)) from None
    try:
        yield conn
    finally:
        conn.close()


def _unreachable_message(target: DatabaseTarget, exc: psycopg.OperationalError) -> str:
    detail = target.scrub(str(exc)).strip().splitlines()
    reason = " ".join(line.strip() for line in detail if line.strip())
    if "password authentication failed" in reason or "no password supplied" in reason:
        advice = (
            "Check the user name and password: set PGPASSWORD, add the password to ~/.pgpass, or put it "
            "percent-encoded in DATABASE_URL."
        )
    elif "does not exist" in reason and "database" in reason:
        advice = "Check the database name in the URL."
    else:
        advice = "Check that the server is running, that host and port are right, and that it accepts connections."
    reason = reason if reason.endswith(("?", ".")) else f"{reason}."
    return f"Cannot connect to {target.redacted}: {reason} {advice} Nothing was changed."
