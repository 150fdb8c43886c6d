"""One run of the rollback-test runbook: the rehearsal on scratch databases, and its record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rollbook.outcomes import Outcome
from rollbook.recovery.rehearsal import rehearse_rollbacks
from rollbook.recovery.rehearsal_report import RehearsalReport
from rollbook.runs.parameters import RollbackTestParameters
from rollbook.runs.runbook import Runbook, RunbookStopped, RunFacts, recorded


@dataclass
class RollbackTestRun(Runbook[RollbackTestParameters]):
    """The state of one rollback-test run; created by `RollbackTestRun.start`."""

    name: ClassVar[str] = "rollback-test"
    parameters_type: ClassVar[type[RollbackTestParameters]] = RollbackTestParameters

    report: RehearsalReport | None = None

    @classmethod
    def mode(cls, parameters: RollbackTestParameters) -> str:
        return "read-only: scratch databases are created next to this one and dropped"

    @classmethod
    def makes_scratch_databases(cls, parameters: RollbackTestParameters) -> bool:
        return True

    @recorded("rollback test")
    def rehearse(self) -> RehearsalReport:
        """The team's test and every revision's round trip, on scratch databases next to the one named."""
        self.report = rehearse_rollbacks(self.target, self.project, rows_per_table=self.parameters.rows_per_table)
        self.recorder.update(rollback_test=self.report.to_dict())
        if not self.report.passed:
            failed = ", ".join(t.revision.revision for t in self.report.failed) or "the team's test"
            raise RunbookStopped(f"{self.report.headline()} Failing: {failed}. Fix the downgrade() of each (the "
                                 "differences above name what it left behind or lost) and run the test again.",
                                 outcome=Outcome.FAILED, step="rollback test", result=self.report)
        return self.report

    def facts(self) -> RunFacts:
        """The test's headline: how many revisions round-tripped, and how long it took."""
        report = self.report
        if report is None:
            raise RunbookStopped("The rollback test has not run: run the notebook's cells in order.",
                                 outcome=Outcome.BAD_INPUT, step="summary")
        return RunFacts(Outcome.SUCCEEDED, report.headline(), {
            "project": str(self.project.config_path),
            "server": self.context.database,
            "revisions": str(len(report.round_trips)),
            "seconds": f"{report.seconds:.1f}",
        })

