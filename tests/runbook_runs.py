"""Running the runbooks the way a user does: the papermill command line, against the real server."""

from __future__ import annotations

import html
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psycopg
from alembic import command
from pg import psycopg_kwargs

from rollbook.demo.server import DEMO_CONFIG
from rollbook.pg.database import DatabaseTarget
from rollbook.project.migrations import alembic_config_for, load_project

RUNBOOKS = Path(__file__).resolve().parents[1] / "runbooks"
NARROW_EMAIL = "0607bc5b8533"
SLOW_REVISION = "0607bc5b8537"
MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]#|~])")


@dataclass
class NotebookRun:
    """An executed runbook: papermill's exit code, what it printed, and the output notebook."""

    returncode: int
    stderr: str
    path: Path

    @property
    def notebook(self) -> nbformat.NotebookNode:
        return nbformat.read(self.path, as_version=4)

    @property
    def text(self) -> str:
        """Everything the record shows (markdown as read, escapes removed), streams and errors of every output."""
        parts = []
        for cell in self.notebook.cells:
            for output in cell.get("outputs", []):
                data = output.get("data", {})
                parts += [html.unescape(MARKDOWN_ESCAPE.sub(r"\1", data.get("text/markdown", ""))), output.get("text", ""),
                          output.get("evalue", "")]
        return "\n".join(part for part in parts if part)

    @property
    def error(self) -> str:
        return "\n".join(output.get("evalue", "") for cell in self.notebook.cells
                         for output in cell.get("outputs", []) if output.get("output_type") == "error")


def papermill(tmp_path: Path, runbook: str, *args: str, url: str, config: Path | str = DEMO_CONFIG,
              env: dict[str, str] | None = None) -> NotebookRun:
    """`papermill runbooks/<runbook>.ipynb out.ipynb ARGS` with DATABASE_URL and ALEMBIC_CONFIG set."""
    out = tmp_path / f"{runbook}-out-{len(list(tmp_path.glob('*-out-*.ipynb')))}.ipynb"
    environment = {**os.environ, "DATABASE_URL": url, "ALEMBIC_CONFIG": str(config), **(env or {})}
    result = subprocess.run(
        [sys.executable, "-m", "papermill", str(RUNBOOKS / f"{runbook}.ipynb"), str(out), "--no-progress-bar",
         *args],
        cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=180,
    )
    return NotebookRun(result.returncode, result.stderr, out)


def demo_at(url: str, revision: str) -> None:
    """Downgrade the demo database to `revision`, shortening the long emails first if the way passes 8533."""
    if revision < NARROW_EMAIL:
        with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as conn:
            conn.execute("UPDATE users SET email = 'short' || id || '@example.com' WHERE length(email) > 100")
    command.downgrade(alembic_config_for(load_project(DEMO_CONFIG), DatabaseTarget.from_url(url)), revision)


def slow_project(tmp_path: Path, url: str) -> Path:
    """The demo plus a head revision whose downgrade sleeps a minute; the database is upgraded to it."""
    project = tmp_path / "project"
    shutil.copytree(Path(DEMO_CONFIG).parent, project, ignore=shutil.ignore_patterns("__pycache__"))
    (project / "versions" / f"{SLOW_REVISION}_slow.py").write_text(
        f'"""Slow to undo."""\nfrom alembic import op\n\nrevision = "{SLOW_REVISION}"\ndown_revision = "0607bc5b8536"\n'
        "branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    op.execute('CREATE TABLE audit_trail (id int)')\n"
        "\n\ndef downgrade():\n    op.execute('DROP TABLE audit_trail')\n    op.execute('SELECT pg_sleep(60)')\n")
    config = project / "alembic.ini"
    command.upgrade(alembic_config_for(load_project(config), DatabaseTarget.from_url(url)), "head")
    return config


def wait_for_sleeping_downgrade(url: str, process: subprocess.Popen) -> None:
    """Return once the slow downgrade's pg_sleep is running; fail if `process` ends first."""
    deadline = time.monotonic() + 60
    with psycopg.connect(**psycopg_kwargs(url), autocommit=True) as watcher:
        while not watcher.execute("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%%' "
                                  "AND state = 'active'").fetchone():
            assert time.monotonic() < deadline and process.poll() is None, "the downgrade never started"
            time.sleep(0.1)


def kill_kernels(pid: int) -> None:
    """SIGKILL every Jupyter kernel among the descendants of process `pid`."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    kernels = [p for p in found if b"ipykernel" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert kernels, "no kernel found"
    for kernel in kernels:
        os.kill(kernel, signal.SIGKILL)


def current_revision(url: str) -> list[str]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
