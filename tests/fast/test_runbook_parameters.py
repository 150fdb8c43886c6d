"""Runbook parameters without a kernel or a database: what papermill delivers is checked, and each way papermill
misleads (numbers for revision ids, misspelt names, passwords written into the notebook) is refused with a message
that says how to run the notebook instead."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import papermill
import pytest

from rollbook.errors import BadInput
from rollbook.outcomes import ExitCode
from rollbook.runs.parameters import (
    LostDataRestoreParameters,
    PlanParameters,
    RollbackParameters,
    RollbackTestParameters,
    RunbookParameters,
    SecretInParameters,
    notebook_parameters,
    parse_duration_ms,
)

RUNBOOKS = Path(__file__).parents[2] / "runbooks"


def read(parameters: type[RunbookParameters], given: dict[str, Any],
         hidden: frozenset[str] = frozenset()) -> Any:
    """`given` over the defaults of the runbook's parameters cell, as papermill puts them into the kernel."""
    declared = papermill.inspect_notebook(str(RUNBOOKS / f"{parameters.runbook}.ipynb"))
    defaults = {name: ast.literal_eval(p["default"]) for name, p in declared.items()}
    return parameters.read({**defaults, **given}, hidden)


def read_rollback_parameters(given: dict[str, Any], hidden: frozenset[str] = frozenset()) -> RollbackParameters:
    return read(RollbackParameters, given, hidden)


def refused(namespace: dict[str, Any]) -> BadInput:
    with pytest.raises(BadInput) as raised:
        read_rollback_parameters(namespace)
    assert raised.value.exit_code == ExitCode.BAD_INPUT
    return raised.value


def test_the_defaults_are_a_dry_run_one_step_back_in_development() -> None:
    parameters = read_rollback_parameters({"operator": "alice"})

    assert (parameters.target_revision, parameters.environment, parameters.execute) == ("-1", "development", False)
    assert (parameters.operator, parameters.operator_from) == ("alice", "parameter")
    assert (parameters.lock_timeout_ms, parameters.statement_timeout_ms) == (5_000, 300_000)
    assert (parameters.rehearse, parameters.rehearsal_budget_ms) == ("none", 600_000)
    assert (parameters.backup_dir, parameters.verify_backup, parameters.accept_data_loss) == (
        Path("backups"), "list", False)


def test_without_an_operator_the_login_name_is_recorded_and_says_so() -> None:
    parameters = read_rollback_parameters({})

    assert parameters.operator
    assert parameters.operator_from == "login name (no operator parameter given)"


def _helper() -> None:
    """A function a cell defined."""


def test_a_kernel_s_own_names_are_not_parameters() -> None:
    namespace = {"operator": "alice", "_": 1, "In": [], "helper": _helper, "Path": Path, "pytest": pytest,
                 "kernel_name": "x"}

    parameters = read_rollback_parameters(namespace, frozenset({"In", "kernel_name"}))

    assert parameters.operator == "alice"


def test_a_revision_id_turned_into_a_number_is_refused_with_the_remedy() -> None:
    error = refused({"target_revision": 2})

    assert str(error).startswith("target_revision arrived as the number 2: papermill's -p turns an all-digit revision id")
    assert "-r target_revision 0002" in str(error)


def test_a_negative_number_is_a_relative_step() -> None:
    assert read_rollback_parameters({"operator": "a", "target_revision": -2}).target_revision == "-2"


def test_a_misspelt_parameter_is_refused_not_silently_defaulted() -> None:
    error = refused({"targt_revision": "abc"})

    assert str(error).startswith("Unknown parameter(s) targt_revision: papermill only warns about these")
    assert "The rollback runbook takes: database_url, alembic_config" in str(error)


def test_a_password_in_the_database_url_is_refused_without_echoing_it() -> None:
    error = refused({"database_url": "postgresql://app:hunter2secret@db/app"})

    assert isinstance(error, SecretInParameters)
    assert str(error).startswith("The database_url parameter carries a password.")
    assert "PGPASSWORD or ~/.pgpass" in str(error)
    assert "hunter2secret" not in str(error)


def test_a_secret_in_an_x_argument_is_refused_naming_only_its_key() -> None:
    error = refused({"alembic_x_args": "tenant=acme,db_password=hunter2secret"})

    assert isinstance(error, SecretInParameters)
    assert str(error).startswith("The -x argument(s) db_password in alembic_x_args carry a password")
    assert "hunter2secret" not in str(error)


