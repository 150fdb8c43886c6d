"""The process that runs papermill for `rollbook run`, in its own process group under the runner's watchdog.

It writes how papermill ended (completed, error, timeout, interrupted, dead_kernel, not_started) into
the file the spec names, which the executed notebook alone does not tell.

Stopping: SIGTERM, SIGINT or SIGHUP (forwarded by `rollbook run`, or sent by the kernel when
`rollbook run` dies) creates the run's stop file, so no further step starts, and interrupts the
kernel, so the running step stops: a downgrade step's transaction rolls back, pg_dump is stopped and
its partial file removed, and the runbook files its record as interrupted. papermill runs in a worker
thread so that nbclient installs no signal handlers of its own (they would shut the kernel down
instead of interrupting it).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import papermill
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.exceptions import PapermillExecutionError
from traitlets.config import Config

from rollbook.records.archive import Archive, default_root
from rollbook.records.run_record import RUN_ID_VARIABLE
from rollbook.redaction.redact import collect_secrets, redact_text

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
JOIN_SECONDS = 0.2


class _StopRequest:
    """The operator's request to stop: the stop file for steps yet to start, SIGINT for the one running."""

    def __init__(self, stop_file: Path, run_id: str) -> None:
        self.stop_file = stop_file
        self.run_id = run_id
        self.requested = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            return  # one interrupt only: a second one could land in the handler filing the record
        self.requested = True
        self.stop_file.touch()
        if not self._run_started():
            return  # a kernel still starting would die of SIGINT; its first step sees the stop file instead
        for pid in _kernel_pids():
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def _run_started(self) -> bool:
        archive = Archive(default_root())
        return archive.progress(self.run_id) is not None or archive.filed_record(self.run_id) is not None


def _kernel_pids() -> list[int]:
    """This process's children: the kernel (papermill starts nothing else)."""
    me = str(os.getpid())
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if stat.read_text().rsplit(")", 1)[1].split()[1] == me:
                children.append(int(stat.parent.name))
        except (OSError, IndexError):
            continue
    return children


def _execute(spec: dict[str, Any]) -> str:
    config = Config()
    # Unix sockets in the run's private folder instead of TCP on localhost: no other user of the host can
    # reach the kernel, and runs started at the same moment cannot cross their messages.
    config.KernelManager.transport = "ipc"
    config.KernelManager.ip = spec["ipc_path"]
    try:
        papermill.execute_notebook(
            spec["input"], spec["output"], parameters=spec["parameters"], kernel_name="python3",
            progress_bar=False, execution_timeout=spec["cell_timeout"], cwd=spec["cwd"], config=config,
            # Without these, a timed-out cell can be recorded as completed and a kernel can take seconds to stop.
            interrupt_on_timeout=True, shutdown_kernel="immediate", log_output=spec["log_output"],
        )
    except PapermillExecutionError as error:
        return "timeout" if error.ename == "KeyboardInterrupt" else "error"
    except CellTimeoutError:
        return "timeout"
    except DeadKernelError:
        return "dead_kernel"
    except RuntimeError as error:
        # nbclient raises a bare RuntimeError when the kernel does not answer at start-up.
        print(f"rollbook: the kernel did not start: {error}", file=sys.stderr)
        return "not_started"
    return "completed"


class _RedactingFormatter(logging.Formatter):
    """A log line with the run's secrets scrubbed: cell outputs reach the terminal before the record is scrubbed."""

    def __init__(self, secrets: frozenset[str]) -> None:
        super().__init__("%(message)s")
        self.secrets = secrets

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record), self.secrets)


def _log_to_stderr(parameters: dict[str, Any]) -> None:
    """papermill's log (each cell as it starts, its outputs) on stderr, as its own command line shows it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(collect_secrets(os.environ, parameters)))
    logger = logging.getLogger("papermill")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def run(spec_path: Path) -> str:
    """Execute the notebook described by the JSON spec, stopping it on a signal; return how it ended."""
    spec = json.loads(spec_path.read_text())
    if spec["log_output"]:
        _log_to_stderr(spec["parameters"])
    stop = _StopRequest(Path(spec["stop_file"]), os.environ[RUN_ID_VARIABLE])
    for signum in STOP_SIGNALS:
        signal.signal(signum, stop.handle)
    if os.getppid() != spec["parent_pid"]:
        # `rollbook run` died before the parent-death signal was armed: stop at once.
        stop.handle(signal.SIGTERM, None)
    endings: list[str] = []
    worker = threading.Thread(target=lambda: endings.append(_execute(spec)), daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(JOIN_SECONDS)  # short joins: the main thread must stay free to run the signal handler
    ending = endings[0] if endings else "error"
    return "interrupted" if stop.requested and ending != "completed" else ending


if __name__ == "__main__":
    spec_file = Path(sys.argv[1])
    how = run(spec_file)
    Path(json.loads(spec_file.read_text())["ending_file"]).write_text(how)
