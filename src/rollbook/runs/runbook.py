"""The runbook framework: what every runbook is, whatever procedure it carries out.

A runbook is a `Runbook` subclass with a name, one parameters dataclass (rollbook.runs.parameters),
its steps as methods marked `@recorded("step")`, and one `facts()` hook that says how the run ended.
`start()` opens every run the same way (the "who, where, when" step) and `summary()` files the record
the same way, so a runbook only writes what is its own. The notebook (runbooks/NAME.ipynb) starts
the run (`rollbook.runs.notebook.start_rollback_run()`, ...), then calls one step per cell, then
`summary()`.

A refusal or a failure raises `RunbookStopped`, which carries the result to show, so the executed
notebook ends at the step that stopped it and says why and what to do next.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import update_wrapper
from typing import Any, ClassVar, Concatenate, Generic, ParamSpec, Self, TypeVar, cast

from rollbook import markdown
from rollbook.errors import RollbookError
from rollbook.outcomes import Outcome
from rollbook.pg.database import DatabaseTarget
from rollbook.pg.stale_scratch import drop_stale_scratch_databases
from rollbook.policy.rules import PolicyRules
from rollbook.project.migrations import MigrationProject
from rollbook.project.status import MigrationStatus, read_status
from rollbook.records.archive_files import RECORD_MIME
from rollbook.records.model import RunRecord
from rollbook.records.run_record import RunRecorder
from rollbook.runs.context import READ_ONLY, RunContext, open_run
from rollbook.runs.parameters import RunbookParameters

P = TypeVar("P", bound=RunbookParameters)
R = TypeVar("R", bound="Runbook[Any]")
T = TypeVar("T")
StepArguments = ParamSpec("StepArguments")


def recorded(step: str) -> Callable[[Callable[Concatenate[R, StepArguments], T]],
                                    Callable[Concatenate[R, StepArguments], T]]:
    """Record the method as one step of the run: its duration, and whether it was done, refused or failed."""

    def decorate(method: Callable[Concatenate[R, StepArguments], T]) -> Callable[Concatenate[R, StepArguments], T]:
        def run_step(self: R, /, *args: StepArguments.args, **kwargs: StepArguments.kwargs) -> T:
            with self.recorder.step(step):
                return method(self, *args, **kwargs)

        update_wrapper(run_step, method)  # the step keeps its method's name and docstring
        return run_step

    return decorate


class RunbookStopped(RollbookError):
    """The run stops here: refused by a rule or failed at a step; `result` is what to show for it."""

    def __init__(self, message: str, *, outcome: Outcome, step: str, result: Any = None) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.step = step
        self.result = result


@dataclass(frozen=True)
class RunFacts:
    """How a run ended, as its runbook says it: the outcome, a headline, and the facts to show a reader."""

    outcome: Outcome
    headline: str
    shown: dict[str, str]


@dataclass(frozen=True)
class RunSummary:
    """The run in a few lines, and the machine-readable record filed in the archive."""

    outcome: str
    headline: str
    facts: dict[str, str]
    record: RunRecord = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome, "headline": self.headline, **self.facts}

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        rows = [(markdown.cell(k), markdown.cell(v)) for k, v in self.facts.items() if v not in (None, "")]
        text = f"### {markdown.prose(self.headline)}\n\n" + markdown.table(["", ""], rows)
        return {RECORD_MIME: self.record.to_json(), "text/markdown": text, "text/plain": self.headline}


@dataclass
class Runbook(Generic[P]):
    """One run of a runbook as its steps execute; created by `start`."""

    # The runbook's name: its notebook is runbooks/<name>.ipynb, and its records name it.
    name: ClassVar[str]
    parameters_type: ClassVar[type[RunbookParameters]]
    # Whether the policy gate governs the run: its rules are loaded at the start, so an unknown environment
    # stops the run there.
    gated: ClassVar[bool] = False
    # Whether the run can move the database: a stopped run then records the revision it left it at.
    moves_database: ClassVar[bool] = False

    parameters: P
    target: DatabaseTarget = field(repr=False)
    project: MigrationProject = field(repr=False)
    context: RunContext
    recorder: RunRecorder = field(repr=False)
    policy: PolicyRules | None = field(repr=False)

    @classmethod
    def read_parameters(cls, namespace: Mapping[str, Any], hidden: frozenset[str]) -> P:
        """The parameters papermill put into the kernel's namespace, checked (see rollbook.runs.parameters)."""
        # parameters_type is P itself: a class variable cannot name a type variable.
        return cast(P, cls.parameters_type.read(namespace, hidden))

    @classmethod
    def mode(cls, parameters: P) -> str:
        """What the run may change, in words, as the opening facts show it."""
        return READ_ONLY

    @classmethod
    def makes_scratch_databases(cls, parameters: P) -> bool:
        """Whether the run may create scratch databases: it then first drops those left by killed runs."""
        return False

    @classmethod
    def start(cls, parameters: P, recorder: RunRecorder) -> Self:
        """Connect to the database named by the parameters (or DATABASE_URL) and record who, where, when."""
        opened = open_run(recorder, parameters, mode=cls.mode(parameters), gated=cls.gated)
        if cls.makes_scratch_databases(parameters):
            # A run killed with SIGKILL could not drop its scratch databases; the next one that makes some does.
            with recorder.step("stale scratch databases"):
                sweep = drop_stale_scratch_databases(opened.target)
                if sweep.dropped or sweep.kept:
                    recorder.update(stale_scratch=sweep.to_dict())
        return cls(parameters, opened.target, opened.project, opened.context, recorder, opened.rules)

    @property
    def rules(self) -> PolicyRules:
        """The environment's policy rules (a gated runbook's only)."""
        if self.policy is None:
            raise RollbookError(f"The {self.name} runbook is not gated by a policy: it has no rules to apply.")
        return self.policy

    def revision_before(self) -> MigrationStatus:
        """The database's revision(s) as the run finds them, read through rollbook's own connection; recorded as
        the revision the run started from."""
        status = read_status(self.target, self.project)
        self.recorder.update(revision_before=list(status.current))
        return status

    def facts(self) -> RunFacts:
        """How the run ended: its outcome, its headline and the facts its summary shows."""
        raise NotImplementedError

    def summary(self) -> RunSummary:
        """The run in a few lines; files the run's record in the archive."""
        facts = self.facts()
        record = self.recorder.finish(facts.outcome, message=facts.headline)
        shown = {"run": record.run_id, **facts.shown,
                 "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")}
        return RunSummary(facts.outcome, facts.headline, shown, record)
