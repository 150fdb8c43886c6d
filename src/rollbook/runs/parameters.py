"""The rollback runbook's parameters as papermill delivers them, checked for the ways papermill misleads.

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
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rollbook.errors import BadInput
from rollbook.policy.gate import parse_deployed_at
from rollbook.project.migrations import parse_x_args
from rollbook.redaction.connection_secrets import UnreadableConnectionString, secrets_in_text, split_connection_string
from rollbook.redaction.redact import SECRET_NAME_PARTS

# The parameters cell of runbooks/rollback.ipynb must declare exactly these (a test compares them).
ROLLBACK_PARAMETERS: dict[str, Any] = {
    "database_url": "",
    "alembic_config": "",
    "alembic_x_args": "",
    "target_revision": "-1",
    "environment": "development",
    "operator": "",
    "approved_by": "",
    "approved_plan": "",
    "ticket": "",
    "deployed_at": "",
    "backup_dir": "backups",
    "verify_backup": "list",
    "health_url": "",
    "critical_tables": "",
    "lock_timeout": "5s",
    "statement_timeout": "5min",
    "accept_data_loss": False,
    "execute": False,
}
STATUS_PARAMETERS: dict[str, Any] = {"database_url": "", "alembic_config": "", "alembic_x_args": ""}
PLAN_PARAMETERS: dict[str, Any] = {
    **STATUS_PARAMETERS, "target_revision": "-1", "statement_timeout": "30s", "live_checks": True,
}
BACKUP_PARAMETERS: dict[str, Any] = {
    **STATUS_PARAMETERS, "backup_dir": "backups", "verify_backup": "restore", "operator": "", "ticket": "",
}
RESTORE_PARAMETERS: dict[str, Any] = {
    **STATUS_PARAMETERS,
    "backup": "",
    "restore_into": "new",
    "new_database": "",
    "environment": "development",
    "operator": "",
    "approved_by": "",
    "approved_plan": "",
    "ticket": "",
    "accept_writes_since_backup": False,
    "backup_dir": "backups",
    "verify_backup": "list",
    "lock_timeout": "5s",
    "execute": False,
}
ROLLBACK_TEST_PARAMETERS: dict[str, Any] = {**STATUS_PARAMETERS, "rows_per_table": 3}
RUNBOOK_PARAMETERS = {"rollback": ROLLBACK_PARAMETERS, "status": STATUS_PARAMETERS, "plan": PLAN_PARAMETERS,
                      "backup": BACKUP_PARAMETERS, "restore": RESTORE_PARAMETERS,
                      "rollback-test": ROLLBACK_TEST_PARAMETERS}
VERIFY_METHODS = ("list", "restore")
RESTORE_INTO = ("new", "database")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)?\s*$")
_UNITS_MS = {"ms": 1, "s": 1000, "min": 60_000, "h": 3_600_000, None: 1}


class SecretInParameters(BadInput):
    """A parameter carries a password, which papermill has written into the output notebook."""


@dataclass(frozen=True)
class RollbackParameters:
    """The checked parameters of one rollback run; holds no password."""

    database_url: str
    alembic_config: str
    alembic_x_args: tuple[str, ...]
    target_revision: str
    environment: str
    operator: str
    operator_from: str
    approved_by: str
    approved_plan: str
    ticket: str
    deployed_at: datetime | None
    backup_dir: Path
    verify_backup: str
    health_url: str
    critical_tables: tuple[str, ...]
    lock_timeout_ms: int
    statement_timeout_ms: int
    accept_data_loss: bool
    execute: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "database_url": self.database_url or "(from DATABASE_URL)",
            "alembic_config": self.alembic_config,
            "alembic_x_args": list(self.alembic_x_args),
            "target_revision": self.target_revision,
            "environment": self.environment,
            "operator": self.operator,
            "approved_by": self.approved_by,
            "approved_plan": self.approved_plan,
            "ticket": self.ticket,
            "deployed_at": self.deployed_at.isoformat() if self.deployed_at else "",
            "backup_dir": str(self.backup_dir),
            "verify_backup": self.verify_backup,
            "health_url": self.health_url,
            "critical_tables": list(self.critical_tables),
            "lock_timeout_ms": self.lock_timeout_ms,
            "statement_timeout_ms": self.statement_timeout_ms,
            "accept_data_loss": self.accept_data_loss,
            "execute": self.execute,
        }


def read_rollback_parameters(namespace: Mapping[str, Any], hidden: frozenset[str] = frozenset()) -> RollbackParameters:
    """Check the names and values papermill put into the kernel's namespace; refuse misuse.

    `hidden` are the names the kernel defined itself (IPython's `user_ns_hidden`).
    """
    given = runbook_values("rollback", namespace, hidden)
    strings = {name: _string(name, given[name]) for name in (
        "database_url", "alembic_config", "environment", "operator", "approved_by", "approved_plan", "ticket",
        "deployed_at", "backup_dir", "verify_backup", "health_url")}
    operator, operator_from = _operator(strings["operator"])
    return RollbackParameters(
        database_url=strings["database_url"],
        alembic_config=strings["alembic_config"],
        alembic_x_args=_x_args(given),
        target_revision=_revision(given["target_revision"]),
        environment=strings["environment"],
        operator=operator,
        operator_from=operator_from,
        approved_by=strings["approved_by"],
        approved_plan=strings["approved_plan"],
        ticket=strings["ticket"],
        deployed_at=parse_deployed_at(strings["deployed_at"]),
        backup_dir=Path(strings["backup_dir"] or ROLLBACK_PARAMETERS["backup_dir"]).expanduser(),
        verify_backup=_verify_method(strings["verify_backup"]),
        health_url=strings["health_url"],
        critical_tables=_table_list(given["critical_tables"]),
        lock_timeout_ms=parse_duration_ms("lock_timeout", given["lock_timeout"]),
        statement_timeout_ms=parse_duration_ms("statement_timeout", given["statement_timeout"]),
        accept_data_loss=_flag("accept_data_loss", given["accept_data_loss"]),
        execute=_flag("execute", given["execute"]),
    )


def read_plan_parameters(namespace: Mapping[str, Any], hidden: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The plan runbook's parameters, checked like the rollback runbook's."""
    given = runbook_values("plan", namespace, hidden)
    return {
        "database_url": _string("database_url", given["database_url"]),
        "alembic_config": _string("alembic_config", given["alembic_config"]),
        "alembic_x_args": _x_args(given),
        "target_revision": _revision(given["target_revision"]),
        "statement_timeout_ms": parse_duration_ms("statement_timeout", given["statement_timeout"]),
        "live_checks": _flag("live_checks", given["live_checks"]),
    }


def read_status_parameters(namespace: Mapping[str, Any], hidden: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The status runbook's parameters."""
    given = runbook_values("status", namespace, hidden)
    return {"database_url": _string("database_url", given["database_url"]),
            "alembic_config": _string("alembic_config", given["alembic_config"]), "alembic_x_args": _x_args(given)}


@dataclass(frozen=True)
class BackupParameters:
    """The checked parameters of one pre-deploy backup run."""

    database_url: str
    alembic_config: str
    alembic_x_args: tuple[str, ...]
    backup_dir: Path
    verify_backup: str
    operator: str
    operator_from: str
    ticket: str

    def to_dict(self) -> dict[str, Any]:
        return {"database_url": self.database_url or "(from DATABASE_URL)", "alembic_config": self.alembic_config,
                "alembic_x_args": list(self.alembic_x_args),
                "backup_dir": str(self.backup_dir), "verify_backup": self.verify_backup, "operator": self.operator,
                "ticket": self.ticket}


def read_backup_parameters(namespace: Mapping[str, Any], hidden: frozenset[str] = frozenset()) -> BackupParameters:
    """The backup runbook's parameters, checked like the rollback runbook's."""
    given = runbook_values("backup", namespace, hidden)
    strings = {name: _string(name, given[name]) for name in BACKUP_PARAMETERS if name != "alembic_x_args"}
    operator, operator_from = _operator(strings["operator"])
    return BackupParameters(
        database_url=strings["database_url"], alembic_config=strings["alembic_config"], alembic_x_args=_x_args(given),
        backup_dir=Path(strings["backup_dir"] or BACKUP_PARAMETERS["backup_dir"]).expanduser(),
        verify_backup=_verify_method(strings["verify_backup"]), operator=operator, operator_from=operator_from,
        ticket=strings["ticket"],
    )


@dataclass(frozen=True)
class RestoreParameters:
    """The checked parameters of one restore run; holds no password."""

    database_url: str
    alembic_config: str
    alembic_x_args: tuple[str, ...]
    backup: str
    restore_into: str
    new_database: str
    environment: str
    operator: str
    operator_from: str
    approved_by: str
    approved_plan: str
    ticket: str
    accept_writes_since_backup: bool
    backup_dir: Path
    verify_backup: str
    lock_timeout_ms: int
    execute: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "database_url": self.database_url or "(from DATABASE_URL)", "alembic_config": self.alembic_config,
            "alembic_x_args": list(self.alembic_x_args),
            "backup": self.backup, "restore_into": self.restore_into, "new_database": self.new_database,
            "environment": self.environment, "operator": self.operator, "approved_by": self.approved_by,
            "approved_plan": self.approved_plan, "ticket": self.ticket,
            "accept_writes_since_backup": self.accept_writes_since_backup, "backup_dir": str(self.backup_dir),
            "verify_backup": self.verify_backup, "lock_timeout_ms": self.lock_timeout_ms, "execute": self.execute,
        }


def read_restore_parameters(namespace: Mapping[str, Any], hidden: frozenset[str] = frozenset()) -> RestoreParameters:
    """The restore runbook's parameters; the backup is named by the run that took it (pass run ids with -r)."""
    given = runbook_values("restore", namespace, hidden)
    strings = {name: _string(name, given[name]) for name in (
        "database_url", "alembic_config", "backup", "restore_into", "new_database", "environment", "operator",
        "approved_by", "approved_plan", "ticket", "backup_dir", "verify_backup")}
    if not strings["backup"]:
        raise BadInput("Parameter backup is empty: name the backup to restore, by the run id of the run that took it "
                       "(-r backup 20260113T140500Z-3f9a1c; `rollbook archive list` shows runs) or by its .dump file.")
    if strings["restore_into"] not in RESTORE_INTO:
        raise BadInput(f"restore_into must be 'new' (a new database next to this one, for comparison) or 'database' "
                       f"(over the database itself), not '{strings['restore_into']}'.")
    operator, operator_from = _operator(strings["operator"])
    return RestoreParameters(
        database_url=strings["database_url"], alembic_config=strings["alembic_config"], alembic_x_args=_x_args(given),
        backup=strings["backup"],
        restore_into=strings["restore_into"], new_database=strings["new_database"],
        environment=strings["environment"], operator=operator, operator_from=operator_from,
        approved_by=strings["approved_by"], approved_plan=strings["approved_plan"], ticket=strings["ticket"],
        accept_writes_since_backup=_flag("accept_writes_since_backup", given["accept_writes_since_backup"]),
        backup_dir=Path(strings["backup_dir"] or RESTORE_PARAMETERS["backup_dir"]).expanduser(),
        verify_backup=_verify_method(strings["verify_backup"]),
        lock_timeout_ms=parse_duration_ms("lock_timeout", given["lock_timeout"]),
        execute=_flag("execute", given["execute"]),
    )


def read_rollback_test_parameters(namespace: Mapping[str, Any], hidden: frozenset[str] = frozenset()) -> dict[str, Any]:
    """The rollback-test runbook's parameters: the server (any database on it) and the project."""
    given = runbook_values("rollback-test", namespace, hidden)
    rows = given["rows_per_table"]
    if isinstance(rows, bool) or not isinstance(rows, int) or not 0 <= rows <= 100:
        raise BadInput(f"rows_per_table must be a whole number from 0 to 100 (papermill: -p rows_per_table 3), "
                       f"not {rows!r}.")
    return {"database_url": _string("database_url", given["database_url"]),
            "alembic_config": _string("alembic_config", given["alembic_config"]), "alembic_x_args": _x_args(given),
            "rows_per_table": rows}


def runbook_values(runbook: str, namespace: Mapping[str, Any], hidden: frozenset[str]) -> dict[str, Any]:
    """The runbook's parameters with papermill's values; unknown names and passwords are refused."""
    declared = RUNBOOK_PARAMETERS[runbook]
    values = _user_values(namespace, hidden)
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise BadInput(
            f"Unknown parameter(s) {', '.join(unknown)}: papermill only warns about these, and a misspelt name "
            f"would silently keep its default. The {runbook} runbook takes: {', '.join(declared)}. "
            "Correct the name and run again; nothing was changed."
        )
    given = {**declared, **values}
    for name in ("database_url", "health_url"):
        if name in given:
            _refuse_password(name, given[name])
    return given


def parse_duration_ms(name: str, value: Any) -> int:
    """`5s`, `500ms`, `2min`, `1h` or a number of milliseconds, as PostgreSQL's timeouts take them."""
    match = _DURATION.match(str(value)) if not isinstance(value, bool) else None
    if match is None:
        raise BadInput(f"{name} must be a duration such as 500ms, 5s, 2min or 1h (a bare number is milliseconds), "
                       f"not {value!r}.")
    return int(float(match.group(1)) * _UNITS_MS[match.group(2)])


def _operator(given: str) -> tuple[str, str]:
    if given:
        return given, "parameter"
    return getpass.getuser(), "login name (no operator parameter given)"


def _verify_method(method: str) -> str:
    if method not in VERIFY_METHODS:
        raise BadInput(f"verify_backup must be 'list' (pg_restore --list) or 'restore' (restore into a scratch "
                       f"database and compare row counts), not '{method}'.")
    return method


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


def _flag(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise BadInput(f"Parameter {name} must be True or False (papermill: -p {name} True), not {value!r}.")


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
