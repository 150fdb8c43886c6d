"""Restoring a backup rollbook took: into a new database to compare, or over the database it was taken of.

Before anything is restored, the file's sha256 must equal the one recorded when it was taken, and the
backup must be of this database (same cluster system identifier, same database name). Over the
database itself pg_restore runs with --clean --if-exists --single-transaction: the server applies the
whole restore or none of it, so an interrupted or failed restore leaves the database as it was.

Planning the restore is restore_plan's, checking the backup backup_check's, what was written since it
writes_since_backup's, the policy restore_policy's, and verifying the result restore_verification's.
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import sql

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.outcomes import Outcome
from rollbook.parent_death import end_with_parent
from rollbook.pg.advisory_lock import rollback_lock
from rollbook.pg.client_tools import libpq_environment, stderr_tail
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import read_identity
from rollbook.project.migrations import MigrationProject
from rollbook.recovery.backup_check import check_backup
from rollbook.recovery.restore_plan import STDERR_LINES, RestorePlan, created_since
from rollbook.recovery.restore_policy import created_since_rule, writes_rule
from rollbook.recovery.restore_tables import revisions_or_none, revisions_text
from rollbook.recovery.writes_since_backup import WritesSinceBackup, writes_since_backup

CLIENT_CHECK_INTERVAL_MS = 1000


class RestoreRefused(RollbookError):
    """Restoring over the database would destroy writes or leave objects the backup does not know."""

    outcome = Outcome.REFUSED


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
        before = revisions_or_none(control, project) or ()
        if before != plan.revisions_now:
            raise RestoreRefused(f"{target.redacted} is at {revisions_text(before)}, but the restore was planned at "
                                 f"{revisions_text(plan.revisions_now)}: someone migrated it since. Plan the restore "
                                 "again and review it; nothing was restored.")
        created = created_since(control, plan.pg_restore, plan.backup)
        if created:
            raise RestoreRefused(created_since_rule(replace(plan, created_since=created)).reason
                                 + ". Undo or drop them first, or restore into a new database; nothing was restored.")
        writes = writes or writes_since_backup(target, plan.backup, project)
        if not writes.passed and not accept_writes_since_backup:
            raise RestoreRefused(writes_rule(writes, False).reason + ". Restore into a new database and compare, "
                                 "or pass accept_writes_since_backup; nothing was restored.")
        failure = _run_pg_restore(plan, target, lock_timeout_ms, identity.major_version)
        after = revisions_or_none(control, project)
    if failure:
        detail = (f"{failure} pg_restore ran in a single transaction, which the server rolled back: the database is "
                  f"unchanged, at {revisions_text(after or ())}.")
        return RestoreExecution(plan, False, _since(started), detail, after, target)
    detail = (f"pg_restore replaced the database's contents with the backup's in one transaction; the database is "
              f"at {revisions_text(after or ())}.")
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
                    after = revisions_or_none(new, project)
                keep = True
                return RestoreExecution(plan, True, _since(started), f"Restored into the new database "
                                        f"{plan.destination} (kept, to compare with {plan.identity.database}); it is "
                                        f"at {revisions_text(after or ())}. Drop it when you are done.", after,
                                        restored)
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



def _since(started: float) -> float:
    return round(time.monotonic() - started, 3)
