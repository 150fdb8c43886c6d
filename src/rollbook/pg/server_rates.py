"""How fast this server reads a table, measured on the server itself by a short read-only sample.

A lock-time estimate divides a table's size by a rate. Rates copied from elsewhere would assume a disk,
a CPU and a cache this server may not have; a timed read of a sample of one of the plan's own tables,
taken the moment the plan is made, measures them. The read runs in a READ ONLY transaction, without
parallel workers (ALTER TABLE scans and rewrites are single-process), under a statement timeout.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

# About 32 MB: long enough to time on any disk, short enough to cost well under a second on most.
SAMPLE_BYTES = 32 * 1024 * 1024
# The sample is read this many times and the median kept: one read on a busy server can be several times
# slower or faster than the next.
SAMPLE_READS = 3
_BLOCK_BYTES = 8192


@dataclass(frozen=True)
class TableSize:
    """A table's size as the catalog has it: its heap and its indexes."""

    heap_bytes: int
    index_bytes: int


@dataclass(frozen=True)
class ScanRate:
    """A timed sequential read of part of one table: what it read, and how long it took the server."""

    table: str
    sampled_bytes: int
    sampled_rows: int
    seconds: float

    @property
    def bytes_per_second(self) -> float:
        return self.sampled_bytes / self.seconds

    @property
    def rows_per_second(self) -> float:
        return max(self.sampled_rows, 1) / self.seconds

    def described(self) -> str:
        """'read 32.0 MB of users in 0.21 s (152 MB/s)'."""
        size = (f"{self.sampled_bytes / 1_000_000:.1f} MB" if self.sampled_bytes >= 1_000_000
                else f"{self.sampled_bytes // 1000} kB")
        return (f"read {size} ({self.sampled_rows} rows) of {self.table} in {self.seconds:.3f} s "
                f"({self.bytes_per_second / 1_000_000:.0f} MB/s)")

    def to_dict(self) -> dict[str, Any]:
        return {"table": self.table, "sampled_bytes": self.sampled_bytes, "sampled_rows": self.sampled_rows,
                "seconds": self.seconds}


def table_size(conn: psycopg.Connection[Any], regclass: str) -> TableSize | None:
    """The catalog's sizes of the table `regclass` names (quoted as to_regclass takes it); None if it is absent."""
    row = conn.execute(
        "SELECT pg_relation_size(c.oid), pg_indexes_size(c.oid) FROM pg_class c WHERE c.oid = to_regclass(%s)",
        [regclass]).fetchone()
    if row is None:
        return None
    return TableSize(heap_bytes=int(row[0]), index_bytes=int(row[1]))


def measure_scan_rate(
    conn: psycopg.Connection[Any], table: sql.Identifier, label: str, heap_bytes: int, *,
    statement_timeout_ms: int = 10_000, lock_timeout_ms: int = 2_000,
) -> ScanRate | None:
    """Time a sequential read of about SAMPLE_BYTES of `table` (whose heap is `heap_bytes`), the median of
    SAMPLE_READS reads; None on an empty table.

    The sample is the table's first blocks (a TID range scan, PostgreSQL 14 and later) or, on older
    servers, a block sample (TABLESAMPLE SYSTEM): whole pages either way, read as a rewrite reads them.
    Each row is formed whole (`count(t.*)`), as a rewrite or a validating scan must deform it. The time
    is the server's own (EXPLAIN ANALYZE without per-node timing), so the network does not count.
    Raises psycopg's QueryCanceled or LockNotAvailable when the timeouts stop it.
    """
    if heap_bytes <= 0:
        return None
    blocks = max(1, min(heap_bytes, SAMPLE_BYTES) // _BLOCK_BYTES)
    if conn.info.server_version >= 140000:
        source = sql.SQL("{} AS t WHERE ctid < {}::tid").format(table, sql.Literal(f"({blocks},0)"))
    else:
        percent = min(100.0, 100.0 * blocks * _BLOCK_BYTES / heap_bytes)
        source = sql.SQL("{} AS t TABLESAMPLE SYSTEM ({})").format(table, sql.Literal(percent))
    query = sql.SQL("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) SELECT count(t.*) FROM {}").format(source)
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        conn.execute("SELECT set_config('statement_timeout', %s, true), set_config('lock_timeout', %s, true), "
                     "set_config('max_parallel_workers_per_gather', '0', true)",
                     [str(statement_timeout_ms), str(lock_timeout_ms)])
        reads = [_explained(conn.execute(query).fetchone()) for _ in range(SAMPLE_READS)]
    seconds = statistics.median(read[0] for read in reads)
    sampled_rows = reads[0][1]
    if sampled_rows == 0:
        return None
    return ScanRate(label, min(heap_bytes, blocks * _BLOCK_BYTES), sampled_rows, max(seconds, 1e-6))


def _explained(row: tuple[Any, ...] | None) -> tuple[float, int]:
    """The execution time in seconds and the rows scanned, from EXPLAIN (ANALYZE, FORMAT JSON)'s one row."""
    assert row is not None
    explained = row[0] if isinstance(row[0], list) else json.loads(row[0])
    scan = explained[0]["Plan"]["Plans"][0]
    return float(explained[0]["Execution Time"]) / 1000, int(scan["Actual Rows"])
