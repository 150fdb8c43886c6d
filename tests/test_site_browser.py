"""The site as a person sees it: built from the demo's records, opened in Debian's headless chromium.

Screenshots of every page visited are kept in test-artifacts/site/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright
from site_build import ROLLBOOK, ROOT, build_site, served

ARTIFACTS = ROOT / "test-artifacts" / "site"
CHROMIUM_CANDIDATES = ("chromium", "/usr/bin/chromium", "/usr/lib/chromium/chromium")
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
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    outside: list[str] = []
    # The site must work offline: nothing may be fetched from anywhere but the site itself.
    opened.on("request", lambda r: outside.append(r.url) if not r.url.startswith((demo_site.base_url, "data:"))
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
    code = page.locator(".jp-CodeCell .highlight-ipynb")
    assert code.count() >= 12
    expect(page.locator(".jp-CodeCell").filter(has_text="start_rollback_run").first).to_be_visible()
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
    outputs = page.locator(".jp-OutputArea-output")
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
    expect(page.locator(".jp-OutputArea-output").filter(has_text="refuses this rollback").first).to_be_visible()
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
