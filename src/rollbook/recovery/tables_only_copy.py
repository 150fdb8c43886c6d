"""A tables-only copy for a dress rehearsal: the whole schema, but the rows of only the tables the downgrade needs.

When the whole copy would not restore within rehearsal_budget, the rehearsal restores every object's definition
(tables, indexes, constraints, views, functions: cheap) and the rows of the tables the downgrade needs: the tables
its steps change and the version table; the tables whose foreign keys point at those (a DROP or DELETE there meets
their rows); every table those point at in turn (their foreign keys are checked when restored); and the partitions
and parents of all of these. Every other table is restored empty. The downgrade then runs against the same catalog
as production's, so the schema after it is compared whole; its rows are compared for the restored tables only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from rollbook.durations import duration_text
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.planning.plan import DowngradePlan
from rollbook.project.migrations import MigrationProject
from rollbook.recovery.copy_cost import CopyCost, megabytes

# Every user table, named as take_backup names them (format('%I.%I')), with its size on disk.
_TABLE_SIZES_SQL = r"""
SELECT format('%I.%I', n.nspname, c.relname), pg_total_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
"""
_QUALIFIED_SQL = "SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_class c " \
                 "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)"
# (from, to): a foreign key of `from` referencing `to`.
_FOREIGN_KEYS_SQL = """
SELECT format('%I.%I', cn.nspname, c.relname), format('%I.%I', fn.nspname, f.relname)
FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class f ON f.oid = k.confrelid JOIN pg_namespace fn ON fn.oid = f.relnamespace
WHERE k.contype = 'f'
"""
# (child, parent): partitions and inheritance children; a partitioned table's rows live in its partitions.
_INHERITANCE_SQL = """
SELECT format('%I.%I', cn.nspname, c.relname), format('%I.%I', pn.nspname, p.relname)
FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
"""
# Operations that may change rows of tables the plan cannot name (SQL it could not read, an INSERT of a computed
# table, a SELECT of a function); the other table-less ones (types, sequences, functions' definitions) come with
# the schema, which a tables-only copy restores whole.
ROWS_OF_UNKNOWN_TABLES = frozenset({"unknown", "insert", "select"})
CANNOT_PROVE = ("what the downgrade does to the rows of the tables restored empty (cascades past one foreign key, "
                "triggers or functions reading them) and how long it takes on them")


@dataclass(frozen=True)
class TablesOnlyCopy:
    """The rows a tables-only copy restores, and what that restore is estimated to take."""

    tables: tuple[str, ...]
    table_bytes: int
    restore_seconds: float | None
    tables_left_empty: int

    def fits_in(self, budget_seconds: float) -> bool:
        return self.restore_seconds is not None and self.restore_seconds <= budget_seconds

    def described(self) -> str:
        """'the whole schema with the rows of 2 table(s) (a, b; 1.2 MB, rows restored in about 0.4 s), 3 table(s)
        restored empty'."""
        # The schema's own objects are restored too, outside the estimate: the budget stops a restore that overruns.
        restore = (f"rows restored in about {duration_text(self.restore_seconds)}" if self.restore_seconds is not None
                   else "restore time not estimated")
        return (f"the whole schema with the rows of {len(self.tables)} table(s) ({', '.join(self.tables)}; "
                f"{megabytes(self.table_bytes)}, {restore}), {self.tables_left_empty} table(s) restored empty")

    def to_dict(self) -> dict[str, Any]:
        return {"tables": list(self.tables), "table_bytes": self.table_bytes,
                "estimated_restore_seconds": self.restore_seconds, "tables_left_empty": self.tables_left_empty,
                "cannot_prove": CANNOT_PROVE}


def plan_tables_only_copy(target: DatabaseTarget, project: MigrationProject, plan: DowngradePlan,
                          cost: CopyCost) -> TablesOnlyCopy | str:
    """The tables whose rows the downgrade needs and their restore estimate (read-only); a str says why there is
    no such copy (a step whose tables the plan does not know)."""
    unknown = [step.revision.revision for step in plan.steps for op in step.operations
               if op.table is None and op.op in ROWS_OF_UNKNOWN_TABLES]
    if unknown:
        return ("no tables-only copy either: the plan cannot tell which tables are changed by "
                f"{', '.join(dict.fromkeys(unknown))}")
    with connect(target) as conn:
        named = [sql.Identifier(*filter(None, (project.version_table_schema, project.version_table)))]
        named += [sql.Identifier(*filter(None, (op.table.schema, op.table.name)))
                  for step in plan.steps for op in step.operations if op.table is not None]
        # A table the downgrade creates, or one already gone, has no rows to restore.
        seeds = {row[0] for name in named
                 if (row := conn.execute(_QUALIFIED_SQL, [name.as_string(conn)]).fetchone()) is not None}
        sizes = {str(name): int(size) for name, size in conn.execute(_TABLE_SIZES_SQL).fetchall()}
        foreign_keys = _pairs(conn, _FOREIGN_KEYS_SQL)
        inheritance = _pairs(conn, _INHERITANCE_SQL)
    needed = seeds | {source for source, referenced in foreign_keys if referenced in seeds}
    while True:
        more = ({referenced for source, referenced in foreign_keys if source in needed}
                | {b for a, b in inheritance if a in needed} | {a for a, b in inheritance if b in needed}) - needed
        if not more:
            break
        needed |= more
    tables = tuple(sorted(needed & sizes.keys()))
    table_bytes = sum(sizes[table] for table in tables)
    seconds = (cost.restore_seconds * table_bytes / cost.database_bytes
               if cost.restore_seconds is not None and cost.database_bytes else None)
    return TablesOnlyCopy(tables, table_bytes, seconds, len(sizes) - len(tables))


def _pairs(conn: psycopg.Connection[Any], query: str) -> set[tuple[str, str]]:
    return {(str(a), str(b)) for a, b in conn.execute(query).fetchall()}
