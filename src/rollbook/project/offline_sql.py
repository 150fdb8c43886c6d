"""Alembic's offline rendering of one migration function to PostgreSQL SQL, without env.py or a database."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Literal

from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext

from rollbook.project.migrations import MigrationProject
from rollbook.project.naming_convention import read_naming_convention
from rollbook.planning.python_operations import branches_on_offline_mode

Direction = Literal["upgrade", "downgrade"]


@dataclass(frozen=True)
class RenderedSQL:
    """The SQL a migration function emits, or why offline rendering was impossible."""

    revision: str
    direction: Direction
    sql: str | None
    error: str | None = None


class OfflineRenderer:
    """Renders migration functions one at a time through a single offline MigrationContext."""

    def __init__(self, project: MigrationProject) -> None:
        self._project = project
        # Migrations that read `alembic.context` while they run (get_context().dialect.name, config,
        # get_x_argument(), is_offline_mode()) find an offline PostgreSQL environment, as under `alembic --sql`.
        self._environment = EnvironmentContext(project.config, project.scripts, as_sql=True)
        self._environment.configure(
            dialect_name="postgresql",
            # The default pyformat paramstyle doubles every % in the SQL (LIKE 'a%' becomes 'a%%'), which
            # would change what the live checks count; Alembic's own offline template uses "named" too.
            dialect_opts={"paramstyle": "named"},
            output_buffer=io.StringIO(),
            literal_binds=True,
            # Objects are named with the convention env.py's target_metadata gives them.
            target_metadata=read_naming_convention(project).metadata(),
        )
        self._context = self._environment.get_context()

    def render(self, revision: str, direction: Direction) -> RenderedSQL:
        """Run `upgrade()` or `downgrade()` of `revision` in offline mode and capture what it emits; a function
        that branches on offline mode is not rendered, since what it emits offline is not what it does."""
        script = self._project.script(revision)
        if branches_on_offline_mode(script.path, direction):
            return RenderedSQL(revision, direction, None, OFFLINE_BRANCH)
        module = script.module
        buffer = io.StringIO()
        self._context.impl.output_buffer = buffer
        try:
            with self._environment, Operations.context(self._context):
                getattr(module, direction)()
        except Exception as exc:
            # Typically the migration reads the database (op.get_bind().execute(...).fetchall()),
            # which offline mode cannot answer; the caller falls back to reading the Python source.
            return RenderedSQL(revision, direction, None, offline_failure_in_words(exc))
        return RenderedSQL(revision, direction, buffer.getvalue())


OFFLINE_BRANCH = ("it tests context.is_offline_mode() and does work only online that the offline render cannot "
                  "show")
_RESULT_READ = re.compile(r"'NoneType' object has no attribute '(\w+)'")
# Offline, op.get_bind() is SQLAlchemy's MockConnection, which only compiles DDL: an ORM Session on it
# (Optuna's data migrations) or any other use as a live connection fails on the first call it lacks.
_LIVE_CONNECTION_USE = re.compile(r"'MockConnection' object has no attribute '(\w+)'")


def offline_failure_in_words(error: Exception) -> str:
    """Why a migration function could not run offline, in a reviewer's words where the cause is a known one."""
    read = _RESULT_READ.search(str(error))
    if isinstance(error, AttributeError) and read:
        return f"it reads the result of a query (.{read.group(1)}), which needs the live database"
    live_use = _LIVE_CONNECTION_USE.search(str(error))
    if isinstance(error, AttributeError) and live_use:
        return (f"it uses its connection as a live one (.{live_use.group(1)}, as an ORM Session does), which "
                "needs the live database")
    if type(error).__name__ == "NoInspectionAvailable":
        return "it inspects the live database (sqlalchemy.inspect on its connection)"
    return f"{type(error).__name__}: {error}"
