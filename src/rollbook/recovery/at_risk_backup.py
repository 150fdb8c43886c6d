"""The at-risk backup: exactly the data a downgrade destroys or rewrites, copied before it runs.

Every piece the plan names (planning/at_risk.py) is copied with binary COPY inside one REPEATABLE
READ snapshot, with the DDL of its tables (pg_dump --schema-only in the same snapshot), into a folder
with a manifest that says what each file holds, its rows and its sha256. The folder is written under a
`.partial` name, synced and renamed only when complete: a reader never sees half a backup, and a failure
(a full disk included) leaves nothing behind. Reading a backup back and checking its files is here too;
putting the data back is recovery/lost_data_restore.py.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from datetime import UTC
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.file_digest import file_sha256
from rollbook.file_publishing import fsync_directory, write_durably
from rollbook.parent_death import end_with_parent
from rollbook.pg.client_tools import find_pg_tool, libpq_environment, stderr_tail
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import read_identity
from rollbook.planning.at_risk import AtRiskPiece, Keep, at_risk_scope
from rollbook.planning.data_loss import regclass_text
from rollbook.planning.plan import DowngradePlan
from rollbook.policy.rules import BACKUP_STRATEGIES
from rollbook.recovery.backup import LOCK_WAIT_TIMEOUT, safe_file_name

MANIFEST = "manifest.json"
SCHEMA_FILE = "schema.sql"
MANIFEST_FORMAT = "rollbook-at-risk/1"
PARTIAL_SUFFIX = ".partial"
# Strategies that copy the whole database, for the refusal to name (the policy decides which are accepted).
WHOLE_DATABASE_STRATEGIES = tuple(s for s in BACKUP_STRATEGIES if s != "at-risk")


class AtRiskInsufficient(BadInput):
    """The plan cannot say exactly what the downgrade destroys: an at-risk backup would miss some of it."""


class AtRiskBackupFailed(RollbookError):
    """No at-risk backup was made; no partial folder was left behind."""


class AtRiskBackupUnusable(BadInput):
    """A folder given as an at-risk backup is not one, or its files differ from its manifest."""


@dataclass(frozen=True)
class SavedFile:
    """One file of an at-risk backup: the rows or values of one piece, in PostgreSQL's binary COPY format."""

    name: str
    schema: str
    table: str
    keep: Keep
    key_columns: tuple[str, ...]
    # Every column in the file, in its order, with its type as format_type() writes it.
    columns: tuple[tuple[str, str], ...]
    predicate: str | None
    rows: int
    size_bytes: int
    sha256: str
    revision: str
    why: str

    @property
    def qualified_table(self) -> str:
        return f"{self.schema}.{self.table}"

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "schema": self.schema, "table": self.table, "keep": self.keep,
                "key_columns": list(self.key_columns), "columns": [list(c) for c in self.columns],
                "predicate": self.predicate, "rows": self.rows, "size_bytes": self.size_bytes,
                "sha256": self.sha256, "revision": self.revision, "why": self.why}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SavedFile:
        return cls(str(data["name"]), str(data["schema"]), str(data["table"]), data["keep"],
                   tuple(data["key_columns"]), tuple((str(n), str(t)) for n, t in data["columns"]),
                   data["predicate"], int(data["rows"]), int(data["size_bytes"]), str(data["sha256"]),
                   str(data["revision"]), str(data["why"]))

    def described(self) -> str:
        values = ", ".join(c for c, _ in self.columns if c not in self.key_columns)
        what = "whole rows" if self.keep == "whole_rows" else f"({', '.join(self.key_columns)}) with {values}"
        where = f" where {self.predicate}" if self.predicate else ""
        return f"{self.qualified_table}: {what}{where}, {self.rows} rows"


