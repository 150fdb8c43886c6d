"""The kernel side of a runbook: read papermill's parameters and show rollbook's errors as a reader needs them."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from typing import Any

from IPython import get_ipython
from IPython.display import display

from rollbook.database import DatabaseTarget
from rollbook.errors import RollbookError
from rollbook.migrations import MigrationProject, load_project
from rollbook.rollback_run import RollbackRun
from rollbook.run_context import RunContext, describe_run
from rollbook.runbook_parameters import read_plan_parameters, read_rollback_parameters, read_status_parameters

_READ_ONLY_PARAMETERS = {"status": read_status_parameters, "plan": read_plan_parameters}


@dataclass(frozen=True)
class ReadOnlyRunbook:
    """A status or plan runbook's checked parameters, its database and project, and who runs it."""

    parameters: dict[str, Any]
    target: DatabaseTarget = field(repr=False)
    project: MigrationProject = field(repr=False)
    context: RunContext


def start_rollback_run(runbook: str = "rollback") -> RollbackRun:
    """Check the parameters papermill injected, then connect and record who, where and when."""
    shell = _shell()
    show_rollbook_errors_briefly(shell)
    parameters = read_rollback_parameters(shell.user_ns, frozenset(shell.user_ns_hidden))
    return RollbackRun.start(parameters, runbook=runbook)


def open_read_only_runbook(runbook: str) -> ReadOnlyRunbook:
    """Check a read-only runbook's parameters (`status` or `plan`) and record who, where and when."""
    shell = _shell()
    show_rollbook_errors_briefly(shell)
    parameters = _READ_ONLY_PARAMETERS[runbook](shell.user_ns, frozenset(shell.user_ns_hidden))
    target = DatabaseTarget.from_url(parameters["database_url"] or None)
    project = load_project(parameters["alembic_config"])
    context = describe_run(target, project, runbook=runbook, parameters=parameters, operator=getpass.getuser(),
                           operator_from="login name")
    return ReadOnlyRunbook(parameters, target, project, context)


def show_rollbook_errors_briefly(shell: Any) -> None:
    """Show an expected failure as its result and one message, not a traceback into rollbook's code.

    The cell still fails (papermill stops there and reports the error); the record shows what was
    refused or what failed and what to do next.
    """

    def handler(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
        result = getattr(value, "result", None)
        if result is not None:
            display(result)
        message = [f"{etype.__name__}: {value}"]
        # IPython leaves showing the error to a custom handler; this is how ipykernel sends it to the notebook.
        shell._showtraceback(etype, value, message)
        return message

    shell.set_custom_exc((RollbookError,), handler)


def _shell() -> Any:
    shell = get_ipython()
    if shell is None:
        raise RollbookError("Runbooks run in a Jupyter kernel: execute this notebook with papermill.")
    return shell
