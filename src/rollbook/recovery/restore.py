"""Restoring a backup rollbook took: into a new database to compare, or over the database it was taken of.

Before anything is restored, the file's sha256 must equal the one recorded when it was taken, and the
backup must be of this database (same cluster system identifier, same database name). Over the
database itself pg_restore runs with --clean --if-exists --single-transaction: the server applies the
whole restore or none of it, so an interrupted or failed restore leaves the database as it was.

Writes since the backup are read from the data, not from statistics. The backup's record keeps its
write horizon (the oldest transaction still running when it was taken); a row inserted or updated
later has an `xmin` at or after it, and rows deleted since show as fewer rows than were counted in
the backup. pg_stat_user_tables' n_tup_ins/upd/del would be cheaper to read, but they are reset by
pg_stat_reset(), lost after a crash, flushed lazily, and would have had to be recorded at backup time
too; `xmin` is stored with every row and survives all of that. It costs one scan per table.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import psycopg
from psycopg import sql

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.execution.verification import VerificationCheck
from rollbook.file_digest import file_sha256
from rollbook.outcomes import Outcome
from rollbook.parent_death import end_with_parent
from rollbook.pg.advisory_lock import rollback_lock
from rollbook.pg.client_tools import PgTool, find_pg_tool, libpq_environment, stderr_tail
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import DatabaseIdentity, read_identity
from rollbook.planning.downgrade_path import DowngradePath
from rollbook.planning.plan import DowngradePlan, judge
from rollbook.policy.gate import SHORT_HASH, PolicyDecision, RollbackRequest, RuleResult, evaluate_policy
from rollbook.policy.rules import PolicyRules
from rollbook.project.migrations import MigrationProject
from rollbook.project.status import read_current_revisions
from rollbook.recovery.archived_backups import ArchivedBackup

RESTORE_INTO = ("new", "database")
# age() compares 32-bit transaction ids: a horizon further back than this may have wrapped around.
MAX_XID_DISTANCE = 2**31 - 1_000_000
CLIENT_CHECK_INTERVAL_MS = 1000
STDERR_LINES = 12
RESTORE_INSTEAD = ("Instead, restore into a new database (restore_into new) and compare it with this one, or fix "
                   "forward with a new migration.")

_SYSTEM_SCHEMAS = r"""
  n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
"""
# The tables take_backup counts, named the same way (format('%I.%I')), so counts compare by name.
_TABLES_SQL = f"""
SELECT format('%I.%I', n.nspname, c.relname), n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND {_SYSTEM_SCHEMAS}
ORDER BY 1
"""
# Relations pg_restore --clean would leave in place if the backup does not hold them. Sequences owned
# by a column come and go with their table.
_RELATIONS_SQL = f"""
SELECT n.nspname, c.relname, c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND {_SYSTEM_SCHEMAS}
  AND NOT (c.relkind = 'S' AND EXISTS (SELECT 1 FROM pg_depend s
                                       WHERE s.classid = 'pg_class'::regclass AND s.objid = c.oid
                                         AND s.refclassid = 'pg_class'::regclass AND s.deptype IN ('a', 'i')))
