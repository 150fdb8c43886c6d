"""Alembic's offline rendering of one migration function to PostgreSQL SQL, without env.py or a database."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Literal

from alembic.operations import Operations
from alembic.runtime.environment import EnvironmentContext
from sqlalchemy.exc import DuplicateColumnError

from rollbook.migrations import MigrationProject
from rollbook.naming_convention import read_naming_convention

Direction = Literal["upgrade", "downgrade"]


@dataclass(frozen=True)
class RenderedSQL:
    """The SQL a migration function emits, or why offline rendering was impossible."""

    revision: str
    direction: Direction
    sql: str | None
    error: str | None = None
    # The function's own code raised an error no database changes (a table defined with a column twice): it
    # raises the same when it runs, so the step fails wherever it runs.
    fails_everywhere: bool = False


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
        """Run `upgrade()` or `downgrade()` of `revision` in offline mode and capture what it emits."""
        module = self._project.script(revision).module
        buffer = io.StringIO()
        self._context.impl.output_buffer = buffer
        try:
            with self._environment, Operations.context(self._context):
                getattr(module, direction)()
        except Exception as exc:
            # Typically the migration reads the database (op.get_bind().execute(...).fetchall()),
            # which offline mode cannot answer; the caller falls back to reading the Python source.
            return RenderedSQL(revision, direction, None, offline_failure_in_words(exc),
                               fails_everywhere=isinstance(exc, DEFINITION_ERRORS))
        return RenderedSQL(revision, direction, buffer.getvalue())


# Errors SQLAlchemy raises while the migration builds its schema objects, before any statement is sent.
DEFINITION_ERRORS = (DuplicateColumnError,)
_RESULT_READ = re.compile(r"'NoneType' object has no attribute '(\w+)'")


def offline_failure_in_words(error: Exception) -> str:
    """Why a migration function could not run offline, in a reviewer's words where the cause is a known one."""
    read = _RESULT_READ.search(str(error))
    if isinstance(error, AttributeError) and read:
        return f"it reads the result of a query (.{read.group(1)}), which needs the live database"
    if type(error).__name__ == "NoInspectionAvailable":
        return "it inspects the live database (sqlalchemy.inspect on its connection)"
    return f"{type(error).__name__}: {error}"
