"""The backup before a rollback: a pg_dump archive that is complete or absent, hashed, and verifiable.

Two formats: one custom-format file (`pg_dump -Fc`, the `full` strategy), or a directory-format folder
written by parallel jobs (`pg_dump -Fd -j N`, the `parallel` strategy), hashed file by file (a manifest).

Taking it is this module; verifying it (its sha256, its archive read or restored) is backup_verification's.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from rollbook import markdown
from rollbook.errors import BadInput, RollbookError
from rollbook.file_digest import file_sha256, folder_manifest, manifest_sha256
from rollbook.file_publishing import fsync_directory, publish_new
from rollbook.parent_death import end_with_parent
from rollbook.pg.client_tools import PgTool, find_pg_tool, libpq_environment, stderr_tail
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import DatabaseIdentity, read_identity

BACKUP_SUFFIX = ".dump"
DIRECTORY_SUFFIX = ".dumpdir"
PARTIAL_SUFFIX = ".partial"
# A rollback is often taken while something else holds locks; waiting forever would hide that.
LOCK_WAIT_TIMEOUT = "60s"
ROW_COUNT_STATEMENT_TIMEOUT = "10min"
STDERR_LINES = 20

_USER_TABLES_SQL = r"""
SELECT n.nspname, c.relname, format('%I.%I', n.nspname, c.relname)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%'
  AND n.nspname NOT LIKE 'pg\_temp\_%'
  -- pg_dump leaves out the data of tables an extension owns; so do the counts.
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 3
"""


class BackupFailed(RollbookError):
    """No backup was made; no file that looks like one was left behind."""


@dataclass(frozen=True)
class Backup:
    """A finished pg_dump archive (custom format) and what it holds."""

    path: Path
    size_bytes: int
    sha256: str
    seconds: float
    pg_dump: PgTool
    identity: DatabaseIdentity
    revisions: tuple[str, ...]
    taken_at: str
    table_rows: tuple[tuple[str, int], ...]
    # Separate from table_rows: a database without tables counts to an empty tuple too.
    rows_counted: bool = False
    # "custom" (one file) or "directory" (a folder written by `jobs` parallel pg_dump workers).
    format: str = "custom"
    jobs: int = 1
    # A directory backup's files: (name in the folder, size, sha256); sha256 above is this manifest's digest.
    files: tuple[tuple[str, int, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "seconds": self.seconds,
            "pg_dump": self.pg_dump.to_dict(),
            "identity": self.identity.to_dict(),
            "revisions": list(self.revisions),
            "taken_at": self.taken_at,
            "rows_counted": self.rows_counted,
            "table_rows": [{"table": table, "rows": rows} for table, rows in self.table_rows],
            "format": self.format,
            "jobs": self.jobs,
            "files": [{"name": name, "size_bytes": size, "sha256": digest} for name, size, digest in self.files],
        }

    def to_text(self) -> str:
        lines = [
            f"Backup: {self.path}",
            f"  {_size(self.size_bytes)}, sha256 {self.sha256}{self._format_text()}",
            f"  {self.identity.to_text()}",
            f"  at revision {_revisions(self.revisions)}, taken {self.taken_at} in {self.seconds:.1f} s "
            f"with {self.pg_dump.to_text()}",
        ]
        if self.rows_counted:
            lines.append(f"  rows in the same snapshot: {_rows_text(self.table_rows)}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        rows = [
            ("File", markdown.code(str(self.path))),
            ("Size", _size(self.size_bytes)),
            ("sha256", markdown.code(self.sha256) + markdown.cell(self._format_text())),
            ("Database", markdown.cell(self.identity.to_text())),
            ("Revision", markdown.code(_revisions(self.revisions))),
            ("Taken", f"{self.taken_at} ({self.seconds:.1f} s)"),
            ("pg_dump", markdown.cell(self.pg_dump.to_text())),
        ]
        if self.rows_counted:
            rows.append(("Rows", markdown.cell(_rows_text(self.table_rows))))
        return markdown.table(("Backup", ""), rows)

    def _format_text(self) -> str:
        if self.format != "directory":
            return ""
        return (f" (of the manifest of {len(self.files)} files; directory format, "
                f"written by {self.jobs} parallel jobs)")


def take_backup(
    target: DatabaseTarget, backup_dir: Path, *, revisions: tuple[str, ...], count_rows: bool = False,
    jobs: int | None = None,
) -> Backup:
    """pg_dump `target` into `backup_dir`; optionally count every table's rows in the same snapshot.

    Without `jobs`: one custom-format file. With `jobs`: a directory-format folder written by that many
    parallel pg_dump workers, all reading the same exported snapshot.
    The archive is written as `<name>.partial` (mode 0600/0700: it holds all the data) and renamed only
    once pg_dump succeeded and every file is on disk; on any failure it is deleted.
    """
    if isinstance(revisions, str):
        raise BadInput("revisions must be a tuple of revision ids (for example status.current), not one string.")
    started = time.monotonic()
    folder = _usable_folder(Path(backup_dir))
    with connect(target) as conn:
        identity = read_identity(conn)
        pg_dump = find_pg_tool("pg_dump", identity.major_version)
        env = libpq_environment(target)
        # Export this transaction's snapshot so pg_dump and the counts see the very same data.
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        partial: Path | None = None
        try:
            with conn.transaction():
                snapshot, taken = _export_snapshot(conn)
                table_rows = count_table_rows(conn) if count_rows else ()
                final, partial = _reserve_names(folder, identity.database, taken, revisions,
                                                directory=jobs is not None)
                _run_pg_dump(pg_dump, env, target, partial, snapshot, jobs)
            files: tuple[tuple[str, int, str], ...] = ()
            if jobs is None:
                size, digest = _sync_and_hash(partial)
                final = _publish(partial, final)
            else:
                files = _sync_folder(partial)
                size, digest = sum(size for _, size, _ in files), manifest_sha256(files)
                final = _publish_folder(partial, final)
        except psycopg.Error as exc:
            _discard(partial)
            raise BackupFailed(
                f"The backup of {target.redacted} failed: "
                f"{_one_line(target.scrub(str(exc)))}. {_advice(str(exc))} {_NOTHING_KEPT}"
            ) from None
        except OSError as exc:
            _discard(partial)
            where = partial.parent if partial is not None else folder
            raise BackupFailed(
                f"The backup file in {where} could not be written: {exc.strerror or exc}. "
                f"{_advice(str(exc))} {_NOTHING_KEPT}"
            ) from None
        except BaseException:
            _discard(partial)
            raise
    return Backup(
        path=final,
        size_bytes=size,
        sha256=digest,
        seconds=round(time.monotonic() - started, 3),
        pg_dump=pg_dump,
        identity=identity,
        revisions=tuple(revisions),
        taken_at=taken.isoformat(timespec="seconds").replace("+00:00", "Z"),
        table_rows=table_rows,
        rows_counted=count_rows,
        format="custom" if jobs is None else "directory",
        jobs=jobs or 1,
        files=files,
    )


# --- taking a backup -------------------------------------------------------------------------

_NOTHING_KEPT = "No backup file was kept, and the database was not changed."


def _usable_folder(folder: Path) -> Path:
    """Create the folder if needed and prove it takes a file; otherwise fail without leaving anything."""
    folder = folder.expanduser().absolute()
    missing: list[Path] = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    try:
        # 0700: the folder will hold every row of the database.
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not folder.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "not a folder")
        with tempfile.TemporaryFile(dir=folder, prefix=".rollbook-probe-"):
            pass
    except OSError as exc:
        for created in missing:  # deepest first: remove only what this call made
            try:
                created.rmdir()
            except OSError:
                pass
        raise BackupFailed(
            f"The backup folder {folder} cannot be used: {exc.strerror or exc}. Choose a folder this user can "
            "create and write to, with room for a dump of the database, and pass it as the backup folder. "
            "pg_dump was not run; nothing was changed."
        ) from None
    return folder


def _export_snapshot(conn: psycopg.Connection[Any]) -> tuple[str, datetime]:
    # The transaction stays idle while pg_dump runs; a server-side idle timeout must not end it.
    conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
    conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(ROW_COUNT_STATEMENT_TIMEOUT)))
    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(LOCK_WAIT_TIMEOUT)))
    # The server's transaction start is the snapshot's time; the client's clock may be off.
    row = conn.execute("SELECT pg_export_snapshot(), now()").fetchone()
    assert row is not None
    return str(row[0]), row[1].astimezone(UTC).replace(microsecond=0)


def count_table_rows(conn: psycopg.Connection[Any]) -> tuple[tuple[str, int], ...]:
    """Rows of every user table; ONLY, because pg_dump's data of a parent table excludes its children."""
    counts = []
    for schema, name, qualified in conn.execute(_USER_TABLES_SQL).fetchall():
        row = conn.execute(
            sql.SQL("SELECT count(*) FROM ONLY {}").format(sql.Identifier(schema, name))
        ).fetchone()
        assert row is not None
        counts.append((str(qualified), int(row[0])))
    return tuple(counts)