ORDER BY 1, 2
"""
_TOC_TYPES = {"r": "TABLE", "p": "TABLE", "v": "VIEW", "m": "MATERIALIZED VIEW", "f": "FOREIGN TABLE",
              "S": "SEQUENCE"}


class BackupRefused(BadInput):
    """The backup may not be restored here: its file changed since it was taken, or it is of another database."""


class RestoreRefused(RollbookError):
    """Restoring over the database would destroy writes or leave objects the backup does not know."""

    outcome = Outcome.REFUSED


# --- the backup file and where it came from -----------------------------------------------------------------


@dataclass(frozen=True)
class BackupCheck:
    """The backup file against its record (sha256) and against the database it is to be restored for."""

    backup: ArchivedBackup
    sha256_now: str | None
    database: DatabaseIdentity
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def enforce(self) -> None:
        """Raise BackupRefused naming every problem."""
        if self.problems:
            raise BackupRefused(f"{' '.join(self.problems)} Nothing was restored; the database was not touched.")

    def to_dict(self) -> dict[str, Any]:
        return {"backup": self.backup.to_dict(), "sha256_now": self.sha256_now, "passed": self.passed,
                "problems": list(self.problems)}

    def to_text(self) -> str:
        verdict = "passed" if self.passed else "REFUSED"
        return "\n".join([f"Backup check: {verdict}", f"  {self.backup.to_text()}",
                          *[f"  - {problem}" for problem in self.problems]])

    def _repr_markdown_(self) -> str:
        if self.passed:
            verdict = ("**The file is the one recorded** (sha256 matches) and it is a backup of this database "
                       f"(`{markdown.cell(self.database.database)}`, system identifier "
                       f"`{self.database.system_identifier}`).")
        else:
            verdict = "**REFUSED**\n\n" + "\n".join(f"- {markdown.cell(p)}" for p in self.problems)
        return self.backup._repr_markdown_() + "\n\n" + verdict


def check_backup(backup: ArchivedBackup, database: DatabaseIdentity) -> BackupCheck:
    """Hash the file and compare it with its record; check that it is a backup of `database`."""
    problems = []
    try:
        sha256_now: str | None = file_sha256(backup.path)
    except OSError as exc:
        sha256_now = None
        problems.append(f"The backup file {backup.path} cannot be read ({exc.strerror or exc}), so it cannot be "
                        "restored: find the file (it may have been moved or deleted) or restore another backup.")
    if sha256_now is not None and sha256_now != backup.sha256:
        problems.append(
            f"The backup file {backup.path} has sha256 {sha256_now}, but run {backup.run_id} recorded {backup.sha256} "
            "when it took it: the file was changed since (truncated, corrupted or tampered with). Do not restore from "
            "it; restore an older verified backup, or fix forward.")
    if backup.system_identifier != database.system_identifier:
        problems.append(
            f"The backup is of database {backup.database} on the cluster with system identifier "
            f"{backup.system_identifier or '(not recorded)'}, but this database ({database.database}) is on the "
            f"cluster {database.system_identifier}: it is a backup of another database. Name the database it was "
            "taken of.")
    elif backup.database != database.database:
        problems.append(
            f"The backup is of database {backup.database}, not of {database.database} (on the same server): "
            f"restoring it here would replace {database.database}'s data with {backup.database}'s. Name the "
            "database it was taken of.")
    return BackupCheck(backup, sha256_now, database, tuple(problems))


# --- writes since the backup --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TableWrites:
    """One table now and at backup time."""

    table: str
    rows_at_backup: int | None  # None: the backup does not hold the table
    rows_now: int | None  # None: the table is gone
    written: int | None  # rows inserted or updated since the backup; None: no write horizon to tell

    @property
    def gone(self) -> int:
        """Rows of the backup no longer there unchanged: deleted, or updated (then also counted as written)."""
        if self.rows_at_backup is None:
            return 0
        if self.rows_now is None:
            return self.rows_at_backup
        if self.written is None:
            return max(self.rows_at_backup - self.rows_now, 0)
        return max(self.rows_at_backup - (self.rows_now - self.written), 0)

    @property
    def changed(self) -> bool:
        if self.rows_at_backup is None:
            return bool(self.rows_now)
        return bool(self.written) or bool(self.gone) or self.rows_now != self.rows_at_backup

    def describe(self) -> str:
        if self.rows_now is None:
            return f"{self.table}: gone (it held {self.rows_at_backup} rows at backup time; the restore brings it back)"
        if self.rows_at_backup is None:
            return f"{self.table}: created since the backup, {self.rows_now} rows"
        parts = []
        if self.written:
            parts.append(f"{self.written} rows inserted or updated since")
        if self.gone:
            parts.append(f"{self.gone} of the backup's rows no longer as they were (updated or deleted)")
        counts = f"{self.rows_at_backup} rows at backup time, {self.rows_now} now"
        return f"{self.table}: {'; '.join(parts) or counts}" + (f" ({counts})" if parts else "")

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "rows_at_backup": self.rows_at_backup, "rows_now": self.rows_now,
                "written": self.written, "gone": self.gone, "changed": self.changed}


@dataclass(frozen=True)
class WritesSinceBackup:
    """Whether anything was written since the backup: "none", "found", "unknown" or "not_checked"."""

    status: str
    detail: str
    tables: tuple[TableWrites, ...] = ()
    horizon: str | None = None

    @property
    def passed(self) -> bool:
        return self.status == "none"

    @property
    def changed(self) -> tuple[TableWrites, ...]:
        return tuple(t for t in self.tables if t.changed)

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "horizon": self.horizon,
                "changed": [t.to_dict() for t in self.changed], "tables_checked": len(self.tables)}

    def to_text(self) -> str:
        return "\n".join([f"Writes since the backup: {self.status.upper()}", f"  {self.detail}",
                          *[f"  - {t.describe()}" for t in self.changed]])

    def _repr_markdown_(self) -> str:
        marks = {"none": "✅ none", "found": "❌ found", "unknown": "⚠️ cannot tell",
                 "not_checked": "⚪ not checked"}
        text = f"**Writes since the backup: {marks.get(self.status, self.status)}**. {markdown.prose(self.detail)}"
        if self.changed:
            rows = [(markdown.code(t.table), _count(t.rows_at_backup), _count(t.rows_now), _count(t.written),
                     _count(t.gone)) for t in self.changed]
            text += "\n\n" + markdown.table(
                ["table", "rows at backup", "rows now", "inserted or updated since", "deleted or updated since"], rows)
        return text


def writes_since_backup(
    target: DatabaseTarget, backup: ArchivedBackup, project: MigrationProject, *, statement_timeout_ms: int = 600_000,
) -> WritesSinceBackup:
    """Compare every table with the backup: rows written after its write horizon, rows gone, tables added or gone.

    Read-only: one scan per table in a READ ONLY transaction under statement_timeout; the version
    table is left out (the revision is compared on its own).
    """
    if backup.table_rows is None:
        return WritesSinceBackup("unknown", f"The record of run {backup.run_id} holds no row counts, so rollbook "
                                 "cannot tell what changed since the backup.", (), backup.write_horizon)
    recorded = dict(backup.table_rows)
    with connect(target) as conn, conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute("SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', '30s', true)",
                     [str(statement_timeout_ms)])
        horizon, why_not = _usable_horizon(conn, backup.write_horizon)
        tables = []
        for qualified, schema, name in conn.execute(_TABLES_SQL).fetchall():
            if _is_version_table(project, schema, name):
                continue
            rows, written = _scan(conn, schema, name, horizon)
            at_backup = recorded.get(qualified)
            # A table the backup does not hold was created since: all of its rows were written since.
            tables.append(TableWrites(qualified, at_backup, rows, written if at_backup is not None else rows))
    present = {t.table for t in tables}
    tables += [TableWrites(name, rows, None, None) for name, rows in recorded.items()
               if name not in present and not _is_version_table(project, *_split(name))]
    tables.sort(key=lambda t: t.table)
    changed = [t for t in tables if t.changed]
    where = f"{len(tables)} table(s) compared with backup {backup.run_id}"
    if changed:
        return WritesSinceBackup("found", f"{where}: {len(changed)} changed since the backup. Restoring over the "
                                 "database undoes these changes and loses what was written.", tuple(tables),
                                 backup.write_horizon)
    if horizon is None:
        return WritesSinceBackup("unknown", f"{where}: the row counts are as at backup time, but updates cannot be "
                                 f"seen: {why_not}.", tuple(tables), backup.write_horizon)
    return WritesSinceBackup("none", f"{where}: no row inserted, updated or deleted, no table added or dropped since "
                             "the backup.", tuple(tables), backup.write_horizon)


def _usable_horizon(conn: psycopg.Connection[Any], recorded: str | None) -> tuple[int | None, str]:
    if not recorded or not recorded.isdigit():
        return None, "the backup's record has no write horizon (records filed before every runbook kept one lack it)"
    current = conn.execute("SELECT txid_snapshot_xmax(txid_current_snapshot())::text").fetchone()
    distance = int(current[0]) - int(recorded) if current else MAX_XID_DISTANCE + 1
    xid = int(recorded) % 2**32
    if distance < 0 or distance > MAX_XID_DISTANCE or xid < 3:
        return None, (f"the write horizon {recorded} is {distance} transactions away from now, too far to compare "
                      "32-bit row versions reliably")
    return xid, ""


def _scan(conn: psycopg.Connection[Any], schema: str, name: str, horizon: int | None) -> tuple[int, int | None]:
    table = sql.Identifier(schema, name)
    if horizon is None:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        assert row is not None  # an aggregate returns one row
        return int(row[0]), None
    # age() measures from the same reference for both: a row is newer than the horizon iff its age is smaller.
    row = conn.execute(sql.SQL("SELECT count(*), count(*) FILTER (WHERE age(xmin) <= age(%s::text::xid)) FROM {}")
                       .format(table), [str(horizon)]).fetchone()
    assert row is not None  # an aggregate returns one row
    return int(row[0]), int(row[1])


# --- the restore plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestorePlan:
    """What a restore would do: which backup, into which database, with which command, over what."""

    into: str
    database: str
    identity: DatabaseIdentity
    backup: ArchivedBackup
    revisions_now: tuple[str, ...]
    destination: str
    created_since: tuple[str, ...]
    pg_restore: PgTool
    arguments: tuple[str, ...]

    @property
    def restore_hash(self) -> str:
        """A digest of the restore (backup, database, its revision now, where to), for approvals to name."""
        shape = {"backup_sha256": self.backup.sha256, "backup_revisions": list(self.backup.revisions),
                 "database": self.identity.database, "system_identifier": self.identity.system_identifier,
                 "revisions_now": list(self.revisions_now), "into": self.into, "destination": self.destination}
        return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()

    @property
    def command(self) -> str:
        return " ".join([str(self.pg_restore.path), *self.arguments])

    def to_dict(self) -> dict[str, Any]:
        return {"into": self.into, "database": self.database, "destination": self.destination,
                "backup": self.backup.to_dict(), "revisions_now": list(self.revisions_now),
                "revision_after": list(self.backup.revisions), "created_since": list(self.created_since),
                "command": self.command, "restore_hash": self.restore_hash}

    def to_text(self) -> str:
        lines = [f"Restore {self.backup.path} ({self.backup.revision_label}) {self._where()}",
                 f"  the database is at {_revisions(self.revisions_now)} now; afterwards "
                 f"{self.destination} is at {self.backup.revision_label}",
                 f"  command: {self.command}"]
        if self.created_since:
            lines.append(f"  not in the backup, left in place by --clean: {', '.join(self.created_since)}")
        lines.append(f"Restore hash (for approvals): {self.restore_hash}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        rows = [("Restore", markdown.cell(self._where())),
                ("Backup", markdown.cell(f"{self.backup.path} at revision {self.backup.revision_label}")),
                ("Revision now", markdown.code(_revisions(self.revisions_now))),
                ("Revision after", markdown.code(self.backup.revision_label)),
                ("Command", markdown.code(self.command))]
        if self.into == "database":
            rows.append(("Not in the backup", markdown.cell(", ".join(self.created_since) or "nothing")))
        return (markdown.table(("Restore plan", ""), rows)
                + f"\n\nRestore hash (approvals name it): `{self.restore_hash}`")

    def _where(self) -> str:
        if self.into == "new":
            return (f"into the new database {self.destination}, next to {self.identity.database}, for comparison "
                    "(nothing existing is changed)")
        return (f"over the database {self.identity.database} itself, in one transaction (pg_restore --clean "
                "--if-exists --single-transaction): all of it or nothing")


def plan_restore(
    target: DatabaseTarget, backup: ArchivedBackup, project: MigrationProject, *, into: str = "new",
    new_database: str = "",
) -> RestorePlan:
    """Plan restoring `backup` into a new database next to `target`, or over `target` itself (into="database")."""
    if into not in RESTORE_INTO:
        raise BadInput(f"restore_into must be 'new' (a new database, for comparison) or 'database' (over the "
                       f"database itself), not {into!r}.")
    with connect(target) as conn:
        identity = read_identity(conn)
        revisions_now = _revisions_or_none(conn, project) or ()
        if into == "new":
            destination = new_database or _new_name(identity.database)
            taken = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [destination]).fetchone()
            if taken:
                raise BadInput(f"A database named {destination} already exists on this server: name another with "
                               "new_database (rollbook never restores over a database by that route).")
        elif new_database:
            raise BadInput("new_database names the database a restore into a new database creates; with "
                           "restore_into database the backup goes over the database itself. Leave one of them out.")
        else:
            destination = identity.database
        needed = max(identity.major_version, backup.pg_dump_major or 0, backup.server_major or 0)
        pg_restore = find_pg_tool("pg_restore", needed)
        created = _created_since(conn, pg_restore, backup) if into == "database" else ()
    arguments: tuple[str, ...]
    if into == "database":
        arguments = ("--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--no-password",
                     f"--dbname={_dbname(destination)}", str(backup.path))
    else:
        # A copy for comparison: owned by whoever restores it, whatever roles the original had.
        arguments = ("--single-transaction", "--exit-on-error", "--no-owner", "--no-password",
                     f"--dbname={_dbname(destination)}", str(backup.path))
    return RestorePlan(into, target.redacted, identity, backup, tuple(revisions_now), destination, created,
                       pg_restore, arguments)


def _created_since(conn: psycopg.Connection[Any], pg_restore: PgTool, backup: ArchivedBackup) -> tuple[str, ...]:
    """Relations in the database that the backup does not hold: pg_restore --clean would leave them in place."""
    completed = subprocess.run([str(pg_restore.path), "--list", str(backup.path)], stdin=subprocess.DEVNULL,
                               capture_output=True, text=True, errors="replace", check=False,
                               preexec_fn=end_with_parent)
    if completed.returncode != 0:
        raise BackupRefused(f"pg_restore --list cannot read {backup.path} (exit code {completed.returncode}): "
                            f"{stderr_tail(completed.stderr, STDERR_LINES) or 'no message'}. The archive is "
                            "damaged: do not restore from it. Nothing was restored; the database was not touched.")
    entries = [line.split(";", 1)[1].strip().split(" ", 2)[-1] for line in completed.stdout.splitlines()
               if ";" in line and not line.startswith(";")]
    created = []
    for schema, name, kind in conn.execute(_RELATIONS_SQL).fetchall():
        prefix = f"{_TOC_TYPES[kind]} {schema} {name}"
        if not any(entry == prefix or entry.startswith(prefix + " ") for entry in entries):
            created.append(f"{_TOC_TYPES[kind].lower()} {schema}.{name}")
    return tuple(created)


def _dbname(name: str) -> str:
    """The --dbname value that names exactly this database: libpq reads a value with '=' as a connection string."""
    if "=" not in name and not name.startswith(("postgresql:", "postgres:")):
        return name
    escaped = name.replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{escaped}'"


def _new_name(database: str) -> str:
    suffix = f"_restored_{datetime.now(UTC):%Y%m%dT%H%M%S}"
    # PostgreSQL cuts names at 63 bytes: shorten the original part, keep the suffix.
    return database.encode()[:63 - len(suffix)].decode(errors="ignore") + suffix


# --- the policy gate ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreDecision(PolicyDecision):
    """The environment's policy applied to a restore over the database: the rollback gate's rules that fit.

    Kept from the rollback policy: the operator, the approver (a second person in production), the
    approved hash (here the restore's) and the verified backup taken by this run (of the database as it
    is, before it is overwritten). The window and the risk rules are left out: restoring the backup is
    what they recommend instead of a rollback. Added: writes since the backup, and objects created since.
    """

    subject: ClassVar[str] = "restore"
    hash_label: ClassVar[str] = "restore plan"
    alternative: ClassVar[str] = f"{RESTORE_INSTEAD} Nothing was restored; the database was not touched."


def evaluate_restore_policy(
    rules: PolicyRules, request: RollbackRequest, plan: RestorePlan, writes: WritesSinceBackup, *,
    accept_writes_since_backup: bool, backup_verified: bool | None,
) -> RestoreDecision:
    """Apply the environment's rules to restoring over the database; `backup_verified` None: not taken yet."""
    env = rules.for_environment(request.environment)
    name = request.environment.strip().lower()
    # The rollback gate itself decides the rules both share, so a restore can never be looser than it there.
    shared = {r.rule: r for r in evaluate_policy(rules, replace(request, approved_plan=""), _no_steps(plan),
                                                 backup_verified=backup_verified).results}
    results = (
        shared["operator"],
        shared["approver"],
        _approved_restore_rule(env.require_approved_plan, name, request.approved_plan, plan.restore_hash),
        _created_since_rule(plan),
        _writes_rule(writes, accept_writes_since_backup),
        shared["backup"],
    )
    return RestoreDecision(name, rules.source, results, plan.restore_hash, request.now)


