"""`rollbook demo`: the bundled demo rolled back twice by the rollback runbook, once refused and once executed."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rollbook.demo.server import DEMO_CONFIG, create_demo_database
from rollbook.outcomes import ExitCode, Outcome
from rollbook.pg.database import DatabaseTarget
from rollbook.pg.embedded_server import start_embedded_server
from rollbook.project.migrations import load_project
from rollbook.project.status import MigrationStatus, read_status
from rollbook.records.archive import Archive
from rollbook.records.model import RecordedStep
from rollbook.runs.runner import RunbookResult, run_runbook


@dataclass(frozen=True)
class DemoTour:
    """What the guided tour did: the demo's status, then a refused production run and an executed staging run."""

    status: MigrationStatus
    runs: tuple[tuple[str, RunbookResult], ...]
    archive: Path

    @property
    def exit_code(self) -> ExitCode:
        """1 if the operator stopped the tour (its last run was interrupted), else 0: a refusal is part of the tour."""
        last = self.runs[-1][1].verdict.outcome
        return last.exit_code if last is Outcome.INTERRUPTED else ExitCode.OK

    def to_text(self) -> str:
        lines = ["== rollbook status ==", self.status.to_text()]
        for title, result in self.runs:
            record = result.summary
            lines += ["", f"== {title} ==", f"verdict: {result.verdict.text}", f"record:  {result.record.path}"]
            policy = record.policy or {}
            lines += [f"  policy {r['rule']}: {r['outcome']} ({r['reason']})"
                      for r in policy.get("results", []) if r["outcome"] == "fail"]
            backup = record.backup
            if backup:
                verified = "verified" if backup.verified else "NOT verified"
                lines.append(f"  backup: {backup.size_bytes} bytes, sha256 {backup.sha256[:16]}, {verified} "
                             f"({backup.verification})")
            before, after = record.revision_before or [], record.revision_after or []
            if before and after and before != after:
                lines.append(f"  database moved {', '.join(before)} -> {', '.join(after)}")
            elif before:
                lines.append(f"  database left at {', '.join(before)}")
            checks = (record.verification or {}).get("checks", [])
            lines += [f"  {c['name']}: {c['status']} ({c['detail']})" for c in checks]
        lines += ["", f"The records are in {self.archive}: `rollbook archive list`, `rollbook archive show RUN_ID`, "
                      "`rollbook archive verify`."]
        return "\n".join(lines)


def demo_tour(
    work_dir: Path, archive: Archive, *, on_step: Callable[[RecordedStep], None] | None = None,
) -> DemoTour:
    """Start a throwaway server in `work_dir`, install the demo, and run the rollback runbook on it twice.

    First as a production rollback, which the policy refuses (the head revision is a HIGH-risk data
    migration); then as an executed staging rollback that accepts the loss, backs up, rolls back one
    step and verifies. Backups stay in `work_dir`; the two records go to `archive`.
    """
    server = start_embedded_server(work_dir / "server")
    try:
        url = create_demo_database(server)
        status = read_status(DatabaseTarget.from_url(url), load_project(DEMO_CONFIG))
        common = {"database_url": url, "alembic_config": str(DEMO_CONFIG), "operator": "demo-operator",
                  "backup_dir": str(work_dir / "backups"), "execute": True}
        deployed = (datetime.now(UTC) - timedelta(minutes=2)).isoformat()
        runs = [("production rollback (refused by the policy)", run_runbook(
            "rollback", {**common, "environment": "production", "approved_by": "demo-lead", "deployed_at": deployed,
                         "ticket": "DEMO-1"}, archive=archive, on_step=on_step))]
        # An operator who stopped the tour meant it: the next run does not start.
        if runs[-1][1].verdict.outcome is not Outcome.INTERRUPTED:
            runs.append(("staging rollback (executed)", run_runbook(
                "rollback", {**common, "environment": "staging", "accept_data_loss": True, "ticket": "DEMO-2"},
                archive=archive, on_step=on_step)))
    finally:
        server.stop(delete_data=True)
    return DemoTour(status, tuple(runs), archive.root)
