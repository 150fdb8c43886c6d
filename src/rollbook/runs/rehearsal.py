"""One run of the rollback-test runbook: the rehearsal on scratch databases, and its record."""

from __future__ import annotations

import getpass
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rollbook.outcomes import Outcome
from rollbook.pg.database import DatabaseTarget
from rollbook.project.migrations import MigrationProject
from rollbook.records.run_record import RunRecorder
from rollbook.recovery.rehearsal import RehearsalReport, rehearse_rollbacks
from rollbook.runs.context import RunContext, open_run
from rollbook.runs.rollback import RunbookStopped, RunSummary, recorded


@dataclass
class RollbackTestRun:
    """The state of one rollback-test run; created by `RollbackTestRun.start`."""

    parameters: dict[str, Any]
    target: DatabaseTarget = field(repr=False)
    project: MigrationProject = field(repr=False)
    context: RunContext
    recorder: RunRecorder = field(repr=False)
    report: RehearsalReport | None = None

    @classmethod
    def start(cls, parameters: dict[str, Any], recorder: RunRecorder) -> RollbackTestRun:
        """Connect to the database that names the server (it is not changed) and record who, where, when."""
        opened = open_run(recorder, database_url=parameters["database_url"],
                          alembic_config=parameters["alembic_config"],
                          alembic_x_args=parameters["alembic_x_args"], parameters=parameters,
                          operator=getpass.getuser(), operator_from="login name",
                          mode="read-only: scratch databases are created next to this one and dropped")
        return cls(parameters, opened.target, opened.project, opened.context, recorder)

    @recorded("rollback test")
    def rehearse(self) -> RehearsalReport:
        """The team's test and every revision's round trip, on scratch databases next to the one named."""
        self.report = rehearse_rollbacks(self.target, self.project, rows_per_table=self.parameters["rows_per_table"])
        self.recorder.update(rollback_test=self.report.to_dict())
        if not self.report.passed:
            failed = ", ".join(t.revision.revision for t in self.report.failed) or "the team's test"
            raise RunbookStopped(f"{self.report.headline()} Failing: {failed}. Fix the downgrade() of each (the "
                                 "differences above name what it left behind or lost) and run the test again.",
                                 outcome=Outcome.FAILED, step="rollback test", result=self.report)
        return self.report

    def summary(self) -> RunSummary:
        """The run in a few lines; files the run's record in the archive."""
        report = self.report
        if report is None:
            raise RunbookStopped("The rollback test has not run: run the notebook's cells in order.",
                                 outcome=Outcome.BAD_INPUT, step="summary")
        record = self.recorder.finish(Outcome.SUCCEEDED, message=report.headline())
        facts = {
            "run": self.recorder.run_id,
            "project": str(self.project.config_path),
            "server": self.context.database,
            "revisions": str(len(report.round_trips)),
            "seconds": f"{report.seconds:.1f}",
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        }
        return RunSummary(Outcome.SUCCEEDED, report.headline(), facts, record)

