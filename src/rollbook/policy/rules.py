"""The policy's rules per environment, and where a team sets them.

The defaults are the team's rollback procedure: production is forward-only, and a rollback there is an
exception allowed only right after deployment, with a second person's approval, a verified backup, and
no destructive step. Teams override the rules in `rollbook.toml` or `[tool.rollbook]` of pyproject.toml.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from rollbook.errors import BadInput
from rollbook.project_config import find_settings

HighRiskRule = Literal["never", "with_accept_data_loss"]
DataWrittenRule = Literal["never", "with_accept_data_loss", "always"]
HIGH_RISK_CHOICES: tuple[str, ...] = ("never", "with_accept_data_loss")
DATA_WRITTEN_CHOICES: tuple[str, ...] = ("never", "with_accept_data_loss", "always")
DEFAULTS_SOURCE = "defaults (the team's rollback procedure)"
# How a rollback's safety net is taken (rollbook.recovery.backup_strategy carries them out).
BACKUP_STRATEGIES: tuple[str, ...] = ("full", "parallel", "at-risk", "pitr")


# A segment normally reaches the archive within a second or two, so a minute means archiving is stuck; an archiver
# that queues (pgBackRest's asynchronous archiving, a managed service) may need an environment to wait longer.
PITR_ARCHIVE_WAIT_SECONDS = 60.0


@dataclass(frozen=True)
class EnvironmentRules:
    """What one environment demands before a rollback may run; the bare defaults are production's."""

    rollback_allowed: bool = True
    # Rollback only within this many minutes of deployed_at; None: no time limit.
    window_minutes: int | None = 5
    require_approver: bool = True
    approver_not_operator: bool = True
    # A backup taken by this run and verified before the downgrade.
    require_backup: bool = True
    allow_high_risk: HighRiskRule = "never"
    # Values the downgrade would destroy, counted live: data written using the new schema.
    allow_data_written: DataWrittenRule = "never"
    # The approval must name the plan (its hash) that the approver reviewed.
    require_approved_plan: bool = False
    # The downgrade rehearsed first on a restored copy of the database (the rollback runbook's `rehearse copy`).
    require_rehearsal: bool = False
    # The backup strategies accepted here; the first is the default. `full` first keeps a pg_dump of everything
    # the default; production accepts only a copy of everything (full) or continuous archiving (pitr).
    backup_strategies: tuple[str, ...] = ("full", "pitr")
    # How long the pitr strategy waits for the segment holding its restore point to be archived.
    pitr_archive_wait_seconds: float = PITR_ARCHIVE_WAIT_SECONDS

    @property
    def default_backup_strategy(self) -> str:
        return self.backup_strategies[0]

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {**values, "backup_strategies": list(self.backup_strategies)}


# The procedure: production is forward-only, with a rollback allowed only right after deployment, on
# a team lead's approval, with a verified backup, for non-destructive migrations, before data is written.
PRODUCTION = EnvironmentRules()
# "Staging and development" are where the procedure calls rollbacks safe; losing data still needs a yes.
STAGING = EnvironmentRules(window_minutes=None, require_approver=False, allow_high_risk="with_accept_data_loss",
                           allow_data_written="with_accept_data_loss", backup_strategies=BACKUP_STRATEGIES)
DEVELOPMENT = STAGING


@dataclass(frozen=True)
class PolicyRules:
    """The rules of every known environment, and where they came from."""

    environments: Mapping[str, EnvironmentRules]
    source: str = DEFAULTS_SOURCE

    def __post_init__(self) -> None:
        # Read-only, so a decision can never be made against rules changed after loading.
        object.__setattr__(self, "environments", MappingProxyType(dict(self.environments)))

    def for_environment(self, name: str) -> EnvironmentRules:
        """The rules of environment `name` (case-insensitive); BadInput for an unknown one."""
        key = name.strip().lower()
        if key not in self.environments:
            known = ", ".join(self.environments)
            raise BadInput(
                f"Unknown environment '{name}': the rollback policy ({self.source}) knows {known}. "
                f"Pass one of those, or add a table for '{key}' to the policy file."
            )
        return self.environments[key]

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "environments": {k: v.to_dict() for k, v in self.environments.items()}}


def default_policy() -> PolicyRules:
    """The team's procedure: production forward-only with narrow exceptions; staging and development freer."""
    return PolicyRules({"production": PRODUCTION, "staging": STAGING, "development": DEVELOPMENT})


# ---------------------------------------------------------------------------------------------- config


_BOOL_KEYS = ("rollback_allowed", "require_approver", "approver_not_operator", "require_backup",
              "require_approved_plan", "require_rehearsal")