def _no_steps(plan: RestorePlan) -> DowngradePlan:
    start = plan.revisions_now[0] if plan.revisions_now else "base"
    path = DowngradePath(plan.revisions_now, start, start, "restore", ())
    return DowngradePlan(plan.database, path, (), judge((), True), (), True)


def _approved_restore_rule(required: bool, name: str, approved: str, restore_hash: str) -> RuleResult:
    given = approved.strip().lower()
    short = restore_hash[:SHORT_HASH]
    if not given:
        if required:
            return RuleResult("approved restore", "fail", f"{name} requires the approval to name the restore reviewed",
                              "have the approver review this restore plan and pass its hash as approved_plan "
                              f"({short})")
        return RuleResult("approved restore", "pass", f"no hash given: the approval is not tied to this restore "
                          f"(optional in {name})")
    if len(given) < 8 or any(c not in "0123456789abcdef" for c in given) or not restore_hash.startswith(given):
        return RuleResult("approved restore", "fail",
                          f"approved_plan {approved.strip()!r} does not name this restore ({short}): the backup, the "
                          "database or its revision differ from what was approved",
                          f"have the approver review the restore plan {short} and approve it")
    return RuleResult("approved restore", "pass", f"the restore is the one approved ({short})")


def _created_since_rule(plan: RestorePlan) -> RuleResult:
    if not plan.created_since:
        return RuleResult("objects created since the backup", "pass",
                          "the backup holds every table, view and sequence the database has now")
    return RuleResult(
        "objects created since the backup", "fail",
        f"the database has {', '.join(plan.created_since)}, which the backup does not hold: pg_restore --clean drops "
        "and re-creates only what the backup holds, so they would stay (and block it if they depend on its tables), "
        f"next to a version table saying {plan.backup.revision_label}",
        "undo the migrations that created them first (rollbook's rollback runbook), or drop them, and plan the restore "
        "again; or restore into a new database")


