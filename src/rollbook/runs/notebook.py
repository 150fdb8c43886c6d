"""The kernel side of a runbook: read papermill's parameters, record the run, and show failures as a reader
needs them."""

from __future__ import annotations

import getpass
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from IPython import get_ipython
from IPython.display import display

from rollbook.errors import RollbookError
from rollbook.outcomes import Outcome
from rollbook.pg.database import DatabaseTarget
from rollbook.project.migrations import MigrationProject
from rollbook.project.status import read_revisions_or_none
from rollbook.records.run_record import RecordView, RunRecorder, outcome_of_error
from rollbook.runs.backup import BackupRun
from rollbook.runs.context import RunContext, open_run
from rollbook.runs.parameters import (
    read_backup_parameters,
    read_plan_parameters,
    read_restore_parameters,
    read_rollback_parameters,
    read_rollback_test_parameters,
    read_status_parameters,
)
from rollbook.runs.rehearsal import RollbackTestRun
from rollbook.runs.restore import RestoreRun
from rollbook.runs.rollback import RollbackRun

_READ_ONLY_PARAMETERS = {"status": read_status_parameters, "plan": read_plan_parameters}
P = TypeVar("P")
R = TypeVar("R")


@dataclass
class _Session:
    """What the error handler needs to file the record of a run that stops: its recorder, its database, and
    the project whose version table says where that database stands (for runs that can move it)."""

    recorder: RunRecorder | None = None
    target: DatabaseTarget | None = None
    project: MigrationProject | None = None


@dataclass(frozen=True)
class ReadOnlyRunbook:
    """A status or plan runbook's checked parameters, its database and project, and who runs it."""

    parameters: dict[str, Any]
    target: DatabaseTarget = field(repr=False)
    project: MigrationProject = field(repr=False)
    context: RunContext
    recorder: RunRecorder = field(repr=False)

    def finish(self) -> RecordView:
        """File the run's record in the archive and show it."""
        self.recorder.finish(Outcome.SUCCEEDED)
        return self.recorder.view()


def start_rollback_run() -> RollbackRun:
    """Check the parameters papermill injected, then connect and record who, where and when."""
    return _start_run("rollback", read_rollback_parameters, RollbackRun.start)


def start_backup_run() -> BackupRun:
    """The backup runbook: check the parameters papermill injected, then connect and record who, where and when."""
    return _start_run("backup", read_backup_parameters, BackupRun.start)


def start_restore_run() -> RestoreRun:
    """The restore runbook: check the parameters papermill injected, then connect and record who, where and when."""
    return _start_run("restore", read_restore_parameters, RestoreRun.start)


def start_rollback_test_run() -> RollbackTestRun:
    """The rollback-test runbook: check its parameters, then record who, where and when."""
    # The database named is never changed: a stopped run has no revision to record, hence no tracking.
    return _start_run("rollback-test", read_rollback_test_parameters, RollbackTestRun.start, tracks_revisions=False)


def _start_run(runbook: str, read: Callable[[dict[str, Any], frozenset[str]], P],
               start: Callable[[P, RunRecorder], R], *, tracks_revisions: bool = True) -> R:
    """Record the run from its first step on: its parameters, then whatever `start` connects and records."""
    shell, session = _shell(), _Session()
    show_rollbook_errors_briefly(shell, session)
    recorder = session.recorder = RunRecorder.begin(runbook)
    with recorder.step("parameters"):
        parameters = read(shell.user_ns, frozenset(shell.user_ns_hidden))
    run = start(parameters, recorder)
    session.target = run.target  # type: ignore[attr-defined]
    if tracks_revisions:
        # A stopped run that can move the database records where it stands.
        session.project = run.project  # type: ignore[attr-defined]
    return run


def open_read_only_runbook(runbook: str) -> ReadOnlyRunbook:
    """Check a read-only runbook's parameters (`status` or `plan`) and record who, where and when."""
    shell, session = _shell(), _Session()
    show_rollbook_errors_briefly(shell, session)
    recorder = session.recorder = RunRecorder.begin(runbook)
    with recorder.step("parameters"):
        parameters = _READ_ONLY_PARAMETERS[runbook](shell.user_ns, frozenset(shell.user_ns_hidden))
    opened = open_run(recorder, database_url=parameters["database_url"], alembic_config=parameters["alembic_config"],
                      alembic_x_args=parameters["alembic_x_args"],
                      parameters=parameters, operator=getpass.getuser(), operator_from="login name")
    session.target = opened.target
    return ReadOnlyRunbook(parameters, opened.target, opened.project, opened.context, recorder)


def show_rollbook_errors_briefly(shell: Any, session: _Session) -> None:
    """When a cell fails: show what was refused or failed, file the run's record, and stop the notebook.

    rollbook's own errors show as their message, not a traceback into rollbook's code; anything else
    keeps its traceback. The cell still fails, so papermill stops there and reports the error.
    """

    def handler(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
        result = getattr(value, "result", None)
        if result is not None:
            display(result)
        message = f"{etype.__name__}: {value}"
        if session.target is not None:
            message = session.target.scrub(message)
        _file_stopped_run(session, value, message)
        if issubclass(etype, RollbookError):
            stb = [message]
        else:
            stb = shell.InteractiveTB.structured_traceback(etype, value, tb, tb_offset=tb_offset)
        # IPython leaves showing the error to a custom handler; this is how ipykernel sends it to the notebook.
        shell._showtraceback(etype, value, stb)
        return stb

    shell.set_custom_exc((Exception, KeyboardInterrupt), handler)


def _file_stopped_run(session: _Session, error: BaseException, message: str) -> None:
    recorder = session.recorder
    if recorder is None or recorder.summary["outcome"] != Outcome.RUNNING:
        return
    outcome = outcome_of_error(error)
    if session.target is not None and session.project is not None:
        revisions = read_revisions_or_none(session.target, session.project)
        if revisions is not None:
            recorder.update(revision_after=list(revisions))
    recorder.finish(outcome, message=message, failed_step=getattr(error, "step", None) or recorder.stopped_at)
    display(recorder.view())


def _shell() -> Any:
    shell = get_ipython()
    if shell is None:
        raise RollbookError("Runbooks run in a Jupyter kernel: execute this notebook with papermill.")
    return shell
