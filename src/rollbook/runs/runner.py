"""`rollbook run`: a runbook executed by papermill under a watchdog, then reconciled, scrubbed and archived.

The password never becomes a parameter: a database URL given with one is split, the URL goes to the
notebook and the password to the kernel's environment (PGPASSWORD; an sslpassword takes the whole
URL into DATABASE_URL), where libpq, pg_dump and the project's env.py find it. Whatever papermill or the kernel
leave behind, the record filed in the
archive carries the truthful verdict and no secret.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import nbformat
import papermill
from papermill.iorw import load_notebook_node, write_ipynb

from rollbook.errors import BadInput, RollbookError
from rollbook.outcomes import ExitCode, Outcome
from rollbook.parent_death import end_with_parent
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.project.migrations import load_project, parse_x_args
from rollbook.project.status import read_current_revisions
from rollbook.records.archive import ARCHIVE_VARIABLE, Archive, ArchivedRecord, RecordNotFiled
from rollbook.records.archive_files import IN_PROGRESS
from rollbook.records.model import RecordedStep, RunRecord
from rollbook.records.run_record import RUN_ID_VARIABLE, STOP_FILE_VARIABLE, new_run_id
from rollbook.records.run_verdict import RunVerdict, reconcile, recorded_record
from rollbook.redaction.connection_secrets import split_connection_string
from rollbook.redaction.redact import collect_secrets, redact_notebook
from rollbook.runs.papermill_process import STOP_SIGNALS
from rollbook.runs.parameters import x_arguments_with_secrets

BUNDLED_RUNBOOKS = Path(__file__).parents[1] / "runbooks"
KILL_GRACE_SECONDS = 5
# How long a stopped run may take to roll its step back and file its record before its processes are killed.
STOP_GRACE_SECONDS = 60
WATCH_SECONDS = 0.5


@dataclass(frozen=True)
class RunbookResult:
    """The archived record of one run and its verdict."""

    record: ArchivedRecord
    verdict: RunVerdict
    summary: RunRecord
    output: str | None

    @property
    def exit_code(self) -> ExitCode:
        return self.verdict.exit_code

    def report(self) -> str:
        """What happened, in a few lines a person reads at 3 a.m.: the verdict, why (for a run that did not
        succeed), what the run did (mode, database, revision before and after), the backup and how it was
        verified, each check after the change, and where the record is."""
        record = self.summary
        lines = [self.verdict.text]
        if not self.verdict.outcome.succeeded and record.message and record.message != self.verdict.text:
            lines.append(str(record.message))
        lines += [f"  {line}" for line in _what_the_run_did(record)]
        after = record.revision_after
        if self.verdict.exit_code == ExitCode.FAILED and after is not None:
            lines.append(f"the database is at {', '.join(after) or 'base'} (read after the run stopped)")
        return "\n".join([*lines, f"record: {self.record.path}"])


def _what_the_run_did(record: RunRecord) -> list[str]:
    """The facts of a run's record a terminal shows: mode and database, revisions, backup, checks."""
    lines = []
    if record.execute is not None:
        mode = "executed" if record.execute else "dry run"
        where = ", ".join(part for part in (record.environment, mode) if part)
        database = record.identity.database if record.identity and record.identity.database else record.database
        lines.append(f"{record.runbook} of {database or 'the database'} ({where})"
                     + (f", target {record.target}" if record.target else ""))
    before, after = record.revision_before, record.revision_after
    if before is not None and after is not None and before != after:
        lines.append(f"revision {', '.join(before) or 'base'} -> {', '.join(after) or 'base'}")
    elif before is not None:
        lines.append(f"revision {', '.join(before) or 'base'} (unchanged)")
    if record.backup is not None:
        how = {"list": "pg_restore --list", "restore": "a restore into a scratch database"}.get(
            record.backup.verification, record.backup.verification or "nothing")
        state = "verified" if record.backup.verified else "NOT verified"
        lines.append(f"backup {record.backup.path} ({state} by {how})")
    if record.at_risk_backup is not None and record.runbook == "rollback":
        folder = record.at_risk_backup.get("folder")
        lines.append(f"at-risk backup {folder} ({record.at_risk_backup.get('rows')} rows; to put them back after a "
                     f"fix-forward: rollbook run restore-lost-data -p at_risk_backup {folder})")
    checks = (record.verification or {}).get("checks") or []
    if checks:
        words = {"passed": "passed", "failed": "FAILED", "not_checked": "not checked"}
        # A check that did not pass says why: what is left for a person to check by hand.
        lines.append("checks: " + "; ".join(
            f"{c.get('name')} {words.get(c.get('status'), c.get('status'))}"
            + (f" ({c.get('detail')})" if c.get("status") != "passed" and c.get("detail") else "") for c in checks))
    return lines


