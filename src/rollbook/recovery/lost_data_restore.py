"""Putting back what a downgrade destroyed, from an at-risk backup, once a fix-forward re-created its home.

Each saved file is loaded (binary COPY FROM) into a temporary table of the saved column types, then
written back: whole rows inserted where their primary key is missing, values written back by primary
key. The restored values are then compared with the saved ones (counts, and an order-independent
checksum of every restored row), all in one transaction: a difference undoes the whole restore. Before
anything is written, every target is checked: the table and columns must exist (re-created by the
fix-forward upgrade) with the saved types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.recovery.at_risk_backup import AtRiskBackup, SavedFile

_CHUNK = 1 << 20
_SAVED = "rollbook_saved"


class LostDataTargetsMissing(BadInput):
    """A saved table or column has nowhere to go yet, or its type differs: nothing was written."""


class LostDataNotVerified(RollbookError):
    """The restored values differ from the saved ones: the restore was undone."""


@dataclass(frozen=True)
class RestoredFile:
    """What one saved file put back: rows saved, written, already there, or whose row is gone; the checksums."""

    name: str
    table: str
    keep: str
    rows_saved: int
    rows_written: int
    rows_already_there: int
    rows_gone: int
    saved_checksum: str
    restored_checksum: str

    @property
    def verified(self) -> bool:
        return self.saved_checksum == self.restored_checksum

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "table": self.table, "keep": self.keep, "rows_saved": self.rows_saved,
                "rows_written": self.rows_written, "rows_already_there": self.rows_already_there,
                "rows_gone": self.rows_gone, "saved_checksum": self.saved_checksum,
                "restored_checksum": self.restored_checksum, "verified": self.verified}

    def described(self) -> str:
        extra = []
        if self.rows_already_there:
            extra.append(f"{self.rows_already_there} already there with the same values")
        if self.rows_gone:
            extra.append(f"{self.rows_gone} whose row no longer exists (not written)")
        more = f" ({'; '.join(extra)})" if extra else ""
        return f"{self.table}: {self.rows_written} of {self.rows_saved} rows written back{more}"


@dataclass(frozen=True)
class LostDataRestore:
    """The outcome of restoring an at-risk backup: each file's rows and checksums; `executed` False for a dry run."""

    folder: str
    executed: bool
    files: tuple[RestoredFile, ...]

    @property
    def verified(self) -> bool:
        return self.executed and all(f.verified for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "executed": self.executed, "verified": self.verified,
                "files": [f.to_dict() for f in self.files]}

    def to_text(self) -> str:
        head = "Restored and verified" if self.verified else "Checked (dry run, nothing written)"
        return "\n".join([f"{head}: {self.folder}", *(f"  {f.described()}" for f in self.files)])

    def _repr_markdown_(self) -> str:
        rows = [(markdown.code(f.name), markdown.cell(f.described()),
                 "equal" if f.verified else "not compared" if not self.executed else "DIFFERENT")
                for f in self.files]
        return markdown.table(("File", "Restored", "Checksum"), rows)


def check_lost_data_targets(conn: psycopg.Connection[Any], backup: AtRiskBackup) -> list[str]:
    """What stops the restore: tables or columns that do not exist yet, or whose types differ from the saved ones."""
    problems: list[str] = []
    for saved in backup.files:
        columns = dict(conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attnum > 0 AND NOT attisdropped", [sql.Identifier(saved.schema, saved.table).as_string()]).fetchall())
        if not columns:
            problems.append(f"table {saved.qualified_table} does not exist yet: re-create it first by upgrading "
                            "(the fix-forward migration), then restore")
            continue
        for name, saved_type in saved.columns:
            if name not in columns:
                problems.append(f"column {saved.qualified_table}.{name} does not exist yet: re-create it first by "
                                "upgrading (the fix-forward migration), then restore")
            elif columns[name] != saved_type:
                problems.append(f"column {saved.qualified_table}.{name} is {columns[name]} now, but the saved values "
                                f"are {saved_type}: give it that type again (a migration), then restore")
        if saved.keep == "whole_rows" and not saved.key_columns:
            rows = conn.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(
                sql.Identifier(saved.schema, saved.table))).fetchone()
            if rows is not None and rows[0]:
                problems.append(f"table {saved.qualified_table} has no primary key and already holds rows: the saved "
                                "rows can only go back into it empty")
    return problems


def restore_lost_data(target: DatabaseTarget, backup: AtRiskBackup, *, execute: bool,
                      lock_timeout_ms: int = 5_000) -> LostDataRestore:
    """Check every target, then (with `execute`) write the saved data back and verify it, in one transaction."""
    with connect(target) as conn:
        identity = conn.execute("SELECT current_database(), system_identifier::text FROM pg_control_system()"
                                ).fetchone()
        assert identity is not None
        if (identity[0], identity[1]) != (backup.database, backup.system_identifier):
            raise BadInput(f"The at-risk backup {backup.folder} is of database {backup.database} on another server "
                           f"(system identifier {backup.system_identifier}), not of {target.redacted}: restore it "
                           "where it was taken. Nothing was written.")
        problems = check_lost_data_targets(conn, backup)
        if problems:
            raise LostDataTargetsMissing(f"The lost data of {backup.folder} cannot be put back yet: "
                                         f"{'; '.join(problems)}. Nothing was written.")
        if not execute:
            return LostDataRestore(str(backup.folder), False, tuple(
                RestoredFile(f.name, f.qualified_table, f.keep, f.rows, 0, 0, 0, "", "") for f in backup.files))
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', %s, true)", [str(lock_timeout_ms)])
            restored = tuple(_restore_file(conn, backup, saved) for saved in backup.files)
            different = [f for f in restored if not f.verified]
            if different:
                raise LostDataNotVerified(
                    "The values written back differ from the saved ones in "
                    + ", ".join(f"{f.name} ({f.table})" for f in different)
                    + ": rows with the same primary key already hold other values. The restore was undone; nothing "
                    "was written. Compare those rows by hand.")
    return LostDataRestore(str(backup.folder), True, restored)


