"""The site as a person sees it: built from the demo's records (rollbook's own site) and from a team's
`rollbook init` folder with its archive, opened in Debian's headless chromium.

Screenshots of every page visited are kept in test-artifacts/site/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import pytest
from pg import PgServer, database_name
from playwright.sync_api import Browser, Page, expect, sync_playwright
from site_build import MKDOCS, ROLLBOOK, ROOT, build_site, served

from rollbook.demo.server import DEMO_CONFIG, install_demo
from rollbook.pg.database import DatabaseTarget

ARTIFACTS = ROOT / "test-artifacts" / "site"
CHROMIUM_CANDIDATES = ("chromium", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
# Emoji a page must not rely on: without an emoji font they show as empty boxes (the check marks, crosses,
# hourglass, warning sign and coloured dots rollbook used). The text symbols ✓ ✗ → are in every common font.
EMOJI = re.compile("[\u23e9-\u23fa\u2600-\u26ff\u2705\u274c\u274e\u2753-\u2757\u2b50\u2b55"
                   "\U0001f000-\U0001faff\ufe0f]")
INSTALL_HINT = ("Debian's chromium is not installed. Install it with `bash .ci/setup-browser` (apt-get install "
                "chromium; .ci/run does this before the tests). Playwright only drives it: never run "
                "`playwright install`.")


@dataclass(frozen=True)
class DemoSite:
    base_url: str
    archive: Path


def system_chromium() -> str:
    """Debian's chromium; installed by the project's own setup script the first time it is missing."""
    for attempt in range(2):
        for candidate in CHROMIUM_CANDIDATES:
            found = shutil.which(candidate)
            if found:
                return found
        if attempt == 0:
            subprocess.run(["bash", str(ROOT / ".ci" / "setup-browser")], check=False, timeout=600)
    pytest.fail(INSTALL_HINT)


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    """`rollbook demo` into a fresh archive, and the site built from it, served on 127.0.0.1."""
    work = tmp_path_factory.mktemp("demo-site")
    archive = work / "archive"
    demo = subprocess.run([ROLLBOOK, "demo"], env={**os.environ, "ROLLBOOK_ARCHIVE": str(archive)}, cwd=work,
                          capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    built = build_site(work / "site", archive)
    assert built.returncode == 0, built.output
    with served(built.site) as base_url:
        yield DemoSite(base_url, archive)


@dataclass(frozen=True)
class TeamSite:
    base_url: str
    pages: dict[str, str]  # a record page's path by its run: "refused", "dry run", "executed"


@pytest.fixture(scope="module")
def team_site(tmp_path_factory: pytest.TempPathFactory, pg_server: PgServer) -> Iterator[TeamSite]:
    """`rollbook init` in an empty folder, three rollbacks of the demo filed there (refused, dry run, executed),
    then `mkdocs build --strict` in that folder, served on 127.0.0.1."""
    team = tmp_path_factory.mktemp("team-site")
    environment = {k: v for k, v in os.environ.items() if k not in ("ROLLBOOK_ARCHIVE", "ROLLBOOK_SITE_ARCHIVE")}
    environment["NO_MKDOCS_2_WARNING"] = "1"  # Material's end-of-life banner, not a build warning
    init = subprocess.run([ROLLBOOK, "init", str(team)], env=environment, capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stdout + init.stderr
    url = pg_server.create_database()
    try:
        install_demo(DatabaseTarget.from_url(url))
        runs = {  # each run's parameters and the exit code it ends with
            # Production refuses the HIGH-risk head revision; no operator given: the login name is recorded.
            "refused": (["-p", "environment", "production", "-p", "execute", "true"], 4),
            "dry run": (["-p", "environment", "staging", "-p", "operator", "alice", "-p", "ticket", "OPS-7",
                         "-p", "accept_data_loss", "true"], 0),
            "executed": (["-p", "environment", "staging", "-p", "operator", "alice", "-p", "execute", "true",
                          "-p", "accept_data_loss", "true", "-p", "backup_dir", str(team / "backups")], 0),
        }
        for name, (parameters, code) in runs.items():
            run = subprocess.run([ROLLBOOK, "run", "rollback", *parameters], cwd=team, capture_output=True, text=True,
                                 env={**environment, "DATABASE_URL": url, "ALEMBIC_CONFIG": str(DEMO_CONFIG)},
                                 timeout=300)
            assert run.returncode == code, f"{name}: {run.stdout}{run.stderr}"
    finally:
        pg_server.drop_database(database_name(url))
    built = subprocess.run([MKDOCS, "build", "--strict"], cwd=team, env=environment, capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    notebooks = sorted((team / "rollback-records").glob("*.ipynb"))  # oldest first: the order the runs ran in
    assert len(notebooks) == 3
    pages = {name: f"archive/{notebook.stem}/" for name, notebook in zip(runs, notebooks, strict=True)}
    with served(team / "site") as base_url:
        yield TeamSite(base_url, pages)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = system_chromium()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, demo_site: DemoSite) -> Iterator[Page]:
    yield from _opened(browser, demo_site.base_url)


@pytest.fixture
def team_page(browser: Browser, team_site: TeamSite) -> Iterator[Page]:
    yield from _opened(browser, team_site.base_url)


def _opened(browser: Browser, base_url: str) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    outside: list[str] = []
    # The site must work offline: nothing may be fetched from anywhere but the site itself.
    opened.on("request", lambda r: outside.append(r.url) if not r.url.startswith((base_url, "data:"))
              else None)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield opened
    finally:
        context.close()
    assert not outside, f"the site fetched from outside itself: {outside}"
    assert not errors, f"JavaScript errors: {errors}"


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=False)


def test_a_reader_follows_the_navigation_to_a_runbook_and_sees_its_code_parameters_and_download(page, demo_site):
    page.goto(demo_site.base_url)
    expect(page.locator("h1")).to_contain_text("Rolling back Alembic migrations safely")
    shot(page, "01-home")

    nav = page.locator("nav.md-nav--primary")
    nav.get_by_role("link", name="Runbooks", exact=True).click()
    expect(page.locator("h1")).to_contain_text("Runbooks")
    nav.get_by_role("link", name="Roll back a migration").click()

    expect(page).to_have_title("Roll back a migration - rollbook")
    expect(page.locator("h1").first).to_contain_text("Roll back a migration")
    code = page.locator("article .highlight")
    assert code.count() >= 12
    expect(code.filter(has_text="start_rollback_run").first).to_be_visible()
    expect(page.locator("table").filter(has_text="target_revision").first).to_be_visible()
    expect(page.locator(".tabbed-set").first).to_contain_text("rollbook run rollback -r target_revision -1")
    shot(page, "02-runbook")

    download = page.locator("a[download]", has_text="rollback.ipynb")
    notebook = page.request.get(urljoin(page.url, download.get_attribute("href") or "")).json()
    assert notebook["cells"] and all(not c.get("outputs") for c in notebook["cells"] if c["cell_type"] == "code")


def test_the_archive_lists_the_demo_runs_and_a_record_shows_its_outputs_and_pictures(page, demo_site):
    manifest = [json.loads(line) for line in (demo_site.archive / "manifest.jsonl").read_text().splitlines()]
    runs = {entry["run_id"]: entry["outcome"] for entry in manifest}
    # The demo has no application to ask for its health: its rollback is honestly not fully verified.
    assert sorted(runs.values()) == ["refused", "succeeded_unverified"]

    page.goto(demo_site.base_url)
    nav = page.locator("nav.md-nav--primary")
    nav.get_by_role("link", name="Archive", exact=True).click()

    expect(page.locator("h1")).to_contain_text("Archive")
    expect(page.locator(".admonition.success")).to_contain_text("The manifest verifies")
    rows = page.locator("article table tbody tr")
    expect(rows).to_have_count(2)
    # One row per run (not per record file): its environment, mode and target as well as its outcome.
    expect(rows.filter(has_text="refused at policy gate")).to_contain_text("production")
    succeeded = rows.filter(has_text="succeeded")
    expect(succeeded).to_contain_text("rollbook_demo")
    expect(succeeded).to_contain_text("staging")
    expect(succeeded).to_contain_text("executed")
    expect(succeeded).to_contain_text("0607bc5b8535")
    expect(succeeded).to_contain_text("✓ verified")
    shot(page, "03-archive")

    succeeded.locator("a").first.click()
    expect(page.locator("h1").first).to_contain_text("rollback · succeeded, not fully verified")
    # The heading comes first in a long page: count the notebook's outputs once the whole page has loaded.
    page.wait_for_load_state("load")
    outputs = page.locator(".rollbook-output")
    assert outputs.count() >= 10
    expect(page.get_by_text("Rolled back 0607bc5b8536 -> 0607bc5b8535, not fully verified: application health "
                            "not checked").first).to_be_visible()
    path = page.locator("figure.rollbook-downgrade-path svg")
    expect(path).to_be_visible()
    expect(path).to_contain_text("0607bc5b8536")
    expect(path.locator("circle[fill='#c62828']").first).to_be_attached()  # the HIGH-risk step, in red
    path.scroll_into_view_if_needed()
    shot(page, "04-record-path")
    timeline = page.locator("figure.rollbook-timeline svg")
    expect(timeline).to_contain_text("backup")
    expect(timeline).to_contain_text("downgrade")
    expect(timeline).to_contain_text("verification")
    timeline.scroll_into_view_if_needed()
    shot(page, "05-record-timeline")

    page.go_back()
    rows.filter(has_text="refused at policy gate").locator("a").first.click()
    expect(page.locator("h1").first).to_contain_text("refused at policy gate")
    # The refused run never reached its timeline cell: the page draws it from the record.
    expect(page.locator("figure.rollbook-timeline svg")).to_contain_text("policy gate")
    expect(page.locator(".rollbook-output").filter(has_text="refuses this rollback").first).to_be_visible()
    page.locator("figure.rollbook-timeline").scroll_into_view_if_needed()
    shot(page, "06-record-refused")


def test_search_finds_the_procedure_offline(page, demo_site):
    page.goto(demo_site.base_url)
    search = page.locator("input.md-search__input")
    search.click()
    # Material searches on key events, as a person types: fill() would set the text without them.
    search.press_sequentially("forward", delay=30)
    results = page.locator(".md-search-result__item")
    expect(results.first).to_be_visible(timeout=15_000)
    expect(page.locator(".md-search-result")).to_contain_text("Production rollback policy")
    shot(page, "07-search")


def glance(page: Page) -> dict[str, str]:
    """The "At a glance" table of a record page: each recorded fact's value, as a reader sees it."""
    rows = page.locator("article table").first.locator("tbody tr")
    return {row.locator("td").nth(0).inner_text(): row.locator("td").nth(1).inner_text() for row in rows.all()}