@dataclass(frozen=True)
class AtRiskBackup:
    """A finished at-risk backup folder and what it holds."""

    folder: Path
    files: tuple[SavedFile, ...]
    schema_sha256: str
    database: str
    system_identifier: str
    revisions: tuple[str, ...]
    target: str
    plan_hash: str
    taken_at: str
    seconds: float
    # The sha256 of manifest.json as written: it pins every file (each file's sha256 is in it), so an approval names it.
    manifest_sha256: str = ""

    @property
    def size_bytes(self) -> int:
        return sum(f.size_bytes for f in self.files)

    @property
    def rows(self) -> int:
        return sum(f.rows for f in self.files)

    def manifest(self) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, "database": self.database, "system_identifier": self.system_identifier,
                "revisions": list(self.revisions), "target": self.target, "plan_hash": self.plan_hash,
                "taken_at": self.taken_at, "seconds": self.seconds,
                "schema": {"name": SCHEMA_FILE, "sha256": self.schema_sha256},
                "files": [f.to_dict() for f in self.files]}

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "size_bytes": self.size_bytes, "rows": self.rows,
                "manifest_sha256": self.manifest_sha256, **self.manifest()}

    def to_text(self) -> str:
        lines = [f"At-risk backup: {self.folder}",
                 f"  {len(self.files)} file(s), {self.rows} rows, {self.size_bytes} bytes, taken {self.taken_at} "
                 f"in {self.seconds:.1f} s at revision {', '.join(self.revisions) or 'base'}"]
        lines += [f"  {f.name}: {f.described()}, sha256 {f.sha256}" for f in self.files]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        rows = [(markdown.code(f.name), markdown.cell(f.described()), markdown.code(f.sha256[:16]))
                for f in self.files]
        head = (f"At-risk backup {markdown.code(str(self.folder))}: {self.rows} rows in {len(self.files)} file(s), "
                f"taken {self.taken_at} ({self.seconds:.1f} s), for the downgrade to {markdown.code(self.target)}.\n\n")
        return head + markdown.table(("File", "Holds", "sha256"), rows)


@dataclass(frozen=True)
class _Resolved:
    """A piece with its table found in the catalog: the schema-qualified name, the key and the columns to copy."""

    piece: AtRiskPiece
    schema: str
    table: str
    key_columns: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]


def take_at_risk_backup(target: DatabaseTarget, plan: DowngradePlan, backup_dir: Path) -> AtRiskBackup:
    """Copy what `plan` destroys or rewrites into a new folder under `backup_dir`, in one snapshot.

    Refused (AtRiskInsufficient, nothing written) when the plan could not quantify a step, or a column
    to save belongs to a table without a primary key.
    """
    started = time.monotonic()
    scope = at_risk_scope(plan)
    if not scope.sufficient:
        raise AtRiskInsufficient(_insufficient(scope.unquantified))
    partial: Path | None = None
    with connect(target) as conn:
        identity = read_identity(conn)
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        try:
            with conn.transaction():
                conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
                conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_WAIT_TIMEOUT)))
                row = conn.execute("SELECT pg_export_snapshot(), now()").fetchone()
                assert row is not None
                snapshot, taken = str(row[0]), row[1].astimezone(UTC).replace(microsecond=0)
                resolved = _resolve(conn, scope.pieces)
                final = _final_name(Path(backup_dir), identity.database, taken.strftime("%Y%m%dT%H%M%SZ"),
                                    plan.path.current)
                partial = final.with_name(final.name + PARTIAL_SUFFIX)
                partial.mkdir(mode=0o700)
                files = _copy_pieces(target, identity.major_version, snapshot, partial, resolved)
                schema_sha = _dump_schema(target, identity.major_version, snapshot, resolved, partial / SCHEMA_FILE)
            backup = AtRiskBackup(final, files, schema_sha, identity.database, identity.system_identifier,
                                  plan.path.current, plan.path.target_label, plan.plan_hash,
                                  taken.isoformat().replace("+00:00", "Z"), round(time.monotonic() - started, 3))
            manifest = json.dumps(backup.manifest(), indent=1).encode()
            backup = replace(backup, manifest_sha256=hashlib.sha256(manifest).hexdigest())
            write_durably(partial / MANIFEST, manifest, 0o600)
            fsync_directory(partial)
            os.rename(partial, final)
            fsync_directory(final.parent)
        except AtRiskInsufficient:
            _discard(partial)
            raise
        except psycopg.Error as exc:
            _discard(partial)
            raise AtRiskBackupFailed(f"The at-risk backup of {target.redacted} failed: "
                                     f"{' '.join(target.scrub(str(exc)).split())}. {_NOTHING_KEPT}") from None
        except OSError as exc:
            _discard(partial)
            raise AtRiskBackupFailed(f"The at-risk backup could not be written in {backup_dir}: "
                                     f"{exc.strerror or exc}. {_advice(exc)} {_NOTHING_KEPT}") from None
        except BaseException:
            _discard(partial)
            raise
    return backup


_NOTHING_KEPT = "No backup folder was kept, the database was not changed, and nothing was rolled back."


def _insufficient(reasons: tuple[str, ...]) -> str:
    return ("An at-risk backup cannot protect this downgrade: the plan could not say exactly what it destroys ("
            + "; ".join(reasons) + "). Use a strategy that copies the whole database instead ("
            + ", ".join(WHOLE_DATABASE_STRATEGIES) + ", as the environment's policy accepts: -p backup_strategy "
            "full). Nothing was written; the database was not changed.")


