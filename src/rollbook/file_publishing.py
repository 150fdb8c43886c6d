"""Publishing a fully written file under its final name, never over an existing one.

Records (records/archive_files.py) and backups (recovery/backup.py) are written under a temporary name, synced,
and only then given their final name, so that a reader never sees half a file and a name, once taken, is
never replaced. A hard link is the atomic "create this name unless it exists"; on a file system without
hard links the name is first reserved exclusively (O_EXCL), then the content is moved over the
reservation, which no other writer can hold.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# What link(2) answers on a file system (or mount) that has no hard links, or cannot link these two names.
_NO_HARD_LINKS = (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK)


def publish_new(temporary: Path, target: Path) -> bool:
    """Give the written `temporary` file the name `target` unless that name is taken; False if it is.

    After a hard link both names exist (the caller removes `temporary`); after the fallback `temporary`
    is gone. Either way `target` holds `temporary`'s content and mode; sync its folder to keep the name.
    """
    try:
        os.link(temporary, target)
        return True
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in _NO_HARD_LINKS:
            raise
    # A file system without hard links: reserve the name exclusively, then move the content over it.
    try:
        os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return False
    os.replace(temporary, target)
    return True


def write_all(fd: int, data: bytes) -> None:
    """Write every byte (os.write may write fewer) and fsync."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def write_durably(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Create `path` (it must not exist), write `data` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def fsync_directory(path: Path) -> None:
    """Sync a folder, so that the names created or removed in it survive a crash."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
