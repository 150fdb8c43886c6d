"""The schema a revision should produce, built in a scratch database, and the check of the live schema against it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from alembic.script.revision import Revision, RevisionError
from alembic.util import CommandError
from psycopg import sql

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.schema_comparison import START_AND_DATABASE_BEFORE, compare_schemas
from rollbook.pg.schema_objects import SchemaSnapshot, apply_change
from rollbook.pg.schema_snapshot import STATEMENT_TIMEOUT, list_schemas, read_schema
from rollbook.pg.scratch import scratch_database
from rollbook.project.base_schema import create_base_schema
from rollbook.project.migrations import MigrationProject
from rollbook.project.naming_convention import read_naming_convention
from rollbook.project.own_migrations import MigrationFailed, first_line, run_own_migrations

CheckStatus = Literal["passed", "failed", "not_checked"]


class SchemaBuildFailed(RollbookError):
    """The migrations could not build the target revision's schema in a scratch database."""


@dataclass(frozen=True)
class SchemaCheck:
    """Whether the live schema equals the schema the target revision builds; "not_checked" is never a pass.

    With a snapshot taken before the rollback, `drift` names what differed from the starting revision's
    schema already then: reported, never a failure.
    """

    status: CheckStatus
    revision: str | None
    differences: tuple[str, ...]
    reason: str
    drift: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def revision_label(self) -> str:
        return self.revision or "base (no migrations: an empty schema)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "revision": self.revision,
            "differences": list(self.differences),
            "reason": self.reason,
            "drift": list(self.drift),
        }

    def to_text(self) -> str:
        lines = [f"Schema check against revision {self.revision_label}: {_HEADLINES[self.status]}", self.reason]
        lines += [f"  - {difference}" for difference in self.differences]
        if self.drift:
            lines.append(DRIFT_HEADLINE)
            lines += [f"  - {difference}" for difference in self.drift]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        lines = [
            f"**Schema check against revision `{self.revision_label}`: {_HEADLINES[self.status]}**",
            "",
            markdown.escape(self.reason),
        ]
        if self.differences:
            lines.append("")
            lines += [f"- {markdown.escape(difference)}" for difference in self.differences]
        if self.drift:
            lines += ["", f"**{DRIFT_HEADLINE}**", ""]
            lines += [f"- {markdown.escape(difference)}" for difference in self.drift]
        return "\n".join(lines)


DRIFT_HEADLINE = ("Drift: already different from what the migrations build before the rollback began (not made "
                  "by it, not a failure):")

_HEADLINES: dict[str, str] = {
    "passed": "PASSED",
    "failed": "FAILED",
    "not_checked": "NOT CHECKED",
}


def build_schema_at(project: MigrationProject, revision: str | None, scratch: DatabaseTarget) -> None:
    """Run the project's upgrades from base to `revision` (None: none at all) in the empty `scratch` database.

    Runs through rollbook's own engine and Alembic context, never the project's env.py: a real env.py
    may ignore the URL it is given and migrate whatever database its settings name.
    The project's starting schema (`base_schema` in its settings), if any, is created first.
    Raises SchemaBuildFailed, naming the revision whose upgrade failed.
    """
    create_base_schema(project, scratch)
    # At base no migration runs, but Alembic's version table schema exists, as in a database downgraded to base.
    destination = "base" if revision in (None, "base") else _resolve(project, revision)  # unknown: bad input
    try:
        run_own_migrations(project, scratch, destination, "upgrade")
    except MigrationFailed as failure:
        where = f"the upgrade of revision {failure.revision}" if failure.revision else "preparing the migrations"
        raise SchemaBuildFailed(
            f"The expected schema of revision {_label(destination)} could not be built in a scratch database: {where} "
            f"failed after {failure.applied} of {failure.planned} migration(s) with {failure.cause}. A migration that "
            "needs data, extensions or objects made outside the migrations cannot be replayed on an empty database; "
            "compare the schema by hand."
        ) from None


