"""The naming convention of env.py's target_metadata names what the plan, --sql and the schema check expect.

The shape comes from Prefect: its MetaData names check constraints `ck_%(table_name)s__%(constraint_name)s`,
so a migration's "no_self_reference" is "ck_block_document_reference__no_self_reference" in the database.
Built without that convention, the expected schema differed and a correct rollback was recorded FAILED.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from runbook_runs import current_revision, papermill

from rollbook.errors import BadInput
from rollbook.execution.expected_schema import check_schema_matches
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.plan import plan_downgrade
from rollbook.project.migrations import load_project
from rollbook.project.naming_convention import read_naming_convention

CONVENTIONS = Path(__file__).parent / "projects" / "conventions"


@pytest.fixture
def conventions_at_head(database_url, monkeypatch):
    """The fixture project migrated to head by its own env.py, the way its team does it."""
    monkeypatch.setenv("CONVENTIONS_DB_URL", database_url)
    monkeypatch.setattr(sys, "path", [*sys.path])
    config = Config(str(CONVENTIONS / "alembic.ini"))
    command.upgrade(config, "head")
    return load_project(CONVENTIONS / "alembic.ini"), DatabaseTarget.from_url(database_url), config


def test_the_convention_is_read_from_the_module_env_py_imports_it_from():
    convention = read_naming_convention(load_project(CONVENTIONS / "alembic.ini"))

    assert convention.problem is None
    assert convention.convention is not None and convention.convention["ck"] == "ck_%(table_name)s__%(constraint_name)s"
    assert convention.source == "metadata, imported from convention_models"


def test_a_rollback_of_a_project_with_a_naming_convention_plans_safe_and_verifies(conventions_at_head):
    project, target, config = conventions_at_head

    plan = plan_downgrade(target, project, "-1")

    statements = [op.statement for op in plan.steps[0].operations]
    assert "ALTER TABLE block_document DROP CONSTRAINT ck_block_document__positive_size" in statements
    assert [op.detail for op in plan.steps[0].operations if op.op == "missing_object"] == []
    assert check_schema_matches(target, project, "head").status == "passed"

    command.downgrade(config, "-1")

    check = check_schema_matches(target, project, "a1b2c3d4e5f6")
    assert check.status == "passed", check.to_text()


def test_a_setting_that_names_nothing_importable_is_bad_input(tmp_path):
    project_dir = tmp_path / "project"
    (project_dir / "versions").mkdir(parents=True)
    (project_dir / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\npath_separator = os\n")
    (project_dir / "env.py").write_text("target_metadata = None\n")
    (project_dir / "rollbook.toml").write_text('[project]\ntarget_metadata = "no_such_module_here:metadata"\n')

    with pytest.raises(BadInput, match="no_such_module_here:metadata.*cannot be used: importing no_such_module_here"):
        read_naming_convention(load_project(project_dir / "alembic.ini"))


def test_an_env_py_that_computes_target_metadata_falls_back_to_the_default_and_says_so(tmp_path):
    project_dir = tmp_path / "project"
    (project_dir / "versions").mkdir(parents=True)
    (project_dir / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\npath_separator = os\n")
    (project_dir / "env.py").write_text("target_metadata = make_metadata()\n")

    convention = read_naming_convention(load_project(project_dir / "alembic.ini"))

    assert convention.convention is None
    assert "env.py computes target_metadata (make_metadata())" in convention.note
    assert 'Set target_metadata = "module:attribute" in the [project] table of rollbook.toml' in convention.note


def project_with_env_py(root: Path, env_py: str) -> Path:
    (root / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\npath_separator = os\n")
    (root / "env.py").write_text(env_py)
    return root / "alembic.ini"


def test_a_metadata_written_in_env_py_gives_its_literal_convention(tmp_path):
    config = project_with_env_py(tmp_path / "project", (
        "import sqlalchemy as sa\nCONVENTION = {'ck': 'ck_%(table_name)s_%(constraint_name)s'}\n"
        "target_metadata = sa.MetaData(naming_convention=CONVENTION)\n"))

    convention = read_naming_convention(load_project(config))

    assert convention.convention == {"ck": "ck_%(table_name)s_%(constraint_name)s"}
    assert convention.source == "MetaData(...) in env.py"


def test_target_metadata_set_inside_a_function_is_named_as_unreadable(tmp_path):
    config = project_with_env_py(tmp_path / "project", (
        "def run():\n    target_metadata = load()\n    return target_metadata\n"))

    convention = read_naming_convention(load_project(config))

    assert convention.convention is None
    assert "inside a function or a condition, not at module level" in (convention.problem or "")


def test_the_rollback_runbook_verifies_a_project_with_a_naming_convention(conventions_at_head, tmp_path, database_url):
    project, _, _ = conventions_at_head

    run = papermill(tmp_path, "rollback", "-p", "environment", "staging", "-p", "operator", "alice",
                    "-p", "accept_data_loss", "True", "-p", "execute", "True",
                    "-p", "backup_dir", str(tmp_path / "backups"), url=database_url, config=project.config_path,
                    env={"CONVENTIONS_DB_URL": database_url})

    assert run.returncode == 0, run.error or run.stderr
    assert current_revision(database_url) == ["a1b2c3d4e5f6"]
    assert "| schema | passed |" in run.text
