"""What a rollback rehearsal found: each revision's round trip, the team's test, and the report of both.

The shapes only, and how they are shown (text, Markdown, JSON); rehearsal.py fills them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from rollbook import markdown
from rollbook.project.migrations import RevisionInfo

Status = Literal["passed", "failed", "not_run", "not_checked"]


@dataclass(frozen=True)
class StepResult:
    """One step of a round trip: passed, failed, not run or not checked, with what differed."""

    status: Status
    detail: str
    differences: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.detail, "differences": list(self.differences)}


@dataclass(frozen=True)
class RoundTrip:
    """One revision: upgrade to it, seed rows, downgrade one, upgrade again."""

    revision: RevisionInfo
    migration_type: str
    risk: str
    seeded: tuple[tuple[str, int], ...]
    down: StepResult
    up: StepResult
    rows: StepResult
    seconds: float
    # Rows the made-up data could not insert (a CHECK its values fail, a key still taken after the retries):
    # about the rehearsal's seeding, never a prediction of the plan that failed.
    seeding: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(step.status in ("passed", "not_checked") for step in (self.down, self.up, self.rows))

    @property
    def status(self) -> str:
        if self.down.status == "not_run":
            return "not run"
        return "PASS" if self.passed else "FAIL"

    def failures(self) -> list[tuple[str, tuple[str, ...]]]:
        """Each failed step ("downgrade: what went wrong") with its differences."""
        return [(f"{name}: {step.detail}", step.differences)
                for name, step in (("downgrade", self.down), ("upgrade again", self.up), ("rows as planned", self.rows))
                if step.status == "failed"]

    def to_dict(self) -> dict[str, Any]:
        return {**self.revision.to_dict(), "migration_type": self.migration_type, "risk": self.risk,
                "passed": self.passed, "status": self.status, "seconds": self.seconds,
                "seeded": [{"table": t, "rows": n} for t, n in self.seeded], "seeding_notes": list(self.seeding),
                "downgrade": self.down.to_dict(), "upgrade_again": self.up.to_dict(),
                "rows_as_planned": self.rows.to_dict()}


@dataclass(frozen=True)
class TeamTest:
    """The team's automated test: apply all migrations, roll back one, re-apply, verify."""

    status: Status
    lines: tuple[str, ...]
    differences: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "lines": list(self.lines), "differences": list(self.differences)}


@dataclass(frozen=True)
class RehearsalReport:
    """Every revision's round trip, and the team's test; passed only if all of them passed."""

    project: str
    server: str
    team_test: TeamTest
    round_trips: tuple[RoundTrip, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return self.team_test.passed and all(trip.passed for trip in self.round_trips)

    @property
    def failed(self) -> tuple[RoundTrip, ...]:
        return tuple(trip for trip in self.round_trips if not trip.passed)

    def headline(self) -> str:
        if self.passed:
            return (f"PASSED: all {len(self.round_trips)} revision(s) roll back and re-apply cleanly, and rows were "
                    "lost exactly where the plans said.")
        count = len(self.failed) + (0 if self.team_test.passed else 1)
        return f"FAILED: {count} of {len(self.round_trips) + 1} check(s) failed."

    def to_dict(self) -> dict[str, Any]:
        return {"project": self.project, "server": self.server, "passed": self.passed, "headline": self.headline(),
                "seconds": self.seconds, "team_test": self.team_test.to_dict(),
                "revisions": [trip.to_dict() for trip in self.round_trips]}

    def to_text(self) -> str:
        lines = [f"Rollback test of {self.project} on scratch databases next to {self.server} ({self.seconds:.1f} s)",
                 "", f"The team's test (apply all migrations, roll back one, re-apply, verify): "
                 f"{self.team_test.status.replace('_', ' ')}"]
        lines += [f"  {line}" for line in self.team_test.lines]
        lines += [f"    - {difference}" for difference in self.team_test.differences]
        lines += ["", "Every revision's round trip (upgrade to it, seed rows, downgrade one, upgrade again):"]
        header = ("revision", "type", "risk", "downgrade", "up again", "rows as planned", "result")
        rows = [(t.revision.revision, t.migration_type, t.risk, _word(t.down), _word(t.up), _word(t.rows), t.status)
                for t in self.round_trips]
        widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
        lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *rows)]
        for trip in self.failed:
            lines += ["", f"{trip.revision.revision} ({trip.revision.message}):"]
            for failure, differences in trip.failures():
                lines += [f"  {failure}", *[f"    - {difference}" for difference in differences]]
            lines += [f"  seeding (made-up rows, not a prediction): {note}" for note in trip.seeding]
        return "\n".join([*lines, "", self.headline()])

    def _repr_markdown_(self) -> str:
        # Words, not emoji: a page or terminal without an emoji font shows them as empty boxes.
        marks = {"passed": "passed", "failed": "**FAILED**", "not_run": "not run", "not_checked": "not checked"}
        team = "\n".join(f"- {markdown.cell(line)}" for line in self.team_test.lines)
        team += "".join(f"\n  - {markdown.cell(d)}" for d in self.team_test.differences)
        rows = [(markdown.code(t.revision.revision), markdown.cell(t.revision.message), markdown.cell(t.migration_type),
                 t.risk.upper(), marks[t.down.status], marks[t.up.status], marks[t.rows.status],
                 "**PASS**" if t.passed else "**FAIL**" if t.status == "FAIL" else "not run")
                for t in self.round_trips]
        parts = [f"Rollback test of `{markdown.cell(self.project)}` on scratch databases ({self.seconds:.1f} s)",
                 f"**The team's test** (apply all, roll back one, re-apply, verify): {marks[self.team_test.status]}",
                 team,
                 markdown.table(["revision", "message", "type", "risk", "downgrade", "up again", "rows as planned",
                                 "result"], rows)]
        for trip in self.failed:
            lines = [f"**`{trip.revision.revision}`** ({markdown.cell(trip.revision.message)}) failed:", ""]
            for failure, differences in trip.failures():
                lines += [f"- {markdown.cell(failure)}", *[f"  - {markdown.cell(d)}" for d in differences]]
            lines += [f"- seeding (made-up rows, not a prediction): {markdown.cell(note)}" for note in trip.seeding]
            parts.append("\n".join(lines))
        details = [f"- `{t.revision.revision}`: {markdown.cell(line)}" for t in self.round_trips
                   for line in ((t.rows.detail,) if t.rows.status == "passed" else ())]
        if details:
            parts.append("Rows, per revision:\n\n" + "\n".join(details))
        parts.append(f"**{markdown.cell(self.headline())}**")
        return "\n\n".join(parts)


def _word(step: StepResult) -> str:
    return step.status.replace("_", " ")
