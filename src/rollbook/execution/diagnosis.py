"""Why a rollback failed, in the terms of the team's recovery procedures, and what to do next.

The diagnosis reads the catalog through its own short, read-only connection. It names objects,
sessions, settings and primary keys, but never a data value: a failing row's DETAIL and a value
echoed in an error message stay out of it, and the target's password is scrubbed from every line.

This module is the dispatcher: it finds the error in the exception chain and hands it to its scenario
(execution/diagnosis_dependents.py, diagnosis_rows.py, diagnosis_timeouts.py, diagnosis_missing_file.py), all
built on execution/diagnosis_model.py; anything else is diagnosed here as "unknown".
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

import psycopg
from alembic.script.revision import ResolutionError
from alembic.util import CommandError
from psycopg import errors

from rollbook.execution.diagnosis_dependents import dependency_targets, dependent_objects
from rollbook.execution.diagnosis_missing_file import missing_migration_file
from rollbook.execution.diagnosis_model import RESTORE, Diagnosis, Failure, message, statement_text
from rollbook.execution.diagnosis_rows import CONSTRAINTS, DOES_NOT_FIT, rows_in_the_way
from rollbook.execution.diagnosis_timeouts import lock_timeout, statement_timeout
from rollbook.execution.downgrade import LeftChanged
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.sql_operations import operations_from_sql
from rollbook.planning.step import PlanStep
from rollbook.project.migrations import MigrationProject

_DEPENDENT_OBJECTS = errors.DependentObjectsStillExist.sqlstate
_FEATURE_NOT_SUPPORTED = errors.FeatureNotSupported.sqlstate
_LOCK_NOT_AVAILABLE = errors.LockNotAvailable.sqlstate
_QUERY_CANCELED = errors.QueryCanceled.sqlstate
_NOT_FOUND = ("No such revision", "No such branch")
_MISSING_REVISION = re.compile(r"Can't locate revision identified by '([^']+)'")

# What to check before a retry depends on what the failed step left behind (downgrade_execution.LeftChanged).
_CHECK_ROLLED_BACK = ("Before retrying, check where the database is now (rollbook status): the failed step's "
                      "transaction was rolled back, but revisions before it may already be undone.")
_CHECK_UNKNOWN = ("Before retrying, check where the database is now (rollbook status) and whether the failed step "
                  "left changes: a step that does not run as one transaction keeps what it committed, and "
                  "revisions before it may already be undone.")
_DO_NOT_RETRY = ("Do not simply retry: the failed step may have left changes (see above) while the version table "
                 "still names its revision, so a retry would run its whole downgrade() again over them. Restore the "
                 "backup taken in this run, or finish or undo those changes by hand after a review; then check "
                 "where the database is (rollbook status).")


def diagnose_failure(
    target: DatabaseTarget, error: BaseException, *, step: PlanStep | None, statement: str | None,
    project: MigrationProject | None = None, left_changed: LeftChanged | None = None,
) -> Diagnosis:
    """Explain a failed rollback step: which recovery scenario it is, the facts, and what to do next.

    `left_changed` is what the step left behind, from the execution; without it the diagnosis does not
    claim that the step was rolled back.
    """
    try:
        diagnosis = _diagnose(target, error, step, statement, project)
    except Exception as exc:  # noqa: BLE001 - a diagnosis must never hide the failure it explains
        diagnosis = _unknown_error(target, error, step, statement, f"rollbook's diagnosis itself failed "
                                   f"({type(exc).__name__}): the facts below come from the error alone")
    return _scrubbed(target, _with_what_the_step_left(diagnosis, left_changed))


def _with_what_the_step_left(diagnosis: Diagnosis, left_changed: LeftChanged | None) -> Diagnosis:
    """The state the failed step left goes first among the facts; what to check before a retry goes last."""
    if left_changed is None:
        return replace(diagnosis, advice=(*diagnosis.advice, _CHECK_UNKNOWN))
    check = _CHECK_ROLLED_BACK if left_changed.rolled_back else _DO_NOT_RETRY
    return replace(diagnosis, facts=(left_changed.describe(), *diagnosis.facts), advice=(*diagnosis.advice, check))


def _diagnose(
    target: DatabaseTarget, error: BaseException, step: PlanStep | None, statement: str | None,
    project: MigrationProject | None,
) -> Diagnosis:
    missing = _missing_revision(error)
    if missing is not None:
        return missing_migration_file(target, missing, project)
    db_error = _database_error(error)
    statement = statement or _sqlalchemy_statement(error)
    if db_error is None or not db_error.sqlstate:
        return _unknown_error(target, error, step, statement)
    failure = Failure(db_error, db_error.sqlstate, statement, step,
                      tuple(operations_from_sql(statement)) if statement else ())
    if failure.sqlstate == _DEPENDENT_OBJECTS:
        return dependent_objects(target, failure) or _unknown_error(target, error, step, statement)
    if failure.sqlstate == _FEATURE_NOT_SUPPORTED and dependency_targets(failure):
        # ALTER COLUMN TYPE on a column a view uses fails with 0A000, not 2BP01: the catalog decides.
        diagnosis = dependent_objects(target, failure, require_dependents=True)
        if diagnosis is not None:
            return diagnosis
    if failure.sqlstate in DOES_NOT_FIT or failure.sqlstate in CONSTRAINTS:
        return rows_in_the_way(target, failure)
    if failure.sqlstate == _LOCK_NOT_AVAILABLE:
        return lock_timeout(target, failure)
    if failure.sqlstate == _QUERY_CANCELED and "user request" not in (db_error.diag.message_primary or ""):
        return statement_timeout(target, failure)
    return _unknown_error(target, error, step, statement)


# --- errors -------------------------------------------------------------------------------------------


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error, what it wraps (`.orig`) and what caused it, nearest first."""
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [e for e in (getattr(current, "orig", None), current.__cause__, current.__context__)
                    if isinstance(e, BaseException)]


