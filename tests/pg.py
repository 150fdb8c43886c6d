"""The PostgreSQL server the tests run against: embedded by default, external on request."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL, make_url

from rollbook.pg.database import DatabaseTarget
from rollbook.pg.embedded_server import EmbeddedServer

DATABASE_PREFIX = "rbtest_"


def psycopg_kwargs(url: str) -> dict[str, Any]:
    """Connection arguments for psycopg from a SQLAlchemy URL, as rollbook itself derives them."""
    return DatabaseTarget.from_url(url).connect_kwargs()


@dataclass
class PgServer:
    """A server on which tests create throwaway databases; `admin_url` may create databases."""

    admin_url: str
    app_user: str
    app_password: str = field(repr=False)
    bin_dir: Path | None = None
    embedded: EmbeddedServer | None = None
    _admin: psycopg.Connection[Any] | None = field(default=None, repr=False)

    def url(self, database: str, user: str | None = None, password: str | None = None) -> str:
        """A URL for `database`: the admin's credentials by default, the app role's by name."""
        parsed = make_url(self.admin_url)
        if user is not None:
            if password is None and user == self.app_user:
                password = self.app_password
            parsed = parsed.set(username=user, password=password)
        return parsed.set(database=database).render_as_string(hide_password=False)

    def admin(self) -> psycopg.Connection[Any]:
        """A shared autocommit connection as the admin role to its own database."""
        if self._admin is None or self._admin.closed:
            self._admin = psycopg.connect(**psycopg_kwargs(self.admin_url), autocommit=True)
        return self._admin

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database the app role may use; returns its admin URL."""
        name = name or f"{DATABASE_PREFIX}{secrets.token_hex(6)}"
        admin = self.admin()
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        admin.execute(
            sql.SQL("GRANT ALL ON DATABASE {} TO {}").format(
                sql.Identifier(name), sql.Identifier(self.app_user)
            )
        )
        url = self.url(name)
        # Since PostgreSQL 15 only the database owner may create in `public`.
        with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
            conn.execute(
                sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(sql.Identifier(self.app_user))
            )
        return url

    def drop_database(self, name: str) -> None:
        """Drop `name`, disconnecting whoever is still in it."""
        self.admin().execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    def close(self) -> None:
        """Close the shared admin connection."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def create_app_role(self) -> None:
        """Create (or reset) the app login role with the current password."""
        admin = self.admin()
        exists = admin.execute(
            "SELECT 1 FROM pg_roles WHERE rolname = %s", (self.app_user,)
        ).fetchone()
        statement = sql.SQL(
            "ALTER ROLE {} LOGIN PASSWORD {}" if exists else "CREATE ROLE {} LOGIN PASSWORD {}"
        )
        admin.execute(
            statement.format(sql.Identifier(self.app_user), sql.Literal(self.app_password))
        )

    def drop_app_role(self) -> None:
        """Drop the app role; its databases must be gone already."""
        self.admin().execute(
            sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(self.app_user))
        )


def app_password() -> str:
    """A password that needs escaping in a URL (`%`, `@`, `:`)."""
    return f"p%ss@rd:x{secrets.token_hex(4)}"


def database_name(url: str) -> str:
    """The database a URL points at."""
    name = make_url(url).database
    assert name, url
    return name


def url_with(url: str, **changes: Any) -> str:
    """`url` with some parts replaced (`URL.set` keywords)."""
    parsed: URL = make_url(url).set(**changes)
    return parsed.render_as_string(hide_password=False)


def fingerprint(url: str) -> tuple[Any, ...]:
    """The public schema's columns and a digest of every table's rows: equal before and after means unchanged."""
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        columns = conn.execute(
            "SELECT table_name, column_name, data_type, character_maximum_length, is_nullable "
            "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 2"
        ).fetchall()
        tables = sorted({c[0] for c in columns})
        digests = [
            conn.execute(
                sql.SQL("SELECT md5(string_agg(t::text, ',' ORDER BY t::text)) FROM {} t").format(
                    sql.Identifier(name)
                )
            ).fetchone()
            for name in tables
        ]
    return tuple(columns), tuple(digests)
