"""The process that runs papermill for `rollbook run`, in its own process group under the runner's watchdog.

Its exit code tells the runner how papermill ended, which the executed notebook alone does not:
0 completed, 10 a cell raised, 11 a cell timed out (interrupted), 12 the kernel died, 13 no kernel started.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import papermill
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from papermill.exceptions import PapermillExecutionError
from traitlets.config import Config

EXIT_CODES = {"completed": 0, "error": 10, "timeout": 11, "dead_kernel": 12, "not_started": 13}


def run(spec_path: Path) -> str:
    """Execute the notebook described by the JSON spec; return how it ended."""
    spec = json.loads(spec_path.read_text())
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
            interrupt_on_timeout=True, shutdown_kernel="immediate",
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


if __name__ == "__main__":
    sys.exit(EXIT_CODES[run(Path(sys.argv[1]))])
