"""An archive of years on the site: one index row per run, no record in the navigation, record pages rendered once."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape
from pathlib import Path

from site_build import MKDOCS, ROLLBOOK, ROOT, build_site

from rollbook.records.archive import Archive
from rollbook.website.archive_pages import INDEX_COLUMNS

FIXTURE = ROOT / "tests" / "fixtures" / "archive-v1"
REFUSED = "20261201T171250Z_rollbook_demo_rollback_refused_36da2d"
SUCCEEDED = "20261201T171252Z_rollbook_demo_rollback_succeeded_unverified_8f1acd"
_TAG = re.compile(r"<[^>]+>")


def table_rows(html: str) -> list[list[str]]:
    """The archive index table's rows (the header first) as the text of their cells."""
    table = html[html.index('<table class="rollbook-archive"'):]
    table = table[:table.index("</table>")]
    return [[" ".join(unescape(_TAG.sub("", cell)).split()) for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]


def team_site(tmp_path: Path) -> Path:
    """`rollbook init` and the v1 archive filed where its runs would be (./rollback-records)."""
    team = tmp_path / "team"
    init = subprocess.run([ROLLBOOK, "init", str(team)], env=_environment(), capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stdout + init.stderr
    shutil.copytree(FIXTURE, team / "rollback-records")
    return team


def mkdocs_build(team: Path) -> str:
    built = subprocess.run([MKDOCS, "build", "--strict"], cwd=team, env=_environment(), capture_output=True,
                           text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return built.stdout + built.stderr


def _environment() -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("ROLLBOOK_ARCHIVE", "ROLLBOOK_SITE_ARCHIVE")}
    environment["NO_MKDOCS_2_WARNING"] = "1"  # Material's end-of-life banner, not a build warning
    return environment


def test_the_index_has_one_row_per_run_with_its_facts_and_no_record_is_in_the_navigation(tmp_path):
    built = build_site(tmp_path / "site", FIXTURE)

    assert built.returncode == 0, built.output
    rows = table_rows(built.page("archive/index.html"))
    assert rows[0] == list(INDEX_COLUMNS)
    # Four record files, two runs; newest first.
    assert rows[1:] == [
        ["20261201T171250Z-8f1acd", "2026-12-01 17:12:52", "rollbook_demo", "staging", "rollback", "executed",
         "0607bc5b8535", "succeeded, not fully verified", "✓ verified"],
        ["20261201T171248Z-36da2d", "2026-12-01 17:12:50", "rollbook_demo", "production", "rollback", "executed",
         "0607bc5b8535", "refused at policy gate", "✓ verified"],
    ]
    index = built.page("archive/index.html")
    assert f'href="{SUCCEEDED}/"' in index and (built.site / "archive" / SUCCEEDED / "index.html").is_file()
    assert "assets/rollbook/archive_index.js" in index and (built.site / "assets/rollbook/archive_index.js").is_file()
    # The sidebar holds the index, not the records: no page's navigation names a record.
    for page in ("index.html", "archive/index.html", f"archive/{SUCCEEDED}/index.html"):
        nav = built.page(page).split('<nav class="md-nav md-nav--primary"', 1)[1].split("</nav>", 1)[0]
        assert REFUSED not in nav and SUCCEEDED not in nav
    assert "not included in the \"nav\"" not in built.output
    # A record page is still whole, titled by its run, and left out of the search index (the index row is in it).
    record = unescape(built.page(f"archive/{SUCCEEDED}/index.html"))
    assert "rollback · succeeded, not fully verified" in record and "0607bc5b8536 → 0607bc5b8535" in record
    search = json.loads(built.page("search/search_index.json"))
    assert not [d for d in search["docs"] if d["location"].startswith(f"archive/{SUCCEEDED}")]
    assert [d for d in search["docs"] if d["location"].startswith("archive/") and "20261201T171250Z-8f1acd" in d["text"]]


def test_a_rebuild_reuses_rendered_record_pages_renders_a_new_run_only_and_never_caches_a_changed_record(tmp_path):
    team = team_site(tmp_path)
    page = team / "site" / "archive" / SUCCEEDED / "index.html"

    first = mkdocs_build(team)
    assert "rollbook: 2 record page(s) rendered, 0 reused from the cache" in first
    entries = {path: path.stat().st_mtime_ns for path in (team / ".cache" / "rollbook").glob("*.json")}
    assert len(entries) == 4  # per record page: its run record and its rendered notebook
    html = page.read_text()

    second = mkdocs_build(team)

    assert "rollbook: 0 record page(s) rendered, 2 reused from the cache" in second
    assert {path: path.stat().st_mtime_ns for path in entries} == entries
    assert page.read_text() == html

    archive = Archive(team / "rollback-records")
    summary = {"run_id": "20261202T090000Z-0a0b0c", "runbook": "status", "outcome": "succeeded",
               "started_at": "2026-12-02T09:00:00+00:00", "database": "postgresql+psycopg://app@db/app", "steps": []}
    archive.file_summary(summary)
    notebook = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# The status, run at nine"}],
                "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    archive.file_notebook(json.dumps(notebook).encode(), summary)

    third = mkdocs_build(team)

    assert "rollbook: 1 record page(s) rendered, 2 reused from the cache" in third
    assert "The status, run at nine" in (team / "site" / "archive" / archive.records()[-1].path.stem / "index.html"
                                         ).read_text()
    assert table_rows((team / "site" / "archive" / "index.html").read_text())[1][:5] == [
        "20261202T090000Z-0a0b0c", "2026-12-02 09:00:00", "app", "", "status"]

    # A record edited after it was filed is read and shown as it is now, and said to be changed: never the cache.
    edited = team / "rollback-records" / f"{SUCCEEDED}.ipynb"
    edited.write_text(edited.read_text().replace("demo-operator", "mallory"))

    fourth = mkdocs_build(team)

    assert "rollbook: 1 record page(s) rendered, 2 reused from the cache" in fourth
    shown = page.read_text()
    assert "mallory" in shown and "✗ changed or missing" in shown


def test_a_cache_folder_inside_the_docs_or_the_site_is_refused_with_what_to_do(tmp_path):
    team = team_site(tmp_path)
    configuration = team / "mkdocs.yml"
    written = configuration.read_text()
    for folder in ("docs/cache", "site/cache"):
        configuration.write_text(written.replace("  - rollbook\n", f"  - rollbook:\n      cache_dir: {folder}\n"))
        built = subprocess.run([MKDOCS, "build", "--strict"], cwd=team, env=_environment(), capture_output=True,
                               text=True, timeout=300)

        assert built.returncode != 0
        output = built.stdout + built.stderr
        assert f"rollbook plugin, cache_dir: {folder} is inside" in output and "Traceback" not in output
        assert not (team / folder).exists()


def test_without_a_cache_every_record_page_is_rendered_and_nothing_is_kept(tmp_path):
    team = team_site(tmp_path)
    configuration = team / "mkdocs.yml"
    configuration.write_text(configuration.read_text().replace("  - rollbook\n",
                                                               "  - rollbook:\n      cache_dir: false\n"))

    mkdocs_build(team)
    output = mkdocs_build(team)

    assert "rollbook: 2 record page(s) rendered, 0 reused" in output
    assert not (team / ".cache").exists()


def test_a_rebuild_still_refuses_a_password_in_a_new_page_though_the_rest_is_remembered_clean(tmp_path):
    team = team_site(tmp_path)
    mkdocs_build(team)
    assert (team / ".cache" / "rollbook" / "clean-sha256.txt").is_file()
    password = "hunter2-not-masked"
    progress = team / "rollback-records" / ".in-progress"
    progress.mkdir()
    (progress / "20261203T120000Z-abcdef.json").write_text(json.dumps({
        "run_id": "20261203T120000Z-abcdef", "runbook": "rollback", "outcome": "running",
        "started_at": "2026-12-03T12:00:00+00:00", "database": f"postgresql+psycopg://app:{password}@db/app",
        "steps": [],
    }))

    built = subprocess.run([MKDOCS, "build", "--strict"], cwd=team, env=_environment(), capture_output=True,
                           text=True, timeout=300)

    assert built.returncode != 0
    assert "connection-string password of 18 characters" in built.stdout + built.stderr
    assert not [p for p in (team / "site").rglob("*") if p.is_file() and password.encode() in p.read_bytes()]


def test_a_bare_site_gets_the_markdown_its_record_and_runbook_pages_need_and_no_record_in_its_nav(tmp_path):
    site = tmp_path / "bare"
    (site / "docs").mkdir(parents=True)
    (site / "docs" / "index.md").write_text("# Our procedures\n")
    shutil.copytree(FIXTURE, site / "records")
    (site / "mkdocs.yml").write_text("site_name: Bare\ntheme:\n  name: material\n  font: false\nplugins:\n"
                                     "  - search\n  - rollbook:\n      archive: records\n")

    output = mkdocs_build(site)

    assert "WARNING" not in output
    record = (site / "site" / "archive" / SUCCEEDED / "index.html").read_text()
    assert "<table>" in record.split('class="rollbook-notebook', 1)[0]  # the at-a-glance table, rendered
    assert "tabbed-set" in (site / "site" / "runbooks" / "rollback" / "index.html").read_text()
    nav = (site / "site" / "index.html").read_text().split('<nav class="md-nav md-nav--primary"', 1)[1]
    assert SUCCEEDED not in nav.split("</nav>", 1)[0]


def test_record_pages_are_the_sites_own_pages_with_their_title_links_and_files_in_either_url_style(tmp_path):
    """Record pages are written around one page MkDocs builds for them: each has the theme's navigation, its own
    title and canonical address, working links to its runbook and its files, and the sitemap lists it (the
    placeholder page is nowhere)."""
    for directory_urls in (True, False):
        team = team_site(tmp_path / str(directory_urls))
        configuration = team / "mkdocs.yml"
        configuration.write_text(f"site_url: https://rollbacks.example.com/\nuse_directory_urls: {directory_urls}\n"
                                 + configuration.read_text())

        mkdocs_build(team)

        site = team / "site"
        page_file = site / "archive" / (f"{SUCCEEDED}/index.html" if directory_urls else f"{SUCCEEDED}.html")
        page = page_file.read_text()
        assert "<title>2026-12-01 17:12:52 · rollback · succeeded, not fully verified - " in unescape(page)
        assert 'class="md-nav md-nav--primary"' in page and "ROLLBOOK-RECORD" not in page
        assert page.count("<h1") == 1, "the record's title is the page's one h1; the notebook's headings come under it"
        address = f"https://rollbacks.example.com/archive/{SUCCEEDED}{'/' if directory_urls else '.html'}"
        assert f'<link rel="canonical" href="{address}">' in page
        links = re.findall(r'href="([^"#]+)"', page.split('class="rollbook-record"', 1)[1])
        runbook = next(link for link in links if "runbooks/rollback" in link)
        assert (page_file.parent / runbook / ("index.html" if directory_urls else "")).resolve().is_file()
        downloads = re.findall(r'<a download href="([^"]+)"', page)
        assert sorted(Path(d).name for d in downloads) == [f"{SUCCEEDED}.ipynb", f"{SUCCEEDED}.json"]
        for download in downloads:
            assert (page_file.parent / download).read_bytes() == (team / "rollback-records" / Path(download).name
                                                                  ).read_bytes()
        sitemap = (site / "sitemap.xml").read_text()
        assert f"<loc>{address}</loc>" in sitemap and "rollbook-record-shell" not in sitemap
        assert not [p for p in site.rglob("*") if "rollbook-record-shell" in p.name]


def test_a_rebuild_puts_back_unchanged_record_files_and_writes_again_any_that_differ(tmp_path):
    """MkDocs deletes the site before each build; the previous build's record pages and files are kept aside and put
    back where this build would write the same bytes, and written again where anything differs (here a record page
    edited in the built site, which must never stay)."""
    team = team_site(tmp_path)
    mkdocs_build(team)
    archive = team / "site" / "archive"
    kept, edited = archive / SUCCEEDED / f"{SUCCEEDED}.ipynb", archive / REFUSED / "index.html"
    first = {path: (path.stat().st_ino, path.read_bytes()) for path in (kept, edited)}
    edited.write_text(edited.read_text().replace("refused at policy gate", "succeeded"))

    mkdocs_build(team)

    assert kept.stat().st_ino == first[kept][0] and kept.read_bytes() == first[kept][1]
    assert edited.read_bytes() == first[edited][1]
    assert not (team / ".cache" / "rollbook" / "previous-site-archive").exists()
    assert sorted(p.name for p in (archive / SUCCEEDED).iterdir()) == sorted(
        ["index.html", f"{SUCCEEDED}.ipynb", f"{SUCCEEDED}.json"])
    # A dirty build (MkDocs cleans nothing; it warns, so not strict) keeps every record page and the index.
    dirty = subprocess.run([MKDOCS, "build", "--dirty", "--no-strict"], cwd=team, env=_environment(),
                           capture_output=True, text=True, timeout=300)
    assert dirty.returncode == 0, dirty.stdout + dirty.stderr
    # (Its navigation may differ: MkDocs' dirty builds name unbuilt pages "None".)
    assert kept.read_bytes() == first[kept][1] and edited.is_file() and (archive / "index.html").is_file()
