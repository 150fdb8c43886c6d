"""What the benchmarks share: a throwaway database, a small Alembic project, the summary of timings, and the record
of the machine."""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

from rollbook.pg.embedded_server import start_embedded_server

ENV_PY = (
    "from alembic import context\nfrom sqlalchemy import create_engine, pool\n"
    "engine = create_engine(context.config.get_main_option('sqlalchemy.url'), poolclass=pool.NullPool)\n"
    "with engine.connect() as connection:\n"
    "    context.configure(connection=connection)\n"
    "    with context.begin_transaction():\n"
    "        context.run_migrations()\n"
)


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


def machine(**software: object) -> dict[str, object]:
    """The machine and software the numbers were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_at_end": os.getloadavg(),
            "cpu_probe_at_end": cpu_probe(), **software}


def cpu_probe() -> dict[str, float]:
    """How fast this virtual machine ran at the time, in CPU seconds: a fixed pure-Python loop (10 million
    additions) and the sha256 of 256 MiB in memory. The host shares its cores and memory: on one evening the same
    commit's rebuild took 2.5 times the CPU an hour after it was measured, the loop unchanged and sha256 five times
    slower, with the machine otherwise idle."""
    began = time.process_time()
    total = 0
    for number in range(10_000_000):
        total += number
    loop = time.process_time() - began
    data = bytes(range(256)) * (1 << 20)  # 256 MiB in real pages (zeros would all be one shared page)
    began = time.process_time()
    hashlib.sha256(data).hexdigest()
    return {"python_loop_s": round(loop, 3), "sha256_256mib_s": round(time.process_time() - began, 3)}


def write_project(root: Path, revisions: dict[str, tuple[str | None, str, str]]) -> Path:
    """A project under `root` whose revisions map to (down_revision, upgrade line, downgrade line); its alembic.ini."""
    (root / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\npath_separator = os\n")
    (root / "env.py").write_text(ENV_PY)
    for revision, (down, upgrade, downgrade) in revisions.items():
        (root / "versions" / f"{revision}.py").write_text(
            f'"""{revision}"""\nimport sqlalchemy as sa\nfrom alembic import op\nrevision = "{revision}"\n'
            f"down_revision = {down!r}\n\n\ndef upgrade():\n    {upgrade}\n\n\ndef downgrade():\n    {downgrade}\n")
    return root / "alembic.ini"
