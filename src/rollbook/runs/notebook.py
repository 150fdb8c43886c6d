"""The kernel side of a runbook: read papermill's parameters, record the run, and show failures as a reader
needs them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from IPython import get_ipython
from IPython.display import display

from rollbook.errors import RollbookError
from rollbook.outcomes import Outcome
from rollbook.pg.database import DatabaseTarget
from rollbook.project.migrations import MigrationProject
from rollbook.project.status import read_revisions_or_none
from rollbook.records.run_record import RunRecorder, outcome_of_error
from rollbook.runs.backup import BackupRun
from rollbook.runs.lost_data_restore import LostDataRestoreRun
from rollbook.runs.plan import PlanRun
from rollbook.runs.rehearsal import RollbackTestRun
from rollbook.runs.restore import RestoreRun
from rollbook.runs.rollback import RollbackRun
from rollbook.runs.runbook import Runbook
from rollbook.runs.status import StatusRun

# Every runbook rollbook ships, by the name of its notebook (runbooks/NAME.ipynb).
RUNBOOKS: dict[str, type[Runbook[Any]]] = {runbook.name: runbook for runbook in (
    StatusRun, PlanRun, BackupRun, RollbackRun, RestoreRun, LostDataRestoreRun, RollbackTestRun)}
R = TypeVar("R", bound=Runbook[Any])


@dataclass
class _Session:
    """What the error handler needs to file the record of a run that stops: its recorder, its database, and
    the project whose version table says where that database stands (for runs that can move it)."""

    recorder: RunRecorder | None = None
    target: DatabaseTarget | None = None
    project: MigrationProject | None = None


def start_run(runbook: type[R]) -> R:
    """Check the parameters papermill injected, then connect and record who, where and when.

    The run is recorded from its first step on: a cell that fails from here files the record of the run.
    """
    shell, session = _shell(), _Session()
    show_rollbook_errors_briefly(shell, session)
    recorder = session.recorder = RunRecorder.begin(runbook.name)
    with recorder.step("parameters"):
        parameters = runbook.read_parameters(shell.user_ns, frozenset(shell.user_ns_hidden))
    run = runbook.start(parameters, recorder)
    session.target = run.target
    if runbook.moves_database:
        # A stopped run that can move the database records where it stands.
        session.project = run.project
    return run


def start_status_run() -> StatusRun:
    """The status runbook."""
    return start_run(StatusRun)


def start_plan_run() -> PlanRun:
    """The plan runbook."""
    return start_run(PlanRun)


def start_backup_run() -> BackupRun:
    """The backup runbook."""
    return start_run(BackupRun)


def start_rollback_run() -> RollbackRun:
    """The rollback runbook."""
    return start_run(RollbackRun)


def start_restore_run() -> RestoreRun:
    """The restore runbook."""
    return start_run(RestoreRun)


def start_lost_data_restore_run() -> LostDataRestoreRun:
    """The restore-lost-data runbook."""
    return start_run(LostDataRestoreRun)


def start_rollback_test_run() -> RollbackTestRun:
    """The rollback-test runbook."""
    return start_run(RollbackTestRun)


def show_rollbook_errors_briefly(shell: Any, session: _Session) -> None:
    """When a cell fails: show what was refused or failed, file the run's record, and stop the notebook.

    rollbook's own errors show as their message, not a traceback into rollbook's code; anything else
    keeps its traceback. The cell still fails, so papermill stops there and reports the error.
    """

    def handler(shell: Any, etype: type, value: BaseException, tb: Any, tb_offset: int | None = None) -> list[str]:
        result = getattr(value, "result", None)
        if result is not None:
            display(result)
        # rollbook's own errors are messages for the operator; the class name is for a traceback.
        message = str(value) if issubclass(etype, RollbookError) else f"{etype.__name__}: {value}"
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
    if recorder is None or recorder.record.outcome is not Outcome.RUNNING:
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
