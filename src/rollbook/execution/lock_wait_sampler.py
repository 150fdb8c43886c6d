"""How long a downgrade step's statements waited for locks, sampled from a second connection.

A statement's duration includes any wait for a lock another session holds; the timed statement log
cannot tell the two apart, and looking at pg_locks between statements sees nothing. So while the
downgrade runs, a thread with its own connection reads pg_stat_activity every SAMPLE_INTERVAL_SECONDS
for the backends the project's env.py opened, and counts the time between two samples as waiting
when one of them was waiting for a heavyweight lock (wait_event_type 'Lock'). The figure is
therefore good to about one interval per wait.

The sampler never fails the downgrade: if it cannot connect or a read fails, it stops sampling and
each step measured after that says why its lock waits were not measured.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg

from rollbook.durations import lock_wait_text
from rollbook.pg.database import DatabaseTarget
from rollbook.project.outside_event_loop import BackendPids

SAMPLE_INTERVAL_SECONDS = 0.05
# A read of pg_stat_activity that takes longer than this is given up: the sampler must never hang the run.
SAMPLE_TIMEOUT_MS = 2000
_WAITING_SQL = "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s) AND wait_event_type = 'Lock'"


@dataclass(frozen=True)
class LockWaits:
    """One step's time spent waiting for locks, or why it was not measured."""

    seconds: float | None
    not_measured: str | None = None

    def described(self) -> str:
        """'lock waits 1.5 s' or 'lock waits not measured: why'."""
        if self.seconds is None:
            return f"lock waits not measured: {self.not_measured}"
        return f"lock waits {lock_wait_text(self.seconds)}"


class LockWaitSampler:
    """Sums, per step, the time the downgrade's backends spent waiting for a lock."""

    def __init__(self, target: DatabaseTarget, backends: BackendPids) -> None:
        self._target = target
        self._backends = backends
        self._guard = threading.Lock()
        self._stop = threading.Event()
        self._waited = 0.0
        self._failure: str | None = None
        self._thread = threading.Thread(target=self._sample, name="rollbook lock-wait sampler", daemon=True)

    def start(self) -> None:
        """Start sampling in a daemon thread (its connection is opened there: a slow connect never delays the run)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and wait (a bounded time: a read gives up after SAMPLE_TIMEOUT_MS) for the thread."""
        self._stop.set()
        self._thread.join(timeout=SAMPLE_TIMEOUT_MS / 1000 + 1)

    def begin_step(self) -> None:
        """Start counting afresh for the step about to run."""
        with self._guard:
            self._waited = 0.0

    def step_lock_waits(self) -> LockWaits:
        """The waits counted since `begin_step`, or why they could not be counted."""
        with self._guard:
            if self._failure is not None:
                return LockWaits(None, self._failure)
            return LockWaits(round(self._waited, 3))

    def _sample(self) -> None:
        try:
            settings = {**self._target.connect_kwargs(), "application_name": "rollbook lock-wait sampler"}
            with psycopg.connect(autocommit=True, **settings) as conn:
                conn.execute(f"SET statement_timeout = {SAMPLE_TIMEOUT_MS}")
                last = time.monotonic()
                while not self._stop.wait(SAMPLE_INTERVAL_SECONDS):
                    # Read even before env.py connects: a sampler that cannot read is known at once.
                    row = conn.execute(_WAITING_SQL, [self._backends.pids()]).fetchone()
                    now = time.monotonic()
                    with self._guard:
                        if row is not None and row[0] > 0:
                            self._waited += now - last
                    last = now
        except Exception as exc:  # any failure only ends the sampling: the downgrade goes on without it
            reason = (exc.diag.message_primary if isinstance(exc, psycopg.Error) and exc.diag.message_primary
                      else type(exc).__name__)
            with self._guard:
                self._failure = f"the sampler failed ({self._target.scrub(str(reason))})"


@contextmanager
def sampling_lock_waits(target: DatabaseTarget, backends: BackendPids) -> Iterator[LockWaitSampler]:
    """A running sampler for the backends in `backends`, stopped when the block ends however it ends."""
    sampler = LockWaitSampler(target, backends)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()
