"""Running a planned downgrade: one revision per Alembic call, under a lock, every statement timed.
One idea at about 480 lines, kept whole: the execution's record types, the connection guard, the statement
log and the check after each step exist only for `execute_downgrade` and are read with it.

The project's own env.py runs each step, as `alembic downgrade` would, so whatever it configures
(search_path, schemas, version table) still applies. Around it rollbook adds what env.py cannot
promise: a session advisory lock so two runs never interleave, lock and statement timeouts on every
connection, a guard that refuses any connection to a database other than the one named, a timed
log of every statement, the time each step waited for locks (execution/lock_wait_sampler.py), and a
check after each step, through rollbook's own connection, that the database named really moved one
revision down.

Each step runs in a worker thread where no event loop runs (see `outside_event_loop`), so an async
env.py works as under `alembic`; stopping the run cancels the step's statements server-side.

Before each step rollbook also reads the schema (a few catalog queries). When a step fails, the
schema after it is compared with that snapshot: only an unchanged schema lets the record say the
step was rolled back, and anything a non-atomic step left done is named.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from psycopg import sql
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool, Pool

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.execution.lock_wait_sampler import LockWaits, sampling_lock_waits
from rollbook.outcomes import Outcome
from rollbook.pg.advisory_lock import rollback_lock
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import DatabaseIdentity, read_identity
from rollbook.pg.schema_comparison import BEFORE_AND_AFTER_STEP, compare_schemas
from rollbook.pg.schema_objects import SchemaSnapshot
from rollbook.pg.schema_snapshot import read_schema
from rollbook.planning.downgrade_path import alembic_downgrade_destination
from rollbook.planning.plan import DowngradePlan
from rollbook.project.env_py_settings import handed_connection, reads_flask_app
from rollbook.project.migrations import MigrationProject, alembic_config_for
from rollbook.project.outside_event_loop import BackendPids, run_outside_event_loop
from rollbook.project.status import read_current_revisions
from rollbook.project_config import project_setting

CLIENT_CHECK_INTERVAL_MS = 1000


class WrongDatabase(RollbookError):
    """env.py connected to, or moved, a database other than the one rollbook was given."""


class DatabaseMoved(RollbookError):
    """The database is no longer at the revision the plan was made for: what the run was given is stale."""

    outcome = Outcome.BAD_INPUT


@dataclass(frozen=True)
class ExecutedStatement:
    """One SQL statement sent by the migration, with how long it took and whether it failed."""

    sql: str
    seconds: float
    failed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"sql": self.sql, "seconds": round(self.seconds, 6), "failed": self.failed}


@dataclass(frozen=True)
class LeftChanged:
    """What a failed step left changed: the schema after it compared with a snapshot taken just before it."""

    compared: bool
    changes: tuple[str, ...] = ()
    # Whether the plan found the step's downgrade() to run in one transaction.
    atomic: bool = True
    why_not_compared: str = ""

    @property
    def rolled_back(self) -> bool:
        """Known to be undone: the step ran in one transaction and the schema is as it was before it."""
        return self.compared and self.atomic and not self.changes

    def describe(self) -> str:
        """One honest sentence (or two) about the state the failed step left behind."""
        snapshot = "compared with a snapshot taken just before the step"
        if self.rolled_back:
            return f"The failed step's transaction was rolled back: the schema is as it was before it ({snapshot})."
        if self.compared and self.changes:
            why = ": it did not run as one transaction" if not self.atomic else ""
            return (f"The failed step was NOT rolled back entirely{why}. {snapshot.capitalize()}, it left changed: "
                    f"{'; '.join(self.changes)}.")
        if self.compared:
            return (f"The schema is as it was before the failed step ({snapshot}), but the step did not run as one "
                    "transaction: rows it changed before a COMMIT may stay changed. Check them by hand.")
        part = "; it did not run as one transaction, so part of it may stay done" if not self.atomic else ""
        return (f"rollbook could not compare the schema with the state before the failed step "
                f"({self.why_not_compared}){part}: check by hand what it left changed.")

    def to_dict(self) -> dict[str, Any]:
        return {"compared": self.compared, "rolled_back": self.rolled_back, "atomic": self.atomic,
                "changes": list(self.changes), "why_not_compared": self.why_not_compared,
                "description": self.describe()}


@dataclass(frozen=True)
class StepExecution:
    """Undoing one revision: done (committed), failed (with what it left changed) or not run."""

    revision: str
    down_to: str
    outcome: str
    seconds: float = 0.0
    statements: tuple[ExecutedStatement, ...] = ()
    error: str | None = None
    left_changed: LeftChanged | None = None
    # Of `seconds`, the time its statements waited for a lock another session held (sampled).
    lock_waits: LockWaits | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision, "down_to": self.down_to, "outcome": self.outcome,
            "seconds": round(self.seconds, 3), "error": self.error,
            "lock_wait_seconds": self.lock_waits.seconds if self.lock_waits else None,
            "lock_waits_not_measured": self.lock_waits.not_measured if self.lock_waits else None,
            "statements": [s.to_dict() for s in self.statements],
            "left_changed": self.left_changed.to_dict() if self.left_changed else None,
        }


@dataclass(frozen=True)
class DowngradeExecution:
    """What the downgrade did, step by step, and where the database stands afterwards."""

    database: str
    revisions_before: tuple[str, ...]
    revisions_after: tuple[str, ...]
    target: str
    steps: tuple[StepExecution, ...]
    lock_timeout_ms: int
    statement_timeout_ms: int
    seconds: float
    failure: BaseException | None = field(default=None, repr=False, compare=False)
    failed_statement: str | None = None
    # The schema under the rollback lock just before the first step: the baseline of the schema check.
    schema_before: SchemaSnapshot | None = field(default=None, repr=False, compare=False)

    @property
    def succeeded(self) -> bool:
        return self.failure is None and all(step.outcome == "done" for step in self.steps)

    @property
    def failed_step(self) -> StepExecution | None:
        return next((step for step in self.steps if step.outcome == "failed"), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "revisions_before": list(self.revisions_before),
            "revisions_after": list(self.revisions_after),
            "target": self.target,
            "succeeded": self.succeeded,
            "lock_timeout_ms": self.lock_timeout_ms,
            "statement_timeout_ms": self.statement_timeout_ms,
            "seconds": round(self.seconds, 3),
            "steps": [step.to_dict() for step in self.steps],
        }

    def to_text(self) -> str:
        lines = [f"Downgrade of {self.database}: {_revs(self.revisions_before)} -> {_revs(self.revisions_after)} "
                 f"(target {self.target}) in {self.seconds:.2f} s, lock_timeout {self.lock_timeout_ms} ms, "
                 f"statement_timeout {self.statement_timeout_ms} ms"]
        for step in self.steps:
            lines.append(f"  {step.revision} -> {step.down_to}: {step.outcome.upper()} ({step.seconds:.3f} s"
                         + (f", {step.lock_waits.described()})" if step.lock_waits else ")"))
            lines += [f"    {s.seconds * 1000:8.1f} ms  {'FAILED ' if s.failed else ''}{_one_line(s.sql)}"
                      for s in step.statements]
            if step.error:
                lines.append(f"    error: {step.error}")
            if step.left_changed:
                lines.append(f"    {step.left_changed.describe()}")
        lines.append("SUCCEEDED" if self.succeeded else f"FAILED: the database is at {_revs(self.revisions_after)}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        lines = [f"**Downgrade** of `{self.database}`: `{_revs(self.revisions_before)}` → "
                 f"`{_revs(self.revisions_after)}` (target `{self.target}`), {self.seconds:.2f} s; "
                 f"lock_timeout {self.lock_timeout_ms} ms, statement_timeout {self.statement_timeout_ms} ms.", ""]
        for step in self.steps:
            lines.append(f"- `{step.revision}` → `{step.down_to}`: **{step.outcome}** ({step.seconds:.3f} s"
                         + (f", {markdown.prose(step.lock_waits.described())})" if step.lock_waits else ")"))
            if step.statements:
                rows = [(f"{s.seconds * 1000:.1f}",
                         ("**FAILED** " if s.failed else "") + markdown.code(_one_line(s.sql)))
                        for s in step.statements]
                lines += ["", markdown.table(["ms", "statement"], rows), ""]
            if step.error:
                lines.append(f"  - error: {step.error}")
            if step.left_changed:
                lines.append(f"  - **{markdown.prose(step.left_changed.describe())}**")
        verdict = ("**Succeeded.**" if self.succeeded
                   else f"**Failed.** The database is at `{_revs(self.revisions_after)}`.")
        return "\n".join([*lines, "", verdict])


def execute_downgrade(
    target: DatabaseTarget, project: MigrationProject, plan: DowngradePlan, *,
    lock_timeout_ms: int, statement_timeout_ms: int, lock_wait_ms: int | None = None,
) -> DowngradeExecution:
    """Undo the plan's revisions one at a time, each in its own Alembic call and transaction.

    A failure stops the run: the failing step's transaction rolls back, so the database stays at the
    revision the previous step reached; the result says which, carries the error for diagnosis, and
    says what the failed step left changed (a step that is not atomic keeps what it committed).
    """
    # Made before the revisions are read: an app factory may migrate its database when it starts (ihatemoney's
    # does), and a database that moved is then refused below, with nothing undone.
    flask_app = configured_flask_app(project)
    with connect(target) as control, rollback_lock(control, lock_wait_ms or lock_timeout_ms):
        identity = read_identity(control)
        before = read_current_revisions(control, project)
        if set(before) != set(plan.path.current):
            raise DatabaseMoved(
                f"{target.redacted} is at {_revs(before)}, but the plan was made at {_revs(plan.path.current)}: "
                "someone migrated it since. Plan again and review the new plan; nothing was changed."
            )
        _refuse_merges(project, plan)
        atomic = {step.revision.revision: step.atomic for step in plan.steps}
        steps: list[StepExecution] = []
        failure: BaseException | None = None
        failed_statement = None
        schema_before: SchemaSnapshot | None = None
        started = time.monotonic()
        with (_guarded_connections(identity, target, lock_timeout_ms, statement_timeout_ms) as (log, backends),
              sampling_lock_waits(target, backends) as lock_waits):
            for revision in plan.path.steps:
                down_to = project.info(revision).down_revision or "base"
                if failure is not None:
                    steps.append(StepExecution(revision, down_to, "not run"))
                    continue
                log.clear()
                before_step = _schema_or_reason(control)
                if not steps and isinstance(before_step, SchemaSnapshot):
                    schema_before = before_step
                lock_waits.begin_step()
                step_started = time.monotonic()
                try:
                    destination = alembic_downgrade_destination(project, revision)
                    # Called before the loop moves on: run_outside_event_loop waits for the step to end.
                    run_outside_event_loop(
                        lambda: _downgrade_one_step(project, target, destination, flask_app),  # noqa: B023
                        cancel=lambda: backends.cancel_all(control))
                except Exception as exc:
                    failure, failed_statement = exc, log.failed_sql
                    error = (project.no_downgrade_text(revision) if not project.has_downgrade(revision)
                             else _outside_flask_app(project) if flask_app is None and _OUTSIDE_APP in str(exc)
                             else target.scrub(_error_text(exc)))
                    steps.append(StepExecution(revision, down_to, "failed", time.monotonic() - step_started,
                                               log.statements(), error,
                                               _left_changed(control, before_step, atomic.get(revision, False)),
                                               lock_waits.step_lock_waits()))
                    continue
                steps.append(StepExecution(revision, down_to, "done", time.monotonic() - step_started,
                                           log.statements(), lock_waits=lock_waits.step_lock_waits()))
                now = read_current_revisions(control, project)
                if revision in now:
                    failure = WrongDatabase(_did_not_move(target, revision, now))
                    steps[-1] = StepExecution(revision, down_to, "failed", steps[-1].seconds, steps[-1].statements,
                                              str(failure), lock_waits=steps[-1].lock_waits)
        after = read_current_revisions(control, project)
    return DowngradeExecution(
        database=target.redacted, revisions_before=before, revisions_after=after,
        target=plan.path.target_label, steps=tuple(steps), lock_timeout_ms=lock_timeout_ms,
        statement_timeout_ms=statement_timeout_ms, seconds=time.monotonic() - started,
        failure=failure, failed_statement=failed_statement, schema_before=schema_before,
    )


FLASK_APP_SETTING = "flask_app"
_OUTSIDE_APP = "Working outside of application context"


def configured_flask_app(project: MigrationProject) -> Any | None:
    """The Flask app whose context env.py runs in (Flask-Migrate's env.py reads `current_app`), as `flask db`
    finds it: `flask_app` in the `[project]` table of rollbook.toml, else the `FLASK_APP` variable; None when
    env.py reads no Flask app or none is named. A `.py` file named in the setting is relative to its file."""
    if not reads_flask_app(Path(project.scripts.dir) / "env.py"):
        return None
    setting = project_setting(project.config_path.parent, FLASK_APP_SETTING)
    spec = str(setting.value) if setting else os.environ.get("FLASK_APP")
    if not spec:
        return None
    where = setting.where if setting else "FLASK_APP"
    module, _, name = spec.partition(":")
    if setting and module.endswith(".py"):
        spec = f"{setting.folder / module}" + (f":{name}" if name else "")
    try:
        from flask.cli import ScriptInfo
    except ImportError:
        raise BadInput(f"{where} names a Flask app, but Flask is not installed where rollbook runs: install "
                       "rollbook into the project's environment. Nothing was changed.") from None
    try:
        return ScriptInfo(app_import_path=spec, set_debug_flag=False).load_app()
    except Exception as exc:
        raise BadInput(f"The Flask app {spec!r} ({where}) could not be loaded: {type(exc).__name__}: "
                       f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''} Fix the setting (module:app "
                       "or module:create_app()) and retry. Nothing was changed.") from None


def _outside_flask_app(project: MigrationProject) -> str:
    return (f"env.py reads the running Flask app (current_app), as Flask-Migrate's env.py does, and no app was named: "
            f"set {FLASK_APP_SETTING} = \"module:app\" (or \"module:create_app()\") in the [project] table of "
            "rollbook.toml, or FLASK_APP, as for `flask db downgrade`")


def _downgrade_one_step(project: MigrationProject, target: DatabaseTarget, down_to: str, flask_app: Any) -> None:
    """One Alembic downgrade call through the project's env.py, handed a connection if env.py expects one, inside
    the Flask app's context when env.py reads one.

    Either kind reaches the database named through rollbook's guard.
    """
    # Pushed here, in the step's worker thread: an app context belongs to the thread that pushes it.
    with flask_app.app_context() if flask_app is not None else nullcontext():
        _downgrade_in_context(project, target, down_to)


def _downgrade_in_context(project: MigrationProject, target: DatabaseTarget, down_to: str) -> None:
    config = alembic_config_for(project, target)
    handed = None if target.is_async else handed_connection(Path(project.scripts.dir) / "env.py")
    if handed is None:
        command.downgrade(config, down_to)
        return
    engine = create_engine(target.sqlalchemy_url, poolclass=NullPool)
    try:
        if handed == "engine":
            config.attributes["connection"] = engine
            command.downgrade(config, down_to)
            return
        # Not yet in a transaction, so env.py's begin_transaction() owns the step's (autocommit_block needs that).
        with engine.connect() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, down_to)
            connection.commit()  # whatever env.py ran outside begin_transaction() (SQLAlchemy 2 autobegins)
    finally:
        engine.dispose()


class _StatementLog:
    """Statements seen on any SQLAlchemy engine while a step runs, with their durations."""

    def __init__(self) -> None:
        self._done: list[ExecutedStatement] = []
        self.failed_sql: str | None = None

    def clear(self) -> None:
        self._done, self.failed_sql = [], None

    def statements(self) -> tuple[ExecutedStatement, ...]:
        return tuple(self._done)

    def before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["rollbook_started"] = time.monotonic()

    def after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        self._done.append(ExecutedStatement(statement.strip(), time.monotonic() - conn.info.pop("rollbook_started")))

    def error(self, context: Any) -> None:
        started = context.connection.info.pop("rollbook_started", None) if context.connection else None
        if context.statement:
            seconds = time.monotonic() - started if started else 0.0
            self.failed_sql = context.statement.strip()
            self._done.append(ExecutedStatement(self.failed_sql, seconds, failed=True))


@contextmanager
def _guarded_connections(
    identity: DatabaseIdentity, target: DatabaseTarget, lock_timeout_ms: int, statement_timeout_ms: int,
) -> Iterator[tuple[_StatementLog, BackendPids]]:
    """While active, every new SQLAlchemy connection must reach `identity`'s database and gets the timeouts.

    The listeners are registered on the Pool and Engine classes because env.py builds its own engine.
    Their SQL has no parameters, so every driver runs it alike (asyncpg rejects '%s', psycopg2 needs it);
    the connections' backend pids are kept so that a stopped run can cancel what they run.
    """
    log = _StatementLog()
    backends = BackendPids()
    settings = {"lock_timeout": lock_timeout_ms, "statement_timeout": statement_timeout_ms}
    if identity.major_version >= 14:
        # If rollbook dies mid-statement (a killed kernel), the server notices within a second and
        # rolls the step back, instead of finishing it for nobody and holding its locks meanwhile.
        settings["client_connection_check_interval"] = CLIENT_CHECK_INTERVAL_MS
    set_settings = sql.SQL("SELECT {}").format(sql.SQL(", ").join(
        sql.SQL("set_config({}, {}, false)").format(sql.Literal(name), sql.Literal(str(int(value))))
        for name, value in settings.items())).as_string(None)

    def on_connect(dbapi_connection: Any, record: Any) -> None:
        if backends.stopped:
            raise RollbookError("The run was stopped: rollbook refused a new connection of the project's env.py.")
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SELECT (SELECT system_identifier::text FROM pg_control_system()), "
                           "(SELECT oid FROM pg_database WHERE datname = current_database()), current_database()")
            system_identifier, oid, name = cursor.fetchone()
            if (system_identifier, oid) != identity.fingerprint:
                raise WrongDatabase(
                    f"The project's env.py connected to database {name} (system identifier {system_identifier}), "
                    f"not to {target.redacted} ({identity.database}, system identifier {identity.system_identifier}) "
                    "that this run was given. rollbook stopped before env.py ran any statement there. Make env.py "
                    "use the URL Alembic passes it (config.get_main_option('sqlalchemy.url')) or point DATABASE_URL "
                    "at the same database, then retry."
                )
            cursor.execute(set_settings)
        finally:
            cursor.close()
        backends.record(dbapi_connection)
        dbapi_connection.commit()

    listeners: list[tuple[type[Any], str, Callable[..., Any]]] = [
        (Pool, "connect", on_connect),
        (Engine, "before_cursor_execute", log.before),
        (Engine, "after_cursor_execute", log.after),
        (Engine, "handle_error", log.error),
    ]
    for target_class, name, listener in listeners:
        event.listen(target_class, name, listener)
    try:
        yield log, backends
    finally:
        for target_class, name, listener in listeners:
            event.remove(target_class, name, listener)


def _schema_or_reason(conn: psycopg.Connection[Any]) -> SchemaSnapshot | str:
    """The schema now, or why it could not be read (a failed read must not stop the rollback)."""
    try:
        return read_schema(conn)
    except psycopg.Error as exc:
        return f"the catalog could not be read: {exc.diag.message_primary or type(exc).__name__}"


def _left_changed(conn: psycopg.Connection[Any], before: SchemaSnapshot | str, atomic: bool) -> LeftChanged:
    after = _schema_or_reason(conn)
    if isinstance(before, str) or isinstance(after, str):
        reason = before if isinstance(before, str) else after
        return LeftChanged(False, atomic=atomic, why_not_compared=str(reason))
    return LeftChanged(True, compare_schemas(before, after, BEFORE_AND_AFTER_STEP).differences, atomic)


def _refuse_merges(project: MigrationProject, plan: DowngradePlan) -> None:
    for revision in plan.path.steps:
        parents = project.info(revision).down_revisions
        if len(parents) > 1:
            raise RollbookError(
                f"The downgrade path crosses the merge revision {revision} (parents {', '.join(parents)}). rollbook "
                "executes one revision per step and does not undo merges: first roll back to the merge revision "
                f"{revision}, then undo each branch by naming a revision on it. Nothing was changed."
            )


def _did_not_move(target: DatabaseTarget, revision: str, now: tuple[str, ...]) -> str:
    return (
        f"ALEMBIC REPORTED SUCCESS BUT {target.redacted} DID NOT MOVE: it is still at {_revs(now)}. The project's "
        f"env.py must have run the downgrade of {revision} against another database. Find out which one (env.py, "
        "its settings, DATABASE_URL) and check it now: it may have lost data. rollbook stopped."
    )


def _error_text(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    if isinstance(orig, psycopg.Error):
        diag = orig.diag
        return f"{type(orig).__name__} ({diag.sqlstate}): {diag.message_primary}" + (
            f" DETAIL: {diag.message_detail}" if diag.message_detail else "")
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


def _one_line(sql: str) -> str:
    text = " ".join(sql.split())
    return text if len(text) <= 200 else text[:197] + "..."


def _revs(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "base"
