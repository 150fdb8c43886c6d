"""The team's Alembic project: its config, its revision files and their checksums."""

from __future__ import annotations

import ast
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from rollbook.database import DatabaseTarget
from rollbook.errors import BadInput

DEFAULT_CONFIG = "alembic.ini"
_VERSION_TABLE_KEYS = ("version_table", "version_table_schema")


@dataclass(frozen=True)
class RevisionInfo:
    """One migration file: what it is, where it lives, and its content hash for the record."""

    revision: str
    down_revisions: tuple[str, ...]
    message: str
    file: str
    sha256: str

    @property
    def down_revision(self) -> str | None:
        """The single parent, or the parents joined by '+' for a merge revision."""
        return "+".join(self.down_revisions) if self.down_revisions else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "down_revision": self.down_revision,
            "message": self.message,
            "file": self.file,
            "sha256": self.sha256,
        }


@dataclass
class MigrationProject:
    """An Alembic project loaded without running its env.py."""

    config_path: Path
    config: Config = field(repr=False)
    scripts: ScriptDirectory = field(repr=False)
    version_table: str = "alembic_version"
    version_table_schema: str | None = None

    def script(self, revision: str) -> Script:
        """The migration script for a full revision id (already resolved)."""
        return self.scripts.revision_map.get_revision(revision)  # type: ignore[return-value]

    def has_file(self, revision: str) -> bool:
        try:
            self.scripts.revision_map.get_revision(revision)
        except Exception:
            return False
        return True

    def info(self, revision: str) -> RevisionInfo:
        script = self.script(revision)
        path = Path(script.path)
        return RevisionInfo(
            revision=script.revision,
            down_revisions=_as_tuple(script.down_revision),
            message=(script.doc or "").strip().splitlines()[0] if script.doc else "",
            file=_display_path(path, self.config_path.parent),
            sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        )

    def heads(self) -> tuple[str, ...]:
        return tuple(self.scripts.get_heads())


def load_project(config_path: str | os.PathLike[str] | None = None) -> MigrationProject:
    """Load the Alembic project named by `config_path`, ALEMBIC_CONFIG or ./alembic.ini."""
    path = Path(config_path or os.environ.get("ALEMBIC_CONFIG") or DEFAULT_CONFIG).expanduser()
    if not path.is_file():
        raise BadInput(
            f"No Alembic config at {path}. Name the project's alembic.ini (--config, the alembic_config "
            "parameter of a runbook, or ALEMBIC_CONFIG), or run rollbook from the folder that holds it."
        )
    config = Config(str(path))
    try:
        scripts = ScriptDirectory.from_config(config)
        # The revision map imports every migration file: do it now so a broken file is reported here. Files
        # that read `alembic.context` at import time (its config, -x arguments) find it, as under `alembic`.
        with EnvironmentContext(config, scripts, as_sql=True):
            scripts.revision_map.heads
    except CommandError as exc:
        raise BadInput(f"The Alembic project at {path} cannot be read: {exc}. Fix alembic.ini and retry.") from None
    except Exception as exc:
        raise BadInput(
            f"A migration file of the Alembic project at {path} fails to import: {type(exc).__name__}: {exc}. "
            "Fix or restore that file (git checkout) and retry; nothing was changed."
        ) from None
    version_table, version_table_schema = _version_table(config, Path(scripts.dir) / "env.py", path)
    return MigrationProject(config_path=path.resolve(), config=config, scripts=scripts,
                            version_table=version_table, version_table_schema=version_table_schema)


def _version_table(config: Config, env_py: Path, config_path: Path) -> tuple[str, str | None]:
    """The version table the project's env.py configures, read without running it.

    `version_table` / `version_table_schema` in alembic.ini's [alembic] section win; otherwise the
    string literals (or module-level string constants) env.py passes to `context.configure`.
    """
    configured = {key: config.get_main_option(key) for key in _VERSION_TABLE_KEYS}
    if not any(configured.values()):
        configured = _configure_arguments(env_py, config_path)
    return configured.get("version_table") or "alembic_version", configured.get("version_table_schema") or None


def _configure_arguments(env_py: Path, config_path: Path) -> dict[str, str | None]:
    try:
        tree = ast.parse(env_py.read_text())
    except (OSError, SyntaxError, ValueError):
        return {}
    constants = {
        target.id: node.value.value for node in tree.body if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        for target in node.targets if isinstance(target, ast.Name)
    }
    seen: dict[str, set[str | None]] = {}
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "configure"):
            continue
        for keyword in node.keywords:
            if keyword.arg in _VERSION_TABLE_KEYS:
                value = keyword.value
                literal = value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else (
                    constants.get(value.id) if isinstance(value, ast.Name) else None)
                seen.setdefault(keyword.arg, set()).add(literal)
    for key, values in seen.items():
        if len(values) != 1 or None in values:
            # Guessing would read another table's revision, and plan a downgrade of the wrong path.
            raise BadInput(
                f"{env_py} passes {key}= to context.configure with a value rollbook cannot read without running "
                f"env.py. Put the same `{key} = <name>` in the [alembic] section of {config_path} (and "
                "version_table_schema if it has one) and retry; nothing was changed."
            )
    return {key: values.pop() for key, values in seen.items()}


def _as_tuple(value: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _display_path(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def alembic_config_for(project: MigrationProject, target: DatabaseTarget) -> Config:
    """A copy of the project's config pointing at `target`, for running Alembic commands."""
    config = Config(str(project.config_path))
    # ConfigParser interpolates '%': a percent-encoded password or socket path must be doubled.
    config.set_main_option("sqlalchemy.url", target.sqlalchemy_url.replace("%", "%%"))
    return config
