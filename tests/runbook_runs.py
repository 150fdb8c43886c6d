"""Running the runbooks the way a user does: the papermill command line, against the real server."""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import psycopg
from alembic import command
from pg import psycopg_kwargs

from rollbook.database import DatabaseTarget
from rollbook.demo import DEMO_CONFIG
from rollbook.migrations import alembic_config_for, load_project

RUNBOOKS = Path(__file__).resolve().parents[1] / "runbooks"
NARROW_EMAIL = "0607bc5b8533"
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


def current_revision(url: str) -> list[str]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return [row[0] for row in conn.execute("SELECT version_num FROM alembic_version")]
