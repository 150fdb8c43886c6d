"""What a restored copy of the database costs before one is made: the right to create it, the disk, the time.

A dress rehearsal restores the backup into a new database on the same server. Three things can make that
impossible or pointless, and each is known before anything changes: the role may not create databases;
the server's disk cannot hold a second copy (measured where the data directory is readable from here);
the copy would take longer to restore than the run allows. The restore time is the database's size over
a rate measured on this server: pg_restore writes every table and builds every index, the work of a
table rewrite (REWRITE_SLOWDOWN over a timed read, see rollbook.planning.lock_time) plus parsing COPY's
text, about twice as long per byte (RESTORE_SLOWDOWN).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors, sql

from rollbook.durations import duration_text
from rollbook.errors import BadInput
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.server_rates import ScanRate, measure_scan_rate
from rollbook.planning.lock_time import REWRITE_SLOWDOWN
from rollbook.planning.plan import DowngradePlan

# A restore needs the database's size again, and room for its WAL and the sorts of its index builds.
DISK_FACTOR = 1.5
# pg_restore parses COPY's text and builds every index afresh: about twice a rewrite's time per byte, measured
# with bench/dress_rehearsal.py (bench/README.md; the restore estimate at the rewrite's factor alone came out at
# 0.46x-0.54x of the measured restore).
RESTORE_SLOWDOWN = 2 * REWRITE_SLOWDOWN
_LARGEST_TABLE_SQL = """
SELECT n.nspname, c.relname, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
ORDER BY pg_relation_size(c.oid) DESC LIMIT 1
"""


@dataclass(frozen=True)
class CopyCost:
    """What restoring a copy of the database takes: its size, the estimated restore time, the free disk."""

    role: str
    may_create_databases: bool
    database_bytes: int
    # None: not estimated (`restore_basis` says why).
    restore_seconds: float | None
    restore_basis: str
    # None: not measurable from here (`disk_basis` says why).
    free_bytes: int | None
    disk_basis: str

    @property
    def needed_bytes(self) -> int:
        return int(self.database_bytes * DISK_FACTOR)

    def fits_in(self, budget_seconds: float) -> bool:
        """Whether the estimated restore fits the budget; a restore not estimated is tried (the budget stops it)."""
        return self.restore_seconds is None or self.restore_seconds <= budget_seconds

    def refusal(self) -> str | None:
        """Why no copy can be made at all, with what is needed; None when one can."""
        if not self.may_create_databases:
            return (f"rehearse copy restores the backup into a new database, but the role {self.role} may not create "
                    f"databases: grant it CREATEDB (ALTER ROLE {self.role} CREATEDB) or run with a role that has "
                    "it, or run with -p rehearse none. Nothing was changed.")
        if self.free_bytes is not None and self.free_bytes < self.needed_bytes:
            return (f"rehearse copy needs about {megabytes(self.needed_bytes)} free on the server's disk (the "
                    f"database's {megabytes(self.database_bytes)} x {DISK_FACTOR}), but {self.disk_basis} has "
                    f"{megabytes(self.free_bytes)} free: free space there, or run with -p rehearse none. Nothing was "
                    "changed.")
        return None

    def described(self) -> str:
        """'a copy of 61.2 MB, restored in about 2.1 s (basis); 40 GB free on ...'."""
        restore = (f"restored in about {duration_text(self.restore_seconds)} ({self.restore_basis})"
                   if self.restore_seconds is not None else f"restore time {self.restore_basis}")
        disk = (f"{megabytes(self.free_bytes)} free on {self.disk_basis}" if self.free_bytes is not None
                else f"free disk {self.disk_basis}")
        return f"a copy of {megabytes(self.database_bytes)}, {restore}; {disk}"

    def to_dict(self) -> dict[str, Any]:
        return {"role": self.role, "may_create_databases": self.may_create_databases,
                "database_bytes": self.database_bytes, "estimated_restore_seconds": self.restore_seconds,
                "restore_basis": self.restore_basis, "free_bytes": self.free_bytes, "disk_basis": self.disk_basis,
                "needed_bytes": self.needed_bytes}


def measure_copy_cost(target: DatabaseTarget, plan: DowngradePlan) -> CopyCost:
    """Read, read-only, whether the role may create databases, the database's size and the free disk; estimate
    the restore from the plan's measured read rate (or a read of the database's largest table)."""
    with connect(target) as conn:
        row = conn.execute("SELECT current_user, (SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = "
                           "current_user), pg_database_size(current_database())").fetchone()
        assert row is not None  # one row, always
        role, may_create, database_bytes = str(row[0]), bool(row[1]), int(row[2])
        calibration = plan.lock_calibration
        scan = calibration.scan if calibration and calibration.scan else _largest_table_rate(conn)
        free, disk_basis = _free_disk(conn, target)
    if scan is None:
        restore_seconds, basis = None, "not estimated: no table with rows to time a read on"
    else:
        restore_seconds = database_bytes / (scan.bytes_per_second / RESTORE_SLOWDOWN)
        basis = (f"estimate: the database's size at half a rewrite's rate, calibrated on this server: "
                 f"{scan.described()}")
    return CopyCost(role, may_create, database_bytes, restore_seconds, basis, free, disk_basis)


def refuse_impossible_copy(cost: CopyCost) -> None:
    """BadInput (exit 2) when no copy can be made: no CREATEDB, or not enough free disk where it is measurable."""
    refusal = cost.refusal()
    if refusal:
        raise BadInput(refusal)


def _largest_table_rate(conn: psycopg.Connection[Any]) -> ScanRate | None:
    row = conn.execute(_LARGEST_TABLE_SQL).fetchone()
    if row is None or not row[2]:
        return None
    try:
        return measure_scan_rate(conn, sql.Identifier(row[0], row[1]), f"{row[0]}.{row[1]}", int(row[2]))
    except (errors.QueryCanceled, errors.LockNotAvailable):
        conn.rollback()
        return None


def _free_disk(conn: psycopg.Connection[Any], target: DatabaseTarget) -> tuple[int | None, str]:
    """Free bytes on the file system of the server's data directory, when this process can see it."""
    try:
        row = conn.execute("SELECT current_setting('data_directory')").fetchone()
    except errors.InsufficientPrivilege:
        conn.rollback()
        return None, ("not measured: the role may not read data_directory (pg_read_all_settings); check the "
                      "server's free space by hand")
    directory = Path(str(row[0])) if row else None
    local = not target.url.host or target.url.host in ("localhost", "127.0.0.1", "::1") or \
        target.url.host.startswith("/")
    if directory is None or not local or not (directory / "PG_VERSION").exists():
        return None, "not measured: the server's data directory is not on this machine; check its free space by hand"
    return shutil.disk_usage(directory).free, f"the file system of the server's data directory {directory}"


def megabytes(size: int) -> str:
    """A size as people read it: MB, or GB from 10 GB on."""
    return f"{size / 1_000_000:.1f} MB" if size < 10_000_000_000 else f"{size / 1_000_000_000:.1f} GB"
