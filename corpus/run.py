"""Run rollbook on the real migration histories of the corpus and write what it found into corpus/README.md.

    .venv/bin/python corpus/run.py                     # every project, on an embedded server
    .venv/bin/python corpus/run.py --only prefect      # one project
    .venv/bin/python corpus/run.py --database-url postgresql://postgres@127.0.0.1:5432/postgres

For each project: a virtualenv of its own under corpus/.work/ with the project from PyPI and rollbook
(editable, from this checkout), a fresh database brought to head with the project's own command, rows
written into it, then `rollbook status`, `plan --target base --json`, `plan --target -3 --sql`, an
executed staging rollback of three steps through the runbook, and `test-rollback --json` (a history with
several heads names its branch in both targets: `expand@27e647c0fad4`, `expand@-3`). The plan is
held against the rehearsal: a step the plan says fails (or must not be downgraded) whose round trip
succeeds is a false "fails"; a LOW step whose rehearsal lost rows the plan did not predict is a false
"safe". Results go to corpus/results/<name>.json and the table in corpus/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from projects import PROJECTS, CorpusProject  # noqa: E402

from rollbook.pg.embedded_server import start_embedded_server  # noqa: E402

CORPUS = Path(__file__).resolve().parent
REPOSITORY = CORPUS.parent
WORK = CORPUS / ".work"
RESULTS = CORPUS / "results"
TABLE_START, TABLE_END = "<!-- corpus:results -->", "<!-- /corpus:results -->"
# Internal error texts that must never reach a user: a traceback, Python's own exception names, a driver's
# placeholder complaint. (The database's answer to a failing migration, e.g. "IntegrityError: duplicate key",
# and what a migration's own code raised, "downgrade of REV raised AttributeError: ...", are the cause of a real
# failure and are reported as such.)
INTERNAL = re.compile(r"Traceback \(most recent call last\)|there is no parameter \$\d|(?<!raised )"
                      r"\b(Attribute|Type|Key|Value|Name|Import|ModuleNotFound|Index|Assertion|Runtime)Error: ")
# How SQLAlchemy reports the database's own refusal of a statement.
DATABASE_REFUSAL = re.compile(r"sqlalchemy\.exc\.(?:Programming|Integrity|Data|Internal|NotSupported)Error: .*")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", help="a project name (repeatable); default: all")
    parser.add_argument("--database-url", help="an admin URL of a server to use instead of the embedded one")
    arguments = parser.parse_args()
    chosen = [p for p in PROJECTS if not arguments.only or p.name in arguments.only]
    RESULTS.mkdir(exist_ok=True)
    with server(arguments.database_url) as admin_url:
        for project in chosen:
            result = run_project(project, admin_url)
            (RESULTS / f"{project.name}.json").write_text(json.dumps(result, indent=2) + "\n")
            print(f"{project.name}: {result['summary']}", file=sys.stderr)
    write_readme()
    return 0


@contextmanager
def server(admin_url: str | None) -> Iterator[str]:
    if admin_url:
        yield admin_url
        return
    embedded = start_embedded_server(WORK / "server")
    try:
        yield embedded.url()
    finally:
        embedded.stop(delete_data=True)


def run_project(project: CorpusProject, admin_url: str) -> dict[str, Any]:
    work = WORK / project.name
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    timings: dict[str, float] = {}
    venv = prepare_virtualenv(project, work, timings)
    url = fresh_database(admin_url, project)
    project_url = make_url(url).set(drivername=project.driver).render_as_string(hide_password=False)
    libpq_url = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    env = {**os.environ, "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.update({key: value.format(url=project_url, libpq_url=libpq_url, work=work)
                for key, value in project.upgrade_env.items()})
    upgrade = timed(timings, "upgrade", [part.format(url=project_url, libpq_url=libpq_url, work=work)
                                         for part in project.upgrade], env, work)
    result: dict[str, Any] = {"project": project.name, "requirement": project.requirement,
                              "user_notes": project.user_notes, "upgrade": tail(upgrade)}
    if upgrade.returncode != 0:
        result["summary"] = "the project's own upgrade to head failed"
        return {**result, "timings": timings}
    config = python_says(venv, project.locate_config.replace("{work}", str(work)), env)
    if project.settings:
        (Path(config).parent / "rollbook.toml").write_text(project.settings)
    seed_notes = seed(url, project)
    rollbook_env = {**env, "DATABASE_URL": project_url, "ALEMBIC_CONFIG": config,
                    "ROLLBOOK_ARCHIVE": str(work / "archive")}
    rollbook = str(venv / "bin" / "rollbook")
    commands = {
        "status": [rollbook, "status", "--json"],
        "plan": [rollbook, "plan", "--target", project.plan_target, "--json"],
        "sql": [rollbook, "plan", "--target", project.rollback_target, "--sql"],
        "rollback": [rollbook, "run", "rollback", "-r", "target_revision", project.rollback_target, "-p",
                     "environment", "staging",
                     "-p", "operator", "corpus", "-p", "accept_data_loss", "True", "-p", "backup_dir",
                     str(work / "backups"), "--execute"],
        "rehearsal": [rollbook, "test-rollback", "--json"],
    }
    outputs = {name: timed(timings, name, command, rollbook_env, work) for name, command in commands.items()}
    for name, completed in outputs.items():  # whole outputs, for reading by hand (corpus/.work is not committed)
        (work / f"{name}.out").write_text(completed.stdout)
        (work / f"{name}.err").write_text(completed.stderr)
    plan = parse_json(outputs["plan"].stdout)
    rehearsal = parse_json(outputs["rehearsal"].stdout)
    head_step = live_head_step(plan, project, url, venv, config, env, work)
    findings = compare(plan, rehearsal, head_step)
    internal = sorted({f"{name}: {match.group(0)}" for name, out in outputs.items()
                       for match in INTERNAL.finditer(out.stdout + out.stderr)})
    result.update({
        "seed_notes": seed_notes,
        "revisions": len(plan.get("steps", [])) if plan else None,
        "risk": dict(Counter(step["risk"] for step in plan.get("steps", []))) if plan else {},
        "verdict": plan.get("verdict") if plan else None,
        "rollback": (outputs["rollback"].stdout.splitlines() or ["(no output)"])[0],
        "rehearsal": rehearsal_summary(rehearsal),
        "head_step_on_live_copy": head_step,
        "false_fails": findings["false_fails"],
        "false_safe": findings["false_safe"],
        "internal_errors": internal,
        "commands": {name: tail(out) for name, out in outputs.items()},
        "timings": timings,
        "seconds": round(time.monotonic() - started, 1),
    })
    result["summary"] = (f"{result['revisions']} revisions, verdict {result['verdict']}, rollback "
                         f"{result['rollback']!r}, {len(findings['false_fails'])} false fails, "
                         f"{len(findings['false_safe'])} false safe, {len(internal)} internal error texts")
    return result


def python_says(venv: Path, code: str, env: dict[str, str], *arguments: str) -> str:
    """What `code`, run by the project's Python with `arguments`, prints (a path)."""
    return subprocess.run([str(venv / "bin" / "python"), "-c", code, *arguments], capture_output=True, text=True,
                          check=True, env=env).stdout.strip()


