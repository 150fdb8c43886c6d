"""rollbook reads everything Alembic reads: version_locations env.py sets, `package:path` and relative
script locations, and the `-x` arguments env.py reads (a multi-tenant project picks its schema with them).

Fixture projects: tests/projects/split_versions (Prefect's shape: versions/postgresql and versions/sqlite,
chosen by env.py at run time) and tests/projects/multi_tenant (one schema per tenant, `-x tenant=NAME`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import psycopg
import pytest
from alembic import command
from click.testing import CliRunner
from pg import fingerprint, psycopg_kwargs

from rollbook.cli import main
from rollbook.pg.database import DatabaseTarget
from rollbook.project.env_py_settings import EnvPyReader
from rollbook.project.migrations import alembic_config_for, load_project

pytest_plugins = ["pytester"]

PROJECTS = Path(__file__).parent / "projects"
SPLIT = PROJECTS / "split_versions"
TENANTS = PROJECTS / "multi_tenant"
FLOW_TAGS, CREATE_FLOWS, SQLITE_ONLY = "b2d3f4a5b6c7", "a1c2e3f4a5b6", "e9f8a7b6c5d4"
ACCOUNTS_PLAN, CREATE_ACCOUNTS = "d2b3c4d5e6f7", "c1a2b3c4d5e6"


def rollbook(*args: str, url: str, config: Path, cwd: Path | None = None, monkeypatch=None):
    if cwd is not None:
        monkeypatch.chdir(cwd)
    return CliRunner().invoke(main, list(args), env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(config)},
                              catch_exceptions=False)


def assert_refused(result, *phrases: str) -> None:
    """Exit 2, one paragraph on stderr, no traceback, and the advice asked for."""
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("rollbook: ") and "Traceback" not in result.output
    assert result.stderr.strip().count("\n") == 0, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


def copy_project(source: Path, tmp_path: Path) -> Path:
    root = tmp_path / source.name
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root / "alembic.ini"


def upgraded(config: Path, url: str, *x_args: str) -> None:
    command.upgrade(alembic_config_for(load_project(config, x_args), DatabaseTarget.from_url(url)), "head")


def query(url: str, statement: str) -> list[tuple]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return conn.execute(statement).fetchall()


# version_locations set by env.py at run time


def test_version_locations_env_py_computes_from_its_own_path_are_read(database_url):
    upgraded(SPLIT / "alembic.ini", database_url)

    status = rollbook("status", "--json", url=database_url, config=SPLIT / "alembic.ini")
    plan = rollbook("plan", "--json", url=database_url, config=SPLIT / "alembic.ini")

    assert status.exit_code == 0, status.output
    found = json.loads(status.stdout)
    assert found["current"] == found["heads"] == [FLOW_TAGS] and found["missing_files"] == []
    assert plan.exit_code == 0, plan.output
    [step] = json.loads(plan.stdout)["steps"]
    assert step["revision"] == FLOW_TAGS and step["file"].startswith("versions/postgresql/")
    assert SQLITE_ONLY not in status.stdout + plan.stdout  # the other dialect's folder is not read


def test_version_locations_env_py_computes_unreadably_are_refused_until_rollbook_toml_names_them(tmp_path,
                                                                                                  database_url):
    ini = copy_project(SPLIT, tmp_path)
    upgraded(ini, database_url)
    env_py = ini.parent / "env.py"
    env_py.write_text(env_py.read_text().replace("[os.path.join(VERSIONS, DIALECT)]", "[orm_settings().versions_dir]"))
    before = fingerprint(database_url)

    for command_line in (["status"], ["plan"], ["test-rollback"]):
        assert_refused(rollbook(*command_line, url=database_url, config=ini), "sets version_locations at run time",
                       "[project] table of rollbook.toml", f"[alembic] section of {ini}")

    (ini.parent / "rollbook.toml").write_text('[project]\nversion_locations = ["versions/postgresql"]\n')
    status = rollbook("status", url=database_url, config=ini)
    assert status.exit_code == 0, status.output
    assert f"Current database revision:  {FLOW_TAGS}" in status.stdout and "The database is at head." in status.stdout
    assert fingerprint(database_url) == before


def test_a_database_at_a_revision_with_no_migration_file_found_names_the_setting_not_git(tmp_path, database_url):
    ini = copy_project(SPLIT, tmp_path)
    upgraded(ini, database_url)
    env_py = ini.parent / "env.py"  # env.py no longer says where the files are: Alembic reads versions/ itself
    env_py.write_text(env_py.read_text().replace("    context.script.version_locations = [os.path.join(VERSIONS, "
                                                 "DIALECT)]\n", ""))

    for command_line in (["status"], ["plan"]):
        result = rollbook(*command_line, url=database_url, config=ini)
        assert_refused(result, f"revision {FLOW_TAGS}", "finds no migration file at all", "version_locations = ")
        assert "git log" not in result.output and "MISSING FILE" not in result.output


def test_a_malformed_version_locations_setting_is_refused(tmp_path, database_url):
    ini = copy_project(SPLIT, tmp_path)
    (ini.parent / "rollbook.toml").write_text('[project]\nversion_locations = "versions/postgresql"\n')

    assert_refused(rollbook("status", url=database_url, config=ini), "must be a list of folders", "[project]")


# script_location


def test_a_package_script_location_whose_package_is_not_installed_names_the_package(tmp_path, database_url):
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = prefect:server:database:_migrations\n")

    result = rollbook("status", url=database_url, config=ini)

    assert_refused(result, "inside the Python package prefect", "not installed", "environment where prefect is "
                   "installed", "PYTHONPATH")
    assert "fails to import" not in result.output


def test_a_package_script_location_of_an_installed_package_is_read(tmp_path, database_url, monkeypatch):
    package = tmp_path / "site" / "tenantapp"
    shutil.copytree(TENANTS, package / "migrations", ignore=shutil.ignore_patterns("__pycache__", "alembic.ini"))
    (package / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    ini = tmp_path / "alembic.ini"
    ini.write_text("[alembic]\nscript_location = tenantapp:migrations\n")

    project = load_project(ini, ["tenant=acme"])

    assert project.heads() == (ACCOUNTS_PLAN,) and project.version_table_schema == "acme"


def test_a_relative_script_location_says_it_is_read_from_the_current_folder(tmp_path, database_url, monkeypatch):
    ini = copy_project(SPLIT, tmp_path)
    ini.write_text("[alembic]\nscript_location = split_versions\npath_separator = os\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    upgraded(ini, database_url)  # from the folder the path is relative to, as its team runs alembic

    refused = rollbook("status", url=database_url, config=ini, cwd=elsewhere, monkeypatch=monkeypatch)
    from_its_folder = rollbook("status", url=database_url, config=ini, cwd=tmp_path, monkeypatch=monkeypatch)

    assert_refused(refused, "relative `script_location = split_versions`", f"current folder ({elsewhere})",
                   f"run rollbook from {tmp_path}", "write `script_location = %(here)s` in alembic.ini")
    assert "Please use the 'init' command" not in refused.output
    assert from_its_folder.exit_code == 0 and f"Current database revision:  {FLOW_TAGS}" in from_its_folder.stdout


# -x arguments: a multi-tenant project


def test_x_arguments_choose_the_tenant_env_py_reads_and_its_version_table(database_url):
    ini = TENANTS / "alembic.ini"
    upgraded(ini, database_url, "tenant=acme")
    command.downgrade(alembic_config_for(load_project(ini, ["tenant=acme"]), DatabaseTarget.from_url(database_url)),
                      CREATE_ACCOUNTS)
    upgraded(ini, database_url, "tenant=globex")

    acme = rollbook("status", "--json", "-x", "tenant=acme", url=database_url, config=ini)
    globex = rollbook("status", "--json", "--x-arg", "tenant=globex", url=database_url, config=ini)

    assert json.loads(acme.stdout)["current"] == [CREATE_ACCOUNTS]
    assert json.loads(globex.stdout)["current"] == [ACCOUNTS_PLAN]


def test_an_x_argument_env_py_needs_but_was_not_given_is_refused(database_url):
    for command_line in (["status"], ["plan"], ["test-rollback"]):
        assert_refused(rollbook(*command_line, url=database_url, config=TENANTS / "alembic.ini"),
                       "reads the -x argument 'tenant'", "--x-arg tenant=VALUE", "-p alembic_x_args tenant=VALUE")


def test_an_x_argument_without_a_key_is_refused(database_url):
    assert_refused(rollbook("status", "-x", "=acme", url=database_url, config=TENANTS / "alembic.ini"),
                   "'=acme' has no key", "KEY=VALUE")


def rollback_tenant(tmp_path: Path, url: str, tenant: str):
    """`rollbook run rollback -p alembic_x_args tenant=NAME ... --execute`, one step back, in staging."""
    return CliRunner().invoke(main, [
        "run", "rollback", "-p", "alembic_x_args", f"tenant={tenant}", "-p", "environment", "staging",
        "-p", "operator", "alice", "-p", "accept_data_loss", "True", "-p", "backup_dir", str(tmp_path / "backups"),
        "--execute"], env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(TENANTS / "alembic.ini"),
                           "ROLLBOOK_ARCHIVE": str(tmp_path / "archive")})


@pytest.fixture
def two_tenants_at_head(tmp_path, database_url, monkeypatch) -> str:
    for tenant in ("acme", "globex"):
        upgraded(TENANTS / "alembic.ini", database_url, f"tenant={tenant}")
    with psycopg.connect(**psycopg_kwargs(database_url)) as conn:
        conn.execute("INSERT INTO acme.accounts (name, plan) VALUES ('a', 'gold'), ('b', NULL)")
        conn.execute("INSERT INTO globex.accounts (name, plan) VALUES ('g', 'silver')")
    monkeypatch.chdir(tmp_path)
    return database_url


def test_a_tenant_is_rolled_back_through_the_runbook_and_the_other_tenant_is_untouched(tmp_path, two_tenants_at_head):
    url = two_tenants_at_head

    result = rollback_tenant(tmp_path, url, "acme")

    assert "downgrade: done" in result.output and "Traceback" not in result.output
    assert query(url, "SELECT version_num FROM acme.alembic_version") == [(CREATE_ACCOUNTS,)]
    assert query(url, "SELECT version_num FROM globex.alembic_version") == [(ACCOUNTS_PLAN,)]
    columns = ("SELECT table_schema, column_name FROM information_schema.columns WHERE table_name = 'accounts' "
               "ORDER BY 1, ordinal_position")
    assert query(url, columns) == [("acme", "id"), ("acme", "name"),
                                   ("globex", "id"), ("globex", "name"), ("globex", "plan")]
    assert query(url, "SELECT name FROM acme.accounts ORDER BY name") == [("a",), ("b",)]
    assert query(url, "SELECT name, plan FROM globex.accounts") == [("g", "silver")]


@pytest.mark.xfail(strict=True, reason="issue 13, other parts: the plan counts and the schema check use rollbook's own "
                   "connection and env.py-less scratch builds, which do not follow env.py's SET search_path, so the "
                   "tenant's table is 'not there' and the other tenant's schema reads as a verification failure")
def test_a_tenant_rollback_is_planned_counted_and_verified(tmp_path, two_tenants_at_head):
    result = rollback_tenant(tmp_path, two_tenants_at_head, "acme")

    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("source", "expected"), [
    ("context.script.version_locations = [str(Path(__file__).parent / 'versions' / 'pg')]", ("{root}/versions/pg",)),
    ("HERE = os.path.dirname(os.path.abspath(__file__))\n"
     "config.set_main_option('version_locations', f'{HERE}/a {HERE}/b')", ("{root}/a", "{root}/b")),
    ("x = context.get_x_argument(as_dictionary=True)\n"
     "context.script.version_locations = [os.path.join(os.path.dirname(__file__), x.get('dialect', 'pg'))]",
     ("{root}/sqlite",)),
])
def test_version_locations_env_py_computes_are_evaluated_without_running_it(tmp_path, source, expected):
    env_py = tmp_path / "env.py"
    env_py.write_text(f"import os\nfrom pathlib import Path\nfrom alembic import context\nconfig = context.config\n"
                      f"{source}\n")

    found = EnvPyReader(env_py, ["dialect=sqlite"]).version_locations()

    assert found.readable and found.value == tuple(path.format(root=tmp_path) for path in expected)


@pytest.mark.parametrize("source", [
    "context.script.version_locations = [settings.versions_dir]",
    "context.script.version_locations = [os.environ['VERSIONS']]",
    "d = 'a'\nd = 'b'\ncontext.script.version_locations = [d]",  # which assignment wins depends on running it
    "context.script.version_locations = ['a']\ncontext.script.version_locations = ['b']",
])
def test_version_locations_rollbook_cannot_be_sure_of_are_unreadable(tmp_path, source):
    env_py = tmp_path / "env.py"
    env_py.write_text(f"import os\nfrom alembic import context\n{source}\n")

    assert not EnvPyReader(env_py, []).version_locations().readable


def test_run_takes_x_arguments_as_the_alembic_x_args_parameter(tmp_path, database_url, monkeypatch):
    upgraded(TENANTS / "alembic.ini", database_url, "tenant=globex")
    monkeypatch.chdir(tmp_path)
    env = {"DATABASE_URL": database_url, "ALEMBIC_CONFIG": str(TENANTS / "alembic.ini"),
           "ROLLBOOK_ARCHIVE": str(tmp_path / "archive")}

    given = CliRunner().invoke(main, ["run", "status", "-x", "tenant=globex"], env=env)
    [record] = (tmp_path / "archive").glob("*status*.ipynb")
    not_a_list = CliRunner().invoke(main, ["run", "status", "-p", "alembic_x_args", "3"], env=env)

    assert given.exit_code == 0, given.output
    assert ACCOUNTS_PLAN in record.read_text() and '"tenant=globex"' in record.read_text()
    assert not_a_list.exit_code == 2, not_a_list.output
    assert "alembic_x_args must be KEY=VALUE arguments" in not_a_list.output and "Traceback" not in not_a_list.output


def test_the_pytest_plugin_passes_x_arguments_to_the_project(pytester, database_url):
    pytester.makepyfile(test_app="def test_app():\n    pass\n")
    ini = f"[pytest]\nrollbook_rollback_test = true\nrollbook_alembic_config = {TENANTS / 'alembic.ini'}\n"
    server = f"--rollbook-database-url={database_url}"

    pytester.makeini(ini)
    without = pytester.runpytest(server, "-p", "no:cacheprovider")
    pytester.makeini(ini + "rollbook_alembic_x_args = tenant=acme\n")
    given = pytester.runpytest(server, "-p", "no:cacheprovider", "-v")

    without.assert_outcomes(passed=1, failed=1)
    without.stdout.fnmatch_lines(["*reads the -x argument 'tenant'*"])
    given.assert_outcomes(passed=4)  # the app's test, the team's test and one item per revision
    given.stdout.fnmatch_lines([f"*rollbook-rollback-test?{ACCOUNTS_PLAN}? PASSED*"])


@pytest.mark.parametrize("argument", ["url=postgresql://app:s3cret-pw@db/app", "db_password=s3cret-pw"])
def test_an_x_argument_carrying_a_password_is_refused_before_any_notebook_records_it(tmp_path, database_url,
                                                                                     monkeypatch, argument):
    monkeypatch.chdir(tmp_path)
    env = {"DATABASE_URL": database_url, "ALEMBIC_CONFIG": str(TENANTS / "alembic.ini"),
           "ROLLBOOK_ARCHIVE": str(tmp_path / "archive")}

    result = CliRunner().invoke(main, ["run", "status", "-x", "tenant=acme", "-x", argument], env=env)

    assert_refused(result, "carry a password", "nothing was started")
    assert "s3cret-pw" not in result.output
    assert not list(tmp_path.rglob("*.ipynb"))


def test_the_runbook_refuses_an_x_argument_carrying_a_password(tmp_path, database_url):
    from runbook_runs import papermill

    run = papermill(tmp_path, "status", "-p", "alembic_x_args", "tenant=acme,db_password=s3cret-pw",
                    url=database_url, config=TENANTS / "alembic.ini")

    assert run.returncode != 0
    assert "db_password in alembic_x_args carry a password" in run.error and "delete that file" in run.error
