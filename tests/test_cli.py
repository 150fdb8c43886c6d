"""The `rollbook` command as a user runs it: a real process, real output, real exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from rollbook.records.archive import Archive

ROLLBOOK = shutil.which("rollbook", path=str(Path(sys.executable).parent)) or "rollbook"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ROLLBOOK, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_plan_json_contract(demo_url):
    result = run("plan", "--target", "-1", "--json", env={"DATABASE_URL": demo_url, "ALEMBIC_CONFIG": ""})
    assert result.returncode == 2  # no alembic.ini in the working directory: refused, not guessed
    assert "No Alembic config at alembic.ini" in result.stderr

    from rollbook.demo.server import DEMO_CONFIG

    result = run("plan", "--target", "-1", "--json", env={"DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(DEMO_CONFIG)})
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert {"current", "target", "verdict", "steps"} <= plan.keys()
    step = plan["steps"][0]
    assert {"revision", "down_revision", "file", "sha256", "migration_type", "risk", "operations"} <= step.keys()
    operation = step["operations"][0]
    assert {"op", "table", "column", "risk", "rows_affected", "detail"} <= operation.keys()
    assert (step["migration_type"], step["risk"], operation["op"], operation["rows_affected"]) == (
        "data_migration", "high", "update", 9)


def test_sql_output_is_the_downgrade_from_the_current_revision(demo_url):
    from rollbook.demo.server import DEMO_CONFIG

    result = run("plan", "--target", "-2", "--sql", env={"DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(DEMO_CONFIG)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.index("UPDATE users SET status = NULL") < result.stdout.index("CREATE TABLE old_sessions")
    assert "version_num='0607bc5b8534'" in result.stdout


def _status_in_shell(exports: str) -> subprocess.CompletedProcess[str]:
    """`rollbook status --json` in a shell that evaluated `demo up`'s export lines."""
    return subprocess.run(["bash", "-c", f'eval "$1" && "{ROLLBOOK}" status --json', "_", exports],
                          capture_output=True, text=True, env=dict(os.environ), timeout=60)


def test_demo_up_exports_a_working_environment_and_down_stops_it(tmp_path):
    env = {"ROLLBOOK_DEMO_DIR": str(tmp_path / "demo")}
    up = run("demo", "up", env=env)
    try:
        assert up.returncode == 0, up.stderr
        exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
        assert set(exports) == {"DATABASE_URL", "ALEMBIC_CONFIG", "ROLLBOOK_DEMO_DIR"}
        assert json.loads(_status_in_shell(up.stdout).stdout)["current"] == ["0607bc5b8536"]
    finally:
        down = run("demo", "down", env=env)
    assert down.returncode == 0, down.stderr
    assert down.stdout.startswith(f"Stopped the demo server in {tmp_path / 'demo'} (pid ")
    assert _status_in_shell(up.stdout).returncode == 3
    again = run("demo", "down", env=env)
    assert (again.returncode, again.stdout.strip()) == (
        0, f"No demo server was running in {tmp_path / 'demo'}; nothing to stop.")


def test_two_shells_each_get_a_demo_of_their_own(tmp_path):
    """A second `demo up` never stops or replaces the first shell's server."""
    env = {"TMPDIR": str(tmp_path), "ROLLBOOK_DEMO_DIR": ""}
    first = run("demo", "up", env=env)
    second = run("demo", "up", env=env)
    shells = [dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
              for up in (first, second)]
    try:
        assert (first.returncode, second.returncode) == (0, 0), first.stderr + second.stderr
        assert shells[0]["ROLLBOOK_DEMO_DIR"] != shells[1]["ROLLBOOK_DEMO_DIR"]
        for up in (first, second):
            assert json.loads(_status_in_shell(up.stdout).stdout)["current"] == ["0607bc5b8536"]
        # A third shell told to use the first one's folder is refused, and the first demo keeps working.
        clash = run("demo", "up", env={"ROLLBOOK_DEMO_DIR": shells[0]["ROLLBOOK_DEMO_DIR"].strip("'")})
        assert clash.returncode == 2 and "Traceback" not in clash.stderr
        assert "A demo server is already running in" in clash.stderr and "Nothing was changed" in clash.stderr
        assert json.loads(_status_in_shell(first.stdout).stdout)["current"] == ["0607bc5b8536"]
        unnamed = run("demo", "down", env=env)
        assert unnamed.returncode == 2 and "ROLLBOOK_DEMO_DIR is not set" in unnamed.stderr
        assert json.loads(_status_in_shell(second.stdout).stdout)["current"] == ["0607bc5b8536"]
    finally:
        for shell in shells:
            if "ROLLBOOK_DEMO_DIR" in shell:
                run("demo", "down", env={"ROLLBOOK_DEMO_DIR": shell["ROLLBOOK_DEMO_DIR"].strip("'")})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("rollbook-demo-")]


