"""OpenStack's shapes (keystone): expand and contract branches from one revision, and migrations with no downgrade().

keystone's history is one initial revision with two labelled branches, `expand` and `contract`, each at its
own head in the version table; none of its migration files defines downgrade(), since OpenStack supports
no downgrades. A rollback names the branch (`contract@-1`), undoes that branch alone, and a step without
downgrade() is a certain failure named in words, never Alembic's AttributeError.
"""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from alembic import command
from click.testing import CliRunner
from pg import fingerprint, psycopg_kwargs

from rollbook.cli import main
from rollbook.errors import BadInput
from rollbook.execution.downgrade import execute_downgrade
from rollbook.execution.expected_schema import check_schema_matches
from rollbook.pg.database import DatabaseTarget
from rollbook.planning.plan import plan_downgrade
from rollbook.policy.gate import RollbackRequest, evaluate_policy
from rollbook.policy.rules import default_policy
from rollbook.project.migrations import alembic_config_for, load_project
from rollbook.recovery.rehearsal import rehearse_rollbacks

ENV_PY = (
    "from alembic import context\nfrom sqlalchemy import create_engine, pool\n"
    "engine = create_engine(context.config.get_main_option('sqlalchemy.url'), poolclass=pool.NullPool)\n"
    "with engine.connect() as connection:\n"
    "    context.configure(connection=connection)\n"
    "    with context.begin_transaction():\n"
    "        context.run_migrations()\n"
)

# revision: (down_revision, branch label, upgrade, downgrade or None for a file without downgrade())
Revisions = dict[str, tuple[str | None, str | None, str, str | None]]

EXPAND_CONTRACT: Revisions = {
    "aa0000000001": (None, None, "op.execute('CREATE TABLE project (id int PRIMARY KEY, name text, old text)')",
                     "op.execute('DROP TABLE project')"),
    "ee0000000001": ("aa0000000001", "expand", "op.execute('ALTER TABLE project ADD COLUMN tags text')",
                     "op.execute('ALTER TABLE project DROP COLUMN tags')"),
    "ee0000000002": ("ee0000000001", None, "op.execute('CREATE INDEX project_name ON project (name)')",
                     "op.execute('DROP INDEX project_name')"),
    "cc0000000001": ("aa0000000001", "contract", "op.execute('ALTER TABLE project ALTER COLUMN name SET NOT NULL')",
                     "op.execute('ALTER TABLE project ALTER COLUMN name DROP NOT NULL')"),
    "cc0000000002": ("cc0000000001", None, "op.execute('COMMENT ON TABLE project IS NULL')",
                     "op.execute('COMMENT ON TABLE project IS NULL')"),
}


def write_project(root: Path, revisions: Revisions) -> Path:
    (root / "versions").mkdir(parents=True)
    (root / "alembic.ini").write_text("[alembic]\nscript_location = %(here)s\npath_separator = os\n")
    (root / "env.py").write_text(ENV_PY)
    for revision, (down, label, upgrade, downgrade) in revisions.items():
        source = (f'"""{revision}"""\nfrom alembic import op\nrevision = "{revision}"\ndown_revision = {down!r}\n'
                  f"branch_labels = {(label,) if label else None!r}\n\n\ndef upgrade():\n    {upgrade}\n")
        if downgrade is not None:
            source += f"\n\ndef downgrade():\n    {downgrade}\n"
        (root / "versions" / f"{revision}.py").write_text(source)
    return root / "alembic.ini"


def at_heads(tmp_path: Path, url: str, revisions: Revisions) -> tuple[Path, DatabaseTarget]:
    ini = write_project(tmp_path / "project", revisions)
    target = DatabaseTarget.from_url(url)
    command.upgrade(alembic_config_for(load_project(ini), target), "heads")
    return ini, target


def rollbook(*args: str, url: str, config: Path):
    return CliRunner().invoke(main, list(args), env={"DATABASE_URL": url, "ALEMBIC_CONFIG": str(config)},
                              catch_exceptions=False)


