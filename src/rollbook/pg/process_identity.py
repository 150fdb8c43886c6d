"""Which process, on which machine, made something: enough to tell later whether that process is gone.

A pid alone is not enough: pids are reused, and a container or a reboot starts them again. The identity
adds the host name, the boot (Linux's boot_id), the pid namespace and the process's start time (clock
ticks since boot, from /proc/<pid>/stat), so "the same pid with another start time" means the creator
is gone. Where /proc cannot be read the identity is incomplete and nothing is ever judged gone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessIdentity:
    """One process: host, boot, pid namespace, pid and start time (None where the system does not say)."""

    host: str
    boot_id: str | None
    pid_namespace: str | None
    pid: int
    start_ticks: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProcessIdentity | None:
        """The identity written by `to_dict`, or None if `data` is not one."""
        try:
            return cls(str(data["host"]), _optional_str(data["boot_id"]), _optional_str(data["pid_namespace"]),
                       int(data["pid"]), None if data["start_ticks"] is None else int(data["start_ticks"]))
        except (KeyError, TypeError, ValueError):
            return None

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host}"


def current_process() -> ProcessIdentity:
    """This process's identity."""
    pid = os.getpid()
    return ProcessIdentity(socket.gethostname(), _boot_id(), _pid_namespace(), pid, _start_ticks(pid))


def is_gone(creator: ProcessIdentity) -> bool | None:
    """True if `creator` provably no longer runs, False if it does, None if this machine cannot tell.

    Only a process of this machine (same host, boot and pid namespace) can be judged; a reboot since
    (another boot_id on the same host and namespace) ends every process of the previous boot.
    """
    here = current_process()
    if creator.host != here.host or creator.pid_namespace is None or creator.pid_namespace != here.pid_namespace:
        return None
    if creator.boot_id is None or here.boot_id is None or creator.start_ticks is None:
        return None
    if creator.boot_id != here.boot_id:
        return True
    started = _start_ticks(creator.pid)
    # No such pid now, or the pid belongs to a process started at another time: the creator is gone.
    return started is None or started != creator.start_ticks


def _start_ticks(pid: int) -> int | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Field 22 (starttime); the command name (field 2) is in parentheses and may hold spaces or ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    return int(fields[19])


def _boot_id() -> str | None:
    try:
        return (PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink(PROC / "self/ns/pid")
    except OSError:
        return None


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