def test_guided_tour_runs_the_runbook_twice_and_leaves_only_its_records(tmp_path):
    cwd, archive = tmp_path / "cwd", tmp_path / "archive"
    cwd.mkdir()
    result = subprocess.run([ROLLBOOK, "demo"], capture_output=True, text=True, timeout=300, cwd=cwd,
                            env={**os.environ, "TMPDIR": str(tmp_path), "ROLLBOOK_ARCHIVE": str(archive)})
    assert result.returncode == 0, result.stderr
    assert "The database is at head." in result.stdout
    assert "verdict: refused at policy gate" in result.stdout
    assert "policy risk: fail" in result.stdout
    assert "verdict: succeeded" in result.stdout
    assert "database moved 0607bc5b8536 -> 0607bc5b8535" in result.stdout
    assert "database left at 0607bc5b8536" in result.stdout
    assert "schema: passed" in result.stdout
    records = sorted(p.name for p in archive.glob("*.ipynb"))
    assert len(records) == 2
    assert "_rollback_refused_" in records[0] and "_rollback_succeeded_" in records[1]
    assert list(cwd.iterdir()) == []
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(("rollbook-tour-", "rollbook-run-"))]
    verify = run("archive", "verify", env={"ROLLBOOK_ARCHIVE": str(archive)})
    assert verify.returncode == 0 and "hash chain intact" in verify.stdout
    assert result.stderr.splitlines()[-1] == f"archive head: {Archive(archive).head()}"


def test_sql_output_refuses_a_downgrade_it_cannot_render_and_writes_no_partial_script(tmp_path, database_url):
    from alembic_projects import project_at_head

    revisions = {
        "a1": (None, "op.execute('CREATE TABLE counted (id int)')", "op.execute('DROP TABLE counted')"),
        "a2": ("a1", "op.execute('INSERT INTO counted VALUES (1)')",
               "op.get_bind().exec_driver_sql('DELETE FROM counted WHERE id = 1')"),
        "a3": ("a2", "pass", "pass"),
    }
    project, _, _ = project_at_head(tmp_path, database_url, revisions)
    env = {"DATABASE_URL": database_url, "ALEMBIC_CONFIG": str(project.config_path)}

    refused = run("plan", "--target", "base", "--sql", env=env)
    empty = run("plan", "--target", "a2", "--sql", env=env)

    assert refused.returncode == 1, refused.stderr
    assert refused.stdout == ""  # nothing a pipe into psql could run: no UPDATE of alembic_version past a2
    assert refused.stderr.startswith("rollbook: The downgrade of a2 (") and "Traceback" not in refused.stderr
    assert "cannot be rendered offline" in refused.stderr and "none was written" in refused.stderr
    assert empty.returncode == 0, empty.stderr
    assert "-- downgrade() of a3 is empty: only the version table changes" in empty.stdout
    assert "UPDATE alembic_version SET version_num='a2' WHERE alembic_version.version_num = 'a3';" in empty.stdout


