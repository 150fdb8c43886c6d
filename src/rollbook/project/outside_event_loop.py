"""Running migrations where no asyncio event loop runs, yet stoppable from the caller's thread.

A Jupyter kernel runs an event loop in its main thread, so an async env.py fails there: Alembic's
`-t async` template calls `asyncio.run()`, which refuses to start inside a running loop. Each step
therefore runs in a thread where no loop runs, as under `alembic`. That thread is an anyio worker
thread of a loop running in a thread of rollbook's: Prefect's env.py, written to run from Prefect's
own CLI, calls back into that loop (`anyio.from_thread.run`) and fails anywhere else.

Signals reach only the main thread: a KeyboardInterrupt (the kernel interrupted by a stop request)
lands there while it waits. The worker's statements are then cancelled server-side, the worker is
left to finish rolling its transaction back, and the interrupt is raised again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import psycopg

Result = TypeVar("Result")

# How often the waiting thread wakes to notice an interrupt, and cancels again once interrupted
# (a migration may start another statement after the first was cancelled).
WAIT_SECONDS = 0.2


class BackendPids:
    """The server processes of connections a migration opened: what to cancel when the run is stopped.

    Each is known by its pid and start time: a pid the server reused for another session after the
    migration's connection closed is never cancelled.
    """

    # Driver-neutral SQL (no parameters): this backend's pid and start time, the start time as text.
    IDENTITY_SQL = ("SELECT pg_backend_pid(), (SELECT backend_start::text FROM pg_stat_activity "
                    "WHERE pid = pg_backend_pid())")

    def __init__(self) -> None:
        self._backends: set[tuple[int, str]] = set()
        self._lock = threading.Lock()
        # Set by the first cancel: a connection opened after it belongs to a run that was stopped.
        self.stopped = False

    def add(self, pid: int, started: str) -> None:
        with self._lock:
            self._backends.add((pid, started))

    def record(self, dbapi_connection: Any, connection_record: Any = None) -> None:
        """A Pool "connect" listener: note the new connection's backend (plain SQL, any driver)."""
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self.IDENTITY_SQL)
            pid, started = cursor.fetchone()
            self.add(int(pid), str(started))
        finally:
            cursor.close()

    def pids(self) -> list[int]:
        """The recorded backends' pids (for reading their state in pg_stat_activity)."""
        with self._lock:
            return sorted(pid for pid, _ in self._backends)

    def cancel_all(self, conn: psycopg.Connection[Any]) -> None:
        """Cancel whatever statement each recorded backend runs, through rollbook's own connection."""
        self.stopped = True
        with self._lock:
            backends = sorted(self._backends)
        if backends:
            conn.execute(
                "SELECT pg_cancel_backend(a.pid) FROM pg_stat_activity a "
                "JOIN unnest(%s::int[], %s::timestamptz[]) AS r(pid, started) "
                "ON a.pid = r.pid AND a.backend_start = r.started",
                [[pid for pid, _ in backends], [started for _, started in backends]])


def run_outside_event_loop(work: Callable[[], Result], *, cancel: Callable[[], None]) -> Result:
    """Run `work` where no event loop runs (an anyio worker thread) and return its result or raise its exception.

    A KeyboardInterrupt while waiting calls `cancel` (repeatedly, until the worker ends), waits for
    the worker, then is raised again: the step's transaction is rolled back before the caller goes on.
    """
    results: list[Result] = []
    errors: list[BaseException] = []
    finished = threading.Event()

    def worker() -> None:
        try:
            results.append(anyio.run(anyio.to_thread.run_sync, work))
        except BaseException as exc:  # handed over to the caller's thread as is
            errors.append(exc)
        finally:
            finished.set()

    # A daemon: if the process ends mid-step, the server notices the closed connection and rolls back.
    # The caller waits on an Event, not Thread.join: an interrupted join leaves is_alive() False
    # while the thread still runs (Python 3.11).
    threading.Thread(target=worker, name="rollbook-migration", daemon=True).start()
    interrupt: KeyboardInterrupt | None = None
    while not finished.is_set():
        try:
            finished.wait(WAIT_SECONDS)
        except KeyboardInterrupt as exc:
            interrupt = interrupt or exc
        if interrupt is not None and not finished.is_set():
            cancel()
    if interrupt is not None:
        raise interrupt
    if errors:
        raise errors[0]
    return results[0]
