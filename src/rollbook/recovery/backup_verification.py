"""Verifying a backup: its sha256, then its archive read ("list") or restored into a scratch database ("restore")."""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rollbook import markdown
from rollbook.errors import BadInput
from rollbook.file_digest import path_sha256
from rollbook.parent_death import end_with_parent
from rollbook.pg.client_tools import PgTool, PgToolUnavailable, find_pg_tool, libpq_environment, stderr_tail
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import read_identity
from rollbook.pg.scratch import ScratchUnavailable, scratch_database
from rollbook.recovery.backup import STDERR_LINES, Backup, count_table_rows

VERIFY_METHODS = ("list", "restore")


@dataclass(frozen=True)
class BackupVerification:
    """Whether a backup can be read ("list") or restored with the same rows ("restore")."""

    backup: Backup
    method: str
    passed: bool
    detail: str
    seconds: float
    toc_entries: int
    table_rows_compared: tuple[tuple[str, int | None, int | None], ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup": str(self.backup.path),
            "sha256": self.backup.sha256,
            "method": self.method,
            "passed": self.passed,
            "detail": self.detail,
            "seconds": self.seconds,
            "toc_entries": self.toc_entries,
            "table_rows_compared": [
                {"table": table, "expected": expected, "restored": restored}
                for table, expected, restored in self.table_rows_compared
            ],
        }

    def to_text(self) -> str:
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"Backup verification ({self.method}) of {self.backup.path}: {verdict} in {self.seconds:.1f} s",
            f"  {self.detail}",
        ]
        for table, expected, restored in self.table_rows_compared:
            mark = "ok" if expected == restored else "DIFFERS"
            lines.append(f"  {table}: {_count(expected)} at backup, {_count(restored)} restored  {mark}")
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        text = markdown.table(
            ("Backup verification", ""),
            [
                ("File", markdown.code(str(self.backup.path))),
                ("Method", self.method),
                ("Result", "**passed**" if self.passed else "**FAILED**"),
                ("Detail", markdown.cell(self.detail)),
                ("Time", f"{self.seconds:.1f} s"),
            ],
        )
        if self.table_rows_compared:
            text += "\n\n" + markdown.table(
                ("Table", "Rows at backup", "Rows restored"),
                [(markdown.code(t), _count(e), _count(r)) for t, e, r in self.table_rows_compared],
            )
        return text


def verify_backup(backup: Backup, method: str, target: DatabaseTarget) -> BackupVerification:
    """Check a backup: its sha256 first, then "list" (the archive reads) or "restore" (into a scratch database)."""
    if method not in VERIFY_METHODS:
        raise BadInput(f"Unknown verification method {method!r}: use 'list' or 'restore'.")
    if method == "restore":
        try:
            with scratch_database(target) as scratch:
                return verify_by_restore_into(backup, scratch)
        except ScratchUnavailable as exc:
            return BackupVerification(backup, method, False, (
                f"Not verified by restore: {exc} Verify with method 'list' instead (it reads the whole archive "
                "without a database), or run the restore check with a role that may create databases."
            ), 0.0, 0, ())
    started = time.monotonic()
    problem = _checksum_problem(backup)
    if not problem:
        try:
            pg_restore = find_pg_tool("pg_restore", max(backup.pg_dump.major_version, backup.identity.major_version))
        except PgToolUnavailable as exc:
            problem = str(exc)
    if problem:
        return BackupVerification(backup, method, False, problem, round(time.monotonic() - started, 3), 0, ())
    passed, detail, entries = _check_listing(pg_restore, backup)
    return BackupVerification(backup, method, passed, detail, round(time.monotonic() - started, 3), entries, ())