def _writes_rule(writes: WritesSinceBackup, accept: bool) -> RuleResult:
    if writes.passed:
        return RuleResult("writes since the backup", "pass", writes.detail)
    facts = "; ".join(t.describe() for t in writes.changed) or writes.detail
    if accept:
        return RuleResult("writes since the backup", "pass",
                          f"accepted with accept_writes_since_backup: these changes are undone: {facts}")
    return RuleResult("writes since the backup", "fail",
                      f"restoring would undo what changed since the backup ({writes.status}): {facts}",
                      "restore into a new database and compare first; pass accept_writes_since_backup if undoing "
                      "these changes is intended")


# --- the restore --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreExecution:
    """What pg_restore did, and where the database it restored into stands."""

    plan: RestorePlan
    succeeded: bool
    seconds: float
    detail: str
    revisions_after: tuple[str, ...] | None
    restored: DatabaseTarget = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"into": self.plan.into, "destination": self.plan.destination, "command": self.plan.command,
                "succeeded": self.succeeded, "seconds": self.seconds, "detail": self.detail,
                "revisions_after": list(self.revisions_after) if self.revisions_after is not None else None,
                "restored_database": self.restored.redacted}

    def to_text(self) -> str:
        verdict = "SUCCEEDED" if self.succeeded else "FAILED"
        return f"Restore into {self.plan.destination}: {verdict} in {self.seconds:.1f} s\n  {self.detail}"

    def _repr_markdown_(self) -> str:
        verdict = "**Succeeded.**" if self.succeeded else "**FAILED.**"
        return f"{markdown.code(self.plan.command)}\n\n{verdict} {markdown.prose(self.detail)} ({self.seconds:.1f} s)"