def version_rows(url: str) -> set[str]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return {row[0] for row in conn.execute("SELECT version_num FROM alembic_version")}


def columns(url: str) -> set[str]:
    with psycopg.connect(**psycopg_kwargs(url)) as conn:
        return {row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'project'")}


def test_a_target_without_a_branch_is_refused_with_the_targets_to_give(tmp_path, database_url):
    ini, _ = at_heads(tmp_path, database_url, EXPAND_CONTRACT)
    before = fingerprint(database_url)

    for target in ("-1", "base"):
        result = rollbook("plan", "--target", target, url=database_url, config=ini)
        assert result.exit_code == 2 and "Traceback" not in result.stderr
        assert "cc0000000002 (branch contract)" in result.stderr and "ee0000000002 (branch expand)" in result.stderr
        assert "contract@-1 or expand@-1" in result.stderr
    below_both = rollbook("plan", "--target", "aa0000000001", url=database_url, config=ini)
    assert below_both.exit_code == 2 and "contract@aa0000000001" in below_both.stderr
    assert fingerprint(database_url) == before


def test_a_branch_target_plans_that_branch_alone(tmp_path, database_url):
    ini, _ = at_heads(tmp_path, database_url, EXPAND_CONTRACT)

    def steps(target: str) -> list[str]:
        result = rollbook("plan", "--target", target, "--json", url=database_url, config=ini)
        assert result.exit_code == 0, result.output
        return [step["revision"] for step in json.loads(result.stdout)["steps"]]

    assert steps("contract@-1") == ["cc0000000002"]
    assert steps("expand@-2") == ["ee0000000002", "ee0000000001"]
    assert steps("contract@aa0000000001") == ["cc0000000002", "cc0000000001"]
    assert steps("ee0000000002@-1") == ["ee0000000002"]  # a revision on the branch names it too
    # The script's last step leaves the branch point to the other branch: its version row goes, as Alembic does it.
    script = rollbook("plan", "--target", "contract@aa0000000001", "--sql", url=database_url, config=ini).stdout
    assert "SET version_num='cc0000000001' WHERE alembic_version.version_num = 'cc0000000002'" in script
    assert "DELETE FROM alembic_version WHERE alembic_version.version_num = 'cc0000000001'" in script
    # Below the branch point, the other branch stands on what would be undone: Alembic would undo it too.
    shared = rollbook("plan", "--target", "contract@base", url=database_url, config=ini)
    assert shared.exit_code == 2 and "aa0000000001" in shared.stderr and "ee0000000002" in shared.stderr
    unknown = rollbook("plan", "--target", "migrate@-1", url=database_url, config=ini)
    assert unknown.exit_code == 2 and "contract@-1 or expand@-1" in unknown.stderr


def test_undoing_a_branch_down_to_the_branch_point_leaves_the_other_branch_applied(tmp_path, database_url):
    ini, target = at_heads(tmp_path, database_url, EXPAND_CONTRACT)
    project = load_project(ini)
    plan = plan_downgrade(target, project, "contract@aa0000000001")

    result = execute_downgrade(target, project, plan, lock_timeout_ms=2000, statement_timeout_ms=30000)

    assert result.succeeded, result.to_text()
    # Alembic's plain `downgrade aa0000000001` would have undone expand too (its tags column and index).
    assert version_rows(database_url) == {"ee0000000002"}
    assert "tags" in columns(database_url)
    # The runbook's schema check holds the change against the snapshot taken before: the expand branch that
    # stayed is no difference.
    check = check_schema_matches(target, project, "aa0000000001", before=result.schema_before, start="cc0000000002")
    assert check.passed, check.differences


KEYSTONE_LIKE: Revisions = {
    "aa0000000001": (None, None, "op.execute('CREATE TABLE project (id int PRIMARY KEY, name text)')", None),
    "aa0000000002": ("aa0000000001", None, "op.execute('ALTER TABLE project ADD COLUMN schema_version text')", None),
}


def test_a_migration_without_downgrade_is_a_certain_failure_named_in_words(tmp_path, database_url):
    ini, target = at_heads(tmp_path, database_url, KEYSTONE_LIKE)
    before = fingerprint(database_url)

    planned = rollbook("plan", "--target", "-1", "--json", url=database_url, config=ini)

    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    assert plan["verdict"] == "do_not_downgrade"
    [step] = plan["steps"]
    [operation] = step["operations"]
    assert operation["fails"] and "has no downgrade() function" in operation["detail"]
    assert step["risk"] == "high"
    sql = rollbook("plan", "--target", "-1", "--sql", url=database_url, config=ini)
    assert sql.exit_code == 1 and sql.stdout == "" and "has no downgrade() function" in sql.stderr
    assert "AttributeError" not in planned.output + sql.stderr
    assert fingerprint(database_url) == before

    # The policy gate refuses it, and advises what helps: no fix of rows does.
    project = load_project(ini)
    decision = evaluate_policy(default_policy(), RollbackRequest("staging", "alice", accept_data_loss=True),
                               plan_downgrade(target, project, "-1"), backup_verified=True)
    [blocked] = [result for result in decision.results if result.outcome == "fail"]
    assert "has no downgrade() function" in blocked.reason and "restore from a backup" in blocked.remedy
    assert "rows or objects" not in blocked.remedy

    # Run anyway (the library is asked directly): the step fails in words.
    result = execute_downgrade(target, project, plan_downgrade(target, project, "-1"), lock_timeout_ms=2000,
                               statement_timeout_ms=30000)
    assert not result.succeeded and "has no downgrade() function" in result.steps[0].error
    assert version_rows(database_url) == {"aa0000000002"}


def test_the_rehearsal_holds_a_missing_downgrade_as_predicted(tmp_path, database_url):
    # keystone's shape: two branches, neither with a downgrade(); each failure names its own revision.
    ini = write_project(tmp_path / "project", {
        **KEYSTONE_LIKE, "aa0000000003": ("aa0000000001", "contract", "op.execute('COMMENT ON TABLE project IS NULL')",
                                          None)})

    report = rehearse_rollbacks(DatabaseTarget.from_url(database_url), load_project(ini))

    for trip in report.round_trips:
        assert trip.rows.status == "passed" and "predicted that the downgrade fails" in trip.rows.detail
        assert "has no downgrade() function" in trip.rows.detail and "AttributeError" not in trip.rows.detail
        assert f"downgrade of {trip.revision.revision} failed: the migration file of {trip.revision.revision} " \
            in trip.down.detail


# Flask-Migrate's env.py template: the URL comes from the running Flask app, so env.py works only in its context.
FLASK_MIGRATE_ENV_PY = (
    "from alembic import context\nfrom flask import current_app\nfrom sqlalchemy import create_engine, pool\n"
    "url = current_app.config['SQLALCHEMY_DATABASE_URI']\n"
    "engine = create_engine(url, poolclass=pool.NullPool)\n"
    "with engine.connect() as connection:\n"
    "    context.configure(connection=connection)\n"
    "    with context.begin_transaction():\n"
    "        context.run_migrations()\n"
)
FLASK_APP_PY = (
    "import os\nfrom flask import Flask\n\n\ndef create_app():\n    app = Flask(__name__)\n"
    "    app.config['SQLALCHEMY_DATABASE_URI'] = os.environ['BUDGET_DATABASE_URI']\n    return app\n"
)
BUDGET: Revisions = {
    "bb0000000001": (None, None, "op.execute('CREATE TABLE bill (id int PRIMARY KEY)')",
                     "op.execute('DROP TABLE bill')"),
    "bb0000000002": ("bb0000000001", None, "op.execute('ALTER TABLE bill ADD COLUMN what text')",
                     "op.execute('ALTER TABLE bill DROP COLUMN what')"),
}


def test_a_flask_migrate_env_py_runs_inside_the_app_named_in_the_settings(tmp_path, database_url, monkeypatch):
    pytest.importorskip("flask")
    ini, target = at_heads(tmp_path, database_url, BUDGET)
    (ini.parent / "env.py").write_text(FLASK_MIGRATE_ENV_PY)
    (ini.parent / "budget_app.py").write_text(FLASK_APP_PY)
    monkeypatch.setenv("BUDGET_DATABASE_URI", database_url)
    monkeypatch.delenv("FLASK_APP", raising=False)
    project = load_project(ini)

    def undo_head():
        return execute_downgrade(target, project, plan_downgrade(target, project, "-1"), lock_timeout_ms=2000,
                                 statement_timeout_ms=30000)

    unnamed = undo_head()
    assert not unnamed.succeeded and version_rows(database_url) == {"bb0000000002"}
    assert "flask_app" in unnamed.steps[0].error and "RuntimeError" not in unnamed.steps[0].error

    (ini.parent / "rollbook.toml").write_text('[project]\nflask_app = "budget_app.py:make_app()"\n')
    with pytest.raises(BadInput, match="could not be loaded") as misnamed:
        undo_head()
    assert "flask_app in [project]" in str(misnamed.value) and version_rows(database_url) == {"bb0000000002"}

    (ini.parent / "rollbook.toml").write_text('[project]\nflask_app = "budget_app.py:create_app()"\n')
    named = undo_head()
    assert named.succeeded, named.to_text()
    assert version_rows(database_url) == {"bb0000000001"}


def test_the_rehearsal_undoes_each_revision_of_each_branch_alone(tmp_path, database_url):
    ini = write_project(tmp_path / "project", EXPAND_CONTRACT)

    report = rehearse_rollbacks(DatabaseTarget.from_url(database_url), load_project(ini))

    assert sorted(trip.revision.revision for trip in report.round_trips) == sorted(EXPAND_CONTRACT)
    failed = {trip.revision.revision: [f for f, _ in trip.failures()] for trip in report.round_trips if not trip.passed}
    assert not failed and report.team_test.status == "passed", (failed, report.team_test)
    first_contract = next(trip for trip in report.round_trips if trip.revision.revision == "cc0000000001")
    # Undone from the branch point alone: the expand branch, walked first or not, keeps its heads.
    assert "the schema equals" in first_contract.down.detail


# keystone's initial migration reads keystone.conf.CONF.saml, registered only by keystone.conf.configure(), which
# keystone-manage calls first: rollbook calls the function the `prepare` setting names before loading migrations.
SETTINGS_MODULE = "identity_settings_for_rollbook_test"
PREPARED: Revisions = {
    "dd0000000001": (None, None, f"import {SETTINGS_MODULE}; op.execute('CREATE TABLE service_provider (prefix text "
                     f"DEFAULT ' + repr({SETTINGS_MODULE}.OPTIONS['relay_state_prefix']) + ')')",
                     "op.execute('DROP TABLE service_provider')"),
}


def test_the_prepare_function_runs_before_the_migrations_load(tmp_path, database_url, monkeypatch):
    ini = write_project(tmp_path / "project", PREPARED)
    (ini.parent / f"{SETTINGS_MODULE}.py").write_text(
        "OPTIONS = {}\n\n\ndef configure():\n    OPTIONS['relay_state_prefix'] = 'ss:mem:'\n")
    monkeypatch.syspath_prepend(str(ini.parent))
    server = DatabaseTarget.from_url(database_url)

    unprepared = rehearse_rollbacks(server, load_project(ini))
    assert "KeyError" in unprepared.round_trips[0].down.detail

    (ini.parent / "rollbook.toml").write_text(f'[project]\nprepare = "{SETTINGS_MODULE}:configure"\n')
    prepared = rehearse_rollbacks(server, load_project(ini))
    assert prepared.round_trips[0].passed, prepared.round_trips[0].failures()

    (ini.parent / "rollbook.toml").write_text(f'[project]\nprepare = "{SETTINGS_MODULE}:missing"\n')
    result = rollbook("status", url=database_url, config=ini)
    assert result.exit_code == 2 and "prepare in [project]" in result.stderr and "Traceback" not in result.stderr
