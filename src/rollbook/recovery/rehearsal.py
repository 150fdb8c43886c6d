"""The rollback rehearsal: every migration's downgrade tried on scratch databases and held against its plan.

Nothing runs in the database named: it only says which server to use. On a scratch database there,
the migrations run through rollbook's own Alembic context, never the project's env.py (a real env.py
may ignore the URL it is given and migrate whatever database its settings name):

1. the team's automated test: apply all migrations, roll back one, re-apply, verify the revision and
   the schema after each step;
2. every revision's round trip, oldest first, each in a copy of the scratch database at that revision:
   seed rows into every table, plan the downgrade of that one revision (its live counts are taken on
   the seeded rows), downgrade, and compare the schema with the one before the revision (a downgrade
   that does nothing, or forgets an index, fails here); check that rows were lost exactly where the
   plan said and survived everywhere else; upgrade again and compare the schema with the first build.

A history with several heads, a branch point or a merge is refused: the rehearsal walks one line.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, Literal

import psycopg
from psycopg import sql

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.schema_snapshot import SchemaSnapshot, compare_schemas, read_schema
from rollbook.pg.scratch import SCRATCH_PREFIX, scratch_database
from rollbook.planning.operations import ROW_CHANGES, Risk
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
                "seeded": [{"table": t, "rows": n} for t, n in self.seeded],
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
    history = linear_history(project)
    trips: list[RoundTrip] = []
    team: TeamTest | None = None
    with ExitStack() as databases:
        walk = databases.enter_context(scratch_database(server))
        create_base_schema(project, walk)  # tables a project makes with create_all before its first migration
        # Base as a downgrade leaves it: no migration, but the version table's schema (version_table_schema) exists.
        run_own_migrations(project, walk, "base", "upgrade")
        schemas: dict[str | None, SchemaSnapshot] = {None: _schema(walk, project)}
        previous: str | None = None
        broken: list[str] = []
        index = 0
        while index < len(history):
            revision = history[index]
            try:
                run_own_migrations(project, walk, revision, "upgrade")
            except MigrationFailed as exc:
                broken.append(revision)
                trips.append(_not_run(project.info(revision), f"the upgrade to it failed: {exc}", failed=True))
                reached, at, why = _reach_in_one_transaction(server, project, history, index, databases)
                stop = len(history) if at is None else at
                trips += [_not_run(project.info(later), why, failed=True) for later in history[index + 1:stop]]
                if reached is None or at is None:
                    break
                # Its round trip goes down to the revision before it, whose schema never built on its own.
                walk, revision, index, previous = reached, history[at], at, history[at - 1]
            schemas[revision] = _schema(walk, project)
            trips.append(_round_trip(server, walk, project, project.info(revision), previous, schemas,
                                     rows_per_table))
            previous = revision
            index += 1
        if not broken:
            team = _team_test(walk, project, history, schemas)
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


def linear_history(project: MigrationProject) -> tuple[str, ...]:
    """The revisions oldest first; BadInput for no migrations, several heads, a branch point or a merge."""
    scripts = list(project.scripts.walk_revisions())
    if not scripts:
        raise BadInput(f"The Alembic project at {project.config_path} has no migrations: there is nothing to test.")
    heads = project.heads()
    children: dict[str, list[str]] = {}
    merges = []
    for script in scripts:
        parents = _parents(script.down_revision)
        if len(parents) > 1:
            merges.append(f"{script.revision} merges {', '.join(parents)}")
        for parent in parents:
            children.setdefault(parent, []).append(script.revision)
    branch_points = [f"{parent} has {len(kids)} children ({', '.join(sorted(kids))})"
                     for parent, kids in sorted(children.items()) if len(kids) > 1]
    bases = [script.revision for script in scripts if not _parents(script.down_revision)]
    if len(heads) > 1 or branch_points or merges or len(bases) > 1:
        found = [f"several heads ({', '.join(sorted(heads))})"] if len(heads) > 1 else []
        found += [f"several bases ({', '.join(sorted(bases))})"] if len(bases) > 1 else []
        found += [f"a branch point: {point}" for point in branch_points] + [f"a merge: {m}" for m in merges]
        if len(heads) > 1:
            advice = ("Merge the heads (alembic merge heads) and test the line, or test each branch in a project of "
                      "its own.")
        else:
            # One head already: the branches were merged again (Zou), and merging cannot help.
            advice = ("Its branches are merged again into one head, but a merged branch is not rehearsed yet; "
                      "`rollbook plan` still plans each downgrade that does not cross the merge.")
        raise BadInput(
            f"The migration history of {project.config_path} is not a single line: {'; '.join(found)}. The rollback "
            f"test walks one line of migrations, where 'roll back one' has one meaning. {advice} Nothing was run.")
    return tuple(script.revision for script in reversed(scripts))


def _round_trip(
    server: DatabaseTarget, walk: DatabaseTarget, project: MigrationProject, info: RevisionInfo,
    parent: str | None, schemas: dict[str | None, SchemaSnapshot], rows_per_table: int,
) -> RoundTrip:
    started = time.monotonic()
    parent_label = parent or "base"
    with copy_of(server, walk) as copy:
        with connect(copy) as conn:
            seeded, seed_notes = seed_rows(conn, project, rows_per_table)
        step, planning_note = _plan_one_step(copy, project)
        kind = step.migration_type if step else "unknown"
        risk = step.risk.value if step else Risk.UNKNOWN.value
        with connect(copy) as conn:
            before = table_data(conn, project)
        try:
            run_own_migrations(project, copy, parent_label, "downgrade")
        except MigrationFailed as exc:
            blocking = _blocking(step)
            if not blocking:
                down = StepResult("failed", f"the downgrade to {parent_label} failed, which the plan did not "
                                  f"predict: {exc}")
                return RoundTrip(info, kind, risk, seeded, down, StepResult("not_run", "the downgrade failed"),
                                 StepResult("not_checked", "the downgrade failed"), _since(started))
            # The seeded rows break the downgrade, as the plan said they would: the prediction held, and
            # the schema round trip is tried again on a copy without them.
            rows = StepResult("passed", f"the plan predicted that the downgrade fails on the seeded rows "
                              f"({blocking}), and it did: {exc}")
        else:
            down = _after_down(copy, project, parent, schemas)
            with connect(copy) as conn:
                after = table_data(conn, project)
            rows = (StepResult("not_checked", f"no plan to check against: {planning_note}") if step is None
                    else check_predictions(step, before, after, seed_notes))
            return RoundTrip(info, kind, risk, seeded, down, _up_again(copy, project, info.revision, schemas), rows,
                             _since(started))
    note = " (without seeded rows)"
    with copy_of(server, walk) as bare:
        try:
            run_own_migrations(project, bare, parent_label, "downgrade")
        except MigrationFailed as exc:
            down, up = (StepResult("failed", f"the downgrade to {parent_label} failed{note}: {exc}"),
                        StepResult("not_run", "the downgrade failed"))
        else:
            down = _after_down(bare, project, parent, schemas, note)
            up = _up_again(bare, project, info.revision, schemas, note)
    return RoundTrip(info, kind, risk, seeded, down, up, rows, _since(started))


def _after_down(copy: DatabaseTarget, project: MigrationProject, parent: str | None,
                schemas: dict[str | None, SchemaSnapshot], note: str = "") -> StepResult:
    """The revision and schema after the downgrade, against the schema the parent revision builds."""
    if parent not in schemas:
        return StepResult("not_checked", f"the schema {parent} builds is unknown: its upgrade failed{note}")
    return _schema_step(_schema(copy, project), schemas[parent], _revisions(copy, project), parent,
                        f"the schema {parent or 'base'} builds", note)


def _up_again(copy: DatabaseTarget, project: MigrationProject, revision: str,
              schemas: dict[str | None, SchemaSnapshot], note: str = "") -> StepResult:
    """Upgrade again after the downgrade; the schema must equal the one the first upgrade built."""
    try:
        run_own_migrations(project, copy, revision, "upgrade")
    except MigrationFailed as exc:
        return StepResult("failed", f"upgrading again after the downgrade failed{note}: {exc}")
    return _schema_step(_schema(copy, project), schemas[revision], _revisions(copy, project), revision,
                        "the schema of the first upgrade", note)


def _plan_one_step(copy: DatabaseTarget, project: MigrationProject) -> tuple[PlanStep | None, str]:
    try:
        plan = plan_downgrade(copy, project, "-1", statement_timeout_ms=PLAN_STATEMENT_TIMEOUT_MS)
    except RollbookError as exc:
        return None, str(exc)
    return (plan.steps[0], "") if plan.steps else (None, "the plan has no step")


def _blocking(step: PlanStep | None) -> str:
    """What the plan says would make the downgrade fail (rows, objects), in words; empty if it predicts nothing."""
    return "; ".join(op.described() for op in (step.operations if step else ()) if op.fails)


def _schema_step(actual: SchemaSnapshot, expected: SchemaSnapshot, revisions: tuple[str, ...] | None,
                 revision: str | None, what: str, note: str = "") -> StepResult:
    at = ", ".join(revisions) if revisions else "base"
    expected_revisions = (revision,) if revision else ()
    problems = []
    if revisions is not None and tuple(revisions) != expected_revisions:
        problems.append(f"the version table says {at}, not {revision or 'base'}")
    differences = compare_schemas(expected, actual).differences
    if differences:
        problems.append(f"the schema differs from {what} ({len(differences)} difference(s))")
    if problems:
        return StepResult("failed", "; ".join(problems) + note, differences)
    return StepResult("passed", f"at {at}; the schema equals {what}{note}")


def _team_test(walk: DatabaseTarget, project: MigrationProject, history: tuple[str, ...],
               schemas: dict[str | None, SchemaSnapshot]) -> TeamTest:
    head = history[-1]
    parent = history[-2] if len(history) > 1 else None
    lines = [f"✓ applied all migrations: current revision {', '.join(_revisions(walk, project) or ()) or 'base'}"]
    try:
        run_own_migrations(project, walk, parent or "base", "downgrade")
    except MigrationFailed as exc:
        return TeamTest("failed", (*lines, f"✗ rolling back one revision failed: {exc}"))
    down = _schema_step(_schema(walk, project), schemas[parent], _revisions(walk, project), parent,
                        f"the schema {parent or 'base'} builds")
    lines.append(f"{'✓' if down.status == 'passed' else '✗'} rolled back one revision: {down.detail}")
    if down.status != "passed":
        return TeamTest("failed", tuple(lines), down.differences)
    try:
        run_own_migrations(project, walk, head, "upgrade")
    except MigrationFailed as exc:
        return TeamTest("failed", (*lines, f"✗ re-applying the migration failed: {exc}"))
    up = _schema_step(_schema(walk, project), schemas[head], _revisions(walk, project), head,
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
        values: dict[str, Any] = {}
        for column in columns:
            if column.identity or column.generated or "nextval(" in column.default:
                continue
            if column.name in referenced:
                choices = referenced[column.name]
                if not choices and column.not_null:
                    return inserted, f"not seeded: no row in the table its column {column.name} refers to", []
                values[column.name] = choices[(k - 1) % len(choices)] if choices else None
                continue
            value = made_up_value(column.type_name, column.type_type, column.category, column.typmod,
                                  column.enum_label, k)
            if value is not None:
                values[column.name] = value
            elif column.not_null and not column.has_default:
                return inserted, f"not seeded: no value can be made up for {column.name} ({column.type_name})", []
        statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            sql.Identifier(schema, name), sql.SQL(", ").join(map(sql.Identifier, values)),
            sql.SQL(", ").join(sql.Placeholder() for _ in values)) if values else \
            sql.SQL("INSERT INTO {} DEFAULT VALUES").format(sql.Identifier(schema, name))
        try:
            with conn.transaction():
                conn.execute(statement, list(values.values()))
            inserted += 1
        except psycopg.Error as exc:
            problem = problem or f"a row was rejected: {exc.diag.message_primary or type(exc).__name__}"
    return inserted, problem, waiting


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
        "json": json.dumps({"rollbook_seed": k}),
        "jsonb": json.dumps({"rollbook_seed": k}),
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

    def renamed(self, names: dict[str, str]) -> TableData:
        """The same data with columns renamed (old name -> new name), as a downgrade's renames leave it."""
        return TableData(tuple(names.get(c, c) for c in self.columns), self.rows, self.count) if names else self

    def values(self, column: str) -> int:
        index = self.columns.index(column)
        return sum(1 for row in self.rows if row[index] is not None)

    def projected(self, columns: list[str]) -> Counter[tuple[str | None, ...]]:
        indexes = [self.columns.index(c) for c in columns]
        return Counter(tuple(row[i] for i in indexes) for row in self.rows)


