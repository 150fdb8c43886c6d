"""Which database a connection really reached: what records name and what guards compare."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

_IDENTITY_SQL = """
SELECT current_database(),
       (SELECT oid FROM pg_database WHERE datname = current_database()),
       current_setting('server_version'),
       current_setting('server_version_num')::int,
       (SELECT system_identifier::text FROM pg_control_system()),
       pg_postmaster_start_time()::text,
       current_user
"""


@dataclass(frozen=True)
class DatabaseIdentity:
    """The server and database a connection reached; never holds a password."""

    database: str
    database_oid: int
    server_version: str
    server_version_num: int
    system_identifier: str
    server_started: str
    user: str

    @property
    def major_version(self) -> int:
        return self.server_version_num // 10000

    @property
    def fingerprint(self) -> tuple[str, int]:
        """Equal for two connections to the same database of the same cluster, and only then."""
        return (self.system_identifier, self.database_oid)

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "server_version": self.server_version,
            "system_identifier": self.system_identifier,
            "server_started": self.server_started,
            "user": self.user,
        }

    def to_text(self) -> str:
        return (f"database {self.database} on PostgreSQL {self.server_version} "
                f"(system identifier {self.system_identifier}), as {self.user}")


def read_identity(conn: psycopg.Connection[Any]) -> DatabaseIdentity:
    """Ask the server who it is: database, version and the cluster's system identifier."""
    row = conn.execute(_IDENTITY_SQL).fetchone()
    assert row is not None
    database, oid, version, version_num, system_identifier, started, user = row
    return DatabaseIdentity(database, oid, version, version_num, system_identifier, started, user)
