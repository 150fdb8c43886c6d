"""Taking a rollback's safety net with the strategy the policy chose: one entry point, one result.

- `full`: `pg_dump -Fc` of the whole database, verified (rollbook.recovery.backup).
- `parallel`: `pg_dump -Fd -j N` into a folder, each file hashed, verified the same way.
- `pitr`: a named restore point in the continuously archived WAL, seen archived (wal_restore_point).
- `at-risk`: only the data the plan says the downgrade destroys or rewrites; it needs the plan.

The policy (rollbook.policy.rules, `backup_strategies`) says which strategies an environment accepts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from rollbook import markdown
from rollbook.errors import BadInput
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.plan import DowngradePlan
from rollbook.policy.rules import BACKUP_STRATEGIES, PITR_ARCHIVE_WAIT_SECONDS
from rollbook.recovery.archived_backups import RecordedBackup, take_recorded_backup
from rollbook.recovery.at_risk_backup import AtRiskBackup, load_at_risk_backup, take_at_risk_backup
from rollbook.recovery.backup import Backup
from rollbook.recovery.wal_restore_point import WalRestorePoint, create_wal_restore_point

# More jobs than this rarely speed a dump up (the disk becomes the limit) and each one is a connection.
MAX_PARALLEL_JOBS = 8
MIN_PARALLEL_JOBS = 2

_CONNECTIONS_SQL = """
SELECT current_setting('max_parallel_workers')::int,
       current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
         - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
"""


@dataclass(frozen=True)
class StrategyBackup:
    """What a strategy produced before a rollback: a verified dump, or a restore point seen archived."""

    strategy: str
    dump: RecordedBackup | None = None
    wal_point: WalRestorePoint | None = None
    # The at-risk copy, read back after it was written: every file's size and sha256 as its manifest says.
    at_risk: AtRiskBackup | None = None

    @property
    def backup(self) -> Backup | None:
        """The dump a restore runbook can put back (full, parallel), if the strategy made one."""
        return self.dump.backup if self.dump else None

    @property
    def verified(self) -> bool:
        """Whether the safety net was checked: the dump verified, or the restore point's segment archived."""
        if self.dump is not None:
            return self.dump.verified
        if self.at_risk is not None:
            return True
        return self.wal_point is not None and self.wal_point.archived

    @property
    def detail(self) -> str:
        """Why it is (or is not) verified, in one sentence."""
        if self.dump is not None:
            return self.dump.verification.detail
        if self.at_risk is not None:
            return (f"every file read back after it was written: {len(self.at_risk.files)} file(s), "
                    f"{self.at_risk.rows} rows, sizes and sha256 as in the manifest")
        return self.wal_point.archived_detail if self.wal_point else "nothing was taken"

    def where(self) -> str:
        """The safety net in a few words, for a summary or a message."""
        if self.backup is not None:
            return f"{self.backup.path} ({self.backup.size_bytes} bytes, sha256 {self.backup.sha256[:12]})"
        if self.at_risk is not None:
            folder = self.at_risk.folder
            return (f"{folder} ({self.at_risk.rows} rows in {len(self.at_risk.files)} file(s); put them back after a "
                    f"fix-forward: rollbook run restore-lost-data -p at_risk_backup {folder})")
        if self.wal_point is not None:
            return (f"restore point {self.wal_point.name} at LSN {self.wal_point.lsn} "
                    f"(WAL segment {self.wal_point.segment})")
        return ""

    def record_facts(self) -> dict[str, Any]:
        """The record's facts for this safety net: its strategy, and the dump or the restore point."""
        facts: dict[str, Any] = {"backup_strategy": self.strategy}
        if self.dump is not None:
            facts["backup"] = self.dump.record_facts()
        if self.wal_point is not None:
            facts["wal_restore_point"] = self.wal_point.record_facts()
        if self.at_risk is not None:
            facts["at_risk_backup"] = self.at_risk.to_dict()
        return facts

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "verified": self.verified, "detail": self.detail,
                "dump": self.dump.to_dict() if self.dump else None,
                "wal_restore_point": self.wal_point.to_dict() if self.wal_point else None,
                "at_risk_backup": self.at_risk.to_dict() if self.at_risk else None}

    def to_text(self) -> str:
        parts = [f"Backup strategy: {self.strategy}"]
        parts += [item.to_text() for item in (self.dump, self.wal_point, self.at_risk) if item is not None]
        return "\n".join(parts)

    def _repr_markdown_(self) -> str:
        parts = [f"Backup strategy: **{markdown.cell(self.strategy)}**"]
        parts += [item._repr_markdown_() for item in (self.dump, self.wal_point, self.at_risk) if item is not None]
        return "\n\n".join(parts)


def take_backup_with(
    strategy: str, target: DatabaseTarget, backup_dir: Path, *, plan: DowngradePlan, verify: str, run_id: str,
    archive_wait_seconds: float = PITR_ARCHIVE_WAIT_SECONDS,
) -> StrategyBackup:
    """Take the safety net before `plan`'s downgrade with `strategy` (full, parallel, at-risk or pitr).

    `verify` is how a dump is verified (list or restore); `run_id` names a pitr restore point.
    """
    revisions = plan.path.current
    if strategy == "full":
        return StrategyBackup(strategy, dump=take_recorded_backup(target, backup_dir, revisions=revisions,
                                                                  verify=verify))
    if strategy == "parallel":
        return StrategyBackup(strategy, dump=take_recorded_backup(target, backup_dir, revisions=revisions,
                                                                  verify=verify, jobs=parallel_jobs(target)))
    if strategy == "pitr":
        return StrategyBackup(strategy, wal_point=create_wal_restore_point(
            target, run_id, revisions=revisions, wait_seconds=archive_wait_seconds))
    if strategy == "at-risk":
        written = take_at_risk_backup(target, plan, backup_dir)
        return StrategyBackup(strategy, at_risk=load_at_risk_backup(written.folder))
    raise BadInput(f"Unknown backup strategy {strategy!r}: use one of {', '.join(BACKUP_STRATEGIES)}.")


def parallel_jobs(target: DatabaseTarget) -> int:
    """How many pg_dump jobs: the cores at hand, within the server's parallel workers and free connections.

    PostgreSQL does not report its machine's cores; os.cpu_count() is this machine's, which is the server's
    when rollbook runs next to it, and max_parallel_workers is what the server's administrator allows.
    At least 2 (else a parallel dump is a full one), at most 8, and never more than the connections
    left (pg_dump opens one per job plus its own).
    """
    with connect(target) as conn:
        workers, free = _server_limits(conn)
    jobs = max(MIN_PARALLEL_JOBS, min(os.cpu_count() or MIN_PARALLEL_JOBS, workers, MAX_PARALLEL_JOBS))
    if free - 1 < MIN_PARALLEL_JOBS:
        raise BadInput(f"The server has {max(free, 0)} free connection(s), too few for a parallel pg_dump "
                       f"({MIN_PARALLEL_JOBS} jobs need {MIN_PARALLEL_JOBS + 1}): wait for connections to free up, "
                       "or run with -p backup_strategy full. Nothing was changed.")
    return min(jobs, free - 1)


def _server_limits(conn: psycopg.Connection[Any]) -> tuple[int, int]:
    row = conn.execute(_CONNECTIONS_SQL).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
