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
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.schema_snapshot import SchemaSnapshot, compare_schemas, read_schema
from rollbook.pg.scratch import SCRATCH_PREFIX, scratch_database
from rollbook.planning.downgrade_path import alembic_downgrade_destination, ancestors
from rollbook.planning.operations import ROW_CHANGES, Operation, Risk
from rollbook.planning.plan import PlanStep, plan_downgrade
from rollbook.project.base_schema import create_base_schema
from rollbook.project.migrations import MigrationProject, RevisionInfo
from rollbook.project.own_migrations import MigrationFailed, run_own_migrations
from rollbook.project.status import read_current_revisions

Status = Literal["passed", "failed", "not_run", "not_checked"]
ROWS_PER_TABLE = 3
# Value comparison reads whole tables into memory: beyond this, only row counts are compared.
MAX_ROWS_COMPARED = 20_000
PLAN_STATEMENT_TIMEOUT_MS = 30_000

_TABLES_SQL = r"""
SELECT c.oid, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 2, 3
"""
# Each column with its base type (domains resolved), so a value can be made up for it.
_COLUMNS_SQL = """
SELECT a.attrelid, a.attname, a.attnotnull, a.atthasdef, coalesce(pg_get_expr(d.adbin, d.adrelid), ''),
       a.attidentity::text, a.attgenerated::text, bt.typname, bt.typtype::text, bt.typcategory::text,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
       (SELECT e.enumlabel FROM pg_enum e WHERE e.enumtypid = bt.oid ORDER BY e.enumsortorder LIMIT 1)
FROM pg_attribute a
JOIN pg_type t ON t.oid = a.atttypid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = ANY(%s) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""
_FOREIGN_KEYS_SQL = """
SELECT k.conrelid, k.confrelid,
       ARRAY(SELECT a.attname FROM unnest(k.conkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = u.n ORDER BY u.i),
       ARRAY(SELECT a.attname FROM unnest(k.confkey) WITH ORDINALITY u(n, i)
             JOIN pg_attribute a ON a.attrelid = k.confrelid AND a.attnum = u.n ORDER BY u.i)
FROM pg_constraint k WHERE k.contype = 'f' AND k.conrelid = ANY(%s)
"""


# --- results ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepResult:
    """One step of a round trip: passed, failed, not run or not checked, with what differed."""

    status: Status
    detail: str
    differences: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "differences": list(self.differences)}


@dataclass(frozen=True)
class RoundTrip:
    """One revision: upgrade to it, seed rows, downgrade one, upgrade again."""

    revision: RevisionInfo
    migration_type: str
    risk: str
    seeded: tuple[tuple[str, int], ...]
    down: StepResult
    up: StepResult
    rows: StepResult
    seconds: float
    # Rows the made-up data could not insert (a CHECK its values fail, a key still taken after the retries):
    # about the rehearsal's seeding, never a prediction of the plan that failed.
    seeding: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(step.status in ("passed", "not_checked") for step in (self.down, self.up, self.rows))

    @property
    def status(self) -> str:
        if self.down.status == "not_run":
            return "not run"
        return "PASS" if self.passed else "FAIL"

    def failures(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each failed step ("downgrade: what went wrong") with its differences."""
        return [(f"{name}: {step.detail}", step.differences)
                for name, step in (("downgrade", self.down), ("upgrade again", self.up), ("rows as planned", self.rows))
                if step.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {**self.revision.to_dict(), "migration_type": self.migration_type, "risk": self.risk,
                "passed": self.passed, "status": self.status, "seconds": self.seconds,
                "seeded": [{"table": t, "rows": n} for t, n in self.seeded], "seeding_notes": list(self.seeding),
                "downgrade": self.down.to_dict(), "upgrade_again": self.up.to_dict(),
                "rows_as_planned": self.rows.to_dict()}


@dataclass(frozen=True)
class TeamTest:
    """The team's automated test: apply all migrations, roll back one, re-apply, verify."""

    status: Status
    lines: tuple[str, ...]
    differences: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "lines": list(self.lines), "differences": list(self.differences)}


@dataclass(frozen=True)
class RehearsalReport:
    """Every revision's round trip, and the team's test; passed only if all of them passed."""

    project: str
    server: str
    team_test: TeamTest
    round_trips: tuple[RoundTrip, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return self.team_test.passed and all(trip.passed for trip in self.round_trips)

    @property
    def failed(self) -> tuple[RoundTrip, ...]:
        return tuple(trip for trip in self.round_trips if not trip.passed)

    def headline(self) -> str:
        if self.passed:
            return (f"PASSED: all {len(self.round_trips)} revision(s) roll back and re-apply cleanly, and rows were "
                    "lost exactly where the plans said.")
        count = len(self.failed) + (0 if self.team_test.passed else 1)
        return f"FAILED: {count} of {len(self.round_trips) + 1} check(s) failed."

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "server": self.server, "passed": self.passed, "headline": self.headline(),
                "seconds": self.seconds, "team_test": self.team_test.to_dict(),
                "revisions": [trip.to_dict() for trip in self.round_trips]}

    def to_text(self) -> str:
        lines = [f"Rollback test of {self.project} on scratch databases next to {self.server} ({self.seconds:.1f} s)",
                 "", f"The team's test (apply all migrations, roll back one, re-apply, verify): "
                 f"{self.team_test.status.replace('_', ' ')}"]
        lines += [f"  {line}" for line in self.team_test.lines]
        lines += [f"    - {difference}" for difference in self.team_test.differences]
        lines += ["", "Every revision's round trip (upgrade to it, seed rows, downgrade one, upgrade again):"]
        header = ("revision", "type", "risk", "downgrade", "up again", "rows as planned", "result")
        rows = [(t.revision.revision, t.migration_type, t.risk, _word(t.down), _word(t.up), _word(t.rows), t.status)
                for t in self.round_trips]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *rows)]
        for trip in self.failed:
            lines += ["", f"{trip.revision.revision} ({trip.revision.message}):"]
            for failure, differences in trip.failures():
                lines += [f"  {failure}", *[f"    - {difference}" for difference in differences]]
            lines += [f"  seeding (made-up rows, not a prediction): {note}" for note in trip.seeding]
        return "\n".join([*lines, "", self.headline()])

    def _repr_markdown_(self) -> str:
        marks = {"passed": "✅ passed", "failed": "❌ **failed**", "not_run": "⚪ not run",
                 "not_checked": "⚪ not checked"}
        team = "\n".join(f"- {markdown.cell(line)}" for line in self.team_test.lines)
        team += "".join(f"\n  - {markdown.cell(d)}" for d in self.team_test.differences)
        rows = [(markdown.code(t.revision.revision), markdown.cell(t.revision.message), markdown.cell(t.migration_type),
                 t.risk.upper(), marks[t.down.status], marks[t.up.status], marks[t.rows.status],
                 "**PASS**" if t.passed else "**FAIL**" if t.status == "FAIL" else "not run")
                for t in self.round_trips]
        parts = [f"Rollback test of `{markdown.cell(self.project)}` on scratch databases ({self.seconds:.1f} s)",
                 f"**The team's test** (apply all, roll back one, re-apply, verify): {marks[self.team_test.status]}",
                 team,
                 markdown.table(["revision", "message", "type", "risk", "downgrade", "up again", "rows as planned",
                                 "result"], rows)]
        for trip in self.failed:
            lines = [f"**`{trip.revision.revision}`** ({markdown.cell(trip.revision.message)}) failed:", ""]
            for failure, differences in trip.failures():
                lines += [f"- {markdown.cell(failure)}", *[f"  - {markdown.cell(d)}" for d in differences]]
            lines += [f"- seeding (made-up rows, not a prediction): {markdown.cell(note)}" for note in trip.seeding]
            parts.append("\n".join(lines))
        details = [f"- `{t.revision.revision}`: {markdown.cell(line)}" for t in self.round_trips
                   for line in ((t.rows.detail,) if t.rows.status == "passed" else ())]
        if details:
            parts.append("Rows, per revision:\n\n" + "\n".join(details))
        parts.append(f"**{markdown.cell(self.headline())}**")
        return "\n\n".join(parts)


