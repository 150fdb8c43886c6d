"""Bad input: each case gets one clear paragraph saying what is wrong and what to do, and changes nothing."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from alembic import command
from click.testing import CliRunner
from pg import fingerprint, url_with

from rollbook.cli import main
from rollbook.demo.server import DEMO_CONFIG
from rollbook.pg.database import DatabaseTarget
from rollbook.project.migrations import alembic_config_for, load_project

HEAD = "0607bc5b8536"


def rollbook(*args: str, url: str | None = None, config: Path | str = DEMO_CONFIG):
    env = {"DATABASE_URL": url or "", "ALEMBIC_CONFIG": str(config)}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def assert_refused(result, exit_code: int, *phrases: str) -> None:
    """Refused with the exit code, one paragraph on stderr, no traceback, and the given advice."""
    assert result.exit_code == exit_code, result.output
    message = result.stderr
    assert message.startswith("rollbook: ") and "Traceback" not in message
    assert message.strip().count("\n") == 0, message
    for phrase in phrases:
        assert phrase.lower() in message.lower(), message


def copy_of_demo(tmp_path: Path) -> Path:
    """A writable copy of the demo project; returns its alembic.ini."""
    root = tmp_path / "project"
    shutil.copytree(DEMO_CONFIG.parent, root, ignore=shutil.ignore_patterns("__pycache__"))
    return root / "alembic.ini"


def add_revision(ini: Path, revision: str, down_revision: str, body: str = "pass") -> None:
    (ini.parent / "versions" / f"{revision}_extra.py").write_text(
        f'"""Extra revision."""\nrevision = "{revision}"\ndown_revision = "{down_revision}"\n'
        f"branch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    {body}\n\n\ndef downgrade():\n    pass\n"
    )


@pytest.mark.parametrize(
    ("target", "phrases"),
    [
        ("ffff0000", ["Can't locate revision 'ffff0000'", "rollbook status"]),
        ("0607", ["ambiguous", "0607bc5b8530", "more characters"]),
        ("-9", ["only 7 revision(s) above base", "base"]),
    ],
)
def test_unknown_ambiguous_or_too_far_targets_are_refused(demo_url, target, phrases):
    before = fingerprint(demo_url)
    assert_refused(rollbook("plan", "--target", target, url=demo_url), 2, *phrases)
    assert fingerprint(demo_url) == before


def test_target_ahead_of_the_database_is_refused(database_url, demo_project):
    command.upgrade(alembic_config_for(demo_project, DatabaseTarget.from_url(database_url)), "0607bc5b8533")
    before = fingerprint(database_url)

    result = rollbook("plan", "--target", "0607bc5b8535", url=database_url)

    assert_refused(result, 2, "ahead of the database", "alembic upgrade")
    assert fingerprint(database_url) == before


def test_database_at_several_heads_needs_a_target_on_one_branch(tmp_path, database_url):
    ini = copy_of_demo(tmp_path)
    add_revision(ini, "b1f00d000001", "0607bc5b8535")
    add_revision(ini, "b1f00d000002", "b1f00d000001")
    target = DatabaseTarget.from_url(database_url)
    command.upgrade(alembic_config_for(load_project(ini), target), "heads")
    before = fingerprint(database_url)

    assert_refused(rollbook("plan", "--target", "-1", url=database_url, config=ini), 2, "several heads",
                   "b1f00d000002", HEAD)
    assert_refused(rollbook("plan", "--target", "0607bc5b8535", url=database_url, config=ini), 2,
                   "below several of the database's heads")
    # A unique prefix of a revision on one branch disambiguates.
    chosen = rollbook("plan", "--target", "b1f00d000001", "--json", url=database_url, config=ini)
    assert chosen.exit_code == 0, chosen.output
    assert [s["revision"] for s in json.loads(chosen.stdout)["steps"]] == ["b1f00d000002"]
    assert fingerprint(database_url) == before


def test_database_without_a_version_table(database_url):
    for args in (["status"], ["plan"]):
        assert_refused(rollbook(*args, url=database_url), 2, "no alembic_version table", "right database")


def test_a_version_table_env_py_computes_is_refused_until_alembic_ini_names_it(tmp_path, demo_url):
    ini = copy_of_demo(tmp_path)
    env_py = ini.parent / "env.py"
    env_py.write_text(env_py.read_text().replace(
        "context.configure(", "context.configure(version_table=os.environ.get('VERSION_TABLE', 'alembic_version'), "))
    before = fingerprint(demo_url)

    assert_refused(rollbook("plan", url=demo_url, config=ini), 2, "passes version_table= to context.configure",
                   "`version_table = <name>` (and `version_table_schema = <schema>` if it names one) in the "
                   "[alembic] section")
    ini.write_text(ini.read_text().replace("[alembic]\n", "[alembic]\nversion_table = alembic_version\n", 1))
    planned = rollbook("plan", "--json", url=demo_url, config=ini)
    assert planned.exit_code == 0, planned.output
    assert json.loads(planned.stdout)["current"] == HEAD
    assert fingerprint(demo_url) == before


def test_a_version_table_schema_env_py_computes_asks_for_the_schema_and_says_public_is_the_default(
        tmp_path, demo_url):
    # Phoenix: `_schema = get_env_database_schema() or None` (its own setting, unset by most users) is passed as
    # version_table_schema=; rollbook cannot run env.py to learn it, and asks for that one setting only.
    ini = copy_of_demo(tmp_path)
    env_py = ini.parent / "env.py"
    env_py.write_text(env_py.read_text().replace(
        "context.configure(", "context.configure(version_table_schema=os.environ.get('APP_DB_SCHEMA') or None, "))
    before = fingerprint(demo_url)

    refused = rollbook("plan", url=demo_url, config=ini)
    assert_refused(refused, 2, "passes version_table_schema= to context.configure",
                   "`version_table_schema = <schema>` (`public` when the value env.py computes is empty or None")
    assert "version_table_schema if it has one" not in refused.output
    ini.write_text(ini.read_text().replace("[alembic]\n", "[alembic]\nversion_table_schema = public\n", 1))
    planned = rollbook("plan", "--json", url=demo_url, config=ini)
    assert planned.exit_code == 0, planned.output
    assert json.loads(planned.stdout)["current"] == HEAD
    assert fingerprint(demo_url) == before


def test_missing_migration_file_for_the_current_revision(tmp_path, demo_url):
    ini = copy_of_demo(tmp_path)
    next((ini.parent / "versions").glob(f"{HEAD}_*.py")).unlink()
    before = fingerprint(demo_url)

    status = rollbook("status", "--json", url=demo_url, config=ini)
    assert status.exit_code == 0
    assert json.loads(status.stdout)["missing_files"] == [HEAD]
    assert_refused(rollbook("plan", url=demo_url, config=ini), 2, "Can't locate the migration file", HEAD,
                   "git checkout")
    assert fingerprint(demo_url) == before


def test_unreachable_database():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://nobody@127.0.0.1:{port}/nothing"
    assert_refused(rollbook("status", url=url), 3, "Cannot connect", "server is running", "Nothing was changed")


def test_wrong_password_is_refused_without_echoing_it(pg_server, demo_url):
    wrong = "not-the-password-%40x"
    url = url_with(demo_url, username=pg_server.app_user, password=wrong)
    result = rollbook("plan", url=url)
    assert_refused(result, 3, "password authentication failed", "PGPASSWORD")
    assert "not-the-password" not in result.output


def test_a_role_that_may_not_read_the_version_table_is_refused_clearly(pg_server, demo_url):
    # The app role logs in, but was granted nothing on the demo's tables.
    url = url_with(demo_url, username=pg_server.app_user, password=pg_server.app_password)
    for args in (["status"], ["plan"]):
        result = rollbook(*args, url=url)
        assert_refused(result, 3, f"The role {pg_server.app_user} may not read alembic_version (permission denied)",
                       "usually the role that runs the migrations")
        assert pg_server.app_password not in result.output


def test_password_with_percent_at_and_colon_works(pg_server, demo_url):
    import psycopg

    with psycopg.connect(**DatabaseTarget.from_url(demo_url).connect_kwargs(), autocommit=True) as conn:
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{pg_server.app_user}"')
    url = url_with(demo_url, username=pg_server.app_user, password=pg_server.app_password)
    assert "%25" in url and "%40" in url

    result = rollbook("plan", "--json", url=url)

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["current"] == HEAD
    assert pg_server.app_password not in result.output


def test_missing_alembic_ini(tmp_path, demo_url):
    missing = tmp_path / "nowhere" / "alembic.ini"
    assert_refused(rollbook("status", url=demo_url, config=missing), 2, f"No Alembic config at {missing}",
                   "--config")


def test_migration_file_that_fails_to_import(tmp_path, demo_url):
    ini = copy_of_demo(tmp_path)
    add_revision(ini, "badbadbad001", HEAD, body="pass\nimport module_that_does_not_exist")
    before = fingerprint(demo_url)
    assert_refused(rollbook("plan", url=demo_url, config=ini), 2, "fails to import", "module_that_does_not_exist",
                   "git checkout", "the project's own environment", "PYTHONPATH")
    assert fingerprint(demo_url) == before


def test_no_database_given():
    assert_refused(rollbook("status"), 2, "No database given", "DATABASE_URL")


def test_a_migration_file_whose_project_code_refuses_to_load_is_named_with_what_to_set(tmp_path, demo_url):
    """Zou's migrations import its app, which refuses to load without the SECRET_KEY its tools set."""
    ini = copy_of_demo(tmp_path)
    add_revision(ini, "badbadbad002", HEAD, body=(
        "pass\nimport os\nif not os.environ.get('APP_SECRET_KEY'):\n"
        "    raise RuntimeError('SECRET_KEY is set to the insecure default. Set it in production.')"))
    before = fingerprint(demo_url)
    result = rollbook("plan", url=demo_url, config=ini)
    assert_refused(result, 2, "badbadbad002_extra.py", "RuntimeError: SECRET_KEY is set to the insecure default",
                   "the settings the project's own tools run with")
    assert "production.." not in result.stderr
    assert fingerprint(demo_url) == before
