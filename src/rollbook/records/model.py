"""The record of one runbook run as a typed, versioned model: what is filed, what every reader reads.

Every record rollbook writes is a `RunRecord` serialised to JSON with its `schema_version`; every
record it reads (the archive, backup lookup, the site, `archive verify`) is parsed back into one, so
there is one definition of the fields instead of a dict each writer grows and each reader guesses at.

Why pydantic v2 rather than dataclasses: the record needs a JSON Schema (shipped in the package as
`run-record.schema.json` and published on the site, so an auditor can check records without rollbook)
and validation of records read from disk, where an edited or older file may hold anything.
pydantic generates the schema from the same classes that validate, so the two cannot drift;
dataclasses would need a second, hand-written schema and a validator of their own.

Versions: 1 is the dict the runbooks wrote before this model (marked `"rollbook_record": 1`); its
backups were recorded in two shapes (the rollback runbook's held only path, size, sha256 and the
verification; the backup runbook's everything a restore checks). `read_record` upgrades a version-1
record to the current version, filling a short backup's database, revision and time from the run's
own, so no reader has to know there were two shapes.

The detail of a plan, a policy decision, a downgrade, a diagnosis, a verification, a restore and a
rollback test is each its producer's `to_dict()`: a JSON object here, typed at its source.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_jsonable_python

from rollbook.errors import BadInput
from rollbook.outcomes import Outcome

SCHEMA_VERSION: Final = 3
SCHEMA_PATH = Path(__file__).with_name("run-record.schema.json")
# The marker of the records written before the model: no schema_version, this key instead.
_VERSION_1_MARKER = "rollbook_record"


class InvalidRecord(BadInput):
    """A record that does not match the record schema: edited by hand, damaged, or not a rollbook record."""


class _Part(BaseModel):
    """A part of a record: unknown fields are refused, so a misspelt fact fails where it is written."""

    model_config = ConfigDict(extra="forbid")


class RecordedIdentity(_Part):
    """The server and database a run reached (rollbook.pg.identity.DatabaseIdentity); never a password."""

    database: str
    server_version: str = Field(description="PostgreSQL's server_version setting")
    system_identifier: str = Field(description="the cluster's pg_control_system() system_identifier")
    server_started: str | None = Field(
        default=None, description="pg_postmaster_start_time(), to tell a restarted server")
    user: str | None = Field(default=None, description="the role the run connected as")


class RecordedStep(_Part):
    """One step of the run, in the order it ran."""

    step: str
    status: str = Field(description="done, running (never finished), or the outcome that stopped it")
    seconds: float | None = Field(default=None, description="how long it took; null if it never finished")


class PlannedStep(_Part):
    """One revision of the plan's downgrade path, newest first."""

    revision: str
    migration_type: str
    risk: str = Field(description="low, medium, high or unknown")
    atomic: bool = Field(description="false when the step's downgrade does not run as one transaction")
    estimated_lock_seconds: float | None = Field(
        default=None, description="the plan's estimate of how long the step holds its locks; null: not estimated")


class StepTiming(_Part):
    """One step's time three ways: the plan's estimate, the dress rehearsal on a copy, the real downgrade."""

    revision: str
    estimated_seconds: float | None = Field(default=None, description="the plan's lock-time estimate")
    rehearsal_seconds: float | None = Field(default=None, description="measured on the restored copy")
    real_seconds: float | None = Field(default=None, description="measured in the real downgrade")
    rehearsal_lock_wait_seconds: float | None = Field(
        default=None, description="of rehearsal_seconds, the time spent waiting for locks (sampled every 50 ms)")
    real_lock_wait_seconds: float | None = Field(
        default=None, description="of real_seconds, the time spent waiting for locks (sampled every 50 ms)")
    rehearsal_lock_waits_not_measured: str | None = Field(
        default=None, description="why the rehearsal's lock waits were not measured")
    real_lock_waits_not_measured: str | None = Field(
        default=None, description="why the real run's lock waits were not measured")


class ClientTool(_Part):
    """The pg_dump that wrote a backup."""

    name: str
    path: str
    major_version: int | None
    version: str


