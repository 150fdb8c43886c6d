"""How long each downgrade operation is expected to hold its lock, and what that lock blocks meanwhile.

Every figure is an estimate with its basis. Metadata-only changes take milliseconds once they have their
lock. Work that reads or rewrites the table takes the table's size over a rate measured on this server
when the plan is made (`rollbook.pg.server_rates`): a timed read of a sample of the largest table the
plan touches. A rewrite, an index build or a foreign-key check is slower than that read by a factor
measured by `bench/lock_estimates.py` (see bench/README.md), not by a guess about the disk.

A lock taken in a step is held until the step's transaction commits (rollbook runs one revision per
transaction), so a table stays blocked from the first statement that locks it to the end of the step.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import psycopg
from psycopg import errors

from rollbook.durations import duration_text
from rollbook.pg.server_rates import ScanRate, TableSize, measure_scan_rate, table_size
from rollbook.planning.data_loss import read_only_transaction, regclass_text, table_identifier
from rollbook.planning.operations import COMMIT, Operation, TableName

# What each table lock a downgrade takes keeps other sessions from doing: (writes, reads).
LOCK_BLOCKS: dict[str, tuple[bool, bool]] = {
    "ACCESS EXCLUSIVE": (True, True),
    "EXCLUSIVE": (True, False),
    "SHARE ROW EXCLUSIVE": (True, False),
    "SHARE": (True, False),
    "SHARE UPDATE EXCLUSIVE": (False, False),  # only other schema changes and VACUUM wait
    "ROW EXCLUSIVE": (False, False),  # only the rows it changes, and schema changes, wait
}

# How many times longer than the calibration read each kind of work takes per byte (per row for row
# changes), measured with bench/lock_estimates.py on PostgreSQL 18, 2 cores (bench/README.md): a case
# whose ratio (estimate / measured) is r calls for its factor divided by r.
REWRITE_SLOWDOWN = 4.0  # table and indexes, over the sampled read's bytes per second
VALIDATING_SCAN_SLOWDOWN = 0.45  # a NOT NULL or CHECK scan reads one column; the sample forms whole rows
INDEX_BUILD_SLOWDOWN = 1.2  # the table's heap, read and sorted into a btree
FOREIGN_KEY_SLOWDOWN = 0.45  # both tables' heaps, read once and joined by hash
ROW_CHANGE_SLOWDOWN = 15.0  # per row changed, over the sampled read's rows per second
# A catalog-only change once its lock is granted: a few catalog rows written and a commit (its WAL flush).
METADATA_SECONDS = 0.005

Work = Literal["metadata", "validating_scan", "rewrite", "index_build", "foreign_key_check", "row_changes"]

# Operations that change only the catalog once they hold their lock.
_METADATA_ONLY = frozenset({
    "drop_column", "drop_not_null", "alter_column_default", "drop_constraint", "rename_table", "rename_column",
    "drop_index", "drop_table", "truncate", "create_table", "policy", "trigger_switch", "create_trigger",
    "privileges", "drop_view", "drop_trigger", "drop_policy", "add_column",
})
_VALIDATING_SCANS = frozenset({"set_not_null", "add_check", "validate_constraint"})
_INDEX_BUILDS = frozenset({"create_index", "create_unique_index", "add_unique", "add_primary_key"})
# An INSERT's count is of the rows whose key is taken, not of the rows it inserts: it has no estimate.
_ROW_CHANGES = frozenset({"update", "delete"})
NO_LIVE_CHECKS = "not estimated: no live checks"


@dataclass(frozen=True)
class LockCalibration:
    """What the estimates divide by: each table's size and one measured read rate; `unavailable` says why not."""

    sizes: dict[TableName, TableSize | None] = field(default_factory=dict)
    scan: ScanRate | None = None
    unavailable: str | None = None

    def rate_basis(self) -> str:
        """The measured read every estimate is derived from, in words."""
        return f"calibrated on this server: {self.scan.described()}" if self.scan else ""

    def to_dict(self) -> dict[str, Any]:
        return {"scan": self.scan.to_dict() if self.scan else None, "unavailable": self.unavailable}


@dataclass(frozen=True)
class RowLocks:
    """The rows of one table a data change locks, and for about how long."""

    table: str
    rows: int
    seconds: float

    def described(self) -> str:
        """'blocks writes to the 9 row(s) of users it changes for about 2 ms'."""
        return f"blocks writes to the {self.rows} row(s) of {self.table} it changes for {_about(self.seconds)}"

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "rows": self.rows, "seconds": self.seconds}


