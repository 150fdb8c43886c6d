"""rollbook's pytest plugin: the rollback test of an Alembic project as test items, for CI.

It does nothing unless a project opts in, in its pytest configuration:

    [tool.pytest.ini_options]
    rollbook_rollback_test = true
    rollbook_alembic_config = "alembic.ini"   # relative to pytest's rootdir

Then a run of the whole suite, or of folders, gets one item for the team's test (apply all, roll
back one, re-apply, verify) and one per revision (its round trip), all marked `rollbook`; a run of
chosen files or test ids gets none, and `-m "not rollbook"` leaves them out. The server comes from
`--rollbook-database-url`, else DATABASE_URL: scratch databases are created next to the database it
names, which is never changed (the role needs CREATEDB). The rehearsal runs once per session.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from rollbook.errors import RollbookError

if TYPE_CHECKING:
    from rollbook.project.migrations import MigrationProject
    from rollbook.recovery.rehearsal_report import RehearsalReport

MARKER = "rollbook"
ITEM_PREFIX = "rollbook-rollback-test"
TEAM_TEST = "team test"
_REPORT = pytest.StashKey["RehearsalReport | RollbookError"]()


class RollbackTestFailed(Exception):
    """One item of the rollback test failed; the message names what differed."""


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("rollbook_rollback_test", type="bool", default=False,
                  help="rollbook: add the rollback test of the Alembic project (one item per revision).")
    parser.addini("rollbook_alembic_config", default="alembic.ini",
                  help="rollbook: the Alembic project's alembic.ini, relative to the rootdir.")
    parser.addini("rollbook_alembic_x_args", type="args", default=[],
                  help="rollbook: -x arguments (KEY=VALUE) for env.py's context.get_x_argument(), space-separated.")
    parser.addoption("--rollbook-database-url", default=None,
                     help="rollbook: a database on the server to run the rollback test on (default: DATABASE_URL); "
                          "scratch databases are created next to it, it is not changed.")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}: the rollback test of the Alembic project (rollbook's plugin)")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Append the rollback test's items, before -k and -m select among them."""
    if not config.getini("rollbook_rollback_test") or _chosen_tests(config):
        return
    # Imported only now: projects that have not opted in do not pay for Alembic and SQLAlchemy at start-up.
    from rollbook.recovery.rehearsal import rehearsal_order

    try:
        names = [TEAM_TEST, *rehearsal_order(_project(config))]
    except RollbookError as exc:
        config.stash[_REPORT] = exc
        names = [TEAM_TEST]
    items += [RollbackTestItem.from_parent(session, name=f"{ITEM_PREFIX}[{name}]", subject=name) for name in names]


class RollbackTestItem(pytest.Item):
    """The team's test, or one revision's round trip, read from the session's one rehearsal."""

    def __init__(self, *, subject: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.subject = subject
        self.add_marker(MARKER)

    def runtest(self) -> None:
        report = _report(self.config)
        if self.subject == TEAM_TEST:
            if not report.team_test.passed:
                raise RollbackTestFailed("\n".join([f"The team's test {report.team_test.status}:",
                                                    *report.team_test.lines,
                                                    *[f"  - {d}" for d in report.team_test.differences]]))
            return
        trip = next(t for t in report.round_trips if t.revision.revision == self.subject)
        if not trip.passed:
            lines = [f"{trip.revision.revision} ({trip.revision.message}) {trip.status}:"]
            for failure, differences in trip.failures() or [(trip.down.detail, ())]:
                lines += [f"  {failure}", *[f"    - {difference}" for difference in differences]]
            raise RollbackTestFailed("\n".join(lines))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, RollbackTestFailed | RollbookError):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style=style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name


def _report(config: pytest.Config) -> RehearsalReport:
    """The session's rehearsal, run on first use; a refusal is raised by every item."""
    from rollbook.pg.database import DatabaseTarget
    from rollbook.recovery.rehearsal import rehearse_rollbacks

    found = config.stash.get(_REPORT, None)
    if found is None:
        url = config.getoption("rollbook_database_url") or os.environ.get("DATABASE_URL")
        try:
            if not url:
                raise RollbookError("The rollback test needs a PostgreSQL server: pass --rollbook-database-url (or set "
                                    "DATABASE_URL) to a database on a server where the role may create databases.")
            target = DatabaseTarget.from_url(url, source="--rollbook-database-url (or DATABASE_URL)")
            found = rehearse_rollbacks(target, _project(config))
        except RollbookError as exc:
            found = exc
        config.stash[_REPORT] = found
    if isinstance(found, RollbookError):
        raise found
    return found


def _project(config: pytest.Config) -> MigrationProject:
    from rollbook.project.migrations import load_project, parse_x_args

    x_args = parse_x_args(list(config.getini("rollbook_alembic_x_args")), "rollbook_alembic_x_args")
    return load_project(config.rootpath / str(config.getini("rollbook_alembic_config")), x_args)


def _chosen_tests(config: pytest.Config) -> bool:
    """Whether the run names files or test ids (a quick run of a few tests) rather than folders."""
    return any("::" in arg or Path(config.invocation_params.dir, arg).is_file() for arg in config.args)