class TableRows(_Part):
    """A table's exact row count in the backup's snapshot."""

    table: str
    rows: int


class BackupFile(_Part):
    """One file of a directory-format backup, as its manifest lists it."""

    name: str
    size_bytes: int
    sha256: str


class BackupFacts(_Part):
    """A backup as its run recorded it: every fact a later restore checks (see rollbook.recovery.archived_backups)."""

    path: str
    size_bytes: int | None
    sha256: str
    seconds: float | None = None
    pg_dump: ClientTool | None = Field(default=None, description="null in version-1 records of the rollback runbook")
    identity: RecordedIdentity | None = Field(default=None, description="the database backed up")
    revisions: list[str] = Field(default_factory=list, description="the revision(s) the database was at")
    taken_at: str = ""
    rows_counted: bool = Field(default=False, description="whether table_rows holds exact counts (a database without "
                                                  "tables counts to an empty list too)")
    table_rows: list[TableRows] = Field(default_factory=list)
    verified: bool = Field(description="whether the backup's verification passed")
    verification: str = Field(default="", description="how it was verified: list (pg_restore --list) or restore")
    verification_detail: str = ""
    write_horizon: str | None = Field(
        default=None, description="the oldest transaction running when the backup started: "
                                  "rows with a newer xmin were written since")
    strategy: str = Field(default="full", description="the backup strategy that took it: full or parallel")
    format: str = Field(default="custom", description="pg_dump's format: custom (one file) or directory (a folder)")
    jobs: int = Field(default=1, description="parallel pg_dump jobs that wrote it")
    files: list[BackupFile] = Field(default_factory=list, description="a directory backup's files; sha256 above is "
                                                                      "the sha256 of their sha256sum lines")


class WalRestorePointFacts(_Part):
    """A named restore point in the archived WAL (the pitr strategy): what a point-in-time restore needs."""

    name: str = Field(description="the restore point's name, for recovery_target_name")
    lsn: str = Field(description="the write-ahead log position of the restore point")
    timeline: int
    segment: str = Field(description="the WAL segment file holding it")
    archived: bool = Field(description="whether pg_stat_archiver reported the segment archived")
    archived_detail: str = ""
    created_at: str = ""
    seconds: float | None = None
    identity: RecordedIdentity | None = None
    revisions: list[str] = Field(default_factory=list, description="the revision(s) the database was at")
    recovery_settings: dict[str, str] = Field(
        default_factory=dict, description="postgresql.conf settings that restore a base backup to this point")


_Details = dict[str, Any]


