"""The missing-migration-file scenario of a diagnosis: what the database records, the versions folders, and the
file's git history (deleted in the work tree, or in which commit), read with a short timeout and no prompt.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from rollbook.execution.diagnosis_model import CATALOG_TIMEOUT_MS, LOCK_TIMEOUT_MS, Diagnosis, with_catalog
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.data_loss import read_only_transaction
from rollbook.project.migrations import MigrationProject

GIT_TIMEOUT_SECONDS = 5.0


def missing_migration_file(target: DatabaseTarget, revision: str, project: MigrationProject | None) -> Diagnosis:
    """A revision whose file Alembic cannot find: what the database records, and where the file went in git."""
    facts = [f"Alembic cannot find a migration file for revision {revision}."]
    advice: list[str] = []
    if project is None:
        advice += [
            f"Check whether the file exists: `ls alembic/versions/{revision}_*.py`.",
            f"Restore it from git if it is missing: `git checkout alembic/versions/{revision}_*.py`, then retry.",
        ]
    else:
        facts += _database_revision_facts(target, project, revision)
        for folder in _versions_folders(project):
            advice += _file_history(folder, revision, facts)
    advice += [
        "Retry the rollback once the file is back (rollbook plan first, to see what it will do).",
        "Never write a replacement downgrade by guesswork: if the file cannot be found, restore the backup taken "
        "in this run or fix forward with a new migration.",
    ]
    summary = f"The migration file of revision {revision} is missing, so Alembic cannot run its downgrade."
    return Diagnosis("missing_migration_file", summary, tuple(facts), tuple(advice), None, revision)


def _versions_folders(project: MigrationProject) -> list[Path]:
    scripts = project.scripts
    return [Path(p) for p in scripts.version_locations] or [Path(scripts.dir) / "versions"]


def _database_revision_facts(target: DatabaseTarget, project: MigrationProject, revision: str) -> list[str]:
    facts: list[str] = []

    def read(conn: psycopg.Connection) -> None:
        table = sql.Identifier(*filter(None, (project.version_table_schema, project.version_table)))
        with read_only_transaction(conn, CATALOG_TIMEOUT_MS, LOCK_TIMEOUT_MS):
            versions = [r[0] for r in conn.execute(sql.SQL("SELECT version_num FROM {}").format(table)).fetchall()]
        if revision in versions:
            facts.append(f"The database records revision {revision} in {project.version_table}: it was migrated "
                         "with a file that is not in this project now.")
        else:
            facts.append(f"The database is at {', '.join(versions) or 'base'}; {revision} is not recorded there "
                         "(was the revision id typed right?).")

    with_catalog(target, facts, read)
    return facts


def _file_history(folder: Path, revision: str, facts: list[str]) -> list[str]:
    """Facts about the file in `folder` and its git history; returns the advice to get it back."""
    pattern = f"{revision}_*.py"
    present = sorted(folder.glob(pattern)) if folder.is_dir() else []
    facts.append(f"Versions folder: {folder}" + ("" if folder.is_dir() else " (does not exist)") + ".")
    if present:
        facts.append(f"A file named like it is there ({present[0].name}) but Alembic does not read it as revision "
                     f"{revision}: check its `revision =` line and that it imports.")
        return []
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None:
        facts.append("The folder is not in a git work tree (or git is not installed): its history cannot be read.")
        return [f"Check whether the file exists: `ls {folder}/{pattern}`; restore it from version control or a "
                "colleague's copy of the project."]
    root = top.strip()
    deleted_here = [p for p in (_git(folder, "ls-files", "--deleted", "--full-name", "--", pattern) or "").splitlines()
                    if p]
    if deleted_here:
        facts.append(f"git: {deleted_here[0]} is deleted in the work tree at {root} but not yet committed.")
        return [f"In {root}: `git checkout -- {deleted_here[0]}`, then retry."]
    log = _git(folder, "log", "--all", "--diff-filter=D", "--name-only", "--format=@@%h%x09%cs%x09%s", "--", pattern)
    commit, path = _first_deletion(log or "")
    if commit:
        facts.append(f"git: {path} was deleted in commit {commit[0]} ({commit[1]}, \"{commit[2]}\") in {root}.")
        return [f"In {root}: `git checkout {commit[0]}^ -- {path}` brings it back from the commit before; then retry."]
    facts.append(f"git has no file matching {pattern} in the history of {root}: it was never committed here.")
    return [f"Check other branches, clones or the deploy artifact for {pattern}; check the revision id."]


def _first_deletion(log: str) -> tuple[tuple[str, str, str] | None, str]:
    commit: tuple[str, str, str] | None = None
    for line in log.splitlines():
        if line.startswith("@@"):
            if commit is not None:
                break
            parts = (line[2:].split("\t") + ["", ""])[:3]
            commit = (parts[0], parts[1], parts[2])
        elif line.strip() and commit is not None:
            return commit, line.strip()
    return None, ""


def _git(folder: Path, *args: str) -> str | None:
    """git's output in `folder`, or None when git is missing, fails or is slow."""
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        result = subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, env=env,
                                timeout=GIT_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None
