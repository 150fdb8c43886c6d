"""Fixtures: one real PostgreSQL server per session, a fresh database per test.

Set ROLLBOOK_TEST_DATABASE_URL to the URL of a role that may CREATE DATABASE and CREATE ROLE
to run against an external server instead of the embedded one.
"""

from __future__ import annotations

import http.server
import os
import secrets
import signal
import threading
import warnings
from collections.abc import Iterator

import psycopg
import pytest
from pg import PgServer, app_password, database_name
from sqlalchemy.engine import make_url

from rollbook.demo.server import DEMO_CONFIG, install_demo
from rollbook.pg.database import DatabaseTarget
from rollbook.pg.embedded_server import start_embedded_server
from rollbook.project.migrations import MigrationProject, load_project

EXTERNAL_URL_VARIABLE = "ROLLBOOK_TEST_DATABASE_URL"


def pytest_configure(config: pytest.Config) -> None:
    """Let Ctrl-C reach this session and every process its tests start, however the suite was launched.

    A shell starts a background command (`.ci/run &` in a script) with SIGINT ignored, and every process it
    starts inherits that: a plain papermill run told to stop with Ctrl-C would then never hear it, which is
    no operator's terminal. The tests send Ctrl-C as a terminal does, so they need its default.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    """The session's server, with the `rollbook_app` login role created."""
    external = os.environ.get(EXTERNAL_URL_VARIABLE)
    if external:
        admin_url = (
            make_url(external)
            .set(drivername="postgresql+psycopg")
            .render_as_string(hide_password=False)
        )
        # Roles are cluster-wide: a unique name keeps concurrent sessions from clobbering it.
        server = PgServer(
            admin_url=admin_url,
            app_user=f"rollbook_app_{secrets.token_hex(4)}",
            app_password=app_password(),
        )
        server.create_app_role()
        try:
            yield server
        finally:
            try:
                server.drop_app_role()
            except psycopg.errors.DependentObjectsStillReferenced as error:
                warnings.warn(f"{server.app_user} left on the external server: {error}", stacklevel=2)
            server.close()
        return

    embedded = start_embedded_server(tmp_path_factory.mktemp("pg"))
    server = PgServer(
        admin_url=embedded.url(),
        app_user="rollbook_app",
        app_password=app_password(),
        bin_dir=embedded.bin_dir,
        embedded=embedded,
    )
    try:
        server.create_app_role()
        yield server
    finally:
        server.close()
        embedded.stop(delete_data=True)


@pytest.fixture
def database_url(pg_server: PgServer) -> Iterator[str]:
    """The admin URL of a fresh empty database, dropped after the test."""
    url = pg_server.create_database()
    try:
        yield url
    finally:
        pg_server.drop_database(database_name(url))


@pytest.fixture
def demo_url(database_url: str) -> str:
    """A fresh database holding the bundled demo project at head, with its sample data."""
    install_demo(DatabaseTarget.from_url(database_url))
    return database_url


@pytest.fixture
def demo_project() -> MigrationProject:
    """The bundled demo Alembic project."""
    return load_project(DEMO_CONFIG)


class _Health(http.server.BaseHTTPRequestHandler):
    """An application's health endpoint: /health answers 200, anything else 503."""

    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    """The base URL of a local application whose /health answers 200."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
