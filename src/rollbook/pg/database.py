"""The database being rolled back: its URL (never shown with a password) and rollbook's own connection."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from rollbook.errors import BadInput, DatabaseUnreachable
from rollbook.redaction.connection_secrets import SECRET_KEYWORDS, split_connection_string
from rollbook.redaction.redact import redact_text, with_encodings

CONNECT_TIMEOUT_SECONDS = 10


@dataclass(frozen=True)
class DatabaseTarget:
    """Where rollbook connects. `url` keeps the password; `redacted` is what may be shown or recorded."""

    url: URL = field(repr=False)

    @classmethod
    def from_url(cls, url: str | None, *, source: str = "--database-url (or DATABASE_URL)") -> DatabaseTarget:
        """Parse a URL or libpq keyword string given as `source` (an option or parameter), else DATABASE_URL.

        The password may be in the userinfo, in `?password=` or a `password=` keyword; an `sslpassword`
        is kept for libpq. None of them is ever shown: see `redacted`.
        """
        text = url or os.environ.get("DATABASE_URL", "")
        if not text:
            raise BadInput(
                "No database given. Pass --database-url (a runbook: the database_url parameter) or set DATABASE_URL "
                "to the database to roll back, "
                "for example postgresql+psycopg://app@db.internal/app (put the password in PGPASSWORD "
                "or ~/.pgpass, not in the URL)."
            )
        source = source if url else "DATABASE_URL"
        connection = split_connection_string(text, source=source)
        if connection.kind == "keywords":
            parsed = _url_from_keywords(connection.keywords())
        else:
            try:
                parsed = make_url(connection.without_secrets)
            except ArgumentError:
                raise BadInput(
                    f"The database URL in {source} could not be read. Use the form "
                    "postgresql+psycopg://USER@HOST:PORT/DATABASE or libpq keywords (host=HOST dbname=DATABASE); "
                    "a password containing '@', ':', '/' or '%' must be percent-encoded (%40, %3A, %2F, %25)."
                ) from None
            parsed = parsed.set(password=connection.password)
            if connection.sslpassword is not None:
                parsed = parsed.update_query_dict({"sslpassword": connection.sslpassword})
        if parsed.get_backend_name() != "postgresql":
            raise BadInput(
                f"rollbook works with PostgreSQL only, but the URL names the '{parsed.get_backend_name()}' backend. "
                "Use a postgresql:// or postgresql+psycopg:// URL."
            )
        if parsed.drivername == "postgresql":
            # SQLAlchemy's default driver for postgresql:// differs between versions; rollbook ships psycopg 3.
            parsed = parsed.set(drivername="postgresql+psycopg")
        # A driver the user named stays: env.py and the rehearsal's replays run migrations under the driver
        # their users run them with (asyncpg, psycopg2, pg8000 treat '%' and types differently).
        _require_driver(parsed, source)
        return cls(parsed)

    @property
    def redacted(self) -> str:
        """The URL with its password masked and its sslpassword left out: safe for messages, records and logs."""
        return self.url.difference_update_query(SECRET_KEYWORDS).render_as_string(hide_password=True)

    @property
    def libpq_url_without_secrets(self) -> str:
        """A postgresql:// URL that psql or pg_restore take, with no secret: they read PGPASSWORD or ~/.pgpass."""
        # URL.set ignores None, so it cannot remove a password: _replace can.
        shareable = self.url._replace(drivername="postgresql", password=None).difference_update_query(SECRET_KEYWORDS)
        return shareable.render_as_string(hide_password=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The password and sslpassword this target connects with, if the URL carried them."""
        query = self.url.query
        values = (self.url.password, query.get("sslpassword"))
        return tuple(str(value) for value in values if isinstance(value, str) and value)

    @property
    def database(self) -> str:
        return self.url.database or ""

    @property
    def sqlalchemy_url(self) -> str:
        """The full URL for SQLAlchemy and Alembic, with the driver the user named; never display it."""
        return self.url.render_as_string(hide_password=False)

    @property
    def is_async(self) -> bool:
        """Whether the URL names an asyncio driver (asyncpg, psycopg_async): engines need create_async_engine."""
        return bool(self.url.get_dialect().is_async)

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
        params.update(self._libpq_options())
        return {k: v for k, v in params.items() if v is not None}

    def _libpq_options(self) -> dict[str, str]:
        """The URL's query options as libpq (rollbook's connection, pg_dump) takes them."""
        options = {k: v for k, v in self.url.query.items() if isinstance(v, str)}
        if self.url.get_driver_name() in _LIBPQ_DRIVERS:
            return options
        # asyncpg and pg8000 take options of their own (prepared_statement_cache_size, ...) that libpq
        # refuses; asyncpg spells sslmode `ssl`.
        known = {option.keyword.decode() for option in pq.Conninfo.get_defaults()}
        libpq = {k: v for k, v in options.items() if k in known}
        if options.get("ssl") in _SSL_MODES:
            libpq.setdefault("sslmode", options["ssl"])
        return libpq

    def scrub(self, text: str) -> str:
        """Remove this target's secrets, in any spelling, and any connection-string secret from a text that may
        echo them."""
        return redact_text(text, with_encodings(self.secrets))


# Drivers built on libpq: their URL options are libpq's, as rollbook's own connection and pg_dump take them.
_LIBPQ_DRIVERS = {"psycopg", "psycopg_async", "psycopg2", "psycopg2cffi"}
_SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}

# The package to install for a driver whose PyPI name differs from the name in the URL.
_DRIVER_PACKAGES = {"psycopg": "psycopg[binary]", "psycopg_async": "psycopg[binary]", "psycopg2": "psycopg2-binary",
                    "psycopg2cffi": "psycopg2cffi"}


def _require_driver(url: URL, source: str) -> None:
    """Refuse a URL whose driver SQLAlchemy does not know or that is not installed where rollbook runs."""
    driver = url.get_driver_name()
    try:
        url.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise BadInput(
            f"The database URL in {source} names the driver '{driver}', which SQLAlchemy does not know for "
            "PostgreSQL. Use one it supports (postgresql+psycopg://, postgresql+asyncpg://, postgresql+psycopg2://, "
            "postgresql+pg8000://). Nothing was changed."
        ) from None
    except ImportError:
        package = _DRIVER_PACKAGES.get(driver, driver)
        raise BadInput(
            f"The database URL in {source} names the driver '{driver}', which is not installed where rollbook "
            f"runs. Install it into the same environment as rollbook (pip install '{package}'), or name an "
            "installed driver (postgresql+psycopg://). Nothing was changed."
        ) from None


def _url_from_keywords(keywords: dict[str, str]) -> URL:
    """A SQLAlchemy URL for libpq keywords; a socket directory or a list of hosts or ports stays a query parameter."""
    simple = {name: keywords.pop(name) for name in ("host", "port") if name in keywords
              and not re.search(r"[/,]", keywords[name]) and (name != "port" or keywords[name].isdigit())}
    return URL.create(
        "postgresql+psycopg", username=keywords.pop("user", None), password=keywords.pop("password", None),
        host=simple.get("host"), port=int(simple["port"]) if "port" in simple else None,
        database=keywords.pop("dbname", None), query=keywords,
    )


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