def restore_backup(
    target: DatabaseTarget, plan: RestorePlan, project: MigrationProject, *, writes: WritesSinceBackup | None = None,
    accept_writes_since_backup: bool = False, lock_timeout_ms: int = 5000,
) -> RestoreExecution:
    """Restore the plan's backup; over `target` itself only if nothing since the backup would be lost unasked.

    The checksum and the database are checked again right before pg_restore runs. Over the database,
    the run holds rollbook's rollback lock (no rollback or other restore interleaves), refuses objects
    created since the backup, and refuses writes since the backup unless accepted; pg_restore waits at
    most `lock_timeout_ms` for each table lock. A failed restore changes nothing: the new database is
    dropped, or the single transaction over the database is rolled back.
    """
    if plan.into == "new":
        return _restore_new(target, plan, project)
    started = time.monotonic()
    with connect(target) as control, rollback_lock(control, lock_timeout_ms):
        identity = read_identity(control)
        check_backup(plan.backup, identity).enforce()
        if identity.fingerprint != plan.identity.fingerprint:
            raise BadInput(f"{target.redacted} is not the database the restore was planned for (it was dropped and "
                           "re-created, or the URL changed): plan the restore again. Nothing was restored.")
        before = _revisions_or_none(control, project) or ()
        if before != plan.revisions_now:
            raise RestoreRefused(f"{target.redacted} is at {_revisions(before)}, but the restore was planned at "
                                 f"{_revisions(plan.revisions_now)}: someone migrated it since. Plan the restore "
                                 "again and review it; nothing was restored.")
        created = _created_since(control, plan.pg_restore, plan.backup)
        if created:
            raise RestoreRefused(_created_since_rule(replace(plan, created_since=created)).reason
                                 + ". Undo or drop them first, or restore into a new database; nothing was restored.")
        writes = writes or writes_since_backup(target, plan.backup, project)
        if not writes.passed and not accept_writes_since_backup:
            raise RestoreRefused(_writes_rule(writes, False).reason + ". Restore into a new database and compare, "
                                 "or pass accept_writes_since_backup; nothing was restored.")
        failure = _run_pg_restore(plan, target, lock_timeout_ms, identity.major_version)
        after = _revisions_or_none(control, project)
    if failure:
        detail = (f"{failure} pg_restore ran in a single transaction, which the server rolled back: the database is "
                  f"unchanged, at {_revisions(after or ())}.")
        return RestoreExecution(plan, False, _since(started), detail, after, target)
    detail = (f"pg_restore replaced the database's contents with the backup's in one transaction; the database is "
              f"at {_revisions(after or ())}.")
    return RestoreExecution(plan, True, _since(started), detail, after, target)


