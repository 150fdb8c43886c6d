"""The bundled demo: an Alembic project with one revision per migration type, and data that makes each risk real."""

from __future__ import annotations

import contextlib
import os
import shlex
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from psycopg import sql
from sqlalchemy.engine import URL

from rollbook.demo.project import sample_data
from rollbook.errors import BadInput
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.embedded_server import (
    EmbeddedServer,
    running_server_pid,
    start_embedded_server,
    stop_embedded_server,
)
from rollbook.project.migrations import alembic_config_for, load_project

DEMO_CONFIG = Path(__file__).parent / "project" / "alembic.ini"
FIRST_REVISION = "0607bc5b8530"
BEFORE_BACKFILL = "0607bc5b8535"
HEAD = "0607bc5b8536"
DEMO_DATABASE = "rollbook_demo"
DEMO_DIR_VARIABLE = "ROLLBOOK_DEMO_DIR"


def install_demo(target: DatabaseTarget) -> None:
    """Migrate the (empty) database at `target` to the demo's head, loading sample data on the way."""
    project = load_project(DEMO_CONFIG)
    config = alembic_config_for(project, target)
    command.upgrade(config, FIRST_REVISION)
    with connect(target) as conn:
        sample_data.load_before_migrations(conn)
    command.upgrade(config, BEFORE_BACKFILL)
    with connect(target) as conn:
        sample_data.load_before_backfill(conn)
    command.upgrade(config, HEAD)


class DemoAlreadyRunning(BadInput):
    """A demo server another `demo up` started is running in the folder this one was told to use."""


@dataclass(frozen=True)
class DemoEnvironment:
    """A running demo database, reachable over the server's unix socket (no password anywhere)."""

    database_url: str
    config_path: Path
    server_dir: Path

    def shell_exports(self) -> str:
        return (
            f"export DATABASE_URL={shlex.quote(self.database_url)}\n"
            f"export ALEMBIC_CONFIG={shlex.quote(str(self.config_path))}\n"
            f"export {DEMO_DIR_VARIABLE}={shlex.quote(str(self.server_dir))}\n"
        )


@dataclass(frozen=True)
class DemoStopped:
    """What `demo down` did: the folder it looked in and the pid of the server it stopped, if one ran."""

    server_dir: Path
    pid: int | None

    def message(self) -> str:
        if self.pid is None:
            return f"No demo server was running in {self.server_dir}; nothing to stop."
        return f"Stopped the demo server in {self.server_dir} (pid {self.pid}) and deleted its data."


def demo_up(environ: Mapping[str, str] = os.environ) -> DemoEnvironment:
    """Start a detached embedded server with a fresh demo database at head.

    Each call takes a fresh folder, so two shells never share a demo; with ROLLBOOK_DEMO_DIR set, that
    folder is used, and a server already running there (another shell's) is refused, never replaced.
    """
    configured = environ.get(DEMO_DIR_VARIABLE)
    if configured:
        state_dir = Path(configured).absolute()
        pid = running_server_pid(state_dir)
        if pid is not None:
            raise DemoAlreadyRunning(
                f"A demo server is already running in {state_dir} (pid {pid}), started by an earlier "
                f"`rollbook demo up`. Use it (its shell has DATABASE_URL set), stop it with "
                f"`{DEMO_DIR_VARIABLE}={shlex.quote(str(state_dir))} rollbook demo down`, or unset "
                f"{DEMO_DIR_VARIABLE} to start a demo of your own in a fresh folder. Nothing was changed.")
        stop_embedded_server(state_dir, delete_data=True)  # a cluster left by a server that is gone
        state_dir.mkdir(parents=True, exist_ok=True)
    else:
        state_dir = Path(tempfile.mkdtemp(prefix=f"rollbook-demo-{os.getuid()}-"))
    server = start_embedded_server(state_dir, tie_to_parent=False)
    database_url = create_demo_database(server)
    return DemoEnvironment(database_url, DEMO_CONFIG, state_dir)


def demo_down(environ: Mapping[str, str] = os.environ) -> DemoStopped:
    """Stop the server of the demo named by ROLLBOOK_DEMO_DIR (which `demo up` exports) and delete its data."""
    configured = environ.get(DEMO_DIR_VARIABLE)
    if not configured:
        running = [f"{d} (pid {pid})" for d in sorted(Path(tempfile.gettempdir()).glob("rollbook-demo-*"))
                   if (pid := running_server_pid(d)) is not None]
        raise BadInput(
            f"{DEMO_DIR_VARIABLE} is not set, so no demo is named: run `rollbook demo down` in the shell where "
            f'`eval "$(rollbook demo up)"` set it, or set it to the demo\'s folder. '
            + (f"Demo servers running: {', '.join(running)}." if running else "No demo server is running.")
            + " Nothing was stopped.")
    state_dir = Path(configured).absolute()
    stopped = DemoStopped(state_dir, stop_embedded_server(state_dir, delete_data=True))
    with contextlib.suppress(OSError):
        state_dir.rmdir()  # the folder `demo up` made, now empty; a folder holding anything else stays
    return stopped


def create_demo_database(server: EmbeddedServer) -> str:
    with connect(DatabaseTarget.from_url(server.url())) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DEMO_DATABASE)))
    # The unix socket with trust authentication: the URL carries no password to print or record.
    database_url = URL.create(
        "postgresql+psycopg", username="postgres", database=DEMO_DATABASE,
        query={"host": str(server.socket_dir), "port": str(server.port)},
    ).render_as_string(hide_password=False)
    install_demo(DatabaseTarget.from_url(database_url))
    return database_url
