"""rollbook's settings file: the nearest rollbook.toml, or pyproject.toml with a [tool.rollbook] table.

The policy (`[policy.*]`) and the archive's signing settings (`[archive]`) are read from the same file,
found the same way, so a team keeps all of rollbook's settings in one place next to its project.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbook.errors import BadInput

CONFIG_FILE = "rollbook.toml"
PYPROJECT_FILE = "pyproject.toml"


@dataclass(frozen=True)
class SettingsFile:
    """The settings file found, its rollbook table, and how that table is spelt in messages."""

    path: Path
    table: dict[str, Any]  # the whole rollbook.toml, or pyproject.toml's [tool.rollbook]
    prefix: str  # "" for rollbook.toml, "tool.rollbook." for pyproject.toml

    def section(self, name: str) -> str:
        """How a table of this file is written in the file itself: [policy] or [tool.rollbook.policy]."""
        return f"[{self.prefix}{name}]"


def find_settings(start: Path) -> SettingsFile | None:
    """The nearest settings file from `start` upwards, stopping at the repository root; None if there is none.

    rollbook.toml wins over pyproject.toml in the same folder; a pyproject.toml without [tool.rollbook]
    is passed over.
    """
    folder = start if start.is_dir() else start.parent
    for candidate in (folder.resolve(), *folder.resolve().parents):
        config = candidate / CONFIG_FILE
        if config.is_file():
            return SettingsFile(config, read_toml(config), "")
        pyproject = candidate / PYPROJECT_FILE
        if pyproject.is_file():
            tool = read_toml(pyproject).get("tool", {})
            if isinstance(tool, dict) and "rollbook" in tool:
                section = tool["rollbook"]
                if not isinstance(section, dict):
                    raise BadInput(f"{pyproject}: [tool.rollbook] must be a table. Fix the file and retry.")
                return SettingsFile(pyproject, section, "tool.rollbook.")
        # A project's settings never come from a folder above its repository.
        if (candidate / ".git").exists() or (candidate / ".hg").exists():
            break
    return None


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file's content; BadInput saying what is wrong if it cannot be read or parsed."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path} is not valid TOML ({exc}). Fix the file and retry; nothing was changed.") from None
    except OSError as exc:
        raise BadInput(f"{path} cannot be read ({exc.strerror}). Check its permissions and retry.") from None


@dataclass(frozen=True)
class ProjectSetting:
    """One key of the `[project]` table, how a message names it, and the folder relative paths start from."""

    value: Any
    where: str  # e.g. "base_schema in [project] of /srv/app/rollbook.toml"
    folder: Path


def project_setting(start: Path, key: str) -> ProjectSetting | None:
    """`key` of the `[project]` table (`[tool.rollbook.project]` in pyproject.toml) of the nearest settings
    file from `start` upwards; None when it is not set."""
    settings = find_settings(start)
    if settings is None:
        return None
    section = settings.table.get("project", {})
    if not isinstance(section, dict):
        raise BadInput(f"{settings.path}: {settings.section('project')} must be a table. Fix the file and retry; "
                       "nothing was changed.")
    if key not in section:
        return None
    return ProjectSetting(section[key], f"{key} in {settings.section('project')} of {settings.path}",
                          settings.path.parent)