@dataclass(frozen=True)
class LockEstimate:
    """How long one operation is expected to hold its lock (None: not estimated), what it blocks, and why."""

    lock: str | None
    seconds: float | None
    blocks_writes: tuple[str, ...]
    blocks_reads: tuple[str, ...]
    basis: str
    work: Work | None = None
    # A row change blocks writes only to the rows it changes, not to the table.
    row_locks: RowLocks | None = None

    def described(self) -> str:
        """'blocks writes to users for about 40 s, reads for about 40 s (estimate)', or what it blocks and why not."""
        if self.row_locks is not None:
            return self.row_locks.described()
        blocked = blocking_text(self.blocks_writes, self.blocks_reads, self.seconds)
        return blocked if self.seconds is not None else f"{blocked} ({self.basis})"

    def to_dict(self) -> dict[str, Any]:
        return {"estimated_lock_seconds": self.seconds, "blocks_writes": list(self.blocks_writes),
                "blocks_reads": list(self.blocks_reads), "work": self.work, "basis": self.basis,
                "row_locks": self.row_locks.to_dict() if self.row_locks else None}


@dataclass(frozen=True)
class TableBlocking:
    """How long writes (and, under an ACCESS EXCLUSIVE lock, reads) of one table are expected to be blocked.

    The seconds are None when some lock on the table could not be estimated.
    """

    table: str
    writes_seconds: float | None
    reads_seconds: float | None
    blocks_reads: bool

    def described(self) -> str:
        """'blocks writes to users for about 40 s, reads for about 40 s'."""
        text = f"blocks writes to {self.table} for {_about(self.writes_seconds)}"
        return text + (f", reads for {_about(self.reads_seconds)}" if self.blocks_reads else "")

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "writes_seconds": self.writes_seconds,
                "reads_seconds": self.reads_seconds if self.blocks_reads else 0.0}


@dataclass(frozen=True)
class Blocking:
    """The tables a step (or a whole plan) blocks, each with its expected blocked time; estimates throughout."""

    tables: tuple[TableBlocking, ...]
    estimated: bool
    basis: str
    # Data changes, which block writes to the rows they change only.
    row_locks: tuple[RowLocks, ...] = ()

    @property
    def longest_seconds(self) -> float | None:
        """The longest any table or changed row stays locked; None when not estimated."""
        if not self.estimated:
            return None
        return max([*(t.writes_seconds or 0.0 for t in self.tables), *(r.seconds for r in self.row_locks)],
                   default=0.0)

    def described(self) -> str:
        """'blocks writes to users for about 40 s, reads for about 40 s', 'blocks no reads or writes of a table'."""
        text = "; ".join([*(t.described() for t in self.tables), *(r.described() for r in self.row_locks)])
        if not text:
            return "blocks no reads or writes of a table"
        return text if self.estimated else f"{text} ({self.basis})"

    def to_dict(self) -> dict[str, Any]:
        return {"estimated": self.estimated, "basis": self.basis, "tables": [t.to_dict() for t in self.tables],
                "row_locks": [r.to_dict() for r in self.row_locks]}


def calibrate(conn: psycopg.Connection[Any], operations: Iterable[Operation], *,
              statement_timeout_ms: int = 10_000, lock_timeout_ms: int = 2_000) -> LockCalibration:
    """Read, read-only, the size of every table the operations lock, and time a read of a sample of the largest.

    Reading a size takes the ACCESS SHARE lock a SELECT takes: a table another session holds locked
    makes the estimates unavailable after `lock_timeout_ms`, rather than the plan wait.
    """
    sizes: dict[TableName, TableSize | None] = {}
    tables = list(dict.fromkeys(table for op in operations for table in _tables_worked_on(op)))
    try:
        with read_only_transaction(conn, statement_timeout_ms, lock_timeout_ms):
            for table in tables:
                sizes[table] = table_size(conn, regclass_text(table))
    except (errors.QueryCanceled, errors.LockNotAvailable):
        return LockCalibration(sizes, unavailable="not estimated: the sizes of the tables it locks could not be read "
                                                  f"within {lock_timeout_ms} ms (a table is locked, or the server is "
                                                  "busy)")
    present = [(size.heap_bytes, table) for table, size in sizes.items() if size is not None and size.heap_bytes]
    if not present:
        return LockCalibration(sizes, unavailable="no table with rows to calibrate on: every table it locks is "
                                                  "empty or absent")
    heap_bytes, largest = max(present, key=lambda pair: pair[0])
    try:
        scan = measure_scan_rate(conn, table_identifier(largest), str(largest), heap_bytes,
                                 statement_timeout_ms=statement_timeout_ms, lock_timeout_ms=lock_timeout_ms)
    except (errors.QueryCanceled, errors.LockNotAvailable) as exc:
        why = "it took too long" if isinstance(exc, errors.QueryCanceled) else f"{largest} was locked"
        return LockCalibration(sizes, unavailable=f"not estimated: the calibration read of {largest} failed ({why})")
    if scan is None:
        return LockCalibration(sizes, unavailable=f"not estimated: {largest} has no rows to time a read on")
    return LockCalibration(sizes, scan)


