"""The fast tier runs with no PostgreSQL: a test here that asks for the session's server fails at once."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def pg_server() -> None:
    pytest.fail("tests/fast runs without a database: a test that needs PostgreSQL belongs in tests/, not tests/fast/.")
