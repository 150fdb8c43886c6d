"""Who runs a runbook, where and when, against which database: the opening facts of every record."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rollbook import markdown
from rollbook.pg.advisory_lock import rollback_lock_holder
from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.identity import DatabaseIdentity, read_identity
from rollbook.policy.rules import PolicyRules, load_policy
from rollbook.project.migrations import MigrationProject, load_project
from rollbook.records.run_record import RunRecorder
from rollbook.runs.parameters import RunbookParameters, RunRequest


@dataclass(frozen=True)
class RunContext:
    """Who runs what, where and when: the opening facts of the record. Never holds a password."""

    runbook: str
    run_id: str
    operator: str
    operator_from: str
    host: str
    started_at: datetime
    environment: str
    ticket: str
    database: str
    identity: DatabaseIdentity
    alembic_config: str
    execute: bool
    mode: str
    parameters: dict[str, Any]
    other_run: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook, "run_id": self.run_id, "operator": self.operator,
            "operator_from": self.operator_from,
            "host": self.host, "started_at": self.started_at.isoformat(), "environment": self.environment,
            "ticket": self.ticket, "database": self.database, "identity": self.identity.to_dict(),
            "alembic_config": self.alembic_config, "mode": self.mode, "execute": self.execute,
            "parameters": self.parameters,
        }

    def _repr_markdown_(self) -> str:
        rows = [
            ("run", markdown.code(self.run_id)),
            ("runbook", markdown.cell(self.runbook)),
            ("operator", markdown.cell(f"{self.operator} ({self.operator_from})")),
            ("host", markdown.code(self.host)),
            ("started", self.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ]
        if self.environment:
            rows += [("environment", markdown.cell(self.environment)),
                     ("ticket", markdown.cell(self.ticket or "(none given)"))]
        rows += [
            ("database", markdown.code(self.database)),
            ("server", markdown.cell(f"PostgreSQL {self.identity.server_version}, system identifier "
                                     f"{self.identity.system_identifier}, database {self.identity.database} "
                                     f"as {self.identity.user}")),
            ("Alembic project", markdown.code(self.alembic_config)),
            ("mode", self.mode),
        ]
        text = markdown.table(["", ""], rows)
        if self.other_run:
            text += f"\n\n**Another rollback run is in progress on this database** ({markdown.cell(self.other_run)})."
        return text


READ_ONLY = "read-only: nothing is changed"


@dataclass(frozen=True)
class OpenedRun:
    """What a run works on: its database, its Alembic project, its policy (if gated), and its opening facts."""

    target: DatabaseTarget
    project: MigrationProject
    rules: PolicyRules | None  # None for a run no policy governs
    context: RunContext


def open_run(recorder: RunRecorder, parameters: RunbookParameters, *, mode: str = READ_ONLY,
             gated: bool = False) -> OpenedRun:
    """The "who, where, when" step every runbook starts with: record the request, connect, name the database.

    A `gated` run (one the policy gate governs) loads the team's policy too, so an unknown environment
    stops the run here.
    """
    request = parameters.requested_by()
    with recorder.step("who, where, when"):
        recorder.update(parameters=parameters.to_dict(), operator=request.operator,
                        environment=request.environment, approved_by=request.approved_by, ticket=request.ticket,
                        execute=request.execute)
        target = DatabaseTarget.from_url(parameters.database_url or None, source="the database_url parameter")
        recorder.update(database=target.redacted)
        project = load_project(parameters.alembic_config or None, parameters.alembic_x_args)
        rules = None
        if gated:
            rules = load_policy(project.config_path.parent)
            rules.for_environment(request.environment)
        context = describe_run(target, project, runbook=recorder.record.runbook, parameters=parameters.to_dict(),
                               request=request, run_id=recorder.run_id, started_at=recorder.record.started_at,
                               mode=mode)
        recorder.update(identity=context.identity.to_dict(), host=context.host)
    return OpenedRun(target, project, rules, context)


def describe_run(
    target: DatabaseTarget, project: MigrationProject, *, runbook: str, parameters: dict[str, Any],
    request: RunRequest, run_id: str, started_at: datetime | None, mode: str = READ_ONLY,
) -> RunContext:
    """Connect (read-only) and record the database's identity and whether another rollback is running.

    `started_at` is the run's start as its record and run id carry it (one clock); now if it has none.
    """
    with connect(target) as conn:
        identity = read_identity(conn)
        other_run = rollback_lock_holder(conn)
    return RunContext(
        runbook=runbook, run_id=run_id, operator=request.operator, operator_from=request.operator_from,
        host=socket.gethostname(), started_at=started_at or datetime.now(UTC), environment=request.environment,
        ticket=request.ticket, database=target.redacted, identity=identity, alembic_config=str(project.config_path),
        execute=request.execute, mode=mode, parameters=parameters, other_run=other_run,
    )
