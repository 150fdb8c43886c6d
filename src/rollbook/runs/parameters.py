"""Every runbook's parameters as papermill delivers them, checked for the ways papermill misleads.
One idea at a little over 400 lines, kept whole: each runbook's parameters dataclass and the checks they share
(revisions, flags, durations, passwords), so that one file shows every parameter a runbook takes and how it is read.

papermill guesses the type of every `-p` value, only warns about unknown names, and writes every
parameter into the output notebook. So a revision id can arrive as a number, a misspelt parameter
silently keeps its default, and a password in a URL parameter ends up in the record. Each of these is
refused here with a message that says how to run the notebook instead.
"""

from __future__ import annotations

import getpass
import re
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic_core import to_jsonable_python

from rollbook.errors import BadInput
from rollbook.policy.gate import parse_deployed_at
from rollbook.policy.rules import BACKUP_STRATEGIES
from rollbook.project.migrations import parse_x_args
from rollbook.redaction.connection_secrets import UnreadableConnectionString, secrets_in_text, split_connection_string
from rollbook.redaction.redact import SECRET_NAME_PARTS

VERIFY_METHODS = ("list", "restore")
# How the rollback runbook rehearses the downgrade first: not at all, or on a restored copy of the database.
REHEARSE_CHOICES = ("none", "copy")
RESTORE_INTO = ("new", "database")
# Where backups go when backup_dir is given empty.
DEFAULT_BACKUP_DIR = "backups"
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*$")
_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, None: 1}
# Field metadata: the notebook parameter a checked field comes from, when its name differs (or None for a
# field derived from others); see notebook_parameters.
_FROM = "parameter"


def from_parameter(name: str | None) -> dict[str, str | None]:
    """The metadata of a field checked from the notebook parameter `name` (None: derived from other parameters)."""
    return {_FROM: name}


class SecretInParameters(BadInput):
    """A parameter carries a password, which papermill has written into the output notebook."""


@dataclass(frozen=True)
class RunRequest:
    """Who asks for a run and on what terms: the opening facts of its record."""

    operator: str
    operator_from: str
    environment: str = ""
    approved_by: str = ""
    ticket: str = ""
    execute: bool = False


class GatedRequest:
    """Who asks for a gated run (rollback, restore, lost-data restore) and on whose approval: the fields these
    runbooks' parameters share, read by `_request_values`, as `RunRequest` states them."""

    environment: str
    operator: str
    operator_from: str
    approved_by: str
    approved_plan: str
    ticket: str
    execute: bool

    def requested_by(self) -> RunRequest:
        return RunRequest(self.operator, self.operator_from, self.environment, self.approved_by, self.ticket,
                          self.execute)