def _word(step: StepResult) -> str:
    return step.status.replace("_", " ")


# --- the rehearsal ------------------------------------------------------------------------------------------


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
    name = f"{SCRATCH_PREFIX}{secrets.token_hex(6)}"
    with connect(server) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name),
                                                                        sql.Identifier(source.database)))
        try:
            yield DatabaseTarget(source.url.set(database=name))
        finally:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


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


# --- seeding rows -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Column:
    name: str
    not_null: bool
    has_default: bool
    default: str
    identity: str
    generated: str
    type_name: str
    type_type: str
    category: str
    typmod: int
    enum_label: str | None


def seed_rows(conn: psycopg.Connection[Any], project: MigrationProject, count: int
              ) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """Insert up to `count` made-up rows into every table, parents before children; what was seeded, and notes.

    Every column gets a value where one can be made up (so a dropped column has values to lose);
    serial, identity and generated columns keep their defaults; a foreign key points at a row of its
    table. Each row goes in on its own, so a check constraint that rejects one costs only that row.
    """
    versions = _version_keys(project, conn)
    tables = [(oid, schema, name) for oid, schema, name in conn.execute(_TABLES_SQL).fetchall()
              if (schema, name) not in versions]
    oids = [oid for oid, _, _ in tables]
    columns: dict[int, list[_Column]] = {oid: [] for oid in oids}
    for relid, *fields in conn.execute(_COLUMNS_SQL, [oids]).fetchall():
        columns[relid].append(_Column(*fields))
    keys: dict[int, list[tuple[int, list[str], list[str]]]] = {oid: [] for oid in oids}
    for relid, parent, own, referenced in conn.execute(_FOREIGN_KEYS_SQL, [oids]).fetchall():
        keys[relid].append((parent, list(own), list(referenced)))
    names = {oid: (schema, name) for oid, schema, name in tables}
    seeded, notes = [], []
    left_null: list[tuple[int, tuple[int, list[str], list[str]]]] = []
    for oid in _parents_first(oids, keys, columns):
        schema, name = names[oid]
        inserted, note, waiting = _seed_table(conn, schema, name, columns[oid], keys[oid], names, count)
        seeded.append((_display(schema, name), inserted))
        left_null += [(oid, key) for key in waiting] if inserted else []
        if note:
            notes.append(f"{_display(schema, name)}: {note}")
    # Foreign keys in a cycle (flow_run.state_id -> flow_run_state.flow_run_id -> flow_run): the nullable
    # side went in as NULL, its parent is seeded now, so the reference is filled in afterwards.
    for oid, key in left_null:
        note = _point_at_parent(conn, names[oid], key, names)
        if note:
            notes.append(f"{_display(*names[oid])}: {note}")
    return tuple(seeded), tuple(notes)