def check_schema_matches(
    target: DatabaseTarget, project: MigrationProject, revision: str | None,
    *, before: SchemaSnapshot | None = None, start: str | None = None,
) -> SchemaCheck:
    """Compare the live schema of `target` with the schema `revision` builds from scratch.

    The expected schema is built in a throwaway database on the same server (the role needs CREATEDB).
    Compared: the schemas the build creates plus the live schemas holding tables, without the version table.
    Given `before` (the live schema read before the rollback) and `start` (the revision it began at), the
    check compares the change instead: the database must now be `before`, changed exactly as the
    migrations change `start` into `revision`; what already differed from `start` is reported as drift.
    """
    try:
        resolved = _label(_resolve(project, revision)) if revision not in (None, "base") else None
    except BadInput as exc:
        return SchemaCheck("not_checked", revision, (), str(exc))
    exclude = _version_table_exclusion(project)
    try:
        naming = read_naming_convention(project).note
        expected = _expected_schema(target, project, revision, exclude)
        starting = _expected_schema(target, project, start, exclude) if before is not None and start else None
        with connect(target) as conn:
            conn.execute(sql.SQL("SET statement_timeout = {}").format(STATEMENT_TIMEOUT))
            if starting is not None:
                actual = read_schema(conn, exclude=exclude)
                schemas = actual.schemas
            else:
                live_schemas = list_schemas(conn, with_relations_only=True)
                schemas = tuple(sorted(set(expected.schemas) | set(live_schemas)))
                actual = read_schema(conn, schemas=schemas, exclude=exclude)
    except RollbookError as exc:
        return SchemaCheck("not_checked", resolved, (), str(exc))
    except psycopg.Error as exc:
        return SchemaCheck(
            "not_checked", resolved, (),
            f"The schemas could not be read: {type(exc).__name__}: {target.scrub(first_line(exc))}",
        )
    if starting is not None and before is not None:
        before = before.without_tables(exclude)
        drift = compare_schemas(starting, before, START_AND_DATABASE_BEFORE).differences
        expected = apply_change(before, starting, expected)
        compared = (f"the change from {start} to {resolved or 'base'} ({expected.summary} compared in schema(s) "
                    f"{', '.join(schemas) or '(none)'}, against a snapshot taken before the rollback)")
    else:
        drift = ()
        compared = (f"the schema the migrations build up to {resolved or 'base'} ({expected.summary} compared in "
                    f"schema(s) {', '.join(schemas) or '(none)'})")
    difference = compare_schemas(expected, actual)
    drift_note = f" {len(drift)} difference(s) were there before the rollback began: drift, listed below." \
        if drift else ""
    if difference.matches:
        return SchemaCheck("passed", resolved, (),
                           f"The database's schema matches {compared}. {naming}{drift_note}", drift)
    return SchemaCheck(
        "failed", resolved, difference.differences,
        f"The database's schema differs from {compared}: {len(difference.differences)} difference(s), each naming "
        f"what the target revision has and what the database has. {naming}{drift_note}", drift,
    )


def _expected_schema(target: DatabaseTarget, project: MigrationProject, revision: str | None,
                     exclude: tuple[str, ...]) -> SchemaSnapshot:
    """The schema the migrations build up to `revision`, read from a scratch database."""
    with scratch_database(target) as scratch:
        build_schema_at(project, revision, scratch)
        with connect(scratch) as conn:
            return read_schema(conn, exclude=exclude)


def _resolve(project: MigrationProject, revision: str) -> tuple[str, ...]:
    """The full revision id(s) `revision` names ("head", "heads", a prefix, an id)."""
    try:
        scripts = project.scripts.revision_map.get_revisions(revision)
    except (RevisionError, CommandError) as exc:
        raise BadInput(f"Revision {revision!r} is not in the project: {exc}. Use a revision id from "
                       "`alembic history`.") from None
    ids = [script.revision for script in scripts if isinstance(script, Revision)]
    if not ids:
        raise BadInput(f"Revision {revision!r} names no revision of the project.")
    return tuple(ids)


def _label(revisions: str | tuple[str, ...]) -> str:
    """'base', or the revision ids joined (a bare string is not joined letter by letter)."""
    return revisions if isinstance(revisions, str) else ", ".join(revisions)


def _version_table_exclusion(project: MigrationProject) -> tuple[str, ...]:
    if project.version_table_schema:
        return (f"{project.version_table_schema}.{project.version_table}",)
    # Without a schema Alembic puts it first on the search path, which may differ between databases.
    return (project.version_table,)