class RunRecord(_Part):
    """The machine-readable record of one run of a runbook, as filed in the archive.

    Every runbook fills the fields of the run's opening (who, where, when) and its steps; the others
    belong to the runbooks that produce them and are absent (null) otherwise.
    """

    model_config = ConfigDict(extra="forbid", title="rollbook run record")

    schema_version: Literal[3] = Field(default=SCHEMA_VERSION, description="the record format's version")
    run_id: str = Field(min_length=1, description="the run's id: its start time and a random tail")
    runbook: str = Field(description="status, plan, backup, rollback, restore, rollback-test, or another notebook")
    started_at: datetime | None = Field(default=None, description="when the run started (UTC)")
    finished_at: datetime | None = Field(default=None, description="when it ended; absent while it runs")
    outcome: Outcome = Field(default=Outcome.RUNNING, description="how the run ended; the exit code follows from it")
    failed_step: str | None = Field(default=None, description="the step the run stopped at, if it did not succeed")
    message: str | None = Field(default=None, description="the run's last word: its headline, or why it stopped")
    verdict: str | None = Field(default=None, description="the verdict in words, settled when the run is filed")
    steps: list[RecordedStep] = Field(default_factory=list, description="each step: its name, how it ended, "
                                                                        "its seconds")
    # Who, where, when.
    parameters: _Details | None = Field(default=None, description="the checked parameters, secrets removed")
    operator: str | None = Field(default=None, description="who ran it")
    environment: str | None = Field(
        default=None, description="the policy environment (development, staging, production)")
    approved_by: str | None = Field(default=None, description="who approved it")
    ticket: str | None = Field(default=None, description="the incident or change ticket")
    execute: bool | None = Field(default=None, description="false for a dry run")
    database: str | None = Field(default=None, description="the database URL, password masked")
    identity: RecordedIdentity | None = Field(default=None, description="the server and database reached: version, "
                                                                 "system identifier, role")
    host: str | None = Field(default=None, description="the machine the run ran on")
    # Where the database stands.
    revision_before: list[str] | None = Field(default=None, description="the revision(s) before the run")
    revision_after: list[str] | None = Field(default=None, description="the revision(s) read after the run changed or "
                                                               "stopped")
    # The rollback runbook.
    migration_files: list[_Details] | None = Field(default=None, description="each file on the path with its sha256")
    target: str | None = Field(default=None, description="the revision the downgrade goes to")
    plan_hash: str | None = Field(default=None, description="the hash an approver names (approved_plan)")
    plan_verdict: str | None = Field(default=None, description="the plan's verdict code")
    plan_steps: list[PlannedStep] | None = Field(default=None, description="each revision undone: type, risk, atomic")
    policy: _Details | None = Field(default=None, description="the policy decision, rule by rule")
    critical_tables_before: dict[str, int | None] | None = Field(default=None, description="rows per critical table "
                                                                                   "before the downgrade")
    critical_tables_after: dict[str, int | None] | None = Field(
        default=None, description="rows per critical table after")
    backup: BackupFacts | None = Field(default=None, description="the backup this run took")
    backup_strategy: str | None = Field(default=None, description="how the safety net was taken: full, parallel, "
                                                                  "at-risk or pitr")
    wal_restore_point: WalRestorePointFacts | None = Field(
        default=None, description="the named restore point the pitr strategy created and saw archived")
    downgrade: _Details | None = Field(default=None, description="every statement executed, with its duration")
    diagnosis: _Details | None = Field(default=None, description="what a failed downgrade left and what to do next")
    verification: _Details | None = Field(
        default=None, description="each check after the change: passed, failed or not "
                                  "checked")
    rehearsal: _Details | None = Field(
        default=None, description="the dress rehearsal of the downgrade on a restored copy, or why there was none")
    step_timings: list[StepTiming] | None = Field(
        default=None, description="each step's estimated, rehearsed and real duration, side by side")
    stale_scratch: _Details | None = Field(
        default=None, description="scratch databases left by runs killed outright (SIGKILL): those this run dropped "
                                  "(their creator provably gone, nobody connected) and those it kept, with why")
    restore_point: _Details | None = Field(
        default=None, description="the backup to restore instead of a refused rollback")
    # The restore runbook.
    restored_backup: _Details | None = Field(default=None, description="the archived backup restored")
    backup_check: _Details | None = Field(
        default=None, description="whether the backup to restore is the recorded one, "
                                  "of this database")
    writes_since_backup: _Details | None = Field(default=None, description="rows written, gone or tables changed since "
                                                                   "the backup")
    restore_plan: _Details | None = Field(default=None, description="where the backup goes and the command")
    restore_hash: str | None = Field(default=None, description="the hash an approver names for a restore")
    restore: _Details | None = Field(default=None, description="the restore as executed")
    # The at-risk backup (a rollback's safety net) and the restore-lost-data runbook.
    at_risk_backup: _Details | None = Field(default=None, description="the at-risk backup: each file, what it holds, "
                                                                      "its rows and sha256")
    lost_data_restore: _Details | None = Field(default=None, description="the saved data written back: rows and "
                                                                         "checksums per file")
    # The rollback-test runbook.
    rollback_test: _Details | None = Field(default=None, description="every revision's round trip on scratch databases")

    def with_facts(self, **facts: Any) -> RunRecord:
        """This record with `facts` added, checked against the model: an unknown or ill-typed fact raises."""
        return _validated({**self.to_json(), **to_jsonable_python(facts)})

    def to_json(self) -> dict[str, Any]:
        """The record as JSON values, absent facts left out: what the archive files and the notebook carries."""
        return self.model_dump(mode="json", exclude_none=True)

    @property
    def stopped_at(self) -> str | None:
        """The last step that did not complete, if any."""
        return next((s.step for s in reversed(self.steps) if s.status != "done"), None)

    @property
    def database_name(self) -> str:
        """The database the run is about: from its identity, else as its (masked) URL names it."""
        if self.identity is not None and self.identity.database:
            return self.identity.database
        return self.database or ""


