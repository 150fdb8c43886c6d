"""A run's record as a few lines a person reads at 3 a.m.: what `rollbook run` ends with and `archive show` prints.

The verdict, why (for a run that did not succeed: a refusal's headline and one line per failed rule),
what the run did (mode, database, target, revision before and after), the backup and how it was
verified, and each check after the change. No plan detail and no SQL: the record holds those.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rollbook.durations import duration_text, lock_wait_text
from rollbook.outcomes import ExitCode
from rollbook.records.archive import Archive, ArchivedRecord
from rollbook.records.archive_files import utc
from rollbook.records.model import RunRecord, StepTiming

# How a backup was verified, in the words of the command that did it: a listing is not a restore.
_VERIFIED_BY = {"list": "pg_restore --list", "restore": "a restore into a scratch database"}
_CHECK_WORDS = {"passed": "passed", "failed": "FAILED", "not_checked": "not checked"}


def run_summary(record: RunRecord) -> list[str]:
    """The verdict, why the run did not succeed, and what it did, one fact a line."""
    # A summary filed by the runbook itself has no verdict yet (it is settled when the notebook is filed).
    verdict = record.verdict or record.outcome.value.replace("_", " ") + (
        f" at {record.failed_step}" if record.failed_step else "")
    lines = [verdict]
    if not record.outcome.succeeded and record.message and record.message != verdict:
        lines.append(record.message)
    lines += [f"  {line}" for line in run_facts(record)]
    after = record.revision_after
    if record.outcome.exit_code == ExitCode.FAILED and after is not None:
        lines.append(f"the database is at {', '.join(after) or 'base'} (read after the run stopped)")
    return lines


def run_facts(record: RunRecord) -> list[str]:
    """What the run did: mode, database and target, revisions, backup and its verification, each check."""
    lines = []
    if record.execute is not None:
        mode = "executed" if record.execute else "dry run"
        where = ", ".join(part for part in (record.environment, mode) if part)
        accepted = (record.parameters or {}).get("accept_data_loss") is True
        lines.append(f"{record.runbook} of {record.database_name or 'the database'} ({where})"
                     + (f", target {record.target}" if record.target else "")
                     + (", accept_data_loss true" if accepted else ""))
    before, after = record.revision_before, record.revision_after
    if before is not None and after is not None and before != after:
        lines.append(f"revision {', '.join(before) or 'base'} -> {', '.join(after) or 'base'}")
    elif before is not None:
        lines.append(f"revision {', '.join(before) or 'base'} (unchanged)")
    if record.backup is not None:
        how = _VERIFIED_BY.get(record.backup.verification, record.backup.verification or "nothing")
        state = "verified" if record.backup.verified else "NOT verified"
        lines.append(f"backup {record.backup.path} ({state} by {how})")
    if record.at_risk_backup is not None and record.runbook == "rollback":
        folder = record.at_risk_backup.get("folder")
        lines.append(f"at-risk backup {folder} ({record.at_risk_backup.get('rows')} rows; to put them back after a "
                     f"fix-forward: rollbook run restore-lost-data -p at_risk_backup {folder})")
    if record.policy is not None and record.runbook == "restore-lost-data":
        # The dry run is where an approver gets the hash to approve: it is not in a plan of its own.
        restore_hash = str(record.policy.get("plan_hash", ""))
        lines.append(f"policy {record.policy.get('status')}; restore hash {restore_hash} (an approval names it: "
                     f"-r approved_plan {restore_hash[:12]})")
    if record.rehearsal is not None and record.rehearsal.get("status") != "not_run":
        lines.append(f"rehearsal on a copy: {record.rehearsal.get('status')} ({record.rehearsal.get('summary')})")
    stale = record.stale_scratch or {}
    lines += [f"dropped stale scratch database {s.get('name')} ({s.get('why')})" for s in stale.get("dropped", [])]
    lines += [f"kept scratch database {s.get('name')} ({s.get('why')})" for s in stale.get("kept", [])]
    if record.step_timings:
        lines.append("step times (estimate, rehearsal, real):")
        lines += [f"  {line}" for line in step_times_lines(record.step_timings)]
    checks = (record.verification or {}).get("checks") or []
    if checks:
        # A check that did not pass says why: what is left for a person to check by hand.
        lines.append("checks: " + "; ".join(
            f"{c.get('name')} {_CHECK_WORDS.get(c.get('status'), c.get('status'))}"
            + (f" ({c.get('detail')})" if c.get("status") != "passed" and c.get("detail") else "") for c in checks))
    return lines


def step_times_lines(times: Sequence[StepTiming]) -> list[str]:
    """'0607bc5b8533: estimate 2.1 s, rehearsal 1.9 s (lock waits 0 ms), real 2.0 s (lock waits 1.2 s)', one line
    per step."""
    return [f"{t.revision}: estimate {_seconds(t.estimated_seconds, 'not estimated')}, rehearsal "
            f"{_seconds(t.rehearsal_seconds, 'none')}"
            f"{_lock_waits(t.rehearsal_lock_wait_seconds, t.rehearsal_lock_waits_not_measured)}, "
            f"real {_seconds(t.real_seconds, 'not run')}"
            f"{_lock_waits(t.real_lock_wait_seconds, t.real_lock_waits_not_measured)}" for t in times]


def _seconds(value: float | None, absent: str) -> str:
    return absent if value is None else duration_text(value)


def _lock_waits(seconds: float | None, not_measured: str | None) -> str:
    if seconds is not None:
        return f" (lock waits {lock_wait_text(seconds)})"
    return f" (lock waits not measured: {not_measured})" if not_measured else ""


@dataclass(frozen=True)
class ArchivedRun:
    """A run found in the archive by a reference: the record read, and every record filed for the run."""

    record: RunRecord
    files: tuple[ArchivedRecord, ...]

    def to_json(self) -> dict[str, Any]:
        """The run record as filed: what `archive show --json` prints."""
        return self.record.to_json()

    def to_text(self) -> str:
        """`archive show`: the run's summary, who and when, and where its records are."""
        record = self.record
        first, *rest = run_summary(record)
        lines = [f"run {record.run_id}: {first}", *rest]
        if record.operator is not None or record.execute is not None:
            # An empty approver or ticket is shown as none, not left out: its absence is a fact of the run.
            lines.append(f"  operator {record.operator or 'none'}, approved by {record.approved_by or 'none'}, "
                         f"ticket {record.ticket or 'none'}")
        when = [f"started {utc(record.started_at):%Y-%m-%d %H:%M:%S} UTC" if record.started_at
                else "start not recorded"]
        if record.finished_at:
            when.append(f"finished {utc(record.finished_at):%Y-%m-%d %H:%M:%S} UTC")
        lines.append(f"  {', '.join(when)}")
        for file in self.files:
            where = f"#{file.seq} {file.kind}" if file.seq is not None else file.kind
            lines.append(f"record ({where}): {file.path}")
        return "\n".join(lines)


def find_run(archive: Archive, ref: str) -> ArchivedRun:
    """The run a reference names (run id, unique prefix, file name with or without folder, manifest number).

    A wrong reference is a BadInput that names the closest run ids.
    """
    files = archive.records_of(archive.find(ref).run_id)
    # The record filed last speaks for the run: the notebook's carries the verdict settled when it was filed.
    return ArchivedRun(archive.load_record(files[-1]), files)