def _restore_file(conn: psycopg.Connection[Any], backup: AtRiskBackup, saved: SavedFile) -> RestoredFile:
    table = sql.Identifier(saved.schema, saved.table)
    saved_table = sql.Identifier(f"{_SAVED}_{saved.name.split('_', 1)[0]}")
    conn.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP").format(saved_table, sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(type_text)) for name, type_text in saved.columns)))
    with conn.cursor() as cursor, (backup.folder / saved.name).open("rb") as handle:
        with cursor.copy(sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(saved_table)) as copy:
            while chunk := handle.read(_CHUNK):
                copy.write(chunk)
    # A temporary table has no statistics until analysed: without them a join over millions of rows is planned blind.
    conn.execute(sql.SQL("ANALYZE {}").format(saved_table))
    loaded = _number(conn, sql.SQL("SELECT count(*) FROM {}").format(saved_table))
    if loaded != saved.rows:
        raise LostDataNotVerified(f"{saved.name} holds {loaded} rows, but its manifest says {saved.rows}: the restore "
                                  "was undone; nothing was written.")
    names = [name for name, _ in saved.columns]
    keys = list(saved.key_columns)
    listed = sql.SQL(", ").join(map(sql.Identifier, names))
    if saved.keep == "whole_rows":
        # Rows whose key is already there are left alone; the checksum below says whether they hold the same values.
        missing = sql.SQL(" WHERE NOT EXISTS (SELECT FROM {} AS t WHERE {})").format(
            table, _same_key(keys, "t", "s")) if keys else sql.SQL("")
        written = conn.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} AS s{}").format(
            table, listed, listed, saved_table, missing)).rowcount
        gone = 0
        _advance_sequences(conn, saved, names)
    else:
        values = sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=sql.Identifier(c)) for c in names if c not in keys)
        written = conn.execute(sql.SQL("UPDATE {} AS t SET {} FROM {} AS s WHERE {}").format(
            table, values, saved_table, _same_key(keys, "t", "s"))).rowcount
        gone = saved.rows - written
    row_hash = _row_hash(names)
    if keys:
        # Rows deleted since the backup cannot take their values back: both sides compare the rows that exist.
        saved_sum = _checksum(conn, sql.SQL("SELECT count(*), {} FROM {} AS x WHERE EXISTS (SELECT FROM {} AS t WHERE "
                                            "{})").format(row_hash, saved_table, table, _same_key(keys, "t", "x")))
        restored_sum = _checksum(conn, sql.SQL("SELECT count(*), {} FROM {} AS x WHERE EXISTS (SELECT FROM {} AS s "
                                               "WHERE {})").format(row_hash, table, saved_table,
                                                                   _same_key(keys, "x", "s")))
    else:
        saved_sum = _checksum(conn, sql.SQL("SELECT count(*), {} FROM {} AS x").format(row_hash, saved_table))
        restored_sum = _checksum(conn, sql.SQL("SELECT count(*), {} FROM {} AS x").format(row_hash, table))
    return RestoredFile(saved.name, saved.qualified_table, saved.keep, saved.rows, written,
                        saved.rows - written - gone, gone, saved_sum, restored_sum)


def _advance_sequences(conn: psycopg.Connection[Any], saved: SavedFile, names: list[str]) -> None:
    """Move each sequence a restored column takes its values from past the largest restored value.

    A fix-forward re-creates a serial or identity column's sequence from its start: the application's next
    insert would collide with a restored key.
    """
    table = sql.Identifier(saved.schema, saved.table)
    for name in names:
        row = conn.execute("SELECT pg_get_serial_sequence(%s, %s)", [table.as_string(), name]).fetchone()
        if row is None or row[0] is None:
            continue
        conn.execute(sql.SQL("SELECT setval(%s::regclass, m) FROM (SELECT max({}) AS m FROM {}) AS x "
                             "WHERE m > coalesce(pg_sequence_last_value(%s::regclass), 0)").format(
            sql.Identifier(name), table), [row[0], row[0]])


def _same_key(keys: list[str], left: str, right: str) -> sql.Composed:
    return sql.SQL(" AND ").join(sql.SQL("{}.{} = {}.{}").format(
        sql.Identifier(left), sql.Identifier(k), sql.Identifier(right), sql.Identifier(k)) for k in keys)


def _row_hash(names: list[str]) -> sql.Composed:
    """An order-independent checksum of rows: the sum of a 64-bit hash of each row's text (no sort, no big string)."""
    return sql.SQL("coalesce(sum(hashtextextended(ROW({})::text, 0)::numeric), 0)").format(
        sql.SQL(", ").join(sql.SQL("x.{}").format(sql.Identifier(n)) for n in names))


def _checksum(conn: psycopg.Connection[Any], query: sql.Composed) -> str:
    row = conn.execute(query).fetchone()
    assert row is not None
    return f"{row[0]} rows, {row[1]}"


def _number(conn: psycopg.Connection[Any], query: sql.Composed) -> int:
    row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])