def clipped(page: Page) -> list[str]:
    """Boxes in the article whose content is wider than they are and that cut it off (or push the page sideways)."""
    return list(page.evaluate("""() => {
      const found = [];
      const article = document.querySelector('article');
      // A few pixels are the padding of an inline code span wrapped at the edge, not content cut off.
      if (article.scrollWidth > article.clientWidth + 4) found.push('article ' + article.scrollWidth);
      for (const box of article.querySelectorAll('*')) {
        const overflow = getComputedStyle(box).overflowX;
        if ((overflow === 'hidden' || overflow === 'clip') && box.scrollWidth > box.clientWidth + 4) {
          found.push(box.tagName + '.' + box.className + ' ' + box.scrollWidth + '>' + box.clientWidth);
        }
      }
      return found;
    }"""))


def test_a_refused_run_reads_as_a_refusal_with_its_facts_and_the_steps_it_never_reached(team_page, team_site):
    team_page.goto(urljoin(team_site.base_url, team_site.pages["refused"]))

    expect(team_page.locator("h1").first).to_contain_text("refused at policy gate")
    callout = team_page.locator("article .admonition.warning").first
    expect(callout.locator(".admonition-title")).to_have_text("Refused at policy gate")
    expect(callout).to_contain_text("production")
    body = team_page.locator("article").inner_text()
    assert "An Exception was encountered" not in body and "papermill encountered an exception" not in body
    facts = glance(team_page)
    assert facts["mode"] == "execute requested, stopped before any change"
    assert facts["environment"] == "production" and facts["accept_data_loss"] == "no"
    assert facts["approved by"] == "none" and facts["ticket"] == "none"
    assert facts["operator"].endswith("(login name (no operator parameter given))")
    assert facts["backup"] == "no backup taken by this run"
    assert facts["revision before → after"] == "0607bc5b8536 → 0607bc5b8536"
    stopped = team_page.locator(".rollbook-stopped-here.rollbook-refusal")
    expect(stopped).to_have_count(1)
    expect(stopped).to_contain_text("run.policy_gate()")
    not_run = team_page.locator(".rollbook-not-run")
    assert not_run.count() >= 4
    expect(not_run.filter(has_text="run.backup()")).to_contain_text("not run: the run stopped at policy gate")
    expect(not_run.filter(has_text="run.downgrade()")).to_contain_text("not run: the run stopped at policy gate")
    assert not EMOJI.findall(body)
    callout.locator("a", has_text="The cell where it stopped").click()
    expect(stopped).to_be_in_viewport()
    shot(team_page, "08-team-refused")


