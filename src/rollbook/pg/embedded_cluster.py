"""Where an embedded server's cluster and socket live, and whether a server runs on them.

Layout of `base_dir`: data/ (the cluster), sock/ (the unix socket directory), server.log. Under root, when
`nobody` cannot reach `base_dir` (pytest's temp dirs are mode 700) or the socket path would be too long, data/
and sock/ are symlinks to a private directory under the system temp dir, and orphans of such directories are
swept at the next start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from rollbook.pg.embedded_install import Account, as_account, shared_temp_root, trusted_dir

LOG_NAME = "server.log"
_RUNTIME_PREFIX = "rollbook-pgrun-"
_OWNER_FILE = "rollbook-owner"
# sockaddr_un.sun_path is 108 bytes; leave room for "/.s.PGSQL.<port>" and the NUL.
_MAX_SOCKET_DIR_LEN = 107 - len("/.s.PGSQL.65535") - 1


def prepare_runtime_dirs(base_dir: Path, account: Account | None) -> tuple[Path, Path]:
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
    runtime = Path(tempfile.mkdtemp(prefix=_RUNTIME_PREFIX, dir=shared_temp_root()))
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


def _account_can_traverse(directory: Path, account: Account) -> bool:
    result = subprocess.run(
        ["/bin/sh", "-c", 'cd "$1"', "sh", str(directory)],
        cwd="/",
        capture_output=True,
        check=False,
        **as_account(account),
    )
    return result.returncode == 0


def _chown(account: Account | None, *paths: Path) -> None:
    if account is not None:
        for path in paths:
            os.chown(path, account.uid, account.gid)


def _sweep_orphaned_runtimes() -> None:
    """Remove relocated clusters whose base dir no longer points at them and that are idle."""
    for runtime in shared_temp_root().glob(f"{_RUNTIME_PREFIX}*"):
        try:
            if not trusted_dir(runtime):
                continue
            owner = Path((runtime / _OWNER_FILE).read_text())
            data_link = owner / "data"
            if data_link.is_symlink() and data_link.resolve() == (runtime / "data"):
                continue
            if read_postmaster_pid(runtime / "data") is not None:
                continue
            shutil.rmtree(runtime)
        except OSError:
            continue


def delete_cluster(base_dir: Path) -> None:
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


def read_postmaster_pid(data_dir: Path) -> int | None:
    """The pid in `postmaster.pid` if that process is alive and is a postmaster for `data_dir`."""
    try:
        first_line = (data_dir / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first_line)
    except (OSError, ValueError):
        return None
    return pid if is_postmaster(pid, data_dir) else None


def is_postmaster(pid: int, data_dir: Path) -> bool:
    # A stale postmaster.pid can name a recycled pid: check it is our server.
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (
        pid_alive(pid)
        and bool(args)
        and os.path.basename(args[0]) == b"postgres"
        and os.fsencode(str(data_dir.resolve())) in args
    )


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie (an unreaped exit counts as gone)."""
    try:
        proc_stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    state = proc_stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")