def _advice(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "The backup folder ran out of space: free space there or choose another folder, then run again."
    return "Choose a folder this user can create and write to, then run again."


def _discard(partial: Path | None) -> None:
    if partial is not None and partial.exists():
        shutil.rmtree(partial, ignore_errors=True)


def _final_name(folder: Path, database: str, taken: str, revisions: tuple[str, ...]) -> Path:
    folder = folder.expanduser().absolute()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    stem = f"at-risk_{safe_file_name(database)}_{taken}_{safe_file_name(revisions[0]) if revisions else 'base'}"
    for attempt in range(1, 1000):
        final = folder / (stem if attempt == 1 else f"{stem}_{attempt}")
        if not final.exists() and not final.with_name(final.name + PARTIAL_SUFFIX).exists():
            return final
    raise OSError(errno.EEXIST, f"no free folder name for {stem}")


def _resolve(conn: psycopg.Connection[Any], pieces: tuple[AtRiskPiece, ...]) -> list[_Resolved]:
    """Each piece's table in the catalog; refused when a value to write back by key has no primary key."""
    resolved, problems = [], []
    for piece in pieces:
        found = conn.execute("SELECT c.oid, n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
                             "ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)",
                             [regclass_text(piece.table)]).fetchone()
        if found is None:
            problems.append(f"{piece.revision}: table {piece.table} does not exist now")
            continue
        oid, schema, name = found
        # Generated columns are computed again on insert; they are neither saved nor written back.
        columns = dict(conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
            "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum", [oid]).fetchall())
        key = tuple(r[0] for r in conn.execute(
            "SELECT a.attname FROM pg_index i CROSS JOIN unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.n", [oid]).fetchall())
        if piece.keep == "key_and_columns" and not key:
            problems.append(f"{piece.revision}: {piece.why}, and {schema}.{name} has no primary key to write the "
                            "values back by")
            continue
        missing = [c for c in piece.columns if c not in columns]
        if missing:
            problems.append(f"{piece.revision}: column {schema}.{name}.{missing[0]} does not exist now")
            continue
        wanted = list(columns) if piece.keep == "whole_rows" else [*key, *(c for c in piece.columns if c not in key)]
        resolved.append(_Resolved(piece, schema, name, key, tuple((c, columns[c]) for c in wanted)))
    if problems:
        raise AtRiskInsufficient(_insufficient(tuple(problems)))
    return resolved


def _copy_pieces(target: DatabaseTarget, server_major: int, snapshot: str, folder: Path,
                 resolved: list[_Resolved]) -> tuple[SavedFile, ...]:
    """Binary COPY of every piece into its file, by psql in the backup's snapshot, then each file synced and hashed.

    psql's \\copy writes the rows as the server sends them; reading them through Python costs a call per row,
    several times the server's scan on a big table.
    """
    names = [_file_name(index, item) for index, item in enumerate(resolved, 1)]
    script = ["BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;",
              f"SET TRANSACTION SNAPSHOT {sql.Literal(snapshot).as_string()};",
              f"SET lock_timeout = {sql.Literal(LOCK_WAIT_TIMEOUT).as_string()};"]
    for item, name in zip(resolved, names):
        query = _query(item).as_string()
        if "\n" in query or "\r" in query:
            # \copy takes one line; a condition whose text spans lines (a literal with a line break) cannot go.
            raise AtRiskInsufficient(_insufficient((f"{item.piece.revision}: {item.piece.why}: its condition spans "
                                                    "several lines, which psql's \\copy cannot take",)))
        # Relative names, in psql's working folder: nothing in them needs quoting.
        script.append(f"\\copy ({query}) TO '{name}' WITH (FORMAT binary)")
    script.append("COMMIT;")
    psql = find_pg_tool("psql", server_major)
    completed = subprocess.run(
        [str(psql.path), "-X", "--no-password", "-v", "ON_ERROR_STOP=1", "-f", "-"], input="\n".join(script) + "\n",
        cwd=folder, env=libpq_environment(target), capture_output=True, text=True, errors="replace", check=False,
        preexec_fn=end_with_parent)
    if completed.returncode != 0:
        stderr = stderr_tail(target.scrub(completed.stderr), 20)
        if "no space left" in stderr.lower():
            raise OSError(errno.ENOSPC, "No space left on device")
        raise AtRiskBackupFailed(f"psql's copy of the data at risk failed with exit code {completed.returncode}: "
                                 f"{stderr}. {_NOTHING_KEPT}")
    rows = [int(line.split()[1]) for line in completed.stdout.splitlines() if re.fullmatch(r"COPY \d+", line)]
    if len(rows) != len(resolved):
        raise AtRiskBackupFailed(f"psql reported {len(rows)} copies for {len(resolved)} pieces. {_NOTHING_KEPT}")
    saved = []
    for item, name, count in zip(resolved, names, rows):
        path = folder / name
        with path.open("rb") as handle:
            os.fsync(handle.fileno())  # a full disk can surface only here
        path.chmod(0o600)
        piece = item.piece
        saved.append(SavedFile(name, item.schema, item.table, piece.keep, item.key_columns, item.columns,
                               piece.predicate, count, path.stat().st_size, file_sha256(path), piece.revision,
                               piece.why))
    return tuple(saved)


