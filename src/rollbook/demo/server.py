"""The bundled demo: an Alembic project with one revision per migration type, and data that makes each risk real."""

from __future__ import annotations

import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from psycopg import sql
from sqlalchemy.engine import URL

from rollbook.demo.project import sample_data
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.embedded_server import EmbeddedServer, start_embedded_server, stop_embedded_server
from rollbook.project.migrations import alembic_config_for, load_project

DEMO_CONFIG = Path(__file__).parent / "project" / "alembic.ini"
FIRST_REVISION = "0607bc5b8530"
BEFORE_BACKFILL = "0607bc5b8535"
HEAD = "0607bc5b8536"
DEMO_DATABASE = "rollbook_demo"


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
        )


def demo_state_dir() -> Path:
    """Where `demo up` keeps its server: ROLLBOOK_DEMO_DIR, or a per-user folder in the temp dir."""
    configured = os.environ.get("ROLLBOOK_DEMO_DIR")
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"rollbook-demo-{os.getuid()}"


def demo_up(state_dir: Path | None = None) -> DemoEnvironment:
    """Start a detached embedded server with a fresh demo database at head; replaces a previous demo."""
    state_dir = state_dir or demo_state_dir()
    demo_down(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    server = start_embedded_server(state_dir, tie_to_parent=False)
    database_url = create_demo_database(server)
    return DemoEnvironment(database_url, DEMO_CONFIG, state_dir)


def demo_down(state_dir: Path | None = None) -> None:
    """Stop the server started by `demo up` and delete its data; does nothing if none runs."""
    state_dir = state_dir or demo_state_dir()
    if (state_dir / "data").exists():
        stop_embedded_server(state_dir, delete_data=True)


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
