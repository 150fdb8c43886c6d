"""The pitr strategy: a named restore point in a server's continuously archived write-ahead log, seen archived.

A team with continuous archiving (pgBackRest, WAL-G, a managed service, or an archive_command) can put
the whole cluster back to any moment its archive covers. Before a rollback, rollbook names that moment:
it creates a restore point, switches to a new WAL segment so the one holding the point is complete, and
waits until pg_stat_archiver reports that segment archived. What a restore needs (the point's name, LSN,
timeline, segment, and the recovery settings) goes into the record; the restore itself is done with the
team's own tool and base backups, which rollbook neither takes nor reads.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from rollbook import markdown
from rollbook.errors import BadInput
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import DatabaseIdentity, read_identity
from rollbook.policy.rules import PITR_ARCHIVE_WAIT_SECONDS
from rollbook.records.model import RecordedIdentity, WalRestorePointFacts

_POLL_SECONDS = 0.1
# WAL segment file names: 8 hex digits of timeline, then 16 of position (history files are named otherwise).
_SEGMENT_NAME_LENGTH = 24

_READINESS_SQL = """
SELECT current_setting('archive_mode'), current_setting('wal_level'), pg_is_in_recovery(),
       has_function_privilege('pg_create_restore_point(text)', 'EXECUTE'),
       has_function_privilege('pg_switch_wal()', 'EXECUTE'),
       a.last_archived_wal, a.last_archived_time, a.last_failed_wal, a.last_failed_time