def test_a_project_that_prints_or_logs_to_stdout_leaves_json_and_sql_clean(tmp_path, demo_url):
    """A migration module that prints and logs to stdout on import (as some real histories do)."""
    from rollbook.demo.server import DEMO_CONFIG

    project = tmp_path / "project"
    shutil.copytree(DEMO_CONFIG.parent, project, ignore=shutil.ignore_patterns("__pycache__"))
    noisy = project / "versions" / "0607bc5b8536_noisy_helpers.py"
    original = next((project / "versions").glob("0607bc5b8536_*.py"))
    noisy.write_text(
        "import logging, sys\nlogging.basicConfig(stream=sys.stdout, level=logging.INFO, force=True)\n"
        "logging.getLogger('app').info('configuring the app')\nprint('hello from the migrations')\n"
        + original.read_text())
    original.unlink()
    env = {"DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(project / "alembic.ini")}

    status = run("status", "--json", env=env)
    plan = run("plan", "--target", "-1", "--json", env=env)
    sql = run("plan", "--target", "-1", "--sql", env=env)

    assert json.loads(status.stdout)["current"] == ["0607bc5b8536"], status.stdout
    assert json.loads(plan.stdout)["steps"][0]["revision"] == "0607bc5b8536", plan.stdout
    assert sql.returncode == 0, sql.stderr
    assert "hello" not in sql.stdout and "configuring" not in sql.stdout
    assert sql.stdout.startswith("-- Running downgrade 0607bc5b8536 -> 0607bc5b8535\nBEGIN;"), sql.stdout
    assert "INFO" not in sql.stdout
    assert "hello from the migrations" in status.stderr and "configuring the app" in status.stderr


def test_plan_takes_the_revision_as_alembic_downgrade_does_and_exits_with_its_verdict(demo_url, tmp_path):
    """`rollbook plan -1` as `alembic downgrade -1`; `--exit-code` lets CI gate on the verdict."""
    from rollbook.demo.server import DEMO_CONFIG

    env = {"DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(DEMO_CONFIG)}
    positional = run("plan", "-1", "--json", env=env)
    option = run("plan", "--target", "-1", "--json", env=env)
    assert positional.returncode == 0, positional.stderr
    assert json.loads(positional.stdout)["plan_hash"] == json.loads(option.stdout)["plan_hash"]

    as_module = subprocess.run([sys.executable, "-m", "rollbook", "plan", "-1", "--exit-code"], capture_output=True,
                               text=True, timeout=120, env={**os.environ, **env})
    assert "DO NOT DOWNGRADE" in as_module.stdout and as_module.returncode == 7, as_module.stderr
    without_exit_code = run("plan", "-1", env=env)
    assert "DO NOT DOWNGRADE" in without_exit_code.stdout and without_exit_code.returncode == 0
    nothing_to_do = run("plan", "0607bc5b8536", "--exit-code", env=env)
    assert nothing_to_do.returncode == 0, nothing_to_do.stderr


def test_plan_refuses_unclear_command_lines_with_exit_2(demo_url, tmp_path):
    from rollbook.demo.server import DEMO_CONFIG

    env = {"DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(DEMO_CONFIG)}
    cases = {
        ("plan", "--jsn"): "No such option '--jsn'",
        ("plan", "-1", "--jsn"): "unexpected extra argument (--jsn)",
        ("plan", "-1", "--target", "-2"): "Two targets given",
        ("plan", "-1", "--statement-timeout", "5 minutes"): "must be a duration such as 500ms, 5s, 2min or 1h",
        ("plan", "-1", "-n", "tenants"): "has no [tenants] section (--name); its sections are alembic, loggers",
    }
    for args, message in cases.items():
        result = run(*args, env=env)
        assert (result.returncode, "Traceback" not in result.stderr) == (2, True), (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)


def test_a_named_section_of_alembic_ini_is_read_as_alembic_n_reads_it(demo_url, tmp_path):
    """An alembic.ini holding several databases: `-n` names the section, as `alembic -n` does."""
    from rollbook.demo.server import DEMO_CONFIG

    ini = tmp_path / "alembic.ini"
    ini.write_text(f"[main]\nscript_location = /nonexistent\n\n[demo]\nscript_location = {DEMO_CONFIG.parent}\n"
                   "path_separator = os\n")
    result = run("status", "-c", str(ini), "-n", "demo", "--json", env={"DATABASE_URL": demo_url})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["current"] == ["0607bc5b8536"]