def test_a_dry_run_and_an_executed_run_say_so_at_a_glance_with_how_the_backup_was_checked(team_page, team_site):
    team_page.goto(urljoin(team_site.base_url, team_site.pages["dry run"]))
    expect(team_page.locator("h1").first).to_contain_text("dry run completed")
    facts = glance(team_page)
    assert facts["mode"] == "dry run (changes nothing)"
    assert facts["operator"] == "alice (parameter)" and facts["ticket"] == "OPS-7" and facts["approved by"] == "none"
    assert facts["target"] == "0607bc5b8535 (requested -1)" and facts["accept_data_loss"] == "yes"
    expect(team_page.locator("article .admonition.warning, article .admonition.failure")).to_have_count(0)

    team_page.goto(urljoin(team_site.base_url, team_site.pages["executed"]))
    expect(team_page.locator("h1").first).to_contain_text("succeeded")
    facts = glance(team_page)
    assert facts["mode"] == "executed" and facts["accept_data_loss"] == "yes" and facts["environment"] == "staging"
    assert facts["revision before → after"] == "0607bc5b8536 → 0607bc5b8535"
    assert re.fullmatch(r"\S+\.dump, \d+ bytes, sha256 [0-9a-f]{64}", facts["backup"]), facts["backup"]
    assert facts["backup check"] == "listed with pg_restore --list (not restored)"
    expect(team_page.locator(".rollbook-not-run")).to_have_count(0)
    assert not EMOJI.findall(team_page.locator("article").inner_text())
    shot(team_page, "09-team-executed")


@pytest.mark.parametrize("width", [1280, 1400])
def test_a_record_page_cuts_no_table_and_the_plan_keeps_its_risk_and_count_columns_in_view(team_page, team_site,
                                                                                          width):
    team_page.set_viewport_size({"width": width, "height": 900})
    team_page.goto(urljoin(team_site.base_url, team_site.pages["dry run"]))

    assert clipped(team_page) == []
    plan = team_page.locator("article table").filter(has_text="downgrade operations").first
    plan.scroll_into_view_if_needed()
    for column in ("risk", "downgrade operations"):
        expect(plan.locator("th", has_text=column).first).to_be_in_viewport()
    expect(plan.locator("td", has_text="rows rewritten").first).to_be_in_viewport()
    # Every text of the path picture fits inside it: its title ends "verdict do_not_downgrade", not "do_not_d".
    picture = team_page.locator("figure.rollbook-downgrade-path svg")
    expect(picture).to_contain_text("do_not_downgrade")
    frame = picture.bounding_box()
    assert frame is not None
    for text in picture.locator("text").all():
        box = text.bounding_box()
        assert box and box["x"] + box["width"] <= frame["x"] + frame["width"], text.text_content()
    shot(team_page, f"10-team-plan-{width}")