FROM pg_stat_archiver a
"""
_ARCHIVER_SQL = "SELECT last_archived_wal, last_failed_wal, last_failed_time, now() FROM pg_stat_archiver"


@dataclass(frozen=True)
class WalRestorePoint:
    """A restore point rollbook created, and whether the segment holding it reached the archive."""

    name: str
    lsn: str
    timeline: int
    segment: str
    archived: bool
    archived_detail: str
    created_at: str
    seconds: float
    identity: DatabaseIdentity
    revisions: tuple[str, ...]

    def recovery_settings(self) -> dict[str, str]:
        """The settings that recover a base backup taken before the point to exactly this point.

        `pause` leaves the restored server read-only at the point, so the data can be checked before
        `SELECT pg_promote()` opens it; the team's restore_command fetches the archived segments.
        """
        return {"recovery_target_name": self.name, "recovery_target_timeline": str(self.timeline),
                "recovery_target_action": "pause"}

    def record_facts(self) -> WalRestorePointFacts:
        """What the record keeps under "wal_restore_point"."""
        identity = self.identity
        return WalRestorePointFacts(
            name=self.name, lsn=self.lsn, timeline=self.timeline, segment=self.segment, archived=self.archived,
            archived_detail=self.archived_detail, created_at=self.created_at, seconds=self.seconds,
            identity=RecordedIdentity(database=identity.database, server_version=identity.server_version,
                                      system_identifier=identity.system_identifier,
                                      server_started=identity.server_started, user=identity.user),
            revisions=list(self.revisions), recovery_settings=self.recovery_settings())

    def to_dict(self) -> dict[str, Any]:
        return self.record_facts().model_dump(mode="json")

    def to_text(self) -> str:
        settings = ", ".join(f"{k} = '{v}'" for k, v in self.recovery_settings().items())
        return "\n".join([
            f"Restore point {self.name} at LSN {self.lsn}, timeline {self.timeline}, segment {self.segment}",
            f"  {self.archived_detail}",
            f"  to restore to it: a base backup taken before it, your restore_command, and {settings}",
        ])

    def _repr_markdown_(self) -> str:
        settings = "\n".join(f"{k} = '{v}'" for k, v in self.recovery_settings().items())
        table = markdown.table(("Restore point", ""), [
            ("Name", markdown.code(self.name)),
            ("LSN", markdown.code(self.lsn)),
            ("Timeline", str(self.timeline)),
            ("WAL segment", markdown.code(self.segment)),
            ("Archived", markdown.cell(self.archived_detail)),
            ("Database", markdown.cell(self.identity.to_text())),
            ("Created", f"{self.created_at} ({self.seconds:.1f} s)"),
        ])
        return (f"{table}\n\nTo restore the cluster to this point: restore a base backup taken before it with your "
                f"archiving tool, set its restore_command, and add to postgresql.conf (with an empty "
                f"`recovery.signal`):\n\n```ini\n{settings}\n```")


def create_wal_restore_point(
    target: DatabaseTarget, run_id: str, *, revisions: tuple[str, ...], wait_seconds: float = PITR_ARCHIVE_WAIT_SECONDS,
) -> WalRestorePoint:
    """Check archiving works, create the restore point `rollbook-<run_id>`, switch WAL, wait for its segment archived.

    Refuses (BadInput) before creating anything when archiving is off or failing, the server is a standby,
    or the role may not create restore points. `archived` is False when the wait ran out.
    """
    started = time.monotonic()
    name = f"rollbook-{run_id}"
    with connect(target) as conn:
        check_wal_archiving(conn)
        identity = read_identity(conn)
        row = conn.execute("SELECT pg_create_restore_point(%s)::text, now()", (name,)).fetchone()
        assert row is not None
        lsn, created = str(row[0]), row[1]
        segment_row = conn.execute("SELECT pg_walfile_name(%s::pg_lsn)", (lsn,)).fetchone()
        assert segment_row is not None
        segment = str(segment_row[0])
        # The segment holding the point is archived only once it is complete: end it now.
        conn.execute("SELECT pg_switch_wal()")
        archived, detail = _wait_archived(conn, segment, created, wait_seconds)
    return WalRestorePoint(
        name=name, lsn=lsn, timeline=int(segment[:8], 16), segment=segment, archived=archived,
        archived_detail=detail, created_at=created.astimezone(UTC).isoformat(timespec="seconds").replace(
            "+00:00", "Z"),
        seconds=round(time.monotonic() - started, 3), identity=identity, revisions=tuple(revisions))


def check_wal_archiving(conn: psycopg.Connection[Any]) -> None:
    """Refuse (BadInput, nothing created) unless the server archives WAL, without failures, and the role may use it."""
    row = conn.execute(_READINESS_SQL).fetchone()
    assert row is not None
    mode, wal_level, in_recovery, may_mark, may_switch, archived_wal, archived_at, failed_wal, failed_at = row
    instead = "or choose another strategy: -p backup_strategy full. Nothing was changed."
    if mode not in ("on", "always"):
        raise BadInput(
            f"The pitr strategy needs continuous archiving, but this server has archive_mode = {mode}: set "
            "archive_mode = on and an archive_command (or archive_library) that copies each WAL segment to your "
            f"archive, restart the server, and take a base backup; {instead}")
    if wal_level == "minimal":
        raise BadInput(f"The pitr strategy needs wal_level = replica (or logical), not minimal; {instead}")
    if in_recovery:
        raise BadInput("The server is a standby (in recovery): a restore point can only be created on the primary. "
                       f"Run against the primary, {instead}")
    if not (may_mark and may_switch):
        raise BadInput(
            f"The role {conn.info.user} may not create restore points or switch WAL: as a superuser, run GRANT "
            "EXECUTE ON FUNCTION pg_create_restore_point(text), pg_switch_wal() TO that role (or connect as a "
            f"superuser), {instead}")
    if failed_at is not None and (archived_at is None or failed_at > archived_at):
        since = f"last archived {archived_wal} at {archived_at:%Y-%m-%d %H:%M:%S %Z}" if archived_at else \
            "nothing archived yet"
        raise BadInput(
            f"WAL archiving is failing on this server: pg_stat_archiver shows {failed_wal} failed at "
            f"{failed_at:%Y-%m-%d %H:%M:%S %Z} ({since}). Fix the archive_command (see the server log), check that "
            f"a segment is archived again, {instead}")


def _wait_archived(
    conn: psycopg.Connection[Any], segment: str, created: datetime, wait_seconds: float
) -> tuple[bool, str]:
    deadline = time.monotonic() + wait_seconds
    while True:
        # Statistics are read once per transaction and cached: a fresh look each time.
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(_ARCHIVER_SQL).fetchone()
        assert row is not None
        last_archived, last_failed, failed_at, now = row
        if _at_or_after(last_archived, segment):
            return True, (f"pg_stat_archiver reports {last_archived} archived, so the segment {segment} holding the "
                          f"point is in the archive (as the archive_command reported; rollbook did not read the "
                          f"archive itself)")
        if time.monotonic() >= deadline:
            failing = (f"; the last failure was {last_failed} at {failed_at:%H:%M:%S %Z}"
                       if failed_at is not None and failed_at >= created else "")
            return False, (f"the segment {segment} holding the point was not archived within {wait_seconds:g} s "
                           f"(pg_stat_archiver's last archived segment: {last_archived or 'none'}{failing}); check "
                           "the archive_command and the server log")
        time.sleep(_POLL_SECONDS)


def _at_or_after(archived: str | None, segment: str) -> bool:
    """Segment names sort by timeline, then position; a history file's name is no segment."""
    return archived is not None and len(archived) == _SEGMENT_NAME_LENGTH and archived >= segment
