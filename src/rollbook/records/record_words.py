"""A record's facts in the words a reader needs at a glance: what kind of run it was, who ran it and on whose say,
how its backup was checked. Plain text (no Markdown), so a page, a terminal or a notebook can each dress it.

An empty fact is said as "none", never left out: a missing approver is a fact a reviewer must see. Words never
claim more than the record holds: a backup read with `pg_restore --list` is "listed (not restored)".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rollbook.records.model import BackupFacts, RunRecord, WalRestorePointFacts

NONE = "none"
# How each verification method checked a backup (BackupFacts.verification).
BACKUP_CHECKS = {
    "list": "listed with pg_restore --list (not restored)",
    "restore": "restored into a scratch database",
}


@dataclass(frozen=True)
class Fact:
    """One line of "at a glance": what it is, and its value in words."""

    label: str
    value: str


def mode_in_words(record: RunRecord) -> str:
    """Dry run, executed, or a runbook that only reads; an execute request a run stopped before is not "executed"."""
    parameters = record.parameters or {}
    if "execute" not in parameters and record.execute is None:
        return "read only (this runbook does not change the database)"
    if not record.execute:
        return "dry run (changes nothing)"
    changed = any(step.step in ("downgrade", "restore") for step in record.steps)
    return "executed" if changed else "execute requested, stopped before any change"


def operator_in_words(record: RunRecord) -> str:
    """The operator and where the name came from: a login name taken by default says so."""
    parameters = record.parameters or {}
    source = parameters.get("operator_from") or (
        "parameter" if parameters.get("operator") else "login name (no operator parameter given)")
    return f"{record.operator or NONE} ({source})"


def accept_data_loss_in_words(record: RunRecord) -> str | None:
    """yes / no, or None for a runbook that has no such parameter."""
    parameters = record.parameters or {}
    if "accept_data_loss" not in parameters:
        return None
    return "yes" if parameters["accept_data_loss"] is True else "no"


def target_in_words(record: RunRecord) -> str | None:
    """The revision the run goes to, as resolved, and as requested when that differs; None if it has none."""
    requested = str((record.parameters or {}).get("target_revision") or "")
    if record.target and requested and requested != record.target:
        return f"{record.target} (requested {requested})"
    return record.target or requested or None


def revisions_in_words(record: RunRecord) -> str:
    """"before → after"; "?" for a revision the record does not hold, "base" for none."""
    return f"{_revisions(record.revision_before)} → {_revisions(record.revision_after)}"


def backup_in_words(backup: BackupFacts | None) -> str:
    """The backup file: its path, size and sha256, or that the run took none."""
    if backup is None:
        return "no backup taken by this run"
    return f"{backup.path}, {backup.size_bytes} bytes, sha256 {backup.sha256}"


def backup_check_in_words(backup: BackupFacts) -> str:
    """How the backup was checked and whether that passed; a check that did not restore it never reads "verified"."""
    check = BACKUP_CHECKS.get(backup.verification, f"checked by {backup.verification or 'an unrecorded method'}")
    return check if backup.verified else f"check FAILED ({check.split(' (')[0]})"


def glance(record: RunRecord) -> tuple[Fact, ...]:
    """The facts of a run a reader needs first, in order; those the runbook has no notion of are left out."""
    facts = [
        Fact("mode", mode_in_words(record)),
        Fact("target", target_in_words(record) or ""),
        Fact("revision before → after", revisions_in_words(record)),
        Fact("environment", record.environment or NONE),
        Fact("accept_data_loss", accept_data_loss_in_words(record) or ""),
        Fact("operator", operator_in_words(record)),
        Fact("approved by", record.approved_by or NONE),
        Fact("ticket", record.ticket or NONE),
        Fact("backup", backup_in_words(record.backup) if record.runbook in ("rollback", "backup") or record.backup
             else ""),
        Fact("backup check", backup_check_in_words(record.backup) if record.backup else ""),
        Fact("backup strategy", record.backup_strategy or ""),
        Fact("at-risk backup", at_risk_backup_in_words(record.at_risk_backup) if record.at_risk_backup else ""),
        Fact("restore point", restore_point_in_words(record.wal_restore_point) if record.wal_restore_point else ""),
    ]
    return tuple(fact for fact in facts if fact.value)


def restore_point_in_words(point: WalRestorePointFacts) -> str:
    """A pitr restore point: its name, where it is in the WAL, and whether the archiver reported it archived."""
    archived = "archived" if point.archived else f"NOT archived ({point.archived_detail or 'not reported'})"
    return f"{point.name} at LSN {point.lsn}, timeline {point.timeline}, WAL segment {point.segment}, {archived}"


def at_risk_backup_in_words(at_risk: dict[str, Any]) -> str:
    """An at-risk backup: its folder, and how many rows in how many files it saved."""
    return f"{at_risk.get('folder')}, {at_risk.get('rows')} rows in {len(at_risk.get('files', []))} file(s)"


def _revisions(value: list[str] | None) -> str:
    if value is None:
        return "?"
    return ", ".join(value) or "base"
