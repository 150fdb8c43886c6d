"""Verifying a restore: the restored database's revision and row counts against the backup's record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollbook import markdown
from rollbook.execution.verification import VerificationCheck
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.project.migrations import MigrationProject
from rollbook.recovery.archived_backups import ArchivedBackup
from rollbook.recovery.restore_tables import TABLES_SQL, count_text, revisions_or_none, revisions_text, scan_table


@dataclass(frozen=True)
class RestoreVerification:
    """The restored database against what the backup's record says it held."""

    database: str
    checks: tuple[VerificationCheck, ...]
    table_rows: tuple[tuple[str, int | None, int | None], ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.status != "failed" for c in self.checks)

    @property
    def failed(self) -> tuple[VerificationCheck, ...]:
        return tuple(c for c in self.checks if c.status == "failed")

    def to_dict(self) -> dict[str, Any]:
        return {"database": self.database, "passed": self.passed, "checks": [c.to_dict() for c in self.checks],
                "table_rows": [{"table": t, "at_backup": b, "restored": r} for t, b, r in self.table_rows]}

    def to_text(self) -> str:
        lines = [f"Verification of {self.database}: {'PASSED' if self.passed else 'FAILED'}"]
        lines += [f"  {c.status.upper():11} {c.name}: {c.detail}" for c in self.checks]
        return "\n".join(lines)

    def _repr_markdown_(self) -> str:
        # Words, not emoji: a page or terminal without an emoji font shows those as empty boxes.
        marks = {"passed": "passed", "failed": "**FAILED**", "not_checked": "not checked"}
        text = markdown.table(["check", "result", "detail"], [
            (markdown.cell(c.name), marks.get(c.status, c.status), markdown.cell(c.detail)) for c in self.checks])
        if self.table_rows:
            text += "\n\n" + markdown.table(["table", "rows at backup", "rows restored"], [
                (markdown.code(t), count_text(b), count_text(r)) for t, b, r in self.table_rows])
        return text


def verify_restore(restored: DatabaseTarget, backup: ArchivedBackup, project: MigrationProject) -> RestoreVerification:
    """The revision and every table's row count in `restored`, against those recorded when the backup was taken."""
    with connect(restored) as conn:
        revisions = revisions_or_none(conn, project)
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            counts = {qualified: scan_table(conn, schema, name, None)[0]
                      for qualified, schema, name in conn.execute(TABLES_SQL).fetchall()}
    expected = tuple(sorted(backup.revisions))
    revision = VerificationCheck(
        "revision", "passed" if revisions is not None and tuple(sorted(revisions)) == expected else "failed",
        f"the database is at {revisions_text(revisions or ()) if revisions is not None else '(no version table)'}; "
        f"the backup was taken at {backup.revision_label}")
    if backup.table_rows is None:
        rows = VerificationCheck("row counts", "not_checked",
                                 f"run {backup.run_id} recorded no row counts with the backup")
        return RestoreVerification(restored.redacted, (revision, rows))
    recorded = dict(backup.table_rows)
    compared = tuple((t, recorded.get(t), counts.get(t)) for t in sorted(set(recorded) | set(counts)))
    differing = [f"{t}: {count_text(b)} at backup, {count_text(r)} now" for t, b, r in compared
                 if b != r and b is not None]
    extra = [t for t, b, _ in compared if b is None]
    rows = VerificationCheck("row counts", "failed" if differing else "passed",
                        "; ".join(differing) if differing else
                        f"all {len(recorded)} table(s) hold the rows counted at backup time "
                        f"({sum(recorded.values())} rows)")
    others = VerificationCheck("tables not in the backup", "failed" if extra else "passed",
                          f"still in the database: {', '.join(extra)}" if extra else "none")
    return RestoreVerification(restored.redacted, (revision, rows, others), compared)