@pytest.mark.parametrize(("namespace", "message"), [
    ({"lock_timeout": "fast"},
     "lock_timeout must be a duration such as 500ms, 5s, 2min or 1h (a bare number is milliseconds), not 'fast'."),
    ({"execute": "maybe"}, "Parameter execute must be true or false (papermill: -p execute True), not 'maybe'. "
                           "Nothing was changed."),
    ({"accept_data_loss": 2}, "Parameter accept_data_loss must be true or false (papermill: -p accept_data_loss True), "
                              "not 2. Nothing was changed."),
    ({"verify_backup": "quick"}, "verify_backup must be 'list' (pg_restore --list) or 'restore' (restore into a "
                                 "scratch database and compare row counts), not 'quick'."),
    ({"environment": 3}, "Parameter environment must be text, but papermill delivered int 3; pass it with "
                         "-r environment VALUE to keep it as text."),
    ({"rehearse": "yes"}, "rehearse must be 'none' or 'copy' (run the downgrade first on a restored copy of the "
                          "database: -p rehearse copy), not 'yes'. Nothing was changed."),
    ({"critical_tables": 3}, "critical_tables must be table names separated by commas (users,content_jobs) or a "
                             "list."),
])
def test_a_wrong_value_is_refused_saying_what_is_expected(namespace: dict[str, Any], message: str) -> None:
    assert str(refused({"operator": "a", **namespace})) == message


@pytest.mark.parametrize(("value", "milliseconds"), [
    ("500ms", 500), ("5s", 5_000), ("2min", 120_000), ("1h", 3_600_000), ("250", 250), (1000, 1000),
    ("1.5s", 1_500), (" 3 s ", 3_000),
])
def test_durations_read_as_postgresql_timeouts(value: object, milliseconds: int) -> None:
    assert parse_duration_ms("lock_timeout", value) == milliseconds


def test_a_flag_is_not_a_duration() -> None:
    with pytest.raises(BadInput, match="statement_timeout must be a duration"):
        parse_duration_ms("statement_timeout", True)


def test_critical_tables_read_from_text_or_a_list() -> None:
    assert read_rollback_parameters({"operator": "a", "critical_tables": " users, content_jobs ,"}).critical_tables \
        == ("users", "content_jobs")
    assert read_rollback_parameters({"operator": "a", "critical_tables": ["users"]}).critical_tables == ("users",)


def test_the_parameters_record_holds_no_password_and_names_where_the_url_comes_from() -> None:
    recorded = read_rollback_parameters({"operator": "a"}).to_dict()

    assert recorded["database_url"] == "(from DATABASE_URL)"
    assert set(recorded) >= set(notebook_parameters(RollbackParameters)) - {"lock_timeout", "statement_timeout",
                                                                            "rehearsal_budget"}


def test_the_plan_runbook_checks_like_the_rollback_runbook() -> None:
    plan = read(PlanParameters, {"target_revision": "base"})

    assert (plan.target_revision, plan.statement_timeout_ms, plan.live_checks) == ("base", 30_000, True)
    with pytest.raises(BadInput, match="Unknown parameter"):
        read(PlanParameters, {"execute": True})


def test_the_rollback_test_takes_a_bounded_row_count() -> None:
    assert read(RollbackTestParameters, {}).rows_per_table == 3
    with pytest.raises(BadInput, match=r"rows_per_table must be a whole number from 0 to 100 .* not 500\."):
        read(RollbackTestParameters, {"rows_per_table": 500})


@pytest.mark.parametrize("typed", [True, "true", "True", "TRUE", "yes", "1", 1])
def test_a_flag_takes_what_papermill_users_type(typed: Any) -> None:
    """`-p accept_data_loss true` (lower case) arrives as text: it means yes, not a policy refusal later."""
    assert read_rollback_parameters({"operator": "a", "accept_data_loss": typed}).accept_data_loss is True
    assert read_rollback_parameters({"operator": "a", "execute": str(typed).lower().replace("true", "false")
                                     .replace("yes", "no").replace("1", "0")}).execute is False


def test_the_restore_lost_data_runbook_takes_the_approved_restore_hash_as_text() -> None:
    backup = {"at_risk_backup": "backups/at-risk_app"}
    assert read(LostDataRestoreParameters, backup).approved_plan == ""
    assert read(LostDataRestoreParameters, {**backup, "approved_plan": " 3f9a1c2b7d4e "}).approved_plan == "3f9a1c2b7d4e"
    # papermill's -p turns an all-digit hash prefix into a number: refused, saying to pass it with -r.
    with pytest.raises(BadInput, match="approved_plan must be text, but papermill delivered int 12345678; pass it "
                                       "with -r approved_plan VALUE"):
        read(LostDataRestoreParameters, {**backup, "approved_plan": 12345678})
