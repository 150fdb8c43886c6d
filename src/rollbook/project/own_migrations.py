"""Running a project's migrations through rollbook's own engine and Alembic context, never its env.py.

Used on scratch databases only (expected schemas, rollback rehearsals): a real env.py may ignore the
URL it is given and migrate whatever database its settings name. The engine uses the driver the
user's URL names, so migrations behave as for their users ('%' in `exec_driver_sql` is literal under
asyncpg and pg8000, a placeholder under psycopg); an async driver runs as Alembic's async template
runs it, `run_sync` inside `asyncio.run`, in a thread where no event loop runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Literal

from alembic.runtime.environment import EnvironmentContext
from psycopg import sql
from sqlalchemy import Connection, create_engine, event, pool
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from rollbook.errors import RollbookError
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.project.migrations import MigrationProject, alembic_config_for
from rollbook.project.naming_convention import read_naming_convention
from rollbook.project.offline_sql import unnamed_drop_in_words
from rollbook.project.outside_event_loop import BackendPids, run_outside_event_loop

Direction = Literal["upgrade", "downgrade"]


class MigrationFailed(RollbookError):
    """A migration raised while rollbook ran it; names the revision, how far the run got, and why."""

    def __init__(self, message: str, *, revision: str | None, applied: int, planned: int, cause: str,
                 database_refused: bool = False) -> None:
        super().__init__(message)
        self.revision = revision
        self.applied = applied
        self.planned = planned
        self.cause = cause
        # The database refused a statement (a constraint, a type); otherwise the migration's own Python raised.
        self.database_refused = database_refused


def run_own_migrations(
    project: MigrationProject, target: DatabaseTarget, destination: str | tuple[str, ...], direction: Direction,
    *, one_transaction: bool = False,
) -> None:
    """Upgrade or downgrade `target` to `destination`, one transaction per migration.

    With `one_transaction`, every migration runs in a single transaction, as Alembic's default env.py
    runs `alembic upgrade head`: some histories only apply cleanly that way. Objects are named with the
    naming convention of the project's target_metadata, as env.py would.
    """
    # Migrations that read `context.config` see the target's URL, never the project's own.
    config = alembic_config_for(project, target)
    target_metadata = read_naming_convention(project).metadata()
    planned: list[str] = []
    applied: list[str] = []

    def steps(current: Any, context: Any) -> Any:
        # Alembic's own `command.upgrade`/`downgrade` pick their steps with these two methods.
        if direction == "upgrade":
            found = project.scripts._upgrade_revs(destination, current)  # type: ignore[arg-type]
        else:
            try:
                found = project.scripts._downgrade_revs(destination, current)  # type: ignore[arg-type]
            except AttributeError as exc:
                # Alembic reads each step's downgrade() as it lists the steps: a file without one (OpenStack's)
                # fails here, and the error names its module.
                planned[:] = [script.revision for script in project.scripts.walk_revisions()
                              if script.module is exc.obj][:1]
                raise
        planned[:] = [step.revision.revision for step in found]
        return found

    def record(*, step: Any, **_: Any) -> None:
        applied.extend(step.up_revision_ids)

    try:
        with EnvironmentContext(config, project.scripts, fn=steps, destination_rev=destination) as env:

            def migrate(connection: Connection) -> None:
                if project.version_table_schema:
                    # The project's env.py, which is not run here, usually makes sure this schema exists.
                    statement = sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        sql.Identifier(project.version_table_schema))
                    connection.exec_driver_sql(statement.as_string(None))
                    connection.commit()
                env.configure(connection=connection, version_table=project.version_table,
                              version_table_schema=project.version_table_schema,
                              transaction_per_migration=not one_transaction,
                              # Alembic calls each callback with keywords (ctx=, step=, heads=, run_args=); its
                              # annotation (OnVersionApplyFn) says four positional arguments.
                              on_version_apply=[record],  # type: ignore[arg-type]
                              target_metadata=target_metadata)
                with env.begin_transaction():
                    env.run_migrations()

            if target.is_async:
                _migrate_with_async_driver(target, migrate)
            else:
                engine = create_engine(target.sqlalchemy_url, poolclass=pool.NullPool)
                try:
                    with engine.connect() as connection:
                        migrate(connection)
                finally:
                    engine.dispose()
    except Exception as exc:
        failed = next((rev for rev in planned if rev not in applied), None)
        # SQLAlchemy's words for an unnamed constraint hold the reprs of its objects (Zou's a0f668430352).
        unnamed = unnamed_drop_in_words(exc)
        cause = f"it {unnamed}" if unnamed else f"{type(exc).__name__}: {target.scrub(first_line(exc))}"
        raised = "raised"
        if direction == "downgrade" and failed is not None and not project.has_downgrade(failed):
            cause, raised = project.no_downgrade_text(failed), "failed:"
        which = ", ".join(planned) or (destination if isinstance(destination, str) else ", ".join(destination))
        raise MigrationFailed(f"{direction} of {which} {raised} {cause}", revision=failed, applied=len(applied),
                              planned=len(planned), cause=cause, database_refused=isinstance(exc, DBAPIError)) from None


def _migrate_with_async_driver(target: DatabaseTarget, migrate: Callable[[Connection], None]) -> None:
    """Run `migrate` on a connection of an async engine, as Alembic's async env.py template does."""
    backends = BackendPids()

    async def on_async_connection() -> None:
        engine = create_async_engine(target.sqlalchemy_url, poolclass=pool.NullPool)
        event.listen(engine.sync_engine, "connect", backends.record)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
        finally:
            await engine.dispose()

    def cancel() -> None:
        with connect(target) as conn:
            backends.cancel_all(conn)

    run_outside_event_loop(lambda: asyncio.run(on_async_connection()), cancel=cancel)


def first_line(exc: BaseException) -> str:
    """The driver's own message: SQLAlchemy appends the statement and its parameters, which may hold data."""
    source = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    lines = [line.strip() for line in str(source).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