_ALLOWED_KEYS = (*(f.name for f in fields(EnvironmentRules)), "based_on")


def load_policy(start: Path) -> PolicyRules:
    """The policy of the project at `start`: the nearest rollbook.toml or pyproject.toml with [tool.rollbook].

    Folders are searched from `start` upwards, stopping at the repository root; rollbook.toml wins over
    pyproject.toml in the same folder. Without either, the defaults apply.
    """
    settings = find_settings(start)
    if settings is None:
        return default_policy()
    _refuse_misplaced_environments(settings.path, settings.table, settings.section("policy.{}"))
    return _rules_from(settings.path, settings.table.get("policy", {}), settings.section("policy"))


def _refuse_misplaced_environments(path: Path, table: dict[str, Any], expected: str) -> None:
    # Rules one level too high would be silently ignored, and the defaults would apply unnoticed.
    misplaced = [key for key in table if key.strip().lower() in default_policy().environments]
    if misplaced:
        raise BadInput(f"{path}: the rules of '{misplaced[0]}' must be in the table {expected.format(misplaced[0])}, "
                       "not at this level, or rollbook would ignore them. Move them there and retry.")


def _rules_from(path: Path, table: Any, where: str) -> PolicyRules:
    defaults = default_policy().environments
    if not isinstance(table, dict):
        raise BadInput(f"{path}: {where} must be a table of environments, like {where[:-1]}.production]. "
                       "Fix the file and retry.")
    environments = dict(defaults)
    for raw_name, values in table.items():
        name = raw_name.strip().lower()
        section = f"{where[:-1]}.{raw_name}]"
        if not isinstance(values, dict):
            raise BadInput(f"{path}: {section} must be a table of rules (allowed keys: {', '.join(_ALLOWED_KEYS)}). "
                           "Fix the file and retry.")
        environments[name] = _environment_rules(path, section, name, values, defaults)
    return PolicyRules(environments, source=f"{path} {where}")


def _environment_rules(path: Path, section: str, name: str, values: dict[str, Any],
                       defaults: Mapping[str, EnvironmentRules]) -> EnvironmentRules:
    def bad(key: str, problem: str) -> BadInput:
        return BadInput(f"{path}: {section} {key} {problem}. Fix the file and retry; nothing was changed.")

    unknown = [key for key in values if key not in _ALLOWED_KEYS]
    if unknown:
        raise bad(unknown[0], f"is not a rule rollbook knows (allowed keys: {', '.join(_ALLOWED_KEYS)})")
    based_on = values.get("based_on", name if name in defaults else "production")
    if based_on not in defaults:
        raise bad("based_on", f"= {based_on!r} names no default environment (allowed: {', '.join(defaults)})")
    # An environment the defaults do not know starts from production's rules, the strictest: a key
    # forgotten in the file never loosens it.
    rules = defaults[based_on]
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key == "based_on":
            continue
        if key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise bad(key, f"must be true or false, not {value!r}")
            changes[key] = value
        elif key == "window_minutes":
            # TOML has no null: false switches the window off.
            if value is False:
                changes[key] = None
            elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
                changes[key] = value
            else:
                raise bad(key, f"must be a whole number of minutes above 0, or false for no window, not {value!r}")
        elif key == "allow_high_risk":
            if value not in HIGH_RISK_CHOICES:
                raise bad(key, f"must be one of {', '.join(map(repr, HIGH_RISK_CHOICES))}, not {value!r}")
            changes[key] = value
        elif key == "allow_data_written":
            if value not in DATA_WRITTEN_CHOICES:
                raise bad(key, f"must be one of {', '.join(map(repr, DATA_WRITTEN_CHOICES))}, not {value!r}")
            changes[key] = value
        elif key == "backup_strategies":
            changes[key] = _strategies(value, bad)
        elif key == "pitr_archive_wait_seconds":
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 3600:
                raise bad(key, f"must be a number of seconds above 0 and at most 3600, not {value!r}")
            changes[key] = float(value)
    return replace(rules, **changes)


def _strategies(value: Any, bad: Callable[[str, str], BadInput]) -> tuple[str, ...]:
    """A non-empty list of known strategies without repeats; the first is the environment's default."""
    if (not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value)
            or len(set(value)) != len(value)):
        raise bad("backup_strategies", f"must be a list of strategies without repeats, the default first, like "
                                       f"[\"pitr\", \"full\"], not {value!r}")
    unknown = [v for v in value if v not in BACKUP_STRATEGIES]
    if unknown:
        raise bad("backup_strategies", f"names {unknown[0]!r}, which is no strategy rollbook knows (known: "
                                       f"{', '.join(BACKUP_STRATEGIES)})")
    return tuple(value)
