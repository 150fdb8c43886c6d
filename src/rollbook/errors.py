"""Errors a user can meet. Each message says what is wrong and what to do next."""

from __future__ import annotations

from rollbook.outcomes import ExitCode, Outcome


class RollbookError(Exception):
    """Base class of every expected failure; the CLI prints the message without a traceback.

    `outcome` is how a run's record names a run that stopped on this error; the exit code follows from it.
    """

    outcome: Outcome = Outcome.FAILED

    @property
    def exit_code(self) -> ExitCode:
        return Outcome(self.outcome).exit_code


class BadInput(RollbookError):
    """The request cannot be carried out as given (unknown revision, missing file, ...)."""

    outcome = Outcome.BAD_INPUT


class DatabaseUnreachable(RollbookError):
    """The database could not be reached or refused the connection."""

    outcome = Outcome.UNAVAILABLE


class RunInterrupted(RollbookError):
    """The operator stopped the run (Ctrl-C, SIGTERM, SIGHUP, or the process that started it died)."""

    outcome = Outcome.INTERRUPTED