def prepare_virtualenv(project: CorpusProject, work: Path, timings: dict[str, float]) -> Path:
    venv = work / "venv"
    marker = venv / "corpus-installed.txt"
    # rollbook's own dependencies are part of what was installed: a change to them makes a new virtualenv.
    rollbook_requirements = hashlib.sha256((REPOSITORY / "pyproject.toml").read_bytes()).hexdigest()
    wanted = " ".join([project.requirement, *project.extra_requirements, str(REPOSITORY), rollbook_requirements])
    if marker.exists() and marker.read_text() == wanted:
        return venv
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", project.requirement, *project.extra_requirements,
                    "-e", str(REPOSITORY)], check=True)
    marker.write_text(wanted)
    timings["install"] = round(time.monotonic() - started, 1)
    return venv


def fresh_database(admin_url: str, project: CorpusProject) -> str:
    name = f"corpus_{project.name}"
    admin = make_url(admin_url)
    with psycopg.connect(admin.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        for extension in project.extensions:
            conn.execute(sql.SQL("CREATE EXTENSION IF NOT EXISTS {}").format(sql.Identifier(extension)))
    return url


def seed(url: str, project: CorpusProject) -> list[str]:
    """Write the project's rows; a statement that fails is noted, not fatal (the corpus reports it)."""
    notes = []
    with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as conn:
        for statement in project.seed_sql:
            try:
                conn.execute(statement)
            except psycopg.Error as error:
                notes.append(f"{statement[:60]}...: {error.diag.message_primary}")
    return notes


def timed(timings: dict[str, float], name: str, command: list[str], env: dict[str, str],
          cwd: Path) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=3600)
    except subprocess.TimeoutExpired as expired:
        completed = subprocess.CompletedProcess(command, -1, str(expired.stdout or ""), "timed out after an hour")
    timings[name] = round(time.monotonic() - started, 1)
    return completed