def verify_by_restore_into(backup: Backup, scratch: DatabaseTarget, *, timeout_seconds: float | None = None,
                           rows_of: frozenset[str] | None = None) -> BackupVerification:
    """Restore `backup` (its checksum checked) into the empty database `scratch` and compare its rows with the
    counts taken at backup time; the caller owns `scratch` (a dress rehearsal then downgrades it).

    `rows_of` (tables named as take_backup names them): the whole schema, but the rows of only these tables,
    and only theirs compared.
    """
    started = time.monotonic()

    def result(
        passed: bool, detail: str, toc_entries: int = 0,
        compared: tuple[tuple[str, int | None, int | None], ...] = (),
    ) -> BackupVerification:
        return BackupVerification(
            backup, "restore", passed, detail, round(time.monotonic() - started, 3), toc_entries, compared
        )

    problem = _checksum_problem(backup)
    if problem:
        return result(False, problem)
    if not backup.rows_counted:
        return result(False, (
            "The backup was taken without row counts (take_backup(..., count_rows=True)), so a restore cannot "
            "be compared with anything: not verified. Take the backup again with row counts, or verify with "
            "method 'list'."
        ))
    with connect(scratch) as conn:
        needed = max(backup.pg_dump.major_version, backup.identity.major_version, read_identity(conn).major_version)
    try:
        pg_restore = find_pg_tool("pg_restore", needed)
    except PgToolUnavailable as exc:
        return result(False, str(exc))
    passed, detail, entries = _check_listing(pg_restore, backup)
    if not passed:
        return result(False, detail, entries)
    failure = _restore(pg_restore, backup, scratch, timeout_seconds, rows_of)
    if failure:
        return result(False, failure, entries)
    with connect(scratch) as conn:
        restored = dict(count_table_rows(conn))
    expected = backup.table_rows
    if rows_of is not None:
        expected = tuple((table, rows) for table, rows in expected if table in rows_of)
        restored = {table: rows for table, rows in restored.items() if table in rows_of}
    compared = _compare_rows(expected, restored)
    differing = [(t, e, r) for t, e, r in compared if e != r]
    if differing:
        shown = "; ".join(f"{t}: {_count(e)} at backup, {_count(r)} restored" for t, e, r in differing[:10])
        return result(False, (
            f"Restored into a scratch database, but {len(differing)} of {len(compared)} table(s) have other row "
            f"counts than at backup time: {shown}. Do not rely on this backup; take a new one and verify it."
        ), entries, compared)
    total = sum(rows for _, rows in expected)
    partly = "" if rows_of is None else (f" (the whole schema, the rows of {len(compared)} of "
                                         f"{len(backup.table_rows)} table(s))")
    return result(True, (
        f"Restored into a scratch database with pg_restore {pg_restore.major_version}{partly}: "
        f"all {len(compared)} table(s) hold the rows counted at backup time ({total} rows in all); the "
        "scratch database is dropped afterwards."
    ), entries, compared)


def _checksum_problem(backup: Backup) -> str | None:
    try:
        sha256_now = path_sha256(backup.path)
    except OSError as exc:
        return f"The backup file {backup.path} cannot be read: {exc.strerror or exc}. It cannot be verified or used."
    if sha256_now != backup.sha256:
        return (
            f"Checksum mismatch: {backup.path} now has sha256 {sha256_now}, but {backup.sha256} was "
            "recorded when the backup was taken. The file changed since (corruption or tampering): do not restore "
            "from it; take a new backup."
        )
    return None


