"""A starting schema for histories whose base tables come from create_all (MLflow's shape).

Its first migration changes a table that `metadata.create_all` made: on an empty scratch database the
upgrade fails ("relation experiments does not exist"), so neither the schema check nor the rehearsal
could run. `base_schema` in the project's settings names that starting schema.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import psycopg
import pytest
from alembic import command
from alembic.config import Config
from pg import psycopg_kwargs
from test_cli import run

from rollbook.execution.expected_schema import check_schema_matches
from rollbook.pg.database import DatabaseTarget
from rollbook.project.migrations import load_project
from rollbook.recovery.rehearsal import rehearse_rollbacks

CREATEALL = Path(__file__).parent / "projects" / "createall"


@pytest.fixture
def createall_at_head(tmp_path, database_url, monkeypatch):
    """A copy of the fixture project, its database made the project's way: create_all, then upgrade head."""
    project_dir = tmp_path / "createall"
    shutil.copytree(CREATEALL, project_dir, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("CREATEALL_DB_URL", database_url)
    monkeypatch.setattr(sys, "path", [str(project_dir), *sys.path])
    from createall_models import metadata

    with psycopg.connect(**psycopg_kwargs(database_url), autocommit=True) as conn:
        conn.execute("CREATE TABLE experiments (experiment_id serial PRIMARY KEY, name varchar(256) NOT NULL UNIQUE)")
    assert "experiments" in metadata.tables  # the same table create_all makes
    config = Config(str(project_dir / "alembic.ini"))
    command.upgrade(config, "head")
    return project_dir, DatabaseTarget.from_url(database_url), config


def test_without_a_starting_schema_the_check_says_why_it_cannot_run(createall_at_head):
    project_dir, target, _ = createall_at_head

    check = check_schema_matches(target, load_project(project_dir / "alembic.ini"), "head")

    assert check.status == "not_checked"
    assert 'relation "experiments" does not exist' in check.reason


@pytest.mark.parametrize("setting", ["createall_models:metadata", "createall_models:create_tables", "base.sql"])
def test_a_starting_schema_lets_a_rollback_verify(createall_at_head, setting):
    project_dir, target, config = createall_at_head
    (project_dir / "rollbook.toml").write_text(f'[project]\nbase_schema = "{setting}"\n')
    # A schema-only dump of a database at base, as newer pg_dump writes it (psql's \restrict included).
    (project_dir / "base.sql").write_text(
        "\\restrict abc123\nSELECT pg_catalog.set_config('search_path', '', false);\n"
        "CREATE TABLE public.experiments (experiment_id serial PRIMARY KEY, name varchar(256) NOT NULL UNIQUE);\n"
        "\\unrestrict abc123\n")
    project = load_project(project_dir / "alembic.ini")
    command.downgrade(config, "-1")

    check = check_schema_matches(target, project, "c1aaaaaaaaaa")

    assert check.status == "passed", check.to_text()


def test_the_rehearsal_starts_from_the_starting_schema(createall_at_head, database_url):
    project_dir, target, _ = createall_at_head
    (project_dir / "rollbook.toml").write_text('[project]\nbase_schema = "createall_models:metadata"\n')

    report = rehearse_rollbacks(target, load_project(project_dir / "alembic.ini"))

    assert report.passed, report.to_text()


@pytest.mark.parametrize(("setting", "phrase"), [
    ("schemas/missing.sql", "is not a file"),
    ("no_such_module_at_all:metadata", "cannot be imported: ModuleNotFoundError"),
    ("createall_models:experiments", "a Table: name a MetaData, a declarative base, or a function"),
])
def test_a_starting_schema_that_names_nothing_usable_is_bad_input(createall_at_head, database_url, setting, phrase):
    project_dir, _, _ = createall_at_head
    (project_dir / "rollbook.toml").write_text(f'[project]\nbase_schema = "{setting}"\n')

    result = run("test-rollback", "--database-url", database_url, "--config", str(project_dir / "alembic.ini"))

    assert result.returncode == 2, result.stderr
    assert phrase in result.stderr and "Traceback" not in result.stderr
    assert "base_schema in [project] of" in result.stderr
    with psycopg.connect(**psycopg_kwargs(database_url)) as conn:
        scratch = conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'rollbook_scratch_%'").fetchone()
        assert scratch == (0,)