def table_data(conn: psycopg.Connection[Any], project: MigrationProject) -> dict[tuple[str, str], TableData]:
    """Every table's rows as text, keyed by (schema, name); the version table left out."""
    data = {}
    versions = _version_keys(project, conn)
    for oid, schema, name in conn.execute(_TABLES_SQL).fetchall():
        if (schema, name) in versions:
            continue
        described = conn.execute(
            "SELECT attname, atttypid = 'numeric'::regtype FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
            "AND NOT attisdropped ORDER BY attnum", [oid]).fetchall()
        columns = [row[0] for row in described]
        table = sql.Identifier(schema, name)
        counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        assert counted is not None  # count(*) always returns one row
        count = counted[0]
        rows: list[tuple[str | None, ...]] = []
        if count <= MAX_ROWS_COMPARED and columns:
            # A numeric's text carries its scale (5.0000 in numeric(12,4), 5.00 in numeric(10,2)): compared
            # without trailing zeros, a type change shows only the values it really changed.
            numeric = "trim_scale({})::text" if conn.info.server_version >= 130000 else "{}::text"
            listed = sql.SQL(", ").join(sql.SQL(numeric if is_numeric else "{}::text").format(sql.Identifier(c))
                                        for c, is_numeric in described)
            rows = [tuple(row) for row in conn.execute(sql.SQL("SELECT {} FROM {}").format(listed, table)).fetchall()]
        data[(schema, name)] = TableData(tuple(columns), tuple(rows), int(count))
    return data