def read_record(data: Any) -> RunRecord:
    """A record read from disk or a notebook, upgraded from an older version; InvalidRecord if it is none."""
    if not isinstance(data, Mapping):
        raise InvalidRecord(f"A run record is a JSON object, not {type(data).__name__}.")
    if "schema_version" not in data and data.get(_VERSION_1_MARKER) == 1:
        data = _upgrade_version_1(data)
    elif data.get("schema_version") == 2:
        # Version 3 only added optional parts (backup strategy, restore point, at-risk backup, dress rehearsal,
        # step timings, stale scratch databases): a version-2 record is a version-3 record without them.
        data = {**data, "schema_version": SCHEMA_VERSION}
    elif data.get("schema_version", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise InvalidRecord(f"The record of run {data.get('run_id')!r} has schema_version "
                            f"{data.get('schema_version')!r}; this rollbook reads versions 1 to {SCHEMA_VERSION}: "
                            "read it with the rollbook that wrote it.")
    return _validated(data)


def record_json_schema() -> dict[str, Any]:
    """The JSON Schema of the current record version, generated from the model."""
    return RunRecord.model_json_schema()


def record_json_schema_text() -> str:
    """The JSON Schema as the package ships it (run-record.schema.json) and the site publishes it."""
    return json.dumps(record_json_schema(), indent=2, ensure_ascii=False) + "\n"


def record_fields() -> list[tuple[str, str, str]]:
    """(name, JSON type, description) of each top-level field, for the Records page."""
    schema = record_json_schema()
    return [(name, _type_text(spec, schema["$defs"]), str(spec.get("description", "")))
            for name, spec in schema["properties"].items()]


def _validated(data: Mapping[str, Any]) -> RunRecord:
    try:
        return RunRecord.model_validate(dict(data))
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in error.errors()[:5])
        more = f" (and {error.error_count() - 5} more)" if error.error_count() > 5 else ""
        raise InvalidRecord(f"The record of run {data.get('run_id')!r} does not match the record schema "
                            f"(version {SCHEMA_VERSION}): {problems}{more}.") from None


def _upgrade_version_1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 record in the current shape: its marker replaced, a short backup completed from the run."""
    upgraded = {key: value for key, value in data.items() if key != _VERSION_1_MARKER}
    upgraded["schema_version"] = SCHEMA_VERSION
    backup = upgraded.get("backup")
    if isinstance(backup, Mapping):
        # The rollback runbook recorded only path, size, sha256 and the verification: the database, the
        # revision and the time were the run's own, and no rows were counted.
        backup = dict(backup)
        backup.setdefault("identity", upgraded.get("identity"))
        backup.setdefault("revisions", upgraded.get("revision_before") or [])
        backup.setdefault("taken_at", upgraded.get("started_at") or "")
        backup["verified"] = backup.get("verified") is True
        upgraded["backup"] = backup
    # Version 1 wrote every opening fact, null until known; the current version leaves absent facts out.
    return {key: value for key, value in upgraded.items() if value is not None}


def _type_text(spec: Mapping[str, Any], definitions: Mapping[str, Any]) -> str:
    if "anyOf" in spec:
        return " or ".join(_type_text(option, definitions) for option in spec["anyOf"])
    if "$ref" in spec:
        name = str(spec["$ref"]).rsplit("/", 1)[-1]
        defined = definitions.get(name, {})
        return _type_text(defined, definitions) if "enum" in defined else f"object ({name})"
    if spec.get("type") == "array":
        return f"list of {_type_text(spec.get('items', {}), definitions)}"
    if "const" in spec:
        return json.dumps(spec["const"])
    if "enum" in spec:
        return "one of " + ", ".join(map(str, spec["enum"]))
    return str(spec.get("type", "any"))