def _point_at_parent(conn: psycopg.Connection[Any], table: tuple[str, str], key: tuple[int, list[str], list[str]],
                     names: dict[int, tuple[str, str]]) -> str:
    """Fill a foreign key seeded as NULL (its parent had no rows yet) with a row of its parent; a note if refused."""
    parent, own, other = key
    targets = sql.SQL(", ").join(map(sql.Identifier, own))
    statement = sql.SQL("UPDATE {} SET " + ("({}) = " if len(own) > 1 else "{} = ") + "(SELECT {} FROM {} LIMIT 1) "
                        "WHERE {}").format(
        sql.Identifier(*table), targets, sql.SQL(", ").join(map(sql.Identifier, other)), sql.Identifier(*names[parent]),
        sql.SQL(" AND ").join(sql.SQL("{} IS NULL").format(sql.Identifier(column)) for column in own))
    try:
        with conn.transaction():
            conn.execute(statement)
    except psycopg.Error as exc:
        why = exc.diag.message_primary or type(exc).__name__
        return f"its reference to {_display(*names[parent])} stayed NULL: {why}"
    return ""


def _seed_table(conn: psycopg.Connection[Any], schema: str, name: str, columns: list[_Column],
                keys: list[tuple[int, list[str], list[str]]], names: dict[int, tuple[str, str]], count: int,
                ) -> tuple[int, str, list[tuple[int, list[str], list[str]]]]:
    """Seed one table: rows inserted, a note if some were not, and the foreign keys left NULL for now."""
    referenced: dict[str, list[Any]] = {}
    waiting = []
    for parent, own, other in keys:
        if parent not in names:
            continue
        parent_schema, parent_name = names[parent]
        found = conn.execute(sql.SQL("SELECT {} FROM {} LIMIT {}").format(
            sql.SQL(", ").join(map(sql.Identifier, other)), sql.Identifier(parent_schema, parent_name),
            sql.Literal(count))).fetchall()
        if not found:
            waiting.append((parent, own, other))
        for position, own_column in enumerate(own):
            referenced[own_column] = [row[position] for row in found]
    inserted, problem = 0, ""
    for k in range(1, count + 1):
        # A made-up key may already be taken by a row the migrations themselves insert (Airflow's default_pool
        # is slot_pool id 1): the row is tried again with the values of a later row, which no seeded row uses.
        for attempt in range(_SEED_ATTEMPTS):
            values = _row_values(columns, referenced, k + attempt * count)
            if isinstance(values, str):
                return inserted, values, []
            try:
                _insert_row(conn, schema, name, values, columns)
            except psycopg.errors.UniqueViolation as exc:
                if attempt + 1 < _SEED_ATTEMPTS:
                    continue
                problem = problem or f"a row was rejected: {exc.diag.message_primary or type(exc).__name__}"
            except psycopg.Error as exc:
                problem = problem or f"a row was rejected: {exc.diag.message_primary or type(exc).__name__}"
            else:
                inserted += 1
            break
    return inserted, problem, waiting