def parse_json(text: str) -> dict[str, Any]:
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def live_head_step(plan: dict[str, Any], project: CorpusProject, url: str, venv: Path, config: str,
                   env: dict[str, str], work: Path) -> dict[str, Any] | None:
    """The project's own downgrade of the head step, run with Alembic on a copy of the live database.

    The rehearsal builds its databases from the migrations; a database the project made with create_all may
    differ from them (an index named otherwise), and the plan's predictions about it are about the live
    schema. When the plan says the first step fails, this runs it there, so a true prediction is told from
    a false one. Only the database's own refusal (a DBAPI error) confirms it: an env.py that cannot run under
    the plain `alembic` command (Dagster's wants a handed connection) confirms nothing.
    """
    steps = plan.get("steps", [])
    if not steps or not any(op.get("fails") for op in steps[0]["operations"]):
        return None
    source = make_url(url)
    copy_name = f"{source.database}_live_copy"
    admin = source.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(copy_name)))
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(copy_name),
                                                                       sql.Identifier(source.database)))
    copy = source.set(database=copy_name)
    copy_url = copy.set(drivername=project.driver).render_as_string(hide_password=False)
    copy_libpq_url = copy.set(drivername="postgresql").render_as_string(hide_password=False)
    # The project's own settings name the copy too, for an env.py that reads them rather than sqlalchemy.url.
    copy_env = {**env, **{key: value.format(url=copy_url, libpq_url=copy_libpq_url, work=work)
                          for key, value in project.upgrade_env.items()}}
    ini = work / "alembic-live-copy.ini"
    try:
        python_says(venv, "import configparser, sys; ini = configparser.ConfigParser(interpolation=None); "
                    "ini.read(sys.argv[1]); ini['alembic']['sqlalchemy.url'] = sys.argv[2]; "
                    "ini.write(open(sys.argv[3], 'w'))", copy_env, config, copy_url.replace("%", "%%"), str(ini))
        completed = subprocess.run([str(venv / "bin" / "alembic"), "-c", str(ini), "downgrade", "-1"],
                                   capture_output=True, text=True, env=copy_env, cwd=Path(config).parent,
                                   timeout=600)
    finally:
        ini.unlink(missing_ok=True)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(copy_name)))
    refusal = DATABASE_REFUSAL.findall(completed.stderr)
    return {"revision": steps[0]["revision"], "failed": completed.returncode != 0 and bool(refusal),
            "database_said": refusal[-1:]}


def compare(plan: dict[str, Any], rehearsal: dict[str, Any],
            head_step: dict[str, Any] | None = None) -> dict[str, list[str]]:
    """Hold the plan's verdict of each step against what its rehearsal round trip really did."""
    trips = {trip["revision"]: trip for trip in rehearsal.get("revisions", [])}
    false_fails, false_safe = [], []
    for step in plan.get("steps", []):
        trip = trips.get(step["revision"])
        if trip is None:
            continue
        says_fails = [op["detail"] for op in step["operations"] if op.get("fails")]
        # The rehearsal downgrades a copy holding seeded rows: a predicted failure that did not happen there.
        failed_as_predicted = trip["rows_as_planned"]["detail"].startswith(
            "the plan predicted that the downgrade fails")
        # A failure the project's own downgrade shows on a copy of the live database held, whatever the
        # rehearsal's databases (built from the migrations) do.
        failed_on_live_copy = bool(head_step and head_step["revision"] == step["revision"] and head_step["failed"])
        passed = trip["downgrade"]["status"] == "passed"
        if says_fails and not failed_as_predicted and not failed_on_live_copy and passed:
            false_fails.append(f"{step['revision']}: {says_fails[0]}")
        lost_unplanned = trip["rows_as_planned"]["status"] == "failed"
        if step["risk"] == "low" and lost_unplanned:
            false_safe.append(f"{step['revision']}: {trip['rows_as_planned']['detail']}")
    return {"false_fails": false_fails, "false_safe": false_safe}


def rehearsal_summary(rehearsal: dict[str, Any]) -> str:
    trips = rehearsal.get("revisions", [])
    if not trips:
        return "did not run"
    passed = sum(1 for trip in trips if trip["passed"])
    return f"{passed} of {len(trips)} round trips passed"


def tail(completed: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return {"returncode": completed.returncode, "stderr_tail": completed.stderr.strip().splitlines()[-5:]}


def write_readme() -> None:
    rows = ["| project | revisions | risk (low/medium/high/unknown) | verdict | staging rollback of 3 | rehearsal | "
            "false fails | false safe | internal errors | what a user must configure |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for path in sorted(RESULTS.glob("*.json")):
        r = json.loads(path.read_text())
        risk = r.get("risk") or {}
        rows.append(" | ".join([
            f"| {r['project']} ({r['requirement']})", str(r.get("revisions")),
            "/".join(str(risk.get(level, 0)) for level in ("low", "medium", "high", "unknown")),
            str(r.get("verdict")), str(r.get("rollback", r.get("summary"))), str(r.get("rehearsal")),
            str(len(r.get("false_fails", []))), str(len(r.get("false_safe", []))),
            str(len(r.get("internal_errors", []))), r.get("user_notes", "") + " |"]))
    readme = CORPUS / "README.md"
    text = readme.read_text()
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    readme.write_text(text[:start] + "\n" + "\n".join(rows) + "\n" + text[end:])


if __name__ == "__main__":
    sys.exit(main())