def safe_file_name(text: str) -> str:
    """`text` with anything but letters, digits, `_`, `.` and `-` replaced: a part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip(".") or "_"


def _reserve_names(
    folder: Path, database: str, taken: datetime, revisions: tuple[str, ...], *, directory: bool = False
) -> tuple[Path, Path]:
    """The final name and its partial file (or empty folder), created private; never an existing name."""
    suffix = DIRECTORY_SUFFIX if directory else BACKUP_SUFFIX
    stem = f"backup_{safe_file_name(database)}_{taken.strftime('%Y%m%dT%H%M%SZ')}_" \
           f"{safe_file_name(revisions[0]) if revisions else 'base'}"
    for attempt in range(1, 1000):
        final = folder / f"{stem}{'' if attempt == 1 else f'_{attempt}'}{suffix}"
        partial = final.with_name(final.name + PARTIAL_SUFFIX)
        if final.exists():
            continue
        try:
            if directory:
                # pg_dump -Fd writes into an empty folder; mkdir is the exclusive reservation.
                partial.mkdir(mode=0o700)
            else:
                os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            continue
        return final, partial
    raise OSError(errno.EEXIST, f"no free file name for {stem}{suffix}")


def _run_pg_dump(pg_dump: PgTool, env: dict[str, str], target: DatabaseTarget, partial: Path, snapshot: str,
                 jobs: int | None) -> None:
    command = [
        str(pg_dump.path),
        *(["--format=custom"] if jobs is None else ["--format=directory", f"--jobs={jobs}"]),
        f"--file={partial}",
        f"--snapshot={snapshot}",
        f"--lock-wait-timeout={LOCK_WAIT_TIMEOUT}",
        "--no-password",  # a prompt would hang a notebook; the password comes from the environment
    ]
    try:
        completed = subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", check=False,
            preexec_fn=end_with_parent,  # a dead kernel leaves no pg_dump writing for nobody
        )
    except OSError as exc:
        raise BackupFailed(
            f"{pg_dump.path} could not be started: {exc.strerror or exc}. Check that it is executable, or set "
            f"ROLLBOOK_PG_BIN to a folder holding a working pg_dump. {_NOTHING_KEPT}"
        ) from None
    if completed.returncode == 0:
        return
    stderr = stderr_tail(target.scrub(completed.stderr), STDERR_LINES)
    if completed.returncode < 0:
        what = f"pg_dump was stopped by signal {-completed.returncode}"
    else:
        what = f"pg_dump failed with exit code {completed.returncode}"
    raise BackupFailed(
        f"The backup of {target.redacted} failed: {what}"
        + (f": {stderr}." if stderr else ".")
        + f" {_advice(stderr, killed=completed.returncode < 0)} {_NOTHING_KEPT}"
    )


def _sync_and_hash(path: Path) -> tuple[int, str]:
    """Flush the archive to disk (a full disk can surface only here) and hash it."""
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
    size = path.stat().st_size
    if size == 0:
        raise OSError(errno.EIO, "pg_dump wrote an empty file")
    return size, file_sha256(path)


def _sync_folder(folder: Path) -> tuple[tuple[str, int, str], ...]:
    """Flush every file of a directory-format dump and the folder itself, then hash each file (the manifest)."""
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    fsync_directory(folder)
    files = folder_manifest(folder)
    if not any(name == "toc.dat" for name, _, _ in files):
        raise OSError(errno.EIO, "pg_dump wrote no toc.dat")
    return files


def _publish_folder(partial: Path, final: Path) -> Path:
    """Rename the finished folder to a free final name; rename(2) replaces no file and no folder holding files."""
    candidate = final
    for attempt in range(2, 1000):
        # An empty folder of that name is the only thing a rename would replace; names carry the time to the second.
        if not candidate.exists():
            try:
                partial.rename(candidate)
                break
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                    raise
        candidate = final.with_name(f"{final.name.removesuffix(DIRECTORY_SUFFIX)}_{attempt}{DIRECTORY_SUFFIX}")
    else:
        raise OSError(errno.EEXIST, f"no free folder name for {final.name}")
    fsync_directory(partial.parent)
    return candidate


def _publish(partial: Path, final: Path) -> Path:
    """Give the finished archive its final name without ever replacing an existing file."""
    candidate = final
    for attempt in range(2, 1000):
        if publish_new(partial, candidate):
            break
        candidate = final.with_name(f"{final.name.removesuffix(BACKUP_SUFFIX)}_{attempt}{BACKUP_SUFFIX}")
    else:
        raise OSError(errno.EEXIST, f"no free file name for {final.name}")
    try:
        partial.unlink(missing_ok=True)
        fsync_directory(partial.parent)
    except BaseException:
        candidate.unlink(missing_ok=True)
        raise
    return candidate


def _discard(partial: Path | None) -> None:
    if partial is not None:
        try:
            if partial.is_dir():
                shutil.rmtree(partial)
            else:
                partial.unlink(missing_ok=True)
        except OSError:
            pass


def _advice(message: str, *, killed: bool = False) -> str:
    lowered = message.lower()
    if "no space left" in lowered or "disk full" in lowered or "quota" in lowered:
        return ("The backup folder ran out of space: free space there or choose a folder with room for the "
                "whole dump, then take the backup again.")
    if killed:
        return "Something stopped pg_dump (a person, a timeout, or the out-of-memory killer): take the backup again."
    if "lock" in lowered and ("timeout" in lowered or "could not obtain" in lowered):
        return ("Another session holds a lock on a table (a running migration or a long transaction): find it in "
                "pg_stat_activity, let it finish, and take the backup again.")
    if "permission denied" in lowered:
        return ("The role may not read everything in the database: back up as the owner of the tables or a role "
                "with pg_read_all_data.")
    if "password" in lowered or "authentication" in lowered:
        return "pg_dump could not log in: check the password (PGPASSWORD, ~/.pgpass or the URL)."
    return "Fix the cause reported above and take the backup again."


# --- rendering -------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip()).rstrip(".")


def _size(size_bytes: int) -> str:
    value = float(size_bytes)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{size_bytes} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"


def _revisions(revisions: tuple[str, ...]) -> str:
    return ", ".join(revisions) or "base (no revision applied)"


def _rows_text(table_rows: tuple[tuple[str, int], ...]) -> str:
    return ", ".join(f"{table} {rows}" for table, rows in table_rows) or "(no tables)"