def _check_listing(pg_restore: PgTool, backup: Backup) -> tuple[bool, str, int]:
    """pg_restore --list reads the archive's table of contents; every counted table must have its data in it."""
    completed = subprocess.run(
        [str(pg_restore.path), "--list", str(backup.path)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace", check=False,
        preexec_fn=end_with_parent,
    )
    if completed.returncode != 0:
        return False, (
            f"pg_restore --list could not read {backup.path} (exit code {completed.returncode}): "
            f"{stderr_tail(completed.stderr, STDERR_LINES) or 'no message'}. The archive is damaged or not a "
            "pg_dump archive: do not restore from it; take a new backup."
        ), 0
    entries = [line for line in completed.stdout.splitlines() if line.strip() and not line.startswith(";")]
    descriptions = [_description(line) for line in entries if ";" in line]
    if not entries:
        return False, f"pg_restore --list found no entries in {backup.path}: the archive holds nothing.", 0
    missing = [
        table for table, _ in backup.table_rows
        if not any(_is_table_data(entry, *_split_qualified(table)) for entry in descriptions)
    ]
    if missing:
        return False, (
            f"The archive lists {len(entries)} entries but no data for {len(missing)} table(s) counted at backup "
            f"time: {', '.join(missing[:10])}. Do not rely on this backup; take a new one."
        ), len(entries)
    checked = (
        f"; data for all {len(backup.table_rows)} counted table(s) is in it" if backup.table_rows
        else "; table data was not checked table by table (no row counts were taken with the backup)"
        if not backup.rows_counted else ""
    )
    return True, (
        f"pg_restore --list reads the archive: {len(entries)} entries{checked}. The file's sha256 matches the "
        "one recorded at backup time."
    ), len(entries)


def _description(entry: str) -> str:
    """An entry "<id>; <oid> <oid> <type> <schema> <name> <owner>" of pg_restore --list, from its type on."""
    return entry.split(";", 1)[1].strip().split(" ", 2)[-1]


def _is_table_data(description: str, schema: str, name: str) -> bool:
    prefix = f"TABLE DATA {schema} {name}"
    return description == prefix or description.startswith(prefix + " ")


def _split_qualified(qualified: str) -> tuple[str, str]:
    """Undo format('%I.%I'): split at the dot outside quotes and unquote both parts."""
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    index = 0
    while index < len(qualified):
        char = qualified[index]
        if quoted:
            if char == '"' and qualified[index + 1:index + 2] == '"':
                current.append('"')
                index += 1
            elif char == '"':
                quoted = False
            else:
                current.append(char)
        elif char == '"':
            quoted = True
        elif char == "." and not parts:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return (parts[0], parts[1]) if len(parts) == 2 else ("", parts[0])


def _restore(pg_restore: PgTool, backup: Backup, scratch: DatabaseTarget, timeout_seconds: float | None,
             rows_of: frozenset[str] | None) -> str | None:
    # A directory-format dump restores with as many jobs as wrote it (pg_restore -j reads only that format here).
    jobs = [f"--jobs={backup.jobs}"] if backup.format == "directory" and backup.jobs > 1 else []
    with tempfile.TemporaryDirectory(prefix="rollbook-restore-list-") as directory:
        try:
            listed = [] if rows_of is None else [f"--use-list={_rows_only_of(pg_restore, backup, rows_of, directory)}"]
        except subprocess.CalledProcessError as exc:
            # The same listing has just succeeded in the check before; a failure now is the file or the disk.
            return (f"pg_restore --list of {backup.path} failed (exit code {exc.returncode}) while choosing the tables "
                    "to restore: check the backup file and the disk, then run again.")
        return _run_restore(pg_restore, backup, scratch, timeout_seconds, [*jobs, *listed])


def _rows_only_of(pg_restore: PgTool, backup: Backup, rows_of: frozenset[str], directory: str) -> Path:
    """A pg_restore list of the whole archive with every other table's data commented out (pg_restore -L)."""
    listing = subprocess.run([str(pg_restore.path), "--list", str(backup.path)], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, errors="replace", check=True,
                             preexec_fn=end_with_parent).stdout
    kept = [_split_qualified(table) for table in rows_of]
    lines = []
    for line in listing.splitlines():
        description = "" if line.startswith(";") or ";" not in line else _description(line)
        other_data = description.startswith("TABLE DATA ") and not any(_is_table_data(description, *t) for t in kept)
        lines.append(f";{line}" if other_data else line)
    path = Path(directory) / "restore.list"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run_restore(pg_restore: PgTool, backup: Backup, scratch: DatabaseTarget, timeout_seconds: float | None,
                 options: list[str]) -> str | None:
    path = backup.path
    try:
        completed = subprocess.run(
            [str(pg_restore.path), "--exit-on-error", "--no-owner", "--no-password", *options,
             f"--dbname={scratch.database}", str(path)],
            env=libpq_environment(scratch), stdin=subprocess.DEVNULL, capture_output=True, text=True,
            errors="replace", check=False, preexec_fn=end_with_parent, timeout=timeout_seconds,
        )
    except subprocess.TimeoutExpired:
        # subprocess.run has killed pg_restore; the caller drops the half-restored database.
        return (f"pg_restore did not restore {path} within {timeout_seconds:.0f} s and was stopped: the time "
                "allowed for it ran out.")
    if completed.returncode == 0:
        return None
    return (
        f"pg_restore could not restore {path} into a scratch database (exit code {completed.returncode}): "
        f"{stderr_tail(scratch.scrub(completed.stderr), STDERR_LINES) or 'no message'}. A restore of this backup "
        "would fail the same way: fix the cause, or take a new backup and verify it."
    )


def _compare_rows(
    expected: tuple[tuple[str, int], ...], restored: dict[str, int]
) -> tuple[tuple[str, int | None, int | None], ...]:
    compared: list[tuple[str, int | None, int | None]] = [
        (table, rows, restored.get(table)) for table, rows in expected
    ]
    known = {table for table, _ in expected}
    compared += [(table, None, rows) for table, rows in restored.items() if table not in known]
    return tuple(compared)


def _count(value: int | None) -> str:
    return "absent" if value is None else str(value)
