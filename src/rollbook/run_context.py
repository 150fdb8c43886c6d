"""Who runs a runbook, where and when, against which database: the opening facts of every record."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from rollbook import markdown
from rollbook.database import DatabaseTarget, connect
from rollbook.downgrade_execution import rollback_lock_holder
from rollbook.identity import DatabaseIdentity, read_identity
from rollbook.migrations import MigrationProject


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
    parameters: dict[str, Any]
    other_run: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "runbook": self.runbook, "run_id": self.run_id, "operator": self.operator, "operator_from": self.operator_from,
            "host": self.host, "started_at": self.started_at.isoformat(), "environment": self.environment,
            "ticket": self.ticket, "database": self.database, "identity": self.identity.to_dict(),
            "alembic_config": self.alembic_config, "mode": "execute" if self.execute else "dry run",
            "parameters": self.parameters,
        }

    def _repr_markdown_(self) -> str:
        if self.runbook != "rollback":
            mode = "read-only: nothing is changed"
        elif self.execute:
            mode = "**EXECUTE**: this run changes the database"
        else:
            mode = "**DRY RUN**: nothing is changed, no backup is written, no lock is taken"
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
            ("mode", mode),
        ]
        text = markdown.table(["", ""], rows)
        if self.other_run:
            text += f"\n\n**Another rollback run is in progress on this database** ({markdown.cell(self.other_run)})."
        return text


def describe_run(
    target: DatabaseTarget, project: MigrationProject, *, runbook: str, parameters: dict[str, Any], operator: str,
    operator_from: str, run_id: str, environment: str = "", ticket: str = "", execute: bool = False,
) -> RunContext:
    """Connect (read-only) and record the database's identity and whether another rollback is running."""
    with connect(target) as conn:
        identity = read_identity(conn)
        other_run = rollback_lock_holder(conn)
    return RunContext(
        runbook=runbook, run_id=run_id, operator=operator, operator_from=operator_from, host=socket.gethostname(),
        started_at=datetime.now(timezone.utc), environment=environment, ticket=ticket, database=target.redacted,
        identity=identity, alembic_config=str(project.config_path), execute=execute, parameters=parameters,
        other_run=other_run,
    )
