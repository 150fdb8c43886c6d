"""Run ids: the UTC second a run started and a random tail, so that ids sort by start time.

The run id, the record's `started_at` and the record's file name carry the same UTC second: the id is
made once, where the run starts (`rollbook run`, or the runbook itself under plain papermill), and the
start time is read back from it wherever else it is needed.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

_TIME_FORMAT = "%Y%m%dT%H%M%SZ"


def new_run_id(now: datetime | None = None) -> str:
    """A run id that sorts by start time: 20261124T123456Z-3f9a1c."""
    now = now or datetime.now(UTC)
    return f"{now.astimezone(UTC):{_TIME_FORMAT}}-{secrets.token_hex(3)}"


def run_id_time(run_id: str) -> datetime | None:
    """The UTC start time a run id carries; None for an id not made by new_run_id."""
    stamp = run_id.split("-", 1)[0]
    try:
        return datetime.strptime(stamp, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
