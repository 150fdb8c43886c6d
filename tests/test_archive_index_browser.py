"""The archive index of a busy team, in Debian's headless chromium: paged, filtered and sorted in the browser, offline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import Page, expect
from site_build import build_site, served
from test_site_browser import DemoSite, browser, page, shot

from rollbook.records.archive import Archive

__all__ = ["browser", "page"]  # the browser and its checked page (offline, no JavaScript error) are reused
RUNS = 60
FIRST = datetime(2026, 11, 1, 8, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoSite]:
    """60 runs, filed by the archive's own code: every third on production, plan and status alternating."""
    work = tmp_path_factory.mktemp("busy-archive")
    archive = Archive(work / "archive")
    for number in range(RUNS):
        started = FIRST + timedelta(hours=number)
        archive.file_summary({
            "run_id": f"{started:%Y%m%dT%H%M%SZ}-{number:06x}", "runbook": "plan" if number % 2 else "status",
            "outcome": "succeeded", "started_at": started.isoformat(), "steps": [],
            "database": f"postgresql+psycopg://app@db/app{number % 4}",
            "environment": "production" if number % 3 == 0 else "staging",
        })
    built = build_site(work / "site", archive.root)
    assert built.returncode == 0, built.output
    with served(built.site) as base_url:
        yield DemoSite(base_url, archive.root)


def cells(page: Page, column: int) -> list[str]:
    return page.locator(f"table.rollbook-archive tbody tr td:nth-child({column})").all_inner_texts()


def test_the_index_pages_filters_and_sorts_every_run(page: Page, demo_site: DemoSite) -> None:
    page.goto(demo_site.base_url + "archive/")
    rows = page.locator("table.rollbook-archive tbody tr")
    status = page.locator(".rollbook-pager [role=status]")

    expect(rows).to_have_count(50)
    expect(status).to_have_text("runs 1–50 of 60")
    assert cells(page, 2)[0] == "2026-11-03 19:00:00"  # newest first
    page.get_by_role("button", name="older →").click()
    expect(rows).to_have_count(10)
    expect(status).to_have_text("runs 51–60 of 60")
    shot(page, "07-archive-index-page-2")

    # The filters see every run, not only the page shown.
    page.get_by_label("filter by environment").fill("production")
    expect(rows).to_have_count(20)
    expect(status).to_have_text("runs 1–20 of 20 matching (60 in all)")
    page.get_by_label("filter by runbook").fill("plan")
    expect(rows).to_have_count(10)
    assert set(cells(page, 4)) == {"production"} and set(cells(page, 5)) == {"plan"}
    page.get_by_label("filter by database").fill("no such database")
    expect(status).to_have_text("no run matches")
    for name in ("environment", "runbook", "database"):
        page.get_by_label(f"filter by {name}").fill("")
    expect(rows).to_have_count(50)

    database = page.locator("table.rollbook-archive thead th", has_text="database")
    database.click()
    expect(database).to_have_attribute("aria-sort", "ascending")
    assert cells(page, 3)[:15] == ["app0"] * 15 and cells(page, 3)[15:] == ["app1"] * 15 + ["app2"] * 15 + ["app3"] * 5
    database.click()
    expect(database).to_have_attribute("aria-sort", "descending")
    assert cells(page, 3)[0] == "app3"
    page.locator("table.rollbook-archive thead th", has_text="started").click()
    assert cells(page, 2)[:2] == ["2026-11-01 08:00:00", "2026-11-01 09:00:00"]  # oldest first
    shot(page, "08-archive-index-sorted")


def test_a_link_can_carry_the_filters(page: Page, demo_site: DemoSite) -> None:
    page.goto(demo_site.base_url + "archive/?runbook=status&environment=production")

    expect(page.get_by_label("filter by runbook")).to_have_value("status")
    expect(page.locator("table.rollbook-archive tbody tr")).to_have_count(10)
    page.locator("table.rollbook-archive tbody tr a").first.click()
    expect(page.locator("h1").first).to_contain_text("status · succeeded")