def check_predictions(step: PlanStep, before: dict[tuple[str, str], TableData],
                      after: dict[tuple[str, str], TableData], notes: tuple[str, ...] = ()) -> StepResult:
    """Were rows lost exactly where the plan said, and kept everywhere else?"""
    dropped_tables: dict[tuple[str, str], int | None] = {}
    dropped_columns: dict[tuple[tuple[str, str], str], int | None] = {}
    rewritten: dict[tuple[str, str], int] = {}
    unsure: set[tuple[str, str]] = set()
    # Renames keep their rows: a table or column is followed to its new name, not counted as lost.
    renamed_tables: dict[tuple[str, str], tuple[str, str]] = {}
    renamed_columns: dict[tuple[tuple[str, str], str], str] = {}
    recreated: set[tuple[str, str]] = set()
    for op in step.operations:
        if op.table is None:
            if op.op == "unknown":
                return StepResult("not_checked", f"the plan could not tell which tables it touches: {op.detail}")
            continue
        key = (op.table.schema or "public", op.table.name)
        lossy = op.op in ("drop_table", "drop_column") or op.op in ROW_CHANGES
        if op.op == "unknown" or (lossy or op.check is not None) and op.rows_affected is None:
            unsure.add(key)
        elif op.op == "drop_table":
            dropped_tables[key] = op.rows_affected
        elif op.op == "create_table" and key in dropped_tables:
            recreated.add(key)
        elif op.op == "drop_column" and op.column:
            dropped_columns[(key, op.column)] = op.rows_affected
        elif op.op in ROW_CHANGES:
            rewritten[key] = rewritten.get(key, 0) + (op.rows_affected or 0)
        elif op.op == "rename_table" and op.extra.get("new_name"):
            renamed_tables[key] = (key[0], str(op.extra["new_name"]))
        elif op.op == "rename_column" and op.column and op.extra.get("new_name"):
            renamed_columns[(key, op.column)] = str(op.extra["new_name"])
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
        # A column rename may name the table by its old name or, after a table rename, by its new one.
        was = was.renamed({old: new for (table_key, old), new in renamed_columns.items()
                           if table_key in (key, renamed_tables.get(key))})
        for column in was.columns:
            planned = dropped_columns.get((key, column), "kept")
            if column in now.columns:
                if planned != "kept":
                    mismatches.append(f"{table}.{column}: the plan said the downgrade drops it, but it is still there")
                continue
            if was.count and not was.rows:
                findings.append(f"{table}.{column}: dropped; values not compared ({was.count} rows)")
                continue
            lost = was.values(column)
            if planned == "kept":
                if lost:
                    mismatches.append(f"{table}.{column}: dropped with {lost} values, which the plan did not predict")
            elif planned != lost:
                mismatches.append(f"{table}.{column}: dropped with {lost} values; the plan predicted {planned} lost")
            else:
                findings.append(f"{table}.{column}: dropped, {lost} values lost as predicted")
        expected = rewritten.get(key, 0)
        if (was.count and not was.rows) or (now.count and not now.rows):
            if now.count < was.count - expected:
                mismatches.append(f"{table}: {was.count} rows before, {now.count} after; the plan predicted at most "
                                  f"{expected} changed")
            continue
        common = [c for c in was.columns if c in now.columns]
        changed = sum((was.projected(common) - now.projected(common)).values())
        if changed != expected:
            mismatches.append(f"{table}: {changed} of its {was.count} rows changed or lost; the plan predicted "
                              f"{expected}")
        elif changed:
            findings.append(f"{table}: {changed} rows rewritten or deleted as predicted")
        else:
            findings.append(f"{table}: all {was.count} rows kept")
    seeded = f" (seeding: {'; '.join(notes)})" if notes else ""
    if mismatches:
        return StepResult("failed", f"the plan's predictions did not hold{seeded}", tuple(mismatches))
    return StepResult("passed", "; ".join(findings) + seeded if findings else f"no tables{seeded}")


# --- helpers ------------------------------------------------------------------------------------------------


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