_SEED_ATTEMPTS = 3


def _row_values(columns: list[_Column], referenced: dict[str, list[Any]], k: int) -> dict[str, Any] | str:
    """The made-up values of the `k`th row (defaults left out); or why no row can be made up."""
    values: dict[str, Any] = {}
    for column in columns:
        if column.identity or column.generated or "nextval(" in column.default:
            continue
        # Made-up bytes are no payload a project wrote (Airflow's 55297ae24532 decompresses every
        # serialized_dag.data_compressed): a nullable binary column is left NULL, which a downgrade skips or keeps.
        if column.type_name == "bytea" and not column.not_null:
            continue
        if column.name in referenced:
            choices = referenced[column.name]
            if not choices and column.not_null:
                return f"not seeded: no row in the table its column {column.name} refers to"
            values[column.name] = choices[(k - 1) % len(choices)] if choices else None
            continue
        value = made_up_value(column.type_name, column.type_type, column.category, column.typmod,
                              column.enum_label, k)
        if value is not None:
            values[column.name] = value
        elif column.not_null and not column.has_default:
            return f"not seeded: no value can be made up for {column.name} ({column.type_name})"
    return values


def _insert_row(conn: psycopg.Connection[Any], schema: str, name: str, values: dict[str, Any],
                columns: list[_Column]) -> None:
    """Insert one made-up row. A CHECK constraint that rejects it is tried once more with its nullable columns
    NULL, which every CHECK accepts (CKAN's package_flat_extras wants a JSON object of strings)."""
    statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(schema, name), sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(sql.Placeholder() for _ in values)) if values else \
        sql.SQL("INSERT INTO {} DEFAULT VALUES").format(sql.Identifier(schema, name))
    try:
        with conn.transaction():
            conn.execute(statement, list(values.values()))
        return
    except psycopg.errors.CheckViolation as exc:
        checked = {row[0] for row in conn.execute(
            "SELECT a.attname FROM pg_constraint c JOIN pg_attribute a ON a.attrelid = c.conrelid "
            "AND a.attnum = ANY (c.conkey) WHERE c.conrelid = %s::regclass AND c.conname = %s",
            [sql.Identifier(schema, name).as_string(conn), exc.diag.constraint_name]).fetchall()}
        nullable = {column.name for column in columns if not column.not_null} & checked & {
            column for column, value in values.items() if value is not None}
        if not nullable:
            raise
    with conn.transaction():
        conn.execute(statement, [None if column in nullable else value for column, value in values.items()])