def with_lock_estimates(operations: Sequence[Operation], calibration: LockCalibration) -> list[Operation]:
    """Each operation with its lock estimate."""
    return [replace(op, lock_estimate=estimate_lock(op, calibration)) for op in operations]


def estimate_lock(op: Operation, calibration: LockCalibration) -> LockEstimate:
    """What `op`'s lock blocks, and for about how long on this server."""
    writes, reads = LOCK_BLOCKS.get(op.lock or "", (op.lock is not None, op.lock is not None))
    locked = [str(t) for t in _tables_locked(op)]
    blocks_writes = tuple(locked) if writes else ()
    blocks_reads = tuple(locked) if reads else ()

    def not_estimated(why: str) -> LockEstimate:
        return LockEstimate(op.lock, None, blocks_writes, blocks_reads, why)

    if op.lock is None or not locked:
        return LockEstimate(None, None, (), (), "takes no lock on a table")
    if op.op == "unknown":
        return not_estimated("not estimated: the statement is not understood")
    if calibration.unavailable == NO_LIVE_CHECKS:
        return not_estimated(NO_LIVE_CHECKS)
    work = _work(op)
    waiting = (f"before its lock is granted it waits for every transaction holding a conflicting lock on "
               f"{', '.join(locked)}, and what its lock blocks queues behind it meanwhile (lock_timeout bounds that "
               "wait)")
    if work == "metadata":
        return LockEstimate(op.lock, METADATA_SECONDS, blocks_writes, blocks_reads,
                            f"estimate: a catalog-only change takes milliseconds once its lock is granted; {waiting}",
                            "metadata")
    if work is None:
        return not_estimated(f"not estimated: rollbook has no model of how long {op.op} takes")
    worked_on = _tables_worked_on(op)
    if calibration.unavailable and any(t not in calibration.sizes for t in worked_on):
        return not_estimated(calibration.unavailable)  # its size was never read: a lock or a timeout stopped it
    sizes = [calibration.sizes.get(t) for t in worked_on]
    if any(size is None for size in sizes):
        return not_estimated(f"not estimated: {op.table} is not there now (if an earlier step creates it, it is "
                             "empty and this takes milliseconds)")
    heap = sum(size.heap_bytes for size in sizes if size is not None)
    first = sizes[0]
    assert first is not None
    if heap == 0:
        return LockEstimate(op.lock, METADATA_SECONDS, blocks_writes, blocks_reads,
                            f"estimate: {', '.join(locked)} is empty, so this takes milliseconds once its lock is "
                            f"granted; {waiting}", work)
    scan = calibration.scan
    if scan is None:
        return not_estimated(calibration.unavailable or "not estimated: no calibration read")
    if work == "row_changes":
        if op.rows_affected is None:
            return not_estimated("not estimated: the rows it changes were not counted")
        # Never less than a catalog-only change: the commit alone takes that.
        seconds = max(METADATA_SECONDS, heap / scan.bytes_per_second
                      + op.rows_affected / scan.rows_per_second * ROW_CHANGE_SLOWDOWN)
        return LockEstimate(op.lock, seconds, blocks_writes, blocks_reads,
                            f"estimate: a scan of {_mb(heap)} to find the rows, then {op.rows_affected} row(s) at "
                            f"{ROW_CHANGE_SLOWDOWN:g}x the sampled read's time per row; {calibration.rate_basis()}",
                            work, row_locks=RowLocks(str(op.table), op.rows_affected, seconds))
    factor, what, work_bytes = {
        "validating_scan": (VALIDATING_SCAN_SLOWDOWN, f"a scan of {_mb(heap)}", heap),
        "rewrite": (REWRITE_SLOWDOWN, f"a rewrite of {_mb(heap)} of table and {_mb(first.index_bytes)} of indexes",
                    heap + first.index_bytes),
        "index_build": (INDEX_BUILD_SLOWDOWN, f"an index build over {_mb(heap)} of table", heap),
        "foreign_key_check": (FOREIGN_KEY_SLOWDOWN, f"a check of {_mb(heap)} of both tables", heap),
    }[work]
    seconds = max(METADATA_SECONDS, work_bytes / scan.bytes_per_second * factor)
    return LockEstimate(op.lock, seconds, blocks_writes, blocks_reads,
                        f"estimate: {what} at {factor:g}x the sampled read's time per byte (factor measured by "
                        f"bench/lock_estimates.py); {calibration.rate_basis()}; {waiting}", work)