def _restore_new(target: DatabaseTarget, plan: RestorePlan, project: MigrationProject) -> RestoreExecution:
    started = time.monotonic()
    restored = DatabaseTarget(target.url.set(database=plan.destination))
    with connect(target) as conn:
        check_backup(plan.backup, read_identity(conn)).enforce()
        try:
            conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(plan.destination)))
        except psycopg.errors.InsufficientPrivilege:
            raise BadInput(f"The role {target.url.username or '(default user)'} may not create databases, so the "
                           f"backup cannot be restored into a new one. Grant it CREATEDB or restore as a role that has "
                           "it; nothing was changed.") from None
        except psycopg.errors.DuplicateDatabase:
            raise BadInput(f"A database named {plan.destination} already exists: name another with new_database. "
                           "Nothing was changed.") from None
        keep = False
        try:
            failure = _run_pg_restore(plan, restored, None, read_identity(conn).major_version)
            if failure is None:
                with connect(restored) as new:
                    after = _revisions_or_none(new, project)
                keep = True
                return RestoreExecution(plan, True, _since(started), f"Restored into the new database "
                                        f"{plan.destination} (kept, to compare with {plan.identity.database}); it is "
                                        f"at {_revisions(after or ())}. Drop it when you are done.", after, restored)
            return RestoreExecution(plan, False, _since(started), f"{failure} The new database {plan.destination} was "
                                    "dropped again; nothing else was touched.", None, restored)
        finally:
            if not keep:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(plan.destination)))


