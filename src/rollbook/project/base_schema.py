"""A starting schema for histories whose base tables come from `create_all`, not from a migration.

Some projects (MLflow among them) create their first tables with `metadata.create_all` and then run
or stamp their migrations: on an empty database their first upgrade fails ("relation metrics does not
exist"), so no expected schema and no rehearsal could be built. The project names that starting
schema in rollbook's settings, `base_schema` in the `[project]` table of rollbook.toml (or
`[tool.rollbook.project]` of pyproject.toml):

- `"path/to/schema.sql"` (relative to the settings file): SQL run as it is, such as
  `pg_dump --schema-only --no-owner --no-privileges` of a database at base; psql's backslash commands
  (`\\restrict` in newer dumps) are skipped;
- `"module:attribute"`: a MetaData or declarative base whose `create_all` runs, or a callable called
  with a SQLAlchemy connection, inside one transaction.

Every scratch database rollbook migrates from nothing gets it first: the expected schemas of the
schema check and the rehearsal's databases.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, pool

from rollbook.errors import BadInput
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.project.migrations import MigrationProject
from rollbook.project.own_migrations import first_line
from rollbook.project_config import project_setting

SETTING = "base_schema"
_MODULE_ATTRIBUTE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_PSQL_COMMAND = re.compile(r"^\s*\\.*$", re.MULTILINE)


class BaseSchemaFailed(BadInput):
    """The configured starting schema could not be created in a scratch database."""


@dataclass(frozen=True)
class BaseSchema:
    """The starting schema the settings name: a SQL file, or an importable object that creates it."""

    setting: str  # where it was configured, for messages
    sql_file: Path | None = None
    creator: Any = None  # a MetaData, a declarative base, or a callable taking a SQLAlchemy connection

    def create_in(self, scratch: DatabaseTarget) -> None:
        """Create the starting schema in the empty database `scratch`; BaseSchemaFailed if it cannot be."""
        try:
            if self.sql_file is not None:
                with connect(scratch, autocommit=False) as conn, conn.transaction():
                    conn.execute(_PSQL_COMMAND.sub("", self.sql_file.read_text()))
                return
            engine = create_engine(scratch.sqlalchemy_url, poolclass=pool.NullPool)
            try:
                with engine.begin() as connection:
                    metadata = _metadata_of(self.creator)
                    if metadata is not None:
                        metadata.create_all(connection)
                    else:
                        self.creator(connection)
            finally:
                engine.dispose()
        except Exception as exc:  # SQL errors, an unreadable file, or anything the project's own code raises
            raise BaseSchemaFailed(f"The starting schema ({self.setting}) could not be created in a scratch "
                                   f"database: {type(exc).__name__}: {scratch.scrub(first_line(exc))}") from None


def read_base_schema(project: MigrationProject) -> BaseSchema | None:
    """The starting schema the project's settings name, or None; BadInput if it names nothing usable."""
    setting = project_setting(project.config_path.parent, SETTING)
    if setting is None:
        return None
    value, where = setting.value, setting.where
    if not isinstance(value, str) or not value.strip():
        raise BadInput(f"{where} must be a path to a .sql file or \"module:attribute\", not {value!r}. Fix the "
                       "setting and retry; nothing was changed.")
    path = setting.folder / value
    if not _MODULE_ATTRIBUTE.match(value) or path.is_file():
        if not path.is_file():
            raise BadInput(f"{where} names {value!r}, but {path} is not a file. Write the starting schema there "
                           "(pg_dump --schema-only --no-owner --no-privileges of a database at base) or fix the "
                           "setting; nothing was changed.")
        return BaseSchema(f"{where}: {value}", sql_file=path)
    module_name, attribute = value.split(":")
    try:
        found: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            found = getattr(found, name)
    except Exception as exc:  # an application module may raise anything while it loads
        raise BadInput(f"{where} names {value!r}, which cannot be imported: {type(exc).__name__}: {exc}. Install "
                       "the project into this environment (pip install -e .) or fix the setting; nothing was "
                       "changed.") from None
    if _metadata_of(found) is None and not callable(found):
        raise BadInput(f"{where} names {value!r}, a {type(found).__name__}: name a MetaData, a declarative base, "
                       "or a function taking a SQLAlchemy connection; nothing was changed.")
    return BaseSchema(f"{where}: {value}", creator=found)


def _metadata_of(found: Any) -> MetaData | None:
    """A MetaData itself, or a declarative base's; None for anything else (a function to call, say)."""
    if isinstance(found, MetaData):
        return found
    metadata = getattr(found, "metadata", None) if isinstance(found, type) else None
    return metadata if isinstance(metadata, MetaData) else None


def create_base_schema(project: MigrationProject, scratch: DatabaseTarget) -> None:
    """Give the empty database `scratch` the project's starting schema, if its settings name one."""
    base = read_base_schema(project)
    if base is not None:
        base.create_in(scratch)