def _database_error(error: BaseException) -> psycopg.Error | None:
    return next((e for e in _chain(error) if isinstance(e, psycopg.Error)), None)


def _sqlalchemy_statement(error: BaseException) -> str | None:
    # SQLAlchemy's StatementError carries the statement; never its parameters, which hold data.
    statements = (getattr(e, "statement", None) for e in _chain(error))
    return next((statement for statement in statements if isinstance(statement, str)), None)


def _missing_revision(error: BaseException) -> str | None:
    for exc in _chain(error):
        # ResolutionError also reports an ambiguous prefix or a revision off a branch: files that do exist.
        if isinstance(exc, ResolutionError) and exc.argument and str(exc).startswith(_NOT_FOUND):
            return str(exc.argument)
    for exc in _chain(error):
        # Alembic words some resolution failures only in the CommandError it raises.
        match = _MISSING_REVISION.search(str(exc)) if isinstance(exc, CommandError) else None
        if match:
            return match.group(1)
    return None



def _condition(sqlstate: str) -> str:
    return errors.lookup(sqlstate).__name__ if _known_sqlstate(sqlstate) else "unknown condition"


def _known_sqlstate(sqlstate: str) -> bool:
    try:
        errors.lookup(sqlstate)
    except KeyError:
        return False
    return True



# --- anything else ------------------------------------------------------------------------------------------


def _unknown_error(
    target: DatabaseTarget, error: BaseException, step: PlanStep | None, statement: str | None,
    note: str | None = None,
) -> Diagnosis:
    db_error = _database_error(error)
    facts = [f"Failing step: downgrade of {step.revision.revision} ({step.revision.file})."] if step else []
    if db_error is not None and db_error.sqlstate:
        facts.append(f"SQLSTATE {db_error.sqlstate} ({_condition(db_error.sqlstate)}): {message(db_error)}.")
    else:
        first_line = (str(error).strip().splitlines() or [""])[0]
        facts.append(f"{type(error).__name__}: {first_line}")
    if statement:
        facts.append(f"Statement: `{statement_text(statement)}`")
    if note:
        facts.append(note)
    advice = (
        "Read the error and the failing statement above; fix the cause and retry the rollback.",
        RESTORE,
    )
    return Diagnosis("unknown", "The rollback failed for a reason rollbook does not recognise.", tuple(facts), advice,
                     db_error.sqlstate if db_error is not None else None, step.revision.revision if step else None)


# --- shared helpers -------------------------------------------------------------------------------------------

def _scrubbed(target: DatabaseTarget, diagnosis: Diagnosis) -> Diagnosis:
    """The diagnosis with the target's password removed from every line."""
    scrub = target.scrub
    return Diagnosis(
        diagnosis.scenario, scrub(diagnosis.summary), tuple(map(scrub, diagnosis.facts)),
        tuple(map(scrub, diagnosis.advice)), diagnosis.sqlstate,
        scrub(diagnosis.revision) if diagnosis.revision else None,
    )