def made_up_value(type_name: str, type_type: str, category: str, typmod: int, enum_label: str | None,
                  k: int) -> str | None:
    """The k-th made-up value for a column of this type, as text PostgreSQL casts; None if none can be made."""
    if type_type == "e":
        return enum_label
    if category == "A":
        return "{}"
    day = date(2026, 1, 1) + timedelta(days=k)
    if type_name in ("int2", "int4", "int8"):
        return str((20_000 if type_name == "int2" else 1_000_000) + k)
    if type_name == "numeric":
        if typmod < 4:
            return str(k)
        precision, scale = ((typmod - 4) >> 16) & 0xFFFF, (typmod - 4) & 0xFFFF
        return str(k) if precision - scale >= len(str(k)) else "0"
    if type_name in ("float4", "float8", "money"):
        return f"{k}.5"
    if type_name in ("text", "varchar", "bpchar", "name", "citext"):
        width = typmod - 4 if typmod > 4 else None
        text = f"rollbook seed {k}"
        return text if width is None or width >= len(text) else f"s{k}"[:width]
    values = {
        "bool": "true" if k % 2 else "false",
        "date": day.isoformat(),
        "timestamp": f"{day.isoformat()} 12:00:00",
        "timestamptz": f"{day.isoformat()} 12:00:00+00",
        "time": f"12:{k % 60:02d}:00",
        "timetz": f"12:{k % 60:02d}:00+00",
        "interval": f"{k} days",
        # An object of strings: what a document column holds most often (CKAN checks that its extras are).
        "json": json.dumps({"rollbook_seed": f"seed {k}"}),
        "jsonb": json.dumps({"rollbook_seed": f"seed {k}"}),
        "uuid": f"00000000-0000-4000-8000-{k:012d}",
        "bytea": f"\\x{k % 256:02x}",
        "inet": f"10.0.{k // 256 % 256}.{k % 256}",
        "cidr": f"10.{k % 256}.0.0/16",
        "macaddr": f"08:00:2b:01:02:{k % 256:02x}",
        "xml": f"<seed>{k}</seed>",
        "bit": "1",
        "varbit": "1",
    }
    return values.get(type_name)


def _parents_first(oids: list[int], keys: dict[int, list[tuple[int, list[str], list[str]]]],
                   columns: dict[int, list[_Column]]) -> list[int]:
    """Tables ordered so that a table comes after the parents its NOT NULL foreign keys need.

    Only required references order the tables: a nullable one in a cycle is seeded as NULL and filled in
    once its parent has rows, so tables whose keys point at each other are all seeded.
    """
    ordered: list[int] = []
    visiting: set[int] = set()

    def required(oid: int, own: list[str]) -> bool:
        return any(c.not_null for c in columns.get(oid, []) if c.name in own)

    def visit(oid: int) -> None:
        if oid in ordered or oid in visiting:
            return  # done, or a cycle of NOT NULL keys: its rows may be rejected, which is reported
        visiting.add(oid)
        for parent, own, _ in keys.get(oid, []):
            if parent != oid and parent in keys and required(oid, own):
                visit(parent)
        visiting.discard(oid)
        ordered.append(oid)

    for oid in oids:
        visit(oid)
    return ordered


# --- rows against the plan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableData:
    """A table's columns and rows (as text), or only its row count when it is too big to compare."""

    columns: tuple[str, ...]
    rows: tuple[tuple[str | None, ...], ...]
    count: int

    def values(self, column: str) -> int:
        index = self.columns.index(column)
        return sum(1 for row in self.rows if row[index] is not None)

    def projected(self, columns: list[str]) -> Counter[tuple[str | None, ...]]:
        indexes = [self.columns.index(c) for c in columns]
        return Counter(tuple(row[i] for i in indexes) for row in self.rows)


@dataclass
class _ColumnNames:
    """A table's columns as a downgrade's statements leave them, in order: each name now in use, mapped to the
    column it had before the downgrade (None for one the downgrade adds). A name not mapped is untouched.

    Followed in order, a column dropped and then replaced by a rename (Airflow's e39a26ac59f6 drops `conf`,
    then renames `conf_pickle` to `conf`) is read as dropped, and the `conf` that is left as `conf_pickle`.
    """

    current: dict[str, str | None] = field(default_factory=dict)
    gone: set[str] = field(default_factory=set)

    def original(self, name: str) -> str | None:
        """The name the column now called `name` had before the downgrade; None if the downgrade added it."""
        return self.current.get(name) if name in self.current else None if name in self.gone else name

    def drop(self, name: str) -> str | None:
        """Drop the column now called `name`; the name it had before the downgrade (None if the downgrade added it)."""
        original = self.original(name)
        self.current.pop(name, None)
        self.gone.add(name)
        return original

    def add(self, name: str) -> None:
        self.current[name] = None
        self.gone.discard(name)

    def rename(self, old: str, new: str) -> None:
        original = self.original(old)
        self.current.pop(old, None)
        self.gone.add(old)
        self.current[new] = original
        self.gone.discard(new)

    def final(self, original: str) -> str | None:
        """The name the column called `original` before the downgrade has after it; None if it is gone."""
        if original in self.current.values():
            return next(name for name, was in self.current.items() if was == original)
        return None if original in self.gone or original in self.current else original

    def reused(self, name: str) -> bool:
        """Whether another column (renamed or added) carries `name` after the downgrade."""
        return name in self.current

    def added(self, name: str) -> bool:
        """Whether `name` is, after the downgrade, a column the downgrade adds (CKAN's 008 drops and adds again)."""
        return name in self.current and self.current[name] is None


