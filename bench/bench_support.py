"""What both benchmarks share: a throwaway database, the summary of timings, and the record of the machine."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from rollbook.pg.embedded_server import start_embedded_server


@contextmanager
def embedded_database(work_dir: Path, name: str) -> Iterator[str]:
    """A fresh database `name` on an embedded server in `work_dir`; yields its URL, stops the server after."""
    server = start_embedded_server(work_dir / "pg")
    try:
        with psycopg.connect(server.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        yield server.url(name)
    finally:
        server.stop(delete_data=True)


def summarize(samples: dict[str, list[float]], baseline: str) -> tuple[dict[str, float], dict[str, float]]:
    """Median of each subject's samples, and its ratio to the baseline subject's median."""
    medians = {name: statistics.median(times) for name, times in samples.items()}
    return medians, {name: medians[name] / medians[baseline] for name in medians}


def machine(**software: str) -> dict[str, object]:
    """The machine and software the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_at_end": os.getloadavg(), **software}