def _run_pg_restore(plan: RestorePlan, into: DatabaseTarget, lock_timeout_ms: int | None, major: int) -> str | None:
    """Run pg_restore; None when it succeeded, else what went wrong and what to do."""
    env = libpq_environment(into)
    options = [env.get("PGOPTIONS", "")]
    if lock_timeout_ms is not None:
        # Waiting forever for a table lock would queue the application behind the restore.
        options.append(f"-c lock_timeout={lock_timeout_ms}")
    if major >= 14:
        # If pg_restore dies, the server notices within a second and rolls its transaction back.
        options.append(f"-c client_connection_check_interval={CLIENT_CHECK_INTERVAL_MS}")
    env["PGOPTIONS"] = " ".join(o for o in options if o)
    try:
        # A dead kernel must not leave pg_restore to commit a restore nobody watches.
        completed = subprocess.run([str(plan.pg_restore.path), *plan.arguments], env=env, stdin=subprocess.DEVNULL,
                                   capture_output=True, text=True, errors="replace", check=False,
                                   preexec_fn=end_with_parent)
    except OSError as exc:
        return f"{plan.pg_restore.path} could not be started: {exc.strerror or exc}."
    if completed.returncode == 0:
        return None
    stderr = stderr_tail(into.scrub(completed.stderr), STDERR_LINES)
    what = (f"pg_restore was stopped by signal {-completed.returncode}" if completed.returncode < 0
            else f"pg_restore failed with exit code {completed.returncode}")
    return f"{what}{': ' + stderr if stderr else ''}. {_advice(stderr)}"


