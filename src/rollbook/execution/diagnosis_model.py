"""What a diagnosis is (its scenarios, facts and advice) and what every scenario builds one from: the failure, the
failing step's facts, and the catalog read on rollbook's own short, read-only connection.

Like the rest of the diagnosis (execution/diagnosis.py), it names objects, sessions, settings and primary keys
but never a data value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import errors

from rollbook import markdown
from rollbook.errors import RollbookError
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.operations import Operation
from rollbook.planning.step import PlanStep

Scenario = Literal[
    "dependent_objects",
    "data_does_not_fit",
    "constraint_violation",
    "missing_migration_file",
    "lock_timeout",
    "statement_timeout",
    "unknown",
]

CATALOG_TIMEOUT_MS = 5_000
LOCK_TIMEOUT_MS = 1_000
STATEMENT_CHARS = 300
_PASSWORD_LITERAL = re.compile(r"(PASSWORD\s+)'(?:[^']|'')*'", re.IGNORECASE)

RESTORE = ("Or restore the backup taken in this run (pg_restore), which is safer when you are unsure, and fix "
           "forward with a new migration instead of rolling back.")


@dataclass(frozen=True)
class Diagnosis:
    """What went wrong in a failed rollback, the facts that show it, and what to do next."""

    scenario: Scenario
    summary: str
    facts: tuple[str, ...] = ()
    advice: tuple[str, ...] = ()
    sqlstate: str | None = None
    revision: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "summary": self.summary,
            "facts": list(self.facts),
            "advice": list(self.advice),
            "sqlstate": self.sqlstate,
            "revision": self.revision,
        }

    def to_text(self) -> str:
        lines = [f"Rollback failed ({self.scenario.replace('_', ' ')}): {self.summary}"]
        if self.facts:
            lines += ["", "What rollbook found:"] + [f"  - {fact}" for fact in self.facts]
        if self.advice:
            lines += ["", "What to do next:"] + [f"  {n}. {item}" for n, item in enumerate(self.advice, 1)]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        lines = [f"**Rollback failed ({self.scenario.replace('_', ' ')})**: {markdown.prose(self.summary)}"]
        if self.facts:
            lines += ["", "**What rollbook found**", ""] + [f"- {markdown.prose(fact)}" for fact in self.facts]
        if self.advice:
            lines += ["", "**What to do next**", ""]
            lines += [f"{n}. {markdown.prose(item)}" for n, item in enumerate(self.advice, 1)]
        return "\n".join(lines)


@dataclass(frozen=True)
class Failure:
    """The failed statement as far as the error, the plan step and the statement tell."""

    error: psycopg.Error
    sqlstate: str
    statement: str | None
    step: PlanStep | None
    statement_operations: tuple[Operation, ...]

    @property
    def revision(self) -> str | None:
        return self.step.revision.revision if self.step else None



def message(failure_error: psycopg.Error) -> str:
    """The primary message; for data exceptions (class 22) without the value it may quote."""
    message = failure_error.diag.message_primary or type(failure_error).__name__
    if (failure_error.sqlstate or "").startswith("22") and ":" in message:
        message = message.split(":", 1)[0] + ": (value not shown)"
    return message


def step_facts(failure: Failure) -> list[str]:
    """The failing step and statement, as the first facts of a diagnosis."""
    facts = []
    if failure.step:
        info = failure.step.revision
        facts.append(f"Failing step: downgrade of {info.revision} ({info.message or info.file}), file {info.file}.")
    if failure.statement:
        facts.append(f"Statement: `{statement_text(failure.statement)}`")
    return facts


def with_catalog(target: DatabaseTarget, facts: list[str], read: Callable[[psycopg.Connection], None]) -> None:
    """Run reads on rollbook's own short connection; a failure becomes a fact, never an exception.

    Each read runs in data_loss's READ ONLY transaction under statement_timeout and lock_timeout.
    """
    try:
        with connect(target) as conn:
            read(conn)
    except errors.LockNotAvailable:
        facts.append("The catalog lookup gave up waiting for a lock (is the failed transaction still open? roll it "
                     "back first).")
    except errors.QueryCanceled:
        facts.append(f"The catalog lookup took longer than {CATALOG_TIMEOUT_MS} ms and was stopped.")
    except (RollbookError, psycopg.Error) as exc:
        reason = exc.diag.message_primary if isinstance(exc, psycopg.Error) and exc.diag.message_primary else str(exc)
        facts.append(f"The catalog could not be read ({type(exc).__name__}): {reason}")


def statement_text(statement: str | None) -> str:
    """A statement on one line, passwords masked, cut to STATEMENT_CHARS."""
    text = " ".join((statement or "").split())
    text = _PASSWORD_LITERAL.sub(r"\1'***'", text)
    return text if len(text) <= STATEMENT_CHARS else text[: STATEMENT_CHARS - 3] + "..."
