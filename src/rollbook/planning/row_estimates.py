"""Instant estimates of the live checks from the planner's statistics, shown before the exact counts.

Everything here reads the catalog only (pg_class, pg_stats, pg_stat_all_tables): no lock on the table is
taken, so an estimate is there even when a migration holds ACCESS EXCLUSIVE on it or an exact count
runs out of time. An estimate is always labelled as one, with the time of the ANALYZE it comes from.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg

from rollbook.planning.operations import INTEGER_RANGES, TEXT_TYPES, LiveCheck, TableName


@dataclass(frozen=True)
class RowEstimate:
    """What the statistics say a check would count; `rows` is None when they cannot say, and `basis` says why."""

    rows: int | None
    basis: str
    analyzed_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "basis": self.basis,
                "analyzed_at": self.analyzed_at.isoformat() if self.analyzed_at else None}


@dataclass(frozen=True)
class TableStatistics:
    """One table as its statistics describe it: estimated rows and heap bytes, and when it was last analysed."""

    table: TableName
    rows: int | None
    heap_bytes: int
    analyzed_at: datetime | None
    # column -> (null_frac, most common values, their frequencies, histogram bounds), as text.
    columns: dict[str, tuple[float, list[str] | None, list[float] | None, list[str] | None]]

    def analysed_words(self) -> str:
        assert self.analyzed_at is not None
        return f"ANALYZE of {self.analyzed_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"


# One round trip for every table: its counters and the statistics of its checked columns. anyarray has no direct
# cast to text[]; through text it parses as an array literal of the values' text. A partitioned table's statistics
# are the inherited ones, a plain table's the others: the first row per column wins.
_STATISTICS_QUERY = """
SELECT t.ordinality, c.reltuples, c.relpages::bigint * current_setting('block_size')::bigint,
       greatest(s.last_analyze, s.last_autoanalyze),
       (SELECT json_agg(json_build_object(
                    'column', p.attname, 'null_frac', p.null_frac, 'common', p.most_common_vals::text::text[],
                    'frequencies', p.most_common_freqs, 'bounds', p.histogram_bounds::text::text[])
                ORDER BY p.attname, p.inherited)
        FROM pg_stats p WHERE p.schemaname = n.nspname AND p.tablename = c.relname
          AND p.attname IN (SELECT jsonb_array_elements_text(t.wanted -> 'columns')))
FROM jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(wanted, ordinality)
JOIN pg_class c ON c.oid = to_regclass(t.wanted ->> 'regclass')
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
"""


def tables_statistics(conn: psycopg.Connection,
                      wanted: Sequence[tuple[TableName, str, Sequence[str]]]) -> dict[TableName, TableStatistics]:
    """The statistics of each (table, its name as to_regclass takes it, its checked columns), in one read of the
    catalog that takes no lock on a table; a table that does not exist is left out."""
    request = json.dumps([{"regclass": regclass, "columns": list(columns)} for _, regclass, columns in wanted])
    found: dict[TableName, TableStatistics] = {}
    for ordinality, reltuples, heap_bytes, analyzed_at, described in conn.execute(_STATISTICS_QUERY, [request]):
        table = wanted[ordinality - 1][0]
        stats: dict[str, tuple[float, list[str] | None, list[float] | None, list[str] | None]] = {}
        for column in described or ():
            stats.setdefault(column["column"], (float(column["null_frac"]), column["common"], column["frequencies"],
                                                column["bounds"]))
        # reltuples is -1 until the first VACUUM or ANALYZE (PostgreSQL 14 and later).
        rows = round(reltuples) if reltuples >= 0 else None
        found[table] = TableStatistics(table, rows, int(heap_bytes), analyzed_at, stats)
    return found


def estimate_check(stats: TableStatistics, check: LiveCheck) -> RowEstimate:
    """What `check` would count according to the statistics, or why they cannot say."""
    if stats.analyzed_at is None:
        return RowEstimate(None, f"no estimate: {stats.table} has never been analysed (ANALYZE {stats.table} "
                                 "gives the planner statistics)")
    if stats.rows is None:  # reltuples is -1 again since that ANALYZE (a new relfilenode, as TRUNCATE makes)
        return RowEstimate(None, f"no estimate: pg_class holds no row count for {stats.table}", stats.analyzed_at)
    since = stats.analysed_words()
    if check.kind in ("all_rows", "rows_present"):
        return RowEstimate(stats.rows, f"pg_class.reltuples, {since}", stats.analyzed_at)
    column = check.columns[0] if check.columns else None
    if check.kind not in ("non_null_values", "nulls", "not_fitting") or column is None:
        return RowEstimate(None, f"no estimate: the statistics do not describe a {check.kind.replace('_', ' ')} check",
                           stats.analyzed_at)
    if column not in stats.columns:
        return RowEstimate(None, f"no estimate: {stats.table}.{column} has no statistics (added or emptied since "
                                 f"the last {since})", stats.analyzed_at)
    null_frac, common, frequencies, bounds = stats.columns[column]
    if check.kind == "nulls":
        return RowEstimate(round(stats.rows * null_frac), f"pg_stats.null_frac of {column}, {since}", stats.analyzed_at)
    if check.kind == "non_null_values":
        return RowEstimate(round(stats.rows * (1 - null_frac)), f"pg_stats.null_frac of {column}, {since}",
                           stats.analyzed_at)
    misfit = _misfit(check)
    if misfit is None:
        return RowEstimate(None, f"no estimate: the statistics do not say which values fit {check.type_name}",
                           stats.analyzed_at)
    # The most common values count by their frequency; the histogram's bounds sample the rest evenly.
    common_share = sum(frequencies or ())
    share = sum(f for v, f in zip(common or (), frequencies or (), strict=False) if misfit(v))
    if bounds:
        share += (1 - null_frac - common_share) * sum(map(misfit, bounds)) / len(bounds)
    elif not common:
        return RowEstimate(None, f"no estimate: pg_stats holds no values of {column}", stats.analyzed_at)
    return RowEstimate(round(stats.rows * share), f"pg_stats most common values and histogram bounds of {column}, "
                                                  f"{since}", stats.analyzed_at)


def _misfit(check: LiveCheck) -> Any:
    """A test of one value's text: True when it does not fit the check's new type; None when none is known."""
    type_name = (check.type_name or "").lower()
    if type_name in TEXT_TYPES and check.type_modifiers:
        limit = check.type_modifiers[0]
        return lambda value: len(value) > limit
    if type_name in INTEGER_RANGES:
        low, high = INTEGER_RANGES[type_name]
        return lambda value: _outside(value, low, high)
    return None


def _outside(text: str, low: int, high: int) -> bool:
    """Whether a value's text, as an integer type would round it, is outside [low, high] or no number at all."""
    try:
        return not low <= round(Decimal(text)) <= high
    except (InvalidOperation, ValueError):
        return True