@dataclass(frozen=True)
class RunbookParameters:
    """The checked parameters every runbook takes: the database and the Alembic project. Never a password.

    Each runbook's parameters are a subclass; its fields are the notebook's parameters cell, checked
    (a test compares them with papermill's reading of every notebook), except those marked with
    `from_parameter`: a checked value under another name, or a value derived from the others.
    """

    # The runbook whose notebook declares these parameters.
    runbook: ClassVar[str]

    database_url: str
    alembic_config: str
    alembic_x_args: tuple[str, ...]

    @classmethod
    def read(cls, namespace: Mapping[str, Any], hidden: frozenset[str] = frozenset()) -> Self:
        """Check the names and values papermill put into the kernel's namespace; refuse misuse.

        `hidden` are the names the kernel defined itself (IPython's `user_ns_hidden`).
        """
        given = runbook_values(cls, namespace, hidden)
        return cls(**cls.checked(given))

    @classmethod
    def checked(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """The fields' values from the notebook's values: what every runbook takes; subclasses add theirs."""
        return {"database_url": _string("database_url", given["database_url"]),
                "alembic_config": _string("alembic_config", given["alembic_config"]), "alembic_x_args": _x_args(given)}

    def requested_by(self) -> RunRequest:
        """Who runs it: the login name, for a runbook without an operator parameter."""
        return RunRequest(getpass.getuser(), "login name")

    def to_dict(self) -> dict[str, Any]:
        """The parameters as the record keeps them (no password is ever among them)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["database_url"] = self.database_url or "(from DATABASE_URL)"
        return dict(to_jsonable_python(values))


def notebook_parameters(parameters: type[RunbookParameters]) -> tuple[str, ...]:
    """The names of the notebook parameters a parameters class is read from, in field order."""
    names = (f.metadata.get(_FROM, f.name) for f in fields(parameters))
    return tuple(name for name in names if name is not None)


@dataclass(frozen=True)
class StatusParameters(RunbookParameters):
    """The status runbook's parameters: the database and the project."""

    runbook: ClassVar[str] = "status"


@dataclass(frozen=True)
class PlanParameters(RunbookParameters):
    """The plan runbook's checked parameters."""

    runbook: ClassVar[str] = "plan"

    target_revision: str
    statement_timeout_ms: int = field(metadata=from_parameter("statement_timeout"))
    live_checks: bool

    @classmethod
    def checked(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        return {**super().checked(given), "target_revision": _revision(given["target_revision"]),
                "statement_timeout_ms": parse_duration_ms("statement_timeout", given["statement_timeout"]),
                "live_checks": _flag("live_checks", given["live_checks"])}


@dataclass(frozen=True)
class RollbackTestParameters(RunbookParameters):
    """The rollback-test runbook's parameters: the server (any database on it), the project, the rows seeded."""

    runbook: ClassVar[str] = "rollback-test"

    rows_per_table: int

    @classmethod
    def checked(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        rows = given["rows_per_table"]
        if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= 100:
            raise BadInput(f"rows_per_table must be a whole number from 0 to 100 (papermill: -p rows_per_table 3), "
                           f"not {rows!r}.")
        return {**super().checked(given), "rows_per_table": rows}


@dataclass(frozen=True)
class RollbackParameters(GatedRequest, RunbookParameters):
    """The checked parameters of one rollback run; holds no password."""

    runbook: ClassVar[str] = "rollback"

    target_revision: str
    environment: str
    operator: str
    operator_from: str = field(metadata=from_parameter(None))
    approved_by: str
    approved_plan: str
    ticket: str
    deployed_at: datetime | None
    backup_dir: Path
    verify_backup: str
    # Empty: the environment's default strategy (the policy's backup_strategies, first one).
    backup_strategy: str
    health_url: str
    critical_tables: tuple[str, ...]
    lock_timeout_ms: int = field(metadata=from_parameter("lock_timeout"))
    statement_timeout_ms: int = field(metadata=from_parameter("statement_timeout"))
    rehearse: str
    rehearsal_budget_ms: int = field(metadata=from_parameter("rehearsal_budget"))
    accept_data_loss: bool
    execute: bool

    @classmethod
    def checked(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        strings = {name: _string(name, given[name]) for name in (
            "deployed_at", "backup_dir", "verify_backup", "backup_strategy", "health_url", "rehearse")}
        return {
            **super().checked(given),
            **_request_values(given),
            "target_revision": _revision(given["target_revision"]),
            "deployed_at": parse_deployed_at(strings["deployed_at"]),
            "backup_dir": Path(strings["backup_dir"] or DEFAULT_BACKUP_DIR).expanduser(),
            "verify_backup": _verify_method(strings["verify_backup"]),
            "backup_strategy": _backup_strategy(strings["backup_strategy"]),
            "health_url": strings["health_url"],
            "critical_tables": _table_list(given["critical_tables"]),
            "lock_timeout_ms": parse_duration_ms("lock_timeout", given["lock_timeout"]),
            "statement_timeout_ms": parse_duration_ms("statement_timeout", given["statement_timeout"]),
            "rehearse": _rehearse(strings["rehearse"]),
            "rehearsal_budget_ms": parse_duration_ms("rehearsal_budget", given["rehearsal_budget"]),
            "accept_data_loss": _flag("accept_data_loss", given["accept_data_loss"]),
        }


@dataclass(frozen=True)
class BackupParameters(RunbookParameters):
    """The checked parameters of one pre-deploy backup run."""

    runbook: ClassVar[str] = "backup"

    backup_dir: Path
    verify_backup: str
    operator: str
    operator_from: str = field(metadata=from_parameter(None))
    ticket: str

    @classmethod
    def checked(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        strings = {name: _string(name, given[name]) for name in ("backup_dir", "verify_backup", "operator", "ticket")}
        operator, operator_from = _operator(strings["operator"])
        return {**super().checked(given), "backup_dir": Path(strings["backup_dir"] or DEFAULT_BACKUP_DIR).expanduser(),
                "verify_backup": _verify_method(strings["verify_backup"]), "operator": operator,
                "operator_from": operator_from, "ticket": strings["ticket"]}

    def requested_by(self) -> RunRequest:
        return RunRequest(self.operator, self.operator_from, ticket=self.ticket)


@dataclass(frozen=True)
class RestoreParameters(GatedRequest, RunbookParameters):
    """The checked parameters of one restore run; holds no password."""

    runbook: ClassVar[str] = "restore"

    backup: str
    restore_into: str
    new_database: str
    environment: str
    operator: str
    operator_from: str = field(metadata=from_parameter(None))
    approved_by: str
    approved_plan: str
    ticket: str
    accept_writes_since_backup: bool
    backup_dir: Path
    verify_backup: str
    lock_timeout_ms: int = field(metadata=from_parameter("lock_timeout"))
    execute: bool

    @classmethod
    def checked(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        """The backup is named by the run that took it (pass run ids with -r)."""
        strings = {name: _string(name, given[name]) for name in (
            "backup", "restore_into", "new_database", "backup_dir", "verify_backup")}
        if not strings["backup"]:
            raise BadInput("Parameter backup is empty: name the backup to restore, by the run id of the run that took "
                           "it (-r backup 20260113T140500Z-3f9a1c; `rollbook archive list` shows runs) or by its "
                           ".dump file.")
        if strings["restore_into"] not in RESTORE_INTO:
            raise BadInput(f"restore_into must be 'new' (a new database next to this one, for comparison) or "
                           f"'database' (over the database itself), not '{strings['restore_into']}'.")
        return {
            **super().checked(given),
            **_request_values(given),
            "backup": strings["backup"], "restore_into": strings["restore_into"],
            "new_database": strings["new_database"],
            "accept_writes_since_backup": _flag("accept_writes_since_backup", given["accept_writes_since_backup"]),
            "backup_dir": Path(strings["backup_dir"] or DEFAULT_BACKUP_DIR).expanduser(),
            "verify_backup": _verify_method(strings["verify_backup"]),
            "lock_timeout_ms": parse_duration_ms("lock_timeout", given["lock_timeout"]),
        }


@dataclass(frozen=True)
class LostDataRestoreParameters(GatedRequest, RunbookParameters):
    """The checked parameters of one run putting back, from an at-risk backup, what a downgrade destroyed."""

    runbook: ClassVar[str] = "restore-lost-data"

    at_risk_backup: Path
    environment: str
    operator: str
    operator_from: str = field(metadata=from_parameter(None))
    approved_by: str
    # The restore hash the approver reviewed (the dry run prints it), or a unique prefix of at least 8 characters.
    approved_plan: str
    ticket: str
    lock_timeout_ms: int = field(metadata=from_parameter("lock_timeout"))
    execute: bool

    @classmethod
    def checked(cls, given: Mapping[str, Any]) -> dict[str, Any]:
        at_risk_backup = _string("at_risk_backup", given["at_risk_backup"])
        if not at_risk_backup:
            raise BadInput("Parameter at_risk_backup is empty: name the folder of the at-risk backup taken before the "
                           "downgrade (the rollback's record and summary print it).")
        return {**super().checked(given), **_request_values(given),
                "at_risk_backup": Path(at_risk_backup).expanduser(),
                "lock_timeout_ms": parse_duration_ms("lock_timeout", given["lock_timeout"])}


def runbook_values(parameters: type[RunbookParameters], namespace: Mapping[str, Any],
                   hidden: frozenset[str]) -> dict[str, Any]:
    """The runbook's parameters with papermill's values; unknown names and passwords are refused."""
    declared = notebook_parameters(parameters)
    values = _user_values(namespace, hidden)
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise BadInput(
            f"Unknown parameter(s) {', '.join(unknown)}: papermill only warns about these, and a misspelt name "
            f"would silently keep its default. The {parameters.runbook} runbook takes: {', '.join(declared)}. "
            "Correct the name and run again; nothing was changed."
        )
    missing = [name for name in declared if name not in values]
    if missing:
        raise BadInput(f"The parameters cell of this {parameters.runbook} notebook does not define "
                       f"{', '.join(missing)}: run the notebook rollbook ships (`rollbook run {parameters.runbook}`), "
                       "or add them to its parameters cell with their defaults. Nothing was changed.")
    for name in ("database_url", "health_url"):
        if name in values:
            _refuse_password(name, values[name])
    return values


def parse_duration_ms(name: str, value: Any) -> int:
    """`5s`, `500ms`, `2min`, `1h` or a number of milliseconds, as PostgreSQL's timeouts take them."""
    match = _DURATION.match(str(value)) if not isinstance(value, bool) else None
    if match is None:
        raise BadInput(f"{name} must be a duration such as 500ms, 5s, 2min or 1h (a bare number is milliseconds), "
                       f"not {value!r}.")
    return int(float(match.group(1)) * _UNITS_MS[match.group(2)])


def _request_values(given: Mapping[str, Any]) -> dict[str, Any]:
    """The checked values of a `GatedRequest`'s fields."""
    strings = {name: _string(name, given[name]) for name in (
        "environment", "operator", "approved_by", "approved_plan", "ticket")}
    operator, operator_from = _operator(strings["operator"])
    return {**strings, "operator": operator, "operator_from": operator_from,
            "execute": _flag("execute", given["execute"])}


def _operator(given: str) -> tuple[str, str]:
    if given:
        return given, "parameter"
    return getpass.getuser(), "login name (no operator parameter given)"


def _verify_method(method: str) -> str:
    if method not in VERIFY_METHODS:
        raise BadInput(f"verify_backup must be 'list' (pg_restore --list) or 'restore' (restore into a scratch "
                       f"database and compare row counts), not '{method}'.")
    return method


def _backup_strategy(strategy: str) -> str:
    if strategy and strategy not in BACKUP_STRATEGIES:
        raise BadInput(f"backup_strategy must be one of {', '.join(BACKUP_STRATEGIES)} (or empty for the policy's "
                       f"default), not '{strategy}': for example -p backup_strategy full.")
    return strategy


def _rehearse(choice: str) -> str:
    if choice not in REHEARSE_CHOICES:
        raise BadInput(f"rehearse must be 'none' or 'copy' (run the downgrade first on a restored copy of the "
                       f"database: -p rehearse copy), not '{choice}'. Nothing was changed.")
    return choice


def _user_values(namespace: Mapping[str, Any], hidden: frozenset[str]) -> dict[str, Any]:
    return {
        name: value for name, value in namespace.items()
        if name not in hidden and not name.startswith("_")
        and not isinstance(value, types.ModuleType | types.FunctionType | type)
    }


def _revision(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and value < 0:
        return str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise BadInput(
            f"target_revision arrived as the number {value!r}: papermill's -p turns an all-digit revision id "
            "into a number (0002 becomes 2, 12e4 a float) and the id is lost. Pass revision ids with -r, which "
            "keeps them as text: papermill ... -r target_revision 0002. (-p target_revision -1 is fine: a "
            "negative number is a relative step.) Nothing was changed."
        )
    if not isinstance(value, str) or not value.strip():
        raise BadInput("target_revision must be a revision id, a unique prefix of one, -N or 'base'; "
                       f"got {value!r}.")
    return value.strip()


def _string(name: str, value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadInput(f"Parameter {name} must be text, but papermill delivered {type(value).__name__} {value!r}; "
                       f"pass it with -r {name} VALUE to keep it as text.")
    return value.strip()


# What papermill users type for a flag: -p's True/False arrive as booleans, -r's and YAML's as text or 0/1.
_FLAG_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | str) and str(value).strip().lower() in _FLAG_WORDS:
        return _FLAG_WORDS[str(value).strip().lower()]
    raise BadInput(f"Parameter {name} must be true or false (papermill: -p {name} True), not {value!r}. "
                   "Nothing was changed.")


def x_arguments_with_secrets(arguments: Sequence[str]) -> tuple[str, ...]:
    """The keys of `-x KEY=VALUE` arguments that carry a secret: a password in a connection string, or a
    secret-named key (`db_password=...`). A runbook's parameters are written into its notebook."""
    keys = []
    for argument in arguments:
        key, _, value = argument.partition("=")
        if secrets_in_text(value) or (value and any(part in key.upper() for part in SECRET_NAME_PARTS)):
            keys.append(key)
    return tuple(keys)


def _x_args(given: Mapping[str, Any]) -> tuple[str, ...]:
    arguments = parse_x_args(given["alembic_x_args"], "Parameter alembic_x_args")
    with_secrets = x_arguments_with_secrets(arguments)
    if with_secrets:
        raise SecretInParameters(
            f"The -x argument(s) {', '.join(with_secrets)} in alembic_x_args carry a password, and papermill has "
            "already written the parameter into this output notebook: delete that file (or scrub it) and do not "
            "share it. Give env.py its secrets another way (PGPASSWORD, ~/.pgpass, or an environment variable it "
            "reads). Nothing was changed."
        )
    return arguments


def _table_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(name.strip() for name in value.split(",") if name.strip())
    if isinstance(value, list | tuple) and all(isinstance(name, str) for name in value):
        return tuple(name.strip() for name in value if name.strip())
    raise BadInput("critical_tables must be table names separated by commas (users,content_jobs) or a list.")


def _refuse_password(name: str, value: Any) -> None:
    if not isinstance(value, str):
        return
    already_written = (f"papermill has already written the {name} parameter into this output notebook: delete that "
                       "file (or scrub it) and do not share it.")
    try:
        connection = split_connection_string(value, source=f"the {name} parameter")
    except UnreadableConnectionString as unreadable:
        raise SecretInParameters(f"{already_written[0].upper()}{already_written[1:]} {unreadable}") from None
    if connection.secrets:
        raise SecretInParameters(
            f"The {name} parameter carries a password. {already_written[0].upper()}{already_written[1:]} Pass the "
            "password another way: PGPASSWORD or ~/.pgpass with a URL that has no password, or DATABASE_URL in the "
            f"environment with {name} left empty. Nothing was changed."
        )