def table_data(conn: psycopg.Connection[Any], project: MigrationProject) -> dict[tuple[str, str], TableData]:
    """Every table's rows as text, keyed by (schema, name); the version table left out."""
    data = {}
    versions = _version_keys(project, conn)
    for oid, schema, name in conn.execute(_TABLES_SQL).fetchall():
        if (schema, name) in versions:
            continue
        described = conn.execute(
            "SELECT attname, atttypid::regtype::text FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum", [oid]).fetchall()
        columns = [row[0] for row in described]
        table = sql.Identifier(schema, name)
        counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        assert counted is not None  # count(*) always returns one row
        count = counted[0]
        rows: list[tuple[str | None, ...]] = []
        if count <= MAX_ROWS_COMPARED and columns:
            # A numeric's text carries its scale (5.0000 in numeric(12,4), 5.00 in numeric(10,2)): compared
            # without trailing zeros, a type change shows only the values it really changed. A timestamptz's text
            # carries the session's offset: read as the timestamp it converts to in this session (as ALTER TYPE
            # timestamp converts it), a change to or from timestamp shows only values it really changed.
            as_text = {"numeric": "trim_scale({})::text" if conn.info.server_version >= 130000 else "{}::text",
                       "timestamp with time zone": "{}::timestamp::text"}
            listed = sql.SQL(", ").join(sql.SQL(as_text.get(type_name, "{}::text")).format(sql.Identifier(c))
                                        for c, type_name in described)
            rows = [tuple(row) for row in conn.execute(sql.SQL("SELECT {} FROM {}").format(listed, table)).fetchall()]
        data[(schema, name)] = TableData(tuple(columns), tuple(rows), int(count))
    return data


