"""Scratch databases left behind by a run killed outright, found and dropped by the next run that makes one.

A run stopped by Ctrl-C or SIGTERM drops its own scratch databases; one killed with SIGKILL cannot.
A database is dropped here only when all of these hold, so that no live run ever loses its copy:
its name has the scratch prefix AND its comment carries the scratch marker with its creator's identity;
that creator ran on this machine (same host, boot and pid namespace) and is provably gone (its pid is
free, or taken by a process started at another time); no session is connected to it; and the role may
drop it. The DROP is a plain DROP DATABASE, never WITH (FORCE): a session that connects between the check
and the drop makes the server refuse it, and the database is kept. A database made on another machine is
never dropped here (its creator cannot be checked from this one): it is listed as kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from rollbook.pg.database import DatabaseTarget, connect
from rollbook.pg.process_identity import ProcessIdentity, is_gone
from rollbook.pg.scratch import SCRATCH_MARKER, SCRATCH_PREFIX

_CANDIDATES = """
SELECT d.datname, shobj_description(d.oid, 'pg_database'),
       (SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid)
FROM pg_database d
WHERE starts_with(d.datname, %s) AND starts_with(shobj_description(d.oid, 'pg_database'), %s)
ORDER BY d.datname
"""


@dataclass(frozen=True)
class StaleScratch:
    """One scratch database whose creator is not (known to be) running: its name, creator, and what was done."""

    name: str
    creator: str
    why: str


@dataclass(frozen=True)
class ScratchSweep:
    """What a sweep found: the scratch databases dropped, and those left (with why) though not this run's."""

    dropped: tuple[StaleScratch, ...]
    kept: tuple[StaleScratch, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"dropped": [asdict(s) for s in self.dropped], "kept": [asdict(s) for s in self.kept]}


def drop_stale_scratch_databases(target: DatabaseTarget) -> ScratchSweep:
    """Drop the scratch databases on `target`'s server whose creating process is provably gone (module doc)."""
    dropped: list[StaleScratch] = []
    kept: list[StaleScratch] = []
    with connect(target) as conn:
        for name, comment, sessions in conn.execute(_CANDIDATES, [SCRATCH_PREFIX, SCRATCH_MARKER]).fetchall():
            creator = _creator(comment)
            if creator is None:
                continue  # a marker that does not parse was not written by rollbook: not ours to judge
            gone = is_gone(creator)
            if gone is False:
                continue  # a live run's: not stale, and not worth a line
            if gone is None:
                kept.append(StaleScratch(name, creator.describe(), f"made by {creator.describe()}, which cannot "
                                         "be checked from this machine: drop it by hand once that run is over"))
            elif sessions:
                kept.append(StaleScratch(name, creator.describe(), f"{creator.describe()} is gone but {sessions} "
                                         "session(s) are still connected to it: dropped by a later run"))
            else:
                problem = _drop(conn, name)
                entry = StaleScratch(name, creator.describe(), problem or f"{creator.describe()} is gone")
                (kept if problem else dropped).append(entry)
    return ScratchSweep(tuple(dropped), tuple(kept))


def _creator(comment: str) -> ProcessIdentity | None:
    try:
        data = json.loads(comment.removeprefix(SCRATCH_MARKER))
    except ValueError:
        return None
    return ProcessIdentity.from_dict(data) if isinstance(data, dict) else None


def _drop(conn: psycopg.Connection, name: str) -> str | None:
    # Plain DROP: the server refuses it if a session connected since the check (never WITH (FORCE)).
    try:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    except psycopg.errors.ObjectInUse:
        return "a session connected to it just now: dropped by a later run"
    except psycopg.Error as exc:
        return f"could not be dropped ({str(exc).strip().splitlines()[0]}): drop it by hand"
    return None
