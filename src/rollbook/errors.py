"""Errors a user can meet. Each message says what is wrong and what to do next."""

from __future__ import annotations


class RollbookError(Exception):
    """Base class of every expected failure; the CLI prints the message without a traceback."""

    exit_code = 1
    # How a run's record names a run that stopped on this error: failed, or refused (nothing attempted).
    outcome = "failed"


class BadInput(RollbookError):
    """The request cannot be carried out as given (unknown revision, missing file, ...)."""

    exit_code = 2
    outcome = "refused"


class DatabaseUnreachable(RollbookError):
    """The database could not be reached or refused the connection."""

    exit_code = 3
