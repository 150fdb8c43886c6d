"""The team's Alembic project: its config, its revision files and their checksums."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
from argparse import Namespace
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError

from rollbook.errors import BadInput
from rollbook.pg.database import DatabaseTarget
from rollbook.project.env_py_settings import VERSION_TABLE_KEYS, EnvPyReader, MissingXArgument
from rollbook.project_config import find_settings, project_setting

DEFAULT_CONFIG = "alembic.ini"


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
    x_args: tuple[str, ...] = ()  # `-x KEY=VALUE` arguments for env.py, as `alembic -x` passes them
    ini_section: str = "alembic"  # the section of alembic.ini to read, as `alembic -n` names it

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

    def has_downgrade(self, revision: str) -> bool:
        """Whether the migration file defines downgrade(): projects that never downgrade (OpenStack's) omit it."""
        return callable(getattr(self.script(revision).module, "downgrade", None))

    def no_downgrade_text(self, revision: str) -> str:
        """Why Alembic cannot undo `revision`, in words, for a file without downgrade()."""
        return (f"the migration file of {revision} has no downgrade() function, so Alembic cannot undo it "
                "(the project does not support downgrades)")

    def refuse_if_no_migrations(self, current: tuple[str, ...]) -> None:
        """Refuse a database at a revision when the project has no migration file at all.

        Then the files are elsewhere (env.py points Alembic at other folders at run time), not deleted:
        the advice is the setting that names the folders, never a `git log` hunt.
        """
        if not current or self.heads():
            return
        searched = ", ".join(str(location) for location in self.scripts._version_locations)
        raise BadInput(
            f"The database is at revision {', '.join(current)}, but rollbook finds no migration file at all in "
            f"{searched}. The files are probably elsewhere (many env.py files set version_locations at run time). "
            f"{_name_the_folders(self.config_path)}"
        )


def load_project(config_path: str | os.PathLike[str] | None = None, x_args: Sequence[str] = (),
                 ini_section: str = "alembic") -> MigrationProject:
    """Load the Alembic project named by `config_path`, ALEMBIC_CONFIG or ./alembic.ini.

    `ini_section` is the section of alembic.ini to read (`alembic -n`), for files that hold several databases.

    `x_args` are the `-x` arguments (`KEY=VALUE`) env.py reads with `context.get_x_argument`; they reach
    every Alembic call rollbook makes, and settings env.py derives from them are read with them.
    """
    path = Path(config_path or os.environ.get("ALEMBIC_CONFIG") or DEFAULT_CONFIG).expanduser()
    if not path.is_file():
        raise BadInput(
            f"No Alembic config at {path}. Name the project's alembic.ini (--config, the alembic_config "
            "parameter of a runbook, or ALEMBIC_CONFIG), or run rollbook from the folder that holds it."
        )
    x_args = tuple(x_args)
    config = _alembic_config(path, x_args, ini_section)
    _check_ini_section(config, path)
    _check_script_location(config, path)
    _prepare_project(path)
    try:
        scripts = ScriptDirectory.from_config(config)
    except CommandError as exc:
        raise BadInput(f"The Alembic project at {path} cannot be read: {exc}. Fix alembic.ini and retry.") from None
    env_py = EnvPyReader(Path(scripts.dir) / "env.py", x_args)
    locations = _version_locations(config, path, env_py)
    if locations is not None:
        scripts.version_locations = list(locations)
    try:
        # The revision map imports every migration file: do it now so a broken file is reported here. Files
        # that read `alembic.context` at import time (its config, -x arguments) find it, as under `alembic`.
        with EnvironmentContext(config, scripts, as_sql=True):
            scripts.revision_map.heads  # noqa: B018 (the property loads every file)
    except CommandError as exc:
        raise BadInput(f"The Alembic project at {path} cannot be read: {exc}. Fix alembic.ini and retry.") from None
    except Exception as exc:
        advice = "Fix or restore that file (git checkout) and retry"
        if isinstance(exc, ModuleNotFoundError):
            advice = (f"If {exc.name} is a package the project needs, run rollbook in the project's own environment "
                      f"(pip install rollbook there; this one is {sys.executable}) or put the folder that holds it on "
                      "PYTHONPATH; otherwise fix or restore that file (git checkout) and retry")
        elif not isinstance(exc, (SyntaxError, ImportError)):
            # The file imports the project's code, which refused to load (Zou's app wants its SECRET_KEY).
            advice = ("Importing it runs the project's own code, which refused: give rollbook the settings the "
                      "project's own tools run with (its environment variables, its environment), or fix or "
                      "restore that file (git checkout), and retry")
        file = _migration_file_in(exc, scripts)
        raise BadInput(
            f"A migration file of the Alembic project at {path}{f' ({file})' if file else ''} fails to import: "
            f"{type(exc).__name__}: {str(exc).rstrip('. ')}. {advice}; nothing was changed."
        ) from None
    version_table, version_table_schema = _version_table(config, env_py, path)
    return MigrationProject(config_path=path.resolve(), config=config, scripts=scripts,
                            version_table=version_table, version_table_schema=version_table_schema, x_args=x_args,
                            ini_section=ini_section)


PREPARE_SETTING = "prepare"


def _prepare_project(config_path: Path) -> None:
    """Call the project's `prepare` function (`[project]` of rollbook.toml): the set-up its own tools do before
    they load its migrations (keystone-manage registers keystone's configuration options, which its initial
    migration reads: `prepare = "keystone.conf:configure"`)."""
    setting = project_setting(config_path.parent, PREPARE_SETTING)
    if setting is None:
        return
    module_name, _, attribute = str(setting.value).partition(":")
    if not module_name or not attribute:
        raise BadInput(f"{setting.where} must be \"module:function\", not {setting.value!r}. Fix the setting and "
                       "retry; nothing was changed.")
    try:
        found: Any = importlib.import_module(module_name)
        for name in attribute.split("."):
            found = getattr(found, name)
        found()
    except Exception as exc:  # the project's own code may raise anything
        raise BadInput(f"{setting.where} names {setting.value!r}, which failed: {type(exc).__name__}: {exc}. Run "
                       "rollbook in the project's environment, or fix the setting; nothing was changed.") from None


def _migration_file_in(error: BaseException, scripts: ScriptDirectory) -> str | None:
    """The migration file whose import raised `error`: the last frame of its traceback in a versions folder."""
    folders = [os.path.realpath(folder) for folder in scripts._version_locations]
    found = None
    traceback = error.__traceback__
    while traceback is not None:
        filename = os.path.realpath(traceback.tb_frame.f_code.co_filename)
        if any(filename.startswith(folder + os.sep) for folder in folders):
            found = filename
        traceback = traceback.tb_next
    return found


def parse_x_args(value: Any, source: str) -> tuple[str, ...]:
    """`-x` arguments given as a list of `KEY=VALUE` strings or one string separated by commas or spaces."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        arguments = [part for part in re.split(r"[,\s]+", value) if part]
    elif isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        arguments = [item.strip() for item in value if item.strip()]
    else:
        raise BadInput(f"{source} must be KEY=VALUE arguments for env.py's context.get_x_argument(), as a list or "
                       f"separated by commas or spaces (tenant=acme,region=eu), not {value!r}.")
    for argument in arguments:
        if argument.startswith("="):
            raise BadInput(f"{source}: {argument!r} has no key. Write KEY=VALUE (tenant=acme), as `alembic -x` takes "
                           "it; nothing was changed.")
    return tuple(arguments)


def _alembic_config(path: Path, x_args: tuple[str, ...], ini_section: str) -> Config:
    # Alembic's own `alembic -x KEY=VALUE` puts them in cmd_opts.x, where context.get_x_argument reads them.
    return Config(str(path), ini_section=ini_section, cmd_opts=Namespace(x=list(x_args)) if x_args else None)


def _check_ini_section(config: Config, config_path: Path) -> None:
    """Refuse a section name alembic.ini does not have, naming the ones it has."""
    sections = config.file_config.sections()
    # The default section's absence is reported by the script_location check, with its own way out.
    if config.config_ini_section != "alembic" and config.config_ini_section not in sections:
        raise BadInput(f"{config_path} has no [{config.config_ini_section}] section (--name); its sections are "
                       f"{', '.join(sections) or 'none'}. Name the one that configures the project's migrations.")


def _check_script_location(config: Config, config_path: Path) -> None:
    """Refuse, with the way out, a script_location that Alembic would fail to find with a misleading message."""
    location = config.get_alembic_option("script_location")
    if not location or os.path.isabs(location):
        return
    if ":" in location:
        package = location.split(":")[0]
        if importlib.util.find_spec(package) is None:
            raise BadInput(
                f"{config_path} names its migrations as `script_location = {location}`, inside the Python package "
                f"{package}, which is not installed where rollbook runs ({sys.executable}). Run rollbook in the "
                f"environment where {package} is installed (pip install rollbook there), or put the folder that "
                f"holds the package on PYTHONPATH; nothing was changed."
            )
        return
    resolved = Path.cwd() / location
    if resolved.is_dir():
        return
    # The folder the project's team runs alembic from is usually alembic.ini's own, or one above it.
    config_folder = config_path.resolve().parent
    base = next((folder for folder in (config_folder, *config_folder.parents) if (folder / location).is_dir()), None)
    hint = (f"run rollbook from {base} (cd there first)" if base is not None
            else "run rollbook from the folder the path is relative to")
    # %(here)s is alembic.ini's folder: the same scripts folder, written from there.
    from_here = Path(os.path.relpath(base / location, config_folder)).as_posix() if base is not None else location
    here_location = "%(here)s" if from_here == "." else f"%(here)s/{from_here}"
    raise BadInput(
        f"{config_path} has the relative `script_location = {location}`, which Alembic reads relative to the "
        f"current folder ({Path.cwd()}), not to alembic.ini's folder: there is no {resolved}. Either {hint}, or "
        f"write `script_location = {here_location}` in alembic.ini so it is read from alembic.ini's folder; "
        "nothing was changed."
    )


def _version_locations(config: Config, config_path: Path, env_py: EnvPyReader) -> tuple[str, ...] | None:
    """Where the revision files are, when alembic.ini alone does not say: rollbook's setting, or env.py.

    None keeps Alembic's own answer (alembic.ini's `version_locations`, else script_location/versions).
    """
    if config.get_version_locations_list():
        return None
    settings = find_settings(config_path.resolve())
    project_table = settings.table.get("project", {}) if settings else {}
    configured = project_table.get("version_locations") if isinstance(project_table, dict) else None
    if settings is not None and configured is not None:
        if not (isinstance(configured, list) and configured and all(isinstance(p, str) for p in configured)):
            raise BadInput(f"{settings.path}: version_locations in {settings.section('project')} must be a list of "
                           "folders (relative to that file), such as [\"migrations/versions/postgresql\"].")
        return tuple(str((settings.path.parent / folder).resolve()) for folder in configured)
    try:
        found = env_py.version_locations()
    except MissingXArgument as missing:
        raise _missing_x_argument(missing.key, "its version_locations") from None
    if not found.values:
        return None
    if not found.readable:
        # Without them rollbook would see no migrations and blame deleted files.
        raise BadInput(
            f"The project's env.py sets version_locations at run time with a value rollbook cannot read without "
            f"running it, so rollbook cannot find the migration files. {_name_the_folders(config_path)}"
        )
    return tuple(found.value)


def _version_table(config: Config, env_py: EnvPyReader, config_path: Path) -> tuple[str, str | None]:
    """The version table the project's env.py configures, read without running it.

    `version_table` / `version_table_schema` in alembic.ini's [alembic] section win; otherwise the values
    env.py passes to `context.configure`, when they are literals or computed from names, paths or `-x`
    arguments (see `rollbook.project.env_py_settings`).
    """
    configured = {key: config.get_main_option(key) for key in VERSION_TABLE_KEYS}
    if not any(configured.values()):
        try:
            found = env_py.configure_arguments()
        except MissingXArgument as missing:
            raise _missing_x_argument(missing.key, "the version table") from None
        for key, setting in found.items():
            if not setting.readable:
                # Guessing would read another table's revision, and plan a downgrade of the wrong path.
                setting_line = ("`version_table = <name>` (and `version_table_schema = <schema>` if it names one)"
                                if key == "version_table" else
                                "`version_table_schema = <schema>` (`public` when the value env.py computes is "
                                "empty or None, as when the project's own schema setting is unset)")
                raise BadInput(
                    f"The project's env.py passes {key}= to context.configure with a value rollbook cannot read "
                    f"without running env.py. Put the same {setting_line} in the [alembic] section of "
                    f"{config_path} and retry; nothing was changed."
                )
        configured = {key: setting.value for key, setting in found.items()}
    return configured.get("version_table") or "alembic_version", configured.get("version_table_schema") or None


def _name_the_folders(config_path: Path) -> str:
    """The two places that name the folders of revision files, for a message."""
    return (f"Name the folders that hold them: `version_locations = %(here)s/<folder>` in the [alembic] section of "
            f"{config_path} (with `path_separator = os` for several), or `version_locations = [\"<folder>\", ...]` "
            "in the [project] table of rollbook.toml ([tool.rollbook.project] in pyproject.toml) next to it; "
            "nothing was changed.")


def _missing_x_argument(key: str, what: str) -> BadInput:
    return BadInput(
        f"The project's env.py reads the -x argument {key!r} (context.get_x_argument) to choose {what}, and none "
        f"was given. Pass it: --x-arg {key}=VALUE on the command line, or -p alembic_x_args {key}=VALUE for a "
        "runbook; nothing was changed."
    )


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
    config = _alembic_config(project.config_path, project.x_args, project.ini_section)
    # ConfigParser interpolates '%': a percent-encoded password or socket path must be doubled.
    config.set_main_option("sqlalchemy.url", target.sqlalchemy_url.replace("%", "%%"))
    return config