def check_predictions(step: PlanStep, before: dict[tuple[str, str], TableData],
                      after: dict[tuple[str, str], TableData]) -> StepResult:
    """Were rows lost exactly where the plan said, and kept everywhere else?"""
    dropped_tables: dict[tuple[str, str], int | None] = {}
    dropped_columns: dict[tuple[tuple[str, str], str], int | None] = {}
    rewritten: dict[tuple[str, str], int] = {}
    unsure: set[tuple[str, str]] = set()
    # Renames keep their rows: a table or column is followed to its new name, not counted as lost.
    renamed_tables: dict[tuple[str, str], tuple[str, str]] = {}
    columns: dict[tuple[str, str], _ColumnNames] = {}
    recreated: set[tuple[str, str]] = set()
    # A column the downgrade drops and then adds again (CKAN's 008 restores old key types that way) comes
    # back empty: its values are the ones lost, and it takes no part in comparing the rows kept.
    for op in step.operations:
        if op.table is None:
            if op.op == "unknown":
                return StepResult("not_checked", f"the plan could not tell which tables it touches: {op.detail}")
            continue
        key = (op.table.schema or "public", op.table.name)
        # A statement after a table rename may name the table by its new name.
        key = next((old for old, new in renamed_tables.items() if new == key), key)
        names = columns.setdefault(key, _ColumnNames())
        lossy = op.op in ("drop_table", "drop_column") or op.op in ROW_CHANGES
        if op.op == "unknown" or (lossy or op.check is not None) and op.rows_affected is None:
            unsure.add(key)
        elif op.op == "drop_table":
            dropped_tables[key] = op.rows_affected
        elif op.op == "create_table" and key in dropped_tables:
            recreated.add(key)
        elif op.op == "drop_column" and op.column:
            original = names.drop(op.column)
            if original is not None:
                dropped_columns[(key, original)] = op.rows_affected
        elif op.op == "add_column" and op.column:
            names.add(op.column)
        elif op.op in ROW_CHANGES and not _fills_only_added_columns(op, names):
            rewritten[key] = rewritten.get(key, 0) + (op.rows_affected or 0)
        elif op.op == "rename_table" and op.extra.get("new_name"):
            renamed_tables[key] = (key[0], str(op.extra["new_name"]))
        elif op.op == "rename_column" and op.column and op.extra.get("new_name"):
            names.rename(op.column, str(op.extra["new_name"]))
    findings, mismatches = [], []
    for key, was in sorted(before.items()):
        table = _display(*key)
        now = after.get(key)
        if key in renamed_tables:
            table, now = f"{table} (renamed to {_display(*renamed_tables[key])})", after.get(renamed_tables[key])
        if key in unsure:
            findings.append(f"{table}: not checked (the plan did not count it)")
            continue
        if key in dropped_tables:
            if now is not None and key not in recreated:
                mismatches.append(f"{table}: the plan said the downgrade drops it, but it is still there")
            elif dropped_tables[key] != was.count:
                mismatches.append(f"{table}: dropped with {was.count} rows; the plan predicted "
                                  f"{dropped_tables[key]} lost")
            elif key in recreated:
                findings.append(f"{table}: dropped and re-created, {was.count} rows lost as predicted "
                                f"({now.count if now else 0} rows in the new table)")
            else:
                findings.append(f"{table}: dropped, {was.count} rows lost as predicted")
            continue
        if now is None:
            if was.count:
                mismatches.append(f"{table}: dropped with {was.count} rows, which the plan did not predict")
            continue
        names = columns.get(key, _ColumnNames())
        for column in was.columns:
            planned = dropped_columns.get((key, column), "kept")
            if planned != "kept":
                if column in now.columns and not names.reused(column):
                    mismatches.append(f"{table}.{column}: the plan said the downgrade drops it, but it is still there")
                    continue
            elif names.final(column) in now.columns:
                continue
            dropped = "dropped and added again" if names.added(column) else "dropped"
            if was.count and not was.rows:
                findings.append(f"{table}.{column}: {dropped}; values not compared ({was.count} rows)")
                continue
            lost = was.values(column)
            if planned == "kept":
                if lost:
                    mismatches.append(f"{table}.{column}: dropped with {lost} values, which the plan did not predict")
            elif planned != lost:
                mismatches.append(f"{table}.{column}: {dropped} with {lost} values; the plan predicted {planned} lost")
            else:
                findings.append(f"{table}.{column}: {dropped}, {lost} values lost as predicted")
        expected = rewritten.get(key, 0)
        if (was.count and not was.rows) or (now.count and not now.rows):
            if now.count < was.count - expected:
                mismatches.append(f"{table}: {was.count} rows before, {now.count} after; the plan predicted at most "
                                  f"{expected} changed")
            continue
        kept = [(c, names.final(c)) for c in was.columns if (key, c) not in dropped_columns]
        common = [(c, final) for c, final in kept if final in now.columns]
        changed = sum((was.projected([c for c, _ in common]) - now.projected([f for _, f in common])).values())
        if changed != expected:
            mismatches.append(f"{table}: {changed} of its {was.count} rows changed or lost; the plan predicted "
                              f"{expected}")
        elif changed:
            findings.append(f"{table}: {changed} rows rewritten or deleted as predicted")
        else:
            findings.append(f"{table}: all {was.count} rows kept")
    if mismatches:
        return StepResult("failed", "the plan's predictions did not hold", tuple(mismatches))
    return StepResult("passed", "; ".join(findings) if findings else "no tables")


# --- helpers ------------------------------------------------------------------------------------------------


def _fills_only_added_columns(op: Operation, names: _ColumnNames) -> bool:
    """An UPDATE that sets only columns the same downgrade adds (Airflow's e00344393f31 brings back
    dag_run.external_trigger and fills it): no value that was there before changes."""
    set_columns = op.extra.get("set_columns") or ()
    return op.op == "update" and bool(set_columns) and all(names.original(c) is None for c in set_columns)


def _version_keys(project: MigrationProject, conn: psycopg.Connection[Any]) -> set[tuple[str, str]]:
    if project.version_table_schema:
        return {(project.version_table_schema, project.version_table)}
    # Alembic puts it first on the search path; any schema's table of that name is taken for it.
    rows = conn.execute("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE c.relname = %s", [project.version_table]).fetchall()
    return {(row[0], project.version_table) for row in rows}


def _parents(down_revision: Any) -> tuple[str, ...]:
    if down_revision is None:
        return ()
    return (down_revision,) if isinstance(down_revision, str) else tuple(down_revision)


def _display(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