def resolve_runbook(name: str) -> Path:
    """A runbook given as a path to a notebook, or by the name of a bundled one (runbooks/ in the repository)."""
    path = Path(name)
    if path.suffix == ".ipynb" and path.is_file():
        return path
    bundled = BUNDLED_RUNBOOKS / f"{name}.ipynb"
    if bundled.is_file():
        return bundled
    known = ", ".join(sorted(p.stem for p in BUNDLED_RUNBOOKS.glob("*.ipynb")))
    raise BadInput(f"No runbook '{name}': give the path of a notebook, or one of the bundled runbooks: {known}.")


def run_runbook(
    runbook: str, parameters: Mapping[str, Any], *, archive: Archive, output: str | None = None,
    cell_timeout_seconds: int = 3600, run_timeout_seconds: int = 4 * 3600,
    on_step: Callable[[RecordedStep], None] | None = None,
) -> RunbookResult:
    """Run `runbook` with papermill, then file its reconciled, scrubbed record in `archive`.

    `on_step` hears of each step of the run when it starts and when it ends, from the summary the
    runbook keeps in the archive: how a terminal shows progress through long steps (backup, downgrade).
    """
    path = resolve_runbook(runbook)
    _refuse_unknown_parameters(path, parameters)
    archive.ensure_ready()
    environment = dict(os.environ)
    secrets = collect_secrets(environment, dict(parameters))
    given = dict(parameters)
    parameters = _secrets_to_environment(dict(parameters), environment)
    run_id = new_run_id()
    environment.update({RUN_ID_VARIABLE: run_id, ARCHIVE_VARIABLE: str(archive.root.resolve())})
    with tempfile.TemporaryDirectory(prefix="rollbook-run-") as work:
        executed = Path(work) / "executed.ipynb"
        spec = Path(work) / "spec.json"
        stop_file = Path(work) / "stop"
        environment[STOP_FILE_VARIABLE] = str(stop_file)
        spec.write_text(json.dumps({
            "input": str(path), "output": str(executed), "parameters": parameters,
            "cell_timeout": cell_timeout_seconds, "cwd": os.getcwd(), "ipc_path": str(Path(work) / "kernel"),
            "stop_file": str(stop_file), "ending_file": str(Path(work) / "ending"), "parent_pid": os.getpid(),
        }))
        ending = _run_papermill(spec, environment, run_timeout_seconds, _StepWatcher(archive, run_id, on_step))
        notebook = nbformat.read(executed, as_version=4) if executed.exists() else nbformat.read(path, as_version=4)
    # A run that stopped before its first step (a kernel that could not import rollbook) recorded nothing:
    # its record still names the runbook that was run.
    summary = archive.progress(run_id) or archive.filed_record(run_id) or RunRecord(run_id=run_id, runbook=path.stem)
    if summary.outcome is Outcome.RUNNING:
        summary = summary.with_facts(revision_after=_revisions_now(given))
    record, summary, verdict, notebook = _file(archive, notebook, summary, ending, secrets)
    if output:
        _write_output(notebook, output, verdict, record)
    return RunbookResult(record, verdict, summary, output)


class OutputNotWritten(RollbookError):
    """The run is recorded in the archive, but its copy could not be written to the requested output."""


def _write_output(notebook: nbformat.NotebookNode, output: str, verdict: RunVerdict, record: ArchivedRecord) -> None:
    try:
        write_ipynb(notebook, output)
    # Each storage backend (local, s3://, gs://, ...) raises its own errors.
    except Exception as error:
        raise OutputNotWritten(
            f"The run {verdict.text}; its record is filed at {record.path}, but it could not be written to {output}: "
            f"{type(error).__name__}: {error}. Copy the record there once the location is reachable."
        ) from None


