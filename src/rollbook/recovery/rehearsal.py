"""The rollback rehearsal: every migration's downgrade tried on scratch databases and held against its plan.

Nothing runs in the database named: it only says which server to use. On a scratch database there,
the migrations run through rollbook's own Alembic context, never the project's env.py (a real env.py
may ignore the URL it is given and migrate whatever database its settings name):

1. the team's automated test: apply all migrations, roll back one, re-apply, verify the revision and
   the schema after each step;
2. every revision's round trip, oldest first, each in a copy of a scratch database at that revision:
   seed rows into every table, plan the downgrade of that one revision (its live counts are taken on
   the seeded rows), downgrade, and compare the schema with the one before the revision (a downgrade
   that does nothing, or forgets an index, fails here); check that rows were lost exactly where the
   plan said and survived everywhere else; upgrade again and compare the schema with the first build.

A history that branches, whether it merges again into one head (Zou's) or keeps several heads
(OpenStack's expand and contract), is rehearsed too. Each round trip starts
from a database where the revision and its ancestors are applied and nothing else (`alembic upgrade REV`):
the walk's own database where that holds, a fresh one for a revision of a branch walked second. The
downgrade goes to the revision's first parent; for a merge revision that undoes only the merge and leaves
its parents as heads, as `alembic downgrade` does. The team's test rolls back the last revision walked;
from a branch point it names its branch (`REVISION@PARENT`), so that the other branch stays.

This module is the walk and each round trip; the made-up rows are rehearsal_seeding's, the check of the
plan's row predictions rehearsal_rows', and the report rehearsal_report's.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from rollbook.errors import BadInput, RollbookError
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.schema_comparison import compare_schemas
from rollbook.pg.schema_objects import SchemaSnapshot
from rollbook.pg.schema_snapshot import read_schema
from rollbook.pg.scratch import create_scratch_database, drop_scratch_database, scratch_database
from rollbook.planning.downgrade_path import alembic_downgrade_destination, ancestors
from rollbook.planning.operations import Risk
from rollbook.planning.plan import plan_downgrade
from rollbook.planning.step import PlanStep
from rollbook.project.base_schema import create_base_schema
from rollbook.project.migrations import MigrationProject, RevisionInfo
from rollbook.project.own_migrations import MigrationFailed, run_own_migrations
from rollbook.project.status import read_current_revisions
from rollbook.recovery.rehearsal_report import RehearsalReport, RoundTrip, StepResult, TeamTest
from rollbook.recovery.rehearsal_rows import check_predictions, table_data
from rollbook.recovery.rehearsal_seeding import seed_rows

ROWS_PER_TABLE = 3
PLAN_STATEMENT_TIMEOUT_MS = 30_000


def rehearse_rollbacks(
    server: DatabaseTarget, project: MigrationProject, *, rows_per_table: int = ROWS_PER_TABLE,
) -> RehearsalReport:
    """Run the team's rollback test and every revision's round trip on scratch databases next to `server`.

    A revision whose upgrade fails on its own does not hide the rest: the walk goes on from a fresh
    scratch database brought, in one transaction from base (as Alembic's default env.py runs
    `alembic upgrade`), to the first later revision such an upgrade reaches.
    """
    started = time.monotonic()
    history = rehearsal_order(project)
    parents = {revision: _parents(project.script(revision).down_revision) for revision in history}
    trips: list[RoundTrip] = []
    team: TeamTest | None = None
    with ExitStack() as databases:
        walk = databases.enter_context(scratch_database(server))
        create_base_schema(project, walk)  # tables a project makes with create_all before its first migration
        # Base as a downgrade leaves it: no migration, but the version table's schema (version_table_schema) exists.
        run_own_migrations(project, walk, "base", "upgrade")
        # The schema of each revision with its ancestors applied and nothing else (None: base).
        schemas: dict[str | None, SchemaSnapshot] = {None: _schema(walk, project)}
        # What the walk has applied, and its schema before the latest upgrade.
        applied: frozenset[str] = frozenset()
        previous: tuple[frozenset[str], SchemaSnapshot] = (applied, schemas[None])
        below_latest = previous
        broken: list[str] = []
        index = 0
        while index < len(history):
            revision = history[index]
            try:
                run_own_migrations(project, walk, revision, "upgrade")
                applied |= _with_ancestors(project, revision)
            except MigrationFailed as exc:
                broken.append(revision)
                trips.append(_not_run(project.info(revision), f"the upgrade to it failed: {exc}", failed=True))
                reached, at, why = _reach_in_one_transaction(server, project, history, index, databases)
                stop = len(history) if at is None else at
                trips += [_not_run(project.info(later), why, failed=True) for later in history[index + 1:stop]]
                if reached is None or at is None:
                    break
                # Its round trip goes down to the revisions before it, whose schema never built on their own.
                walk, revision, index = reached, history[at], at
                applied = _with_ancestors(project, revision)
                previous = (frozenset(), schemas[None])
            walk_schema = _schema(walk, project)
            trips.append(_trip_at(server, walk, project, revision, parents, applied, walk_schema, previous, schemas,
                                  rows_per_table))
            below_latest, previous = previous, (applied, walk_schema)
            index += 1
        if not broken:
            # The head is applied last: the walk's schema before it is the schema below the head.
            team = _team_test(walk, project, history[-1], parents, applied, below_latest[1])
    if team is None:
        team = TeamTest("not_run", (f"not run: the upgrade of {', '.join(broken)} failed when applied on its own, so "
                                    "the migrations could not all be applied one after another",))
    return RehearsalReport(str(project.config_path), server.redacted, team, tuple(trips),
                           round(time.monotonic() - started, 3))


def _reach_in_one_transaction(
    server: DatabaseTarget, project: MigrationProject, history: tuple[str, ...], failed_at: int, databases: ExitStack,
) -> tuple[DatabaseTarget | None, int | None, str]:
    """A fresh database at the first revision after `history[failed_at]` that one upgrade from base reaches.

    Returns the database, that revision's index, and why the revisions skipped over were not rehearsed.
    """
    why = f"an earlier upgrade ({history[failed_at]}) failed"
    for index in range(failed_at + 1, len(history)):
        attempt = ExitStack()
        fresh = attempt.enter_context(scratch_database(server))
        create_base_schema(project, fresh)
        try:
            run_own_migrations(project, fresh, history[index], "upgrade", one_transaction=True)
        except MigrationFailed as exc:
            attempt.close()
            if exc.revision is not None and history.index(exc.revision) <= failed_at:
                # The same prefix fails in one transaction too: no later revision can be reached.
                return None, None, f"{why}, in one transaction from base as well: {exc}"
            continue
        databases.enter_context(attempt)
        return fresh, index, f"{why} and is applied only together with {history[index]}, in one upgrade"
    return None, None, f"{why}, and no later revision could be reached in one upgrade from base"


def rehearsal_order(project: MigrationProject) -> tuple[str, ...]:
    """The revisions oldest first, every one after its parents (Alembic's order); BadInput for no migrations.

    Branches are walked one after the other, whether they merge again into one head (Zou) or stay apart as
    several heads (OpenStack's expand and contract).
    """
    scripts = list(project.scripts.walk_revisions())
    if not scripts:
        raise BadInput(f"The Alembic project at {project.config_path} has no migrations: there is nothing to test.")
    return tuple(script.revision for script in reversed(scripts))


def _with_ancestors(project: MigrationProject, revision: str) -> frozenset[str]:
    """What `alembic upgrade revision` applies on an empty database: the revision and all it depends on."""
    return frozenset(ancestors(project, revision) | {revision})


def _heads_of(applied: frozenset[str], parents: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The revisions the version table holds when exactly `applied` is applied: those no applied one builds on."""
    below = {parent for revision in applied for parent in parents[revision]}
    return tuple(sorted(applied - below))


def _trip_at(
    server: DatabaseTarget, walk: DatabaseTarget, project: MigrationProject, revision: str,
    parents: dict[str, tuple[str, ...]], applied: frozenset[str], walk_schema: SchemaSnapshot,
    previous: tuple[frozenset[str], SchemaSnapshot], schemas: dict[str | None, SchemaSnapshot], rows_per_table: int,
) -> RoundTrip:
    """The round trip of `revision`, from a database where it and its ancestors are applied and nothing else.

    That is the walk itself, unless the walk also holds a branch walked earlier (the revision is on the
    second branch of a merge): then a fresh database is upgraded to the revision, as `alembic upgrade` would.
    """
    own = _with_ancestors(project, revision)
    with ExitStack() as fresh:
        source = walk
        if applied != own:
            source = fresh.enter_context(scratch_database(server))
            create_base_schema(project, source)
            try:
                run_own_migrations(project, source, revision, "upgrade")
            except MigrationFailed as exc:
                return _not_run(project.info(revision), f"upgrading a fresh database to it alone failed: {exc}",
                                failed=True)
            walk_schema = _schema(source, project)
        schemas[revision] = walk_schema
        expected_down = _schema_below(revision, own, parents, previous, schemas)
        return _round_trip(server, source, project, project.info(revision), parents[revision], expected_down,
                           _heads_of(own - {revision}, parents), schemas, rows_per_table)


def _schema_below(revision: str, own: frozenset[str], parents: dict[str, tuple[str, ...]],
                  previous: tuple[frozenset[str], SchemaSnapshot], schemas: dict[str | None, SchemaSnapshot],
                  ) -> SchemaSnapshot | None:
    """The schema with the revision's ancestors applied and not it: what its downgrade must leave; None if unknown."""
    below = own - {revision}
    previous_applied, previous_schema = previous
    if previous_applied == below:
        return previous_schema
    if not below:
        return schemas[None]
    # One parent: below is that parent with its ancestors. A merge walked from a fresh database: unknown.
    return schemas.get(parents[revision][0]) if len(parents[revision]) == 1 else None


def _round_trip(
    server: DatabaseTarget, walk: DatabaseTarget, project: MigrationProject, info: RevisionInfo,
    parents: tuple[str, ...], expected_down: SchemaSnapshot | None, heads_after_down: tuple[str, ...],
    schemas: dict[str | None, SchemaSnapshot], rows_per_table: int,
) -> RoundTrip:
    started = time.monotonic()
    # Downgrading to the first parent undoes only this revision: for a merge, Alembic leaves both parents as heads.
    parent_label = parents[0] if parents else "base"
    with copy_of(server, walk) as copy:
        with connect(copy) as conn:
            seeded, seed_notes = seed_rows(conn, project, rows_per_table)
        step, planning_note = _plan_one_step(copy, project, parent_label)
        kind = step.migration_type if step else "unknown"
        risk = step.risk.value if step else Risk.UNKNOWN.value
        with connect(copy) as conn:
            before = table_data(conn, project)
        try:
            run_own_migrations(project, copy, parent_label, "downgrade")
        except MigrationFailed as exc:
            seeded_failure = exc
            blocking = _blocking(step)
            # The downgrade fails as the plan said it would (seeded rows that break it, an object in its way, its
            # own code) or not; either way the schema round trip is tried again on a copy without the rows.
            rows = StepResult("passed", f"the plan predicted that the downgrade fails ({blocking}), and it did: "
                              f"{exc}") if blocking else _unpredicted_on_rows(step, exc)
        else:
            down = _after_down(copy, project, expected_down, heads_after_down)
            with connect(copy) as conn:
                after = table_data(conn, project)
            rows = (StepResult("not_checked", f"no plan to check against: {planning_note}") if step is None
                    else check_predictions(step, before, after))
            return RoundTrip(info, kind, risk, seeded, down, _up_again(copy, project, info.revision, schemas), rows,
                             _since(started), seed_notes)
    note = " (without seeded rows)"
    with copy_of(server, walk) as bare:
        try:
            run_own_migrations(project, bare, parent_label, "downgrade")
        except MigrationFailed as exc:
            if not blocking:
                # It fails whatever the rows: the downgrade itself is broken, and the plan did not say so.
                down = StepResult("failed", f"the downgrade to {parent_label} failed, which the plan did not "
                                  f"predict: {seeded_failure}")
                return RoundTrip(info, kind, risk, seeded, down, StepResult("not_run", "the downgrade failed"),
                                 StepResult("not_checked", "the downgrade failed"), _since(started), seed_notes)
            down, up = (StepResult("failed", f"the downgrade to {parent_label} failed{note}: {exc}"),
                        StepResult("not_run", "the downgrade failed"))
        else:
            down = _after_down(bare, project, expected_down, heads_after_down, note)
            up = _up_again(bare, project, info.revision, schemas, note)
    return RoundTrip(info, kind, risk, seeded, down, up, rows, _since(started), seed_notes)


def _unpredicted_on_rows(step: PlanStep | None, failure: MigrationFailed) -> StepResult:
    """A downgrade that failed on the seeded rows although the plan predicted no failure.

    A refusal by the database (a constraint, a type) is what the plan should have predicted. An error of the
    migration's own Python is not: made-up rows are not the project's, and its code may rightly expect values
    the project writes (JSON it parses, say). Whether the downgrade works at all is then rehearsed on a copy
    without rows.
    """
    if failure.database_refused and step is not None and step.risk is not Risk.UNKNOWN:
        return StepResult("failed", f"the downgrade fails on the seeded rows, which the plan did not predict: "
                          f"{failure}")
    return StepResult("not_checked", f"the downgrade failed on the rows the rehearsal made up ({failure}); whether "
                      "the rows the project writes break it too is for review by hand")


def _after_down(copy: DatabaseTarget, project: MigrationProject, expected: SchemaSnapshot | None,
                heads: tuple[str, ...], note: str = "") -> StepResult:
    """The revisions and schema after the downgrade, against the schema the parent revisions build."""
    label = ", ".join(heads) or "base"
    if expected is None:
        # An upgrade before it failed, or a merge reached from a fresh database: no database was ever at just that.
        return StepResult("not_checked", f"the schema {label} builds is unknown: it was never built on its own{note}")
    return _schema_step(_schema(copy, project), expected, _revisions(copy, project), heads,
                        f"the schema {label} builds", note)


def _up_again(copy: DatabaseTarget, project: MigrationProject, revision: str,
              schemas: dict[str | None, SchemaSnapshot], note: str = "") -> StepResult:
    """Upgrade again after the downgrade; the schema must equal the one the first upgrade built."""
    try:
        run_own_migrations(project, copy, revision, "upgrade")
    except MigrationFailed as exc:
        return StepResult("failed", f"upgrading again after the downgrade failed{note}: {exc}")
    return _schema_step(_schema(copy, project), schemas[revision], _revisions(copy, project), (revision,),
                        "the schema of the first upgrade", note)


def _plan_one_step(copy: DatabaseTarget, project: MigrationProject, target: str) -> tuple[PlanStep | None, str]:
    try:
        plan = plan_downgrade(copy, project, target, statement_timeout_ms=PLAN_STATEMENT_TIMEOUT_MS)
    except RollbookError as exc:
        return None, str(exc)
    return (plan.steps[0], "") if plan.steps else (None, "the plan has no step")


def _blocking(step: PlanStep | None) -> str:
    """What the plan says would make the downgrade fail (rows, objects), in words; empty if it predicts nothing."""
    return "; ".join(op.described() for op in (step.operations if step else ()) if op.fails)


def _schema_step(actual: SchemaSnapshot, expected: SchemaSnapshot, revisions: tuple[str, ...] | None,
                 expected_revisions: tuple[str, ...], what: str, note: str = "") -> StepResult:
    at = ", ".join(revisions) if revisions else "base"
    problems = []
    if revisions is not None and sorted(revisions) != sorted(expected_revisions):
        problems.append(f"the version table says {at}, not {', '.join(expected_revisions) or 'base'}")
    differences = compare_schemas(expected, actual).differences
    if differences:
        problems.append(f"the schema differs from {what} ({len(differences)} difference(s))")
    if problems:
        return StepResult("failed", "; ".join(problems) + note, differences)
    return StepResult("passed", f"at {at}; the schema equals {what}{note}")


def _team_test(walk: DatabaseTarget, project: MigrationProject, head: str, parents: dict[str, tuple[str, ...]],
               applied: frozenset[str], below_head: SchemaSnapshot) -> TeamTest:
    """Apply all, roll back the head (to its first parent: a merge head leaves its parents as heads), re-apply."""
    below = _heads_of(applied - {head}, parents)
    # A merge head goes down to its first parent, leaving both parents as heads; a head whose parent is a branch
    # point names its branch, so that the other branch stays.
    target = parents[head][0] if len(parents[head]) > 1 else alembic_downgrade_destination(project, head)
    lines = [f"✓ applied all migrations: current revision {', '.join(_revisions(walk, project) or ()) or 'base'}"]
    head_schema = _schema(walk, project)
    try:
        run_own_migrations(project, walk, target, "downgrade")
    except MigrationFailed as exc:
        return TeamTest("failed", (*lines, f"✗ rolling back one revision failed: {exc}"))
    down = _schema_step(_schema(walk, project), below_head, _revisions(walk, project), below,
                        f"the schema {', '.join(below) or 'base'} builds")
    lines.append(f"{'✓' if down.status == 'passed' else '✗'} rolled back one revision: {down.detail}")
    if down.status != "passed":
        return TeamTest("failed", tuple(lines), down.differences)
    try:
        run_own_migrations(project, walk, head, "upgrade")
    except MigrationFailed as exc:
        return TeamTest("failed", (*lines, f"✗ re-applying the migration failed: {exc}"))
    up = _schema_step(_schema(walk, project), head_schema, _revisions(walk, project), _heads_of(applied, parents),
                      "the schema of the first upgrade")
    lines.append(f"{'✓' if up.status == 'passed' else '✗'} re-applied the migration: {up.detail}")
    return TeamTest("passed" if up.status == "passed" else "failed", tuple(lines), up.differences)


def _not_run(info: RevisionInfo, why: str, *, failed: bool = False) -> RoundTrip:
    down = StepResult("failed" if failed else "not_run", why)
    return RoundTrip(info, "unknown", Risk.UNKNOWN.value, (), down, StepResult("not_run", why),
                     StepResult("not_checked", why), 0.0)


@contextmanager
def copy_of(server: DatabaseTarget, source: DatabaseTarget) -> Iterator[DatabaseTarget]:
    """A copy of the scratch database `source` (CREATE DATABASE ... TEMPLATE), dropped afterwards."""
    with connect(server) as conn:
        name = create_scratch_database(conn, template=source.database)
        try:
            yield DatabaseTarget(source.url.set(database=name))
        finally:
            drop_scratch_database(conn, name)


def _schema(target: DatabaseTarget, project: MigrationProject) -> SchemaSnapshot:
    with connect(target) as conn:
        return read_schema(conn, exclude=_version_exclusion(project))


def _revisions(target: DatabaseTarget, project: MigrationProject) -> tuple[str, ...] | None:
    with connect(target) as conn:
        try:
            return read_current_revisions(conn, project)
        except BadInput:
            return None  # no version table: at base


def _version_exclusion(project: MigrationProject) -> tuple[str, ...]:
    if project.version_table_schema:
        return (f"{project.version_table_schema}.{project.version_table}",)
    return (project.version_table,)


def _parents(down_revision: Any) -> tuple[str, ...]:
    if down_revision is None:
        return ()
    return (down_revision,) if isinstance(down_revision, str) else tuple(down_revision)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
