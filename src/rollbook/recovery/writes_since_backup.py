"""Writes since a backup: what restoring over the database would undo.

Writes since the backup are read from the data, not from statistics. The backup's record keeps its
write horizon (the oldest transaction still running when it was taken); a row inserted or updated
later has an `xmin` at or after it, and rows deleted since show as fewer rows than were counted in
the backup. pg_stat_user_tables' n_tup_ins/upd/del would be cheaper to read, but they are reset by
pg_stat_reset(), lost after a crash, flushed lazily, and would have had to be recorded at backup time
too; `xmin` is stored with every row and survives all of that. It costs one scan per table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from rollbook import markdown
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.project.migrations import MigrationProject
from rollbook.recovery.archived_backups import ArchivedBackup
from rollbook.recovery.restore_tables import TABLES_SQL, count_text, is_version_table, scan_table, split_qualified

# age() compares 32-bit transaction ids: a horizon further back than this may have wrapped around.
MAX_XID_DISTANCE = 2**31 - 1_000_000


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
        marks = {"none": "none", "found": "FOUND", "unknown": "cannot tell", "not_checked": "not checked"}
        text = f"**Writes since the backup: {marks.get(self.status, self.status)}**. {markdown.prose(self.detail)}"
        if self.changed:
            rows = [(markdown.code(t.table), count_text(t.rows_at_backup), count_text(t.rows_now),
                     count_text(t.written), count_text(t.gone)) for t in self.changed]
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
        for qualified, schema, name in conn.execute(TABLES_SQL).fetchall():
            if is_version_table(project, schema, name):
                continue
            rows, written = scan_table(conn, schema, name, horizon)
            at_backup = recorded.get(qualified)
            # A table the backup does not hold was created since: all of its rows were written since.
            tables.append(TableWrites(qualified, at_backup, rows, written if at_backup is not None else rows))
    present = {t.table for t in tables}
    tables += [TableWrites(name, rows, None, None) for name, rows in recorded.items()
               if name not in present and not is_version_table(project, *split_qualified(name))]
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