def archive_executed_notebook(location: str, archive: Archive) -> RunbookResult:
    """`rollbook archive add`: file a notebook executed by plain papermill, reconciled with its run's summary.

    Only a run that a runbook of this archive started is filed (its in-progress summary is there, or it
    is filed already): a notebook made up or brought from elsewhere would be a record nobody recorded.
    """
    archive.ensure_ready()
    try:
        notebook = load_notebook_node(location)
    # Each storage backend (local, s3://, gs://, ...) raises its own errors.
    except Exception as error:
        raise BadInput(f"Cannot read the executed notebook {location}: {error}. Give the path (or s3:// URL) "
                       "of the notebook papermill wrote.") from None
    recorded = recorded_record(notebook)
    if recorded is None:
        raise BadInput(f"The notebook {location} carries no rollbook record (no run id), so no runbook recorded it: "
                       "only a notebook executed from one of rollbook's runbooks can be filed. Nothing was filed.")
    run_id = recorded.run_id
    if not archive.knows_run(run_id):
        raise BadInput(
            f"The notebook {location} records run {run_id}, which no runbook of the archive {archive.root} started "
            f"(there is no {IN_PROGRESS}/{run_id}.json and no record of it there). A run is filed only in the "
            "archive it recorded itself in: check ROLLBOOK_ARCHIVE (the runbook wrote to the ROLLBOOK_ARCHIVE of "
            "its kernel). Nothing was filed."
        )
    summary = archive.filed_record(run_id) or archive.progress(run_id) or recorded
    parameters = notebook.metadata.get("papermill", {}).get("parameters", {})
    secrets = collect_secrets(os.environ, parameters)
    record, summary, verdict, _ = _file(archive, notebook, summary, None, secrets)
    return RunbookResult(record, verdict, summary, None)


def _file(
    archive: Archive, notebook: nbformat.NotebookNode, summary: RunRecord, ending: str | None,
    secrets: frozenset[str],
) -> tuple[ArchivedRecord, RunRecord, RunVerdict, nbformat.NotebookNode]:
    """Reconcile, scrub and chain a run's notebook (and its record, if the run could not file it)."""
    notebook, summary, verdict = reconcile(notebook, summary, ending)
    notebook = nbformat.from_dict(redact_notebook(notebook, secrets))
    try:
        if archive.filed_record(summary.run_id) is None:
            archive.file_summary(summary.to_json(), secrets=secrets)
        record = archive.file_notebook(nbformat.writes(notebook).encode(), summary.to_json(), secrets=secrets)
    except RecordNotFiled as error:
        raise RecordNotFiled(f"The run {verdict.text}. {error} {_keep_unfiled(notebook, summary.run_id)}") from None
    return record, summary, verdict, notebook


def _keep_unfiled(notebook: nbformat.NotebookNode, run_id: str) -> str:
    """Keep a notebook the archive could not take where the operator can find it; say where."""
    name = f"rollbook-unfiled-{run_id}.ipynb"
    for folder in (Path.cwd(), Path(tempfile.gettempdir())):
        try:
            with open(folder / name, "x", encoding="utf-8") as kept:
                kept.write(nbformat.writes(notebook))
        except OSError:
            continue
        return f"The executed notebook (scrubbed of secrets) is kept at {folder / name}."
    return "The executed notebook could not be kept anywhere either: the disk may be full."


def _refuse_unknown_parameters(path: Path, parameters: Mapping[str, Any]) -> None:
    try:
        declared = papermill.inspect_notebook(str(path))
    except ValueError as error:  # papermill's words for a notebook it cannot read parameters from
        raise BadInput(f"The notebook {path} cannot be run: {error} Open it in Jupyter with a Python 3 kernel and "
                       "save it, then run again; nothing was started.") from None
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise BadInput(
            f"Unknown parameter(s) {', '.join(unknown)} for {path.name}, which takes: {', '.join(declared)}. "
            "Correct the name and run again; nothing was started."
        )
    # Unlike database_url's password, nothing can carry an -x argument's secret to env.py outside the notebook.
    with_secrets = x_arguments_with_secrets(parse_x_args(parameters.get("alembic_x_args"), "alembic_x_args"))
    if with_secrets:
        raise BadInput(
            f"The -x argument(s) {', '.join(with_secrets)} carry a password, which the runbook's notebook would "
            "record. Give env.py its secrets another way (PGPASSWORD, ~/.pgpass, or an environment variable it "
            "reads); nothing was started."
        )


