"""`rollbook init`: a team's own procedures site from an empty folder, and a second init that keeps the team's edits."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

from site_build import MKDOCS, ROLLBOOK, ROOT

from rollbook.demo.server import DEMO_CONFIG
from rollbook.website.team_site import PROCEDURE_PAGES

RUNBOOKS = sorted((ROOT / "runbooks").glob("*.ipynb"))


def _environment(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("ROLLBOOK_ARCHIVE", "ROLLBOOK_SITE_ARCHIVE")}
    environment["NO_MKDOCS_2_WARNING"] = "1"  # Material's end-of-life banner, not a build warning
    return {**environment, **extra}


def _init(folder: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([ROLLBOOK, "init", str(folder)], env=_environment(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_init_then_a_run_then_mkdocs_build_gives_the_team_its_site_with_runbooks_and_record(tmp_path, demo_url):
    team = tmp_path / "team"
    written = _init(team).stdout
    for name in ("rollbook.toml", "mkdocs.yml", *(f"docs/{page}" for page in PROCEDURE_PAGES)):
        assert f"wrote    {team / name}" in written
    settings = (team / "rollbook.toml").read_text()
    assert "[policy.production]" in settings and "# window_minutes = 5" in settings and "password =" not in settings
    assert "  - rollbook\n" in (team / "mkdocs.yml").read_text()
    # A notebook of the team's own is a runbook page too.
    (team / "runbooks").mkdir()
    shutil.copyfile(ROOT / "runbooks" / "status.ipynb", team / "runbooks" / "our-status.ipynb")
    # One record filed where the runs file them by default: ./rollback-records of the folder they start in.
    run = subprocess.run([ROLLBOOK, "run", "status"], cwd=team, capture_output=True, text=True, timeout=300,
                         env=_environment(DATABASE_URL=demo_url, ALEMBIC_CONFIG=str(DEMO_CONFIG)))
    assert run.returncode == 0, run.stdout + run.stderr
    assert list((team / "rollback-records").glob("*.ipynb"))

    built = subprocess.run([MKDOCS, "build", "--strict"], cwd=team, env=_environment(), capture_output=True,
                           text=True, timeout=300)

    assert built.returncode == 0, built.stdout + built.stderr
    assert "WARNING" not in built.stdout + built.stderr
    site = team / "site"
    for runbook in [*RUNBOOKS, team / "runbooks" / "our-status.ipynb"]:
        page = unescape(re.sub(r"<[^>]+>", "", (site / "runbooks" / runbook.stem / "index.html").read_text()))
        assert "Run this runbook" in page and f"rollbook run {runbook.stem}" in page
    index = (site / "archive" / "index.html").read_text()
    assert "The manifest verifies" in index and "1 run(s)" in index
    records = list((site / "archive").glob("*/index.html"))
    assert len(records) == 1 and "At a glance" in records[0].read_text()
    assert (site / "policy" / "index.html").is_file() and (site / "reference" / "cli" / "index.html").is_file()
    assert "rollbook init" in (site / "reference" / "cli" / "index.html").read_text()


def test_init_again_never_overwrites_a_file_the_team_changed_and_says_what_it_skipped(tmp_path):
    _init(tmp_path)
    policy = tmp_path / "docs" / "policy.md"
    policy.write_text("# Our policy\n\nNo rollback on Fridays.\n")
    settings = tmp_path / "rollbook.toml"
    settings.write_text(settings.read_text().replace("# window_minutes = 5", "window_minutes = 15", 1))
    (tmp_path / "docs" / "checklist.md").unlink()

    again = _init(tmp_path).stdout

    assert f"skipped  {policy} (it is there and differs: yours, not overwritten)" in again
    assert f"skipped  {settings} (it is there and differs" in again
    assert f"wrote    {tmp_path / 'docs' / 'checklist.md'}" in again
    assert f"kept     {tmp_path / 'mkdocs.yml'} (already as rollbook writes it)" in again
    assert policy.read_text() == "# Our policy\n\nNo rollback on Fridays.\n"
    assert "\nwindow_minutes = 15" in settings.read_text()
    assert (tmp_path / "docs" / "checklist.md").read_text() == (ROOT / "docs" / "checklist.md").read_text()


def test_the_plugin_titles_runbook_pages_as_mkdocs_yml_says_and_refuses_a_title_for_no_runbook(tmp_path):
    team = tmp_path / "team"
    _init(team)
    config = team / "mkdocs.yml"
    default = config.read_text()
    config.write_text(default.replace("  - rollbook\n", "  - rollbook:\n      archive: false\n      titles:\n"
                                      "        rollback: Roll back a release\n", 1))

    built = subprocess.run([MKDOCS, "build", "--strict"], cwd=team, env=_environment(), capture_output=True,
                           text=True, timeout=300)

    assert built.returncode == 0, built.stdout + built.stderr
    page = (team / "site" / "runbooks" / "rollback" / "index.html").read_text()
    assert "<title>Roll back a release - Rollback procedures</title>" in page
    index = (team / "site" / "runbooks" / "index.html").read_text()
    assert ">Roll back a release</a>" in index  # the nav and the runbooks' table
    # A runbook without a title in mkdocs.yml keeps its notebook's heading.
    assert "<title>Roll back a release" not in (team / "site" / "runbooks" / "status" / "index.html").read_text()

    config.write_text(default.replace("  - rollbook\n", "  - rollbook:\n      titles:\n        rolback: Oops\n", 1))
    wrong = subprocess.run([MKDOCS, "build", "--strict"], cwd=team, env=_environment(), capture_output=True,
                           text=True, timeout=300)
    assert wrong.returncode != 0 and "Traceback" not in wrong.stdout + wrong.stderr
    assert "rollbook plugin, titles: there is no runbook 'rolback' in this build" in wrong.stdout + wrong.stderr
