"""Child processes that end with the process that started them: nothing rollbook starts outlives it.

On Linux a child asks the kernel for a signal when its parent dies (PR_SET_PDEATHSIG). `rollbook run`
gives it to the process running papermill, and the kernel side gives it to pg_dump and pg_restore, so
a SIGKILLed `rollbook run` or kernel leaves no orphan finishing a downgrade or a backup for nobody.
Elsewhere it does nothing, and the watchdogs are the only guard.
"""

from __future__ import annotations

import ctypes
import signal
import sys

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def end_with_parent() -> None:
    """As a subprocess's `preexec_fn`: receive SIGTERM when the parent dies (Linux)."""
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
