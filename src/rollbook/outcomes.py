"""How a run or a command ended, and the one exit code each ending gives.

This is the only table of exit codes: the CLI, the runbooks and the records all name an outcome,
and the exit code follows from it. 0 ok; 1 failed, timed out, kernel died or interrupted; 2 bad
input; 3 the database unreachable, refused the connection, or held by another run; 4 refused by
the policy.
"""

from __future__ import annotations

from enum import IntEnum, StrEnum


class ExitCode(IntEnum):
    """What `rollbook` exits with."""

    OK = 0
    FAILED = 1
    BAD_INPUT = 2
    DATABASE_UNAVAILABLE = 3
    REFUSED_BY_POLICY = 4


class Outcome(StrEnum):
    """How a run ended, as its record names it (a string in JSON)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    # The downgrade reached its target, but at least one check could not run: never called verified.
    SUCCEEDED_UNVERIFIED = "succeeded_unverified"
    DRY_RUN = "dry_run"
    REFUSED = "refused"
    BAD_INPUT = "bad_input"
    UNAVAILABLE = "unavailable"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    TIMED_OUT = "timed_out"
    KERNEL_DIED = "kernel_died"
    INCOMPLETE = "incomplete"

    @property
    def exit_code(self) -> ExitCode:
        return _EXIT_CODES.get(self, ExitCode.FAILED)

    @property
    def succeeded(self) -> bool:
        """Whether the run did what it was asked to do (verified or not)."""
        return self in (Outcome.SUCCEEDED, Outcome.SUCCEEDED_UNVERIFIED, Outcome.DRY_RUN)


_EXIT_CODES = {
    Outcome.SUCCEEDED: ExitCode.OK,
    Outcome.SUCCEEDED_UNVERIFIED: ExitCode.OK,
    Outcome.DRY_RUN: ExitCode.OK,
    Outcome.REFUSED: ExitCode.REFUSED_BY_POLICY,
    Outcome.BAD_INPUT: ExitCode.BAD_INPUT,
    Outcome.UNAVAILABLE: ExitCode.DATABASE_UNAVAILABLE,
}


def outcome_of(name: str | None) -> Outcome:
    """The outcome a record names; an unknown or missing name is `incomplete`, never a success."""
    if name is None:
        return Outcome.INCOMPLETE
    try:
        return Outcome(name)
    except ValueError:
        return Outcome.INCOMPLETE