def _advice(stderr: str) -> str:
    lowered = stderr.lower()
    if "lock" in lowered and "timeout" in lowered:
        return ("Another session (the application?) uses a table the restore must replace: stop the writers "
                "(maintenance mode) and retry, or raise lock_timeout.")
    if "depend" in lowered:
        return ("Objects the backup does not hold depend on its tables: undo or drop them first, or restore into a new "
                "database.")
    if "permission denied" in lowered or "must be owner" in lowered:
        return "Restore as the owner of the database's objects (or a superuser), or restore into a new database."
    return "Fix the cause reported above and run the restore again."


# --- after the restore --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreVerification:
    """The restored database against what the backup's record says it held."""

    database: str
    checks: tuple[VerificationCheck, ...]
    table_rows: tuple[tuple[str, int | None, int | None], ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.status != "failed" for c in self.checks)

    @property
    def failed(self) -> tuple[VerificationCheck, ...]:
        return tuple(c for c in self.checks if c.status == "failed")

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "passed": self.passed, "checks": [c.to_dict() for c in self.checks],
                "table_rows": [{"table": t, "at_backup": b, "restored": r} for t, b, r in self.table_rows]}

    def to_text(self) -> str:
        lines = [f"Verification of {self.database}: {'PASSED' if self.passed else 'FAILED'}"]
        lines += [f"  {c.status.upper():11} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        marks = {"passed": "✅ passed", "failed": "❌ **FAILED**", "not_checked": "⚪ not checked"}
        text = markdown.table(["check", "result", "detail"], [
            (markdown.cell(c.name), marks.get(c.status, c.status), markdown.cell(c.detail)) for c in self.checks])
        if self.table_rows:
            text += "\n\n" + markdown.table(["table", "rows at backup", "rows restored"], [
                (markdown.code(t), _count(b), _count(r)) for t, b, r in self.table_rows])
        return text


def verify_restore(restored: DatabaseTarget, backup: ArchivedBackup, project: MigrationProject) -> RestoreVerification:
    """The revision and every table's row count in `restored`, against those recorded when the backup was taken."""
    with connect(restored) as conn:
        revisions = _revisions_or_none(conn, project)
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            counts = {qualified: _scan(conn, schema, name, None)[0]
                      for qualified, schema, name in conn.execute(_TABLES_SQL).fetchall()}
    expected = tuple(sorted(backup.revisions))
    revision = VerificationCheck(
        "revision", "passed" if revisions is not None and tuple(sorted(revisions)) == expected else "failed",
        f"the database is at {_revisions(revisions or ()) if revisions is not None else '(no version table)'}; "
        f"the backup was taken at {backup.revision_label}")
    if backup.table_rows is None:
        rows = VerificationCheck("row counts", "not_checked",
                                 f"run {backup.run_id} recorded no row counts with the backup")
        return RestoreVerification(restored.redacted, (revision, rows))
    recorded = dict(backup.table_rows)
    compared = tuple((t, recorded.get(t), counts.get(t)) for t in sorted(set(recorded) | set(counts)))
    differing = [f"{t}: {_count(b)} at backup, {_count(r)} now" for t, b, r in compared if b != r and b is not None]
    extra = [t for t, b, _ in compared if b is None]
    rows = VerificationCheck("row counts", "failed" if differing else "passed",
                        "; ".join(differing) if differing else
                        f"all {len(recorded)} table(s) hold the rows counted at backup time "
                        f"({sum(recorded.values())} rows)")
    others = VerificationCheck("tables not in the backup", "failed" if extra else "passed",
                          f"still in the database: {', '.join(extra)}" if extra else "none")
    return RestoreVerification(restored.redacted, (revision, rows, others), compared)


# --- helpers ------------------------------------------------------------------------------------------------


def _revisions_or_none(conn: psycopg.Connection[Any], project: MigrationProject) -> tuple[str, ...] | None:
    try:
        return read_current_revisions(conn, project)
    except BadInput:
        return None  # no version table (yet, or any more)


def _is_version_table(project: MigrationProject, schema: str, name: str) -> bool:
    if name != project.version_table:
        return False
    # Without a configured schema Alembic puts it first on the search path, wherever that is.
    return project.version_table_schema in (None, schema)


def _split(qualified: str) -> tuple[str, str]:
    """Undo format('%I.%I') for names that needed no quotes; quoted ones are never the version table."""
    schema, _, name = qualified.partition(".")
    return schema, name


def _revisions(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "base"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