def step_blocking(operations: Sequence[Operation]) -> Blocking:
    """How long a step blocks each table: from the first statement that locks it to the step's commit.

    A COMMIT inside the step (an autocommit block) releases what was locked before it.
    """
    blocked: dict[str, TableBlocking] = {}
    estimated, basis = True, ""
    row_locks = tuple(op.lock_estimate.row_locks for op in operations
                      if op.lock_estimate is not None and op.lock_estimate.row_locks is not None)
    transaction: list[LockEstimate] = []
    for op in [*operations, None]:
        if op is not None and op.op != COMMIT:
            if op.lock_estimate is not None and op.lock_estimate.lock is not None:
                transaction.append(op.lock_estimate)
            continue
        in_transaction: dict[str, TableBlocking] = {}
        for index, estimate in enumerate(transaction):
            if estimate.seconds is None and estimate.blocks_writes:
                estimated, basis = False, basis or estimate.basis
            held = _total(later.seconds for later in transaction[index:])
            for table in estimate.blocks_writes:
                _add(in_transaction, TableBlocking(table, held, held, table in estimate.blocks_reads),
                     first_lock_only=True)
        for table_blocking in in_transaction.values():
            _add(blocked, table_blocking, first_lock_only=False)
        transaction = []
    return Blocking(tuple(blocked.values()), estimated, basis, row_locks)


def plan_blocking(steps: Iterable[Blocking]) -> Blocking:
    """The whole downgrade's blocked time per table: the sum over its steps."""
    blocked: dict[str, TableBlocking] = {}
    row_locks: list[RowLocks] = []
    estimated, basis = True, ""
    for step in steps:
        estimated, basis = estimated and step.estimated, basis or step.basis
        row_locks += step.row_locks
        for table in step.tables:
            _add(blocked, table, first_lock_only=False)
    return Blocking(tuple(blocked.values()), estimated, basis, tuple(row_locks))


def blocking_text(writes: Sequence[str], reads: Sequence[str], seconds: float | None) -> str:
    """'blocks writes to users for about 40 s, reads for about 40 s', for one lock held `seconds`."""
    if not writes:
        return "blocks no reads or writes of a table"
    how_long = f" for {_about(seconds)}" if seconds is not None else ""
    text = f"blocks writes to {', '.join(writes)}{how_long}"
    if reads:
        text += (", reads" if set(reads) == set(writes) else f", reads of {', '.join(reads)}") + how_long
    return text


def _add(blocked: dict[str, TableBlocking], table: TableBlocking, *, first_lock_only: bool) -> None:
    """Count `table`'s blocked time into `blocked`: within a transaction only its first lock counts (it is
    held to the commit, covering the later ones); across steps the times add up."""
    known = blocked.get(table.table)
    if known is None:
        blocked[table.table] = table
        return
    reads_now = table.reads_seconds if table.blocks_reads else 0.0
    reads_before = known.reads_seconds if known.blocks_reads else 0.0
    if first_lock_only:
        # A later, stronger lock in the same transaction blocks reads from its own start to the commit.
        reads = reads_before if known.blocks_reads else reads_now
        blocked[table.table] = replace(known, reads_seconds=reads,
                                       blocks_reads=known.blocks_reads or table.blocks_reads)
        return
    blocked[table.table] = TableBlocking(table.table, _total((known.writes_seconds, table.writes_seconds)),
                                         _total((reads_before, reads_now)), known.blocks_reads or table.blocks_reads)


def _about(seconds: float | None) -> str:
    return "an unknown time" if seconds is None else f"about {duration_text(seconds)}"


def _total(values: Iterable[float | None]) -> float | None:
    total = 0.0
    for value in values:
        if value is None:
            return None
        total += value
    return total


def _work(op: Operation) -> Work | None:
    not_valid = "NOT VALID" in op.statement.upper()
    if op.op in _METADATA_ONLY or (op.op == "alter_column_type" and not op.rewrites_table) or (
            not_valid and op.op in ("add_check", "add_foreign_key")):
        return "metadata"
    if op.op == "alter_column_type":
        return "rewrite"
    if op.op in _VALIDATING_SCANS:
        return "validating_scan"
    if op.op in _INDEX_BUILDS:
        return "index_build"
    if op.op == "add_foreign_key":
        return "foreign_key_check"
    if op.op in _ROW_CHANGES:
        return "row_changes"
    return None


def _tables_locked(op: Operation) -> list[TableName]:
    """The tables `op` locks: its own, and for a foreign key the table it references (same lock)."""
    if op.table is None:
        return []
    if op.op == "add_foreign_key" and op.check is not None and op.check.referenced_table is not None:
        return [op.table, op.check.referenced_table]
    return [op.table]


def _tables_worked_on(op: Operation) -> list[TableName]:
    return _tables_locked(op) if op.lock is not None else []


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"