def _secrets_to_environment(parameters: dict[str, Any], environment: dict[str, str]) -> dict[str, Any]:
    """Move the secrets of the database_url parameter into the kernel's environment, where no notebook records them.

    An unreadable connection string, as a parameter or in DATABASE_URL, is refused before anything starts.
    """
    url = parameters.get("database_url")
    if not isinstance(url, str) or not url:
        split_connection_string(environment.get("DATABASE_URL", ""), source="DATABASE_URL")
        return parameters
    connection = split_connection_string(url, source="the database_url parameter")
    if connection.sslpassword is not None:
        # libpq reads no environment variable for sslpassword: the kernel reads the whole string from
        # DATABASE_URL instead, which reaches the runbook when database_url is empty.
        environment["DATABASE_URL"] = url
        parameters["database_url"] = ""
    elif connection.password is not None:
        environment["PGPASSWORD"] = connection.password
        parameters["database_url"] = connection.without_secrets
    return parameters


class _StepWatcher:
    """Reports each step of a run once when it starts and once when it ends, as the archive shows them."""

    def __init__(self, archive: Archive, run_id: str, on_step: Callable[[RecordedStep], None] | None) -> None:
        self._archive, self._run_id, self._on_step = archive, run_id, on_step
        self._seen: set[tuple[int, str]] = set()

    def __call__(self) -> None:
        if self._on_step is None:
            return
        record = self._archive.progress(self._run_id) or self._archive.filed_record(self._run_id)
        for number, step in enumerate(record.steps if record else []):
            key = (number, step.status)
            if key not in self._seen:
                self._seen.add(key)
                self._on_step(step)


def _run_papermill(spec: Path, environment: dict[str, str], run_timeout_seconds: int, watch: _StepWatcher) -> str:
    """Run papermill's process in its own process group, under a watchdog; pass the operator's stop on to it.

    SIGINT, SIGTERM and SIGHUP to this process are forwarded as one stop request: the run stops before its
    next step, its running step is interrupted, and this process waits for the record before it returns.
    If this process is SIGKILLed instead, papermill's process gets SIGTERM from the kernel (parent death).
    """
    deadline = time.monotonic() + run_timeout_seconds
    with subprocess.Popen([sys.executable, "-m", "rollbook.runs.papermill_process", str(spec)], env=environment,
                          start_new_session=True, preexec_fn=end_with_parent) as process:
        with _forwarding_stop_signals(process) as stopping:
            while True:
                try:
                    process.wait(timeout=WATCH_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    watch()
                    if stopping and time.monotonic() > stopping[0] + STOP_GRACE_SECONDS:
                        _kill_group(process)
                        return "interrupted"
                    if time.monotonic() > deadline:
                        _kill_group(process)
                        return "timeout"
    watch()
    ending_file = Path(json.loads(spec.read_text())["ending_file"])
    # No ending written (papermill itself killed, a crash) leaves the kernel's fate unknown: treat it as dead.
    return ending_file.read_text() if ending_file.exists() else "dead_kernel"


@contextmanager
def _forwarding_stop_signals(process: subprocess.Popen[bytes]) -> Iterator[list[float]]:
    """While active, a stop signal to this process becomes SIGTERM to `process`; yields when it was first asked."""
    stopping: list[float] = []
    if threading.current_thread() is not threading.main_thread():
        yield stopping  # signal handlers can only be set from the main thread; a caller elsewhere owns signals
        return

    def forward(signum: int, frame: FrameType | None) -> None:
        if not stopping:
            stopping.append(time.monotonic())
        try:
            process.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass

    previous = {signum: signal.signal(signum, forward) for signum in STOP_SIGNALS}
    try:
        yield stopping
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=KILL_GRACE_SECONDS)
            return
        except subprocess.TimeoutExpired:
            continue


def _revisions_now(parameters: Mapping[str, Any]) -> list[str] | None:
    """Where the database stands after a run that did not finish, read through rollbook's own connection."""
    try:
        target = DatabaseTarget.from_url(parameters.get("database_url") or None)
        config = parameters.get("alembic_config") or None
        project = load_project(config, parse_x_args(parameters.get("alembic_x_args"), "Parameter alembic_x_args"))
        with connect(target) as conn:
            return list(read_current_revisions(conn, project))
    except RollbookError:
        return None