def _file_name(index: int, item: _Resolved) -> str:
    part = "rows" if item.piece.keep == "whole_rows" else "_".join(item.piece.columns)
    return f"{index:02d}_{safe_file_name(item.schema)}.{safe_file_name(item.table)}_{safe_file_name(part)}.copy"


def _query(item: _Resolved) -> sql.Composed:
    """The rows and columns of a piece; no alias: a migration's condition may name the table, as live checks read it."""
    piece = item.piece
    conditions = [sql.SQL("({})").format(sql.SQL(piece.predicate))] if piece.predicate else []
    if piece.only_non_null:
        conditions.append(sql.SQL("({}) IS NOT NULL").format(
            sql.SQL(", ").join(sql.Identifier(item.table, c) for c in piece.columns)))
    return sql.SQL("SELECT {} FROM {}{}").format(
        sql.SQL(", ").join(sql.Identifier(item.table, c) for c, _ in item.columns),
        sql.Identifier(item.schema, item.table),
        sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conditions)) if conditions else sql.SQL(""))


def _dump_schema(target: DatabaseTarget, server_major: int, snapshot: str, resolved: list[_Resolved],
                 path: Path) -> str:
    """The DDL of every table a piece comes from, by pg_dump --schema-only in the backup's snapshot."""
    pg_dump = find_pg_tool("pg_dump", server_major)
    tables = dict.fromkeys(sql.Identifier(r.schema, r.table).as_string() for r in resolved)
    command = [str(pg_dump.path), "--schema-only", f"--snapshot={snapshot}", f"--file={path}",
               f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}", "--no-password",
               *(f"--table={table}" for table in tables)]
    if not tables:
        write_durably(path, b"-- The downgrade destroys no stored data: no table to describe.\n", 0o600)
        return file_sha256(path)
    completed = subprocess.run(command, env=libpq_environment(target), stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, errors="replace", check=False, preexec_fn=end_with_parent)
    if completed.returncode != 0:
        stderr = stderr_tail(target.scrub(completed.stderr), 20)
        if "no space left" in stderr.lower():
            raise OSError(errno.ENOSPC, "No space left on device")
        raise AtRiskBackupFailed(f"pg_dump --schema-only failed with exit code {completed.returncode}: {stderr}. "
                                 f"{_NOTHING_KEPT}")
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    return file_sha256(path)


def load_at_risk_backup(folder: Path) -> AtRiskBackup:
    """Read an at-risk backup's manifest and check every file against it (present, same size and sha256)."""
    folder = Path(folder).expanduser().absolute()
    manifest_path = folder / MANIFEST
    if folder.name.endswith(PARTIAL_SUFFIX):
        raise AtRiskBackupUnusable(f"{folder} is an unfinished at-risk backup (a run stopped while writing it): it "
                                   "cannot be restored from. Name a finished at-risk backup folder.")
    try:
        manifest_bytes = manifest_path.read_bytes()
        manifest = json.loads(manifest_bytes)
    except FileNotFoundError:
        raise AtRiskBackupUnusable(f"{folder} is not an at-risk backup: it has no {MANIFEST}. Name the folder an "
                                   "at-risk backup wrote (its path is in the run's record).") from None
    except (OSError, ValueError) as exc:
        raise AtRiskBackupUnusable(f"The manifest of {folder} cannot be read ({exc}): the backup is damaged. "
                                   "Restore it from a copy, or use a full backup.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise AtRiskBackupUnusable(f"{manifest_path} is not an at-risk backup manifest ({MANIFEST_FORMAT}).")
    files = tuple(SavedFile.from_dict(f) for f in manifest["files"])
    problems = []
    for saved in files:
        path = folder / saved.name
        if not path.is_file():
            problems.append(f"{saved.name} is missing")
        elif path.stat().st_size != saved.size_bytes or file_sha256(path) != saved.sha256:
            problems.append(f"{saved.name} differs from its manifest (size or sha256)")
    if problems:
        raise AtRiskBackupUnusable(f"The at-risk backup {folder} is damaged: {'; '.join(problems)}. Nothing was "
                                   "restored; restore its files from a copy, or use a full backup.")
    return AtRiskBackup(folder, files, str(manifest["schema"]["sha256"]), str(manifest["database"]),
                        str(manifest["system_identifier"]), tuple(manifest["revisions"]), str(manifest["target"]),
                        str(manifest["plan_hash"]), str(manifest["taken_at"]), float(manifest["seconds"]),
                        hashlib.sha256(manifest_bytes).hexdigest())
