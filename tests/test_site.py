"""The procedures site: a strict build, a page for every part of the seed procedure and every runbook, no secrets."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from html import unescape
from urllib.parse import quote, quote_plus

import nbformat
import pytest
from site_build import ROLLBOOK, ROOT, SiteBuild, build_site

from rollbook.demo.server import DEMO_CONFIG
from rollbook.pg.database import DatabaseTarget
from rollbook.records.archive import Archive
from rollbook.records.model import SCHEMA_PATH

SEED = ROOT.parent / "shared" / "seed" / "000_1eb94a045ffb53fa.md"
RUNBOOKS = sorted((ROOT / "runbooks").glob("*.ipynb"))

# Every section of the team's procedure (its headings, emoji and numbering aside) and the headings of
# the site that teach it.
SEED_SECTIONS = {
    "Overview": ("index.html", ["Rolling back Alembic migrations safely", "How to use this site"]),
    "Important Warnings": ("safety/index.html", ["When rollback is safe, and when it is dangerous"]),
    "When Rollbacks Are Safe": ("safety/index.html", ["When a rollback is safe"]),
    "When Rollbacks Are Dangerous": ("safety/index.html", ["When a rollback is dangerous"]),
    "Rollback Procedures": ("rolling-back/index.html", ["Roll back"]),
    "Check Current Migration Status": ("status/index.html", ["Check the current migration status"]),
    "Rollback One Migration": ("rolling-back/index.html", ["Roll back one migration"]),
    "Rollback Multiple Migrations": ("rolling-back/index.html", ["Roll back to a specific revision",
                                                                 "Roll back N migrations"]),
    "Verify Rollback Success": ("verifying/index.html", ["Verify the rollback"]),
    "Data Loss Risks by Migration Type": ("risks/index.html", ["Data-loss risk by migration type"]),
    "Adding Columns (Low Risk)": ("risks/index.html", ["Adding a column (LOW risk)"]),
    "Removing Columns (HIGH Risk)": ("risks/index.html", ["Removing a column (HIGH risk)"]),
    "Modifying Columns (Medium Risk)": ("risks/index.html", ["Modifying a column (MEDIUM risk)"]),
    "Adding Tables (Low Risk)": ("risks/index.html", ["Adding a table (LOW risk)"]),
    "Removing Tables (HIGH Risk)": ("risks/index.html", ["Removing a table (HIGH risk)"]),
    "Data Migrations (HIGH Risk)": ("risks/index.html", ["Data migration (HIGH risk)"]),
    "Rollback Checklist": ("checklist/index.html", ["The rollback checklist"]),
    "Before Rollback": ("checklist/index.html", ["Before the rollback"]),
    "During Rollback": ("checklist/index.html", ["During the rollback"]),
    "After Rollback": ("checklist/index.html", ["After the rollback"]),
    "Recovery Procedures": ("recovery/index.html", ["Recovery"]),
    "If Rollback Fails": ("recovery/index.html", ["If the rollback fails", "Objects depend on what the downgrade drops",
                                                  "The data does not fit", "Missing migration file"]),
    "If Rollback Succeeds But Application Breaks": ("recovery/index.html",
                                                    ["The application breaks after a successful rollback"]),
    "Production Rollback Policy": ("policy/index.html", ["Production rollback policy"]),
    "Policy: Forward-Only Migrations": ("policy/index.html", ["Forward-only by default"]),
    "When Rollbacks Are Allowed": ("policy/index.html", ["When a rollback is allowed"]),
    "Rollback Approval Process": ("policy/index.html", ["The approval process", "Configure the gate"]),
    "Testing Rollback Procedures": ("testing/index.html", ["Testing rollbacks"]),
    "Automated Rollback Test": ("testing/index.html", ["The automated rollback test"]),
    "Manual Rollback Test (Staging)": ("testing/index.html", ["The manual rollback test, on staging"]),
    "Examples": ("examples/index.html", ["Worked examples"]),
    "Example 1: Safe Rollback (Adding Column)": ("examples/index.html",
                                                 ["Example 1: a safe rollback (adding a column)"]),
    "Example 2: Dangerous Rollback (Dropping Column)": ("examples/index.html",
                                                        ["Example 2: a dangerous rollback (dropping a column)"]),
    "Related Documentation": ("index.html", ["Related documents"]),
}
_HEADING = re.compile(r"<h([1-6])[^>]*>(.*?)</h\1>", re.S)
_TAG = re.compile(r"<[^>]+>")


def headings(html: str) -> list[str]:
    return [" ".join(unescape(_TAG.sub("", text)).replace("¶", "").split()) for _, text in _HEADING.findall(html)]


def seed_headings() -> set[str]:
    found = set()
    for line in SEED.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^#{2,3} (.+)$", line)
        if match:
            found.add(re.sub(r"^(?:⚠️\s*|\d+\.\s*)", "", match.group(1)).strip())
    return found


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> SiteBuild:
    built = build_site(tmp_path_factory.mktemp("site") / "site")
    assert built.returncode == 0, built.output
    return built


def test_the_site_builds_strictly_without_a_warning(site):
    assert "WARNING" not in site.output
    assert (site.site / "search" / "search_index.json").is_file()
    # Without an archive the archive page says how to publish one, rather than being missing.
    assert "ROLLBOOK_SITE_ARCHIVE" in site.page("archive/index.html")


def test_every_section_of_the_seed_procedure_has_its_page(site):
    # SEED_SECTIONS is the seed's list of sections; where the seed sits beside the repository, it must
    # still be the same list (a new section has to be taught on the site too).
    if SEED.is_file():
        assert seed_headings() == set(SEED_SECTIONS), "the seed's sections changed: teach the new ones on the site"
    for section, (page, expected) in SEED_SECTIONS.items():
        shown = headings(site.page(page))
        missing = [heading for heading in expected if heading not in shown]
        assert not missing, f"{section}: {page} has no heading {missing} (it has {shown})"


def test_every_checklist_item_links_to_where_it_is_done(site):
    html = site.page("checklist/index.html")
    items = re.findall(r'<li class="task-list-item">(.*?)</li>', html, re.S)
    assert len(items) >= 14
    for item in items:
        assert re.search(r'<a href="[^"]+"', item), _TAG.sub("", item)[:80]
    assert html.count('href="../runbooks/rollback/#') >= 10


@pytest.mark.parametrize("notebook", RUNBOOKS, ids=lambda p: p.stem)
def test_every_runbook_has_a_page_with_its_parameters_commands_and_the_clean_notebook(site, notebook):
    page = site.page(f"runbooks/{notebook.stem}/index.html")
    source = nbformat.read(notebook, as_version=4)
    parameters_cell = next(c for c in source.cells if "parameters" in c.metadata.get("tags", []))
    names = re.findall(r"^(\w+)\s*=", parameters_cell.source, re.M)

    assert "Run this runbook" in headings(page) and "Parameters" in headings(page)
    assert all(f"<code>{name}</code>" in page for name in names)
    text = unescape(_TAG.sub("", page))
    assert f"rollbook run {notebook.stem}" in text and f"papermill runbooks/{notebook.name}" in text
    code_cells = [c for c in source.cells if c.cell_type == "code"]
    assert page.count('<div class="highlight">') >= len([c for c in code_cells if c.source.strip()])
    download = site.site / "runbooks" / notebook.stem / notebook.name
    assert f'<a download href="{notebook.name}">' in page
    assert download.read_bytes() == notebook.read_bytes()
    index = site.page("runbooks/index.html")
    assert f'href="{notebook.stem}/"' in index
    nav = site.page("index.html")
    assert f'href="runbooks/{notebook.stem}/"' in nav


def test_the_reference_is_generated_from_the_program(site):
    cli = site.page("reference/cli/index.html")
    for command in ("rollbook status", "rollbook plan", "rollbook run", "rollbook archive verify", "rollbook demo"):
        assert f"<code>{command}</code>" in cli
    assert "--database-url" in cli
    policy = site.page("policy/index.html")
    assert "<code>window_minutes</code>" in policy and "<code>5</code>" in policy


def test_the_record_format_is_published_from_the_model(site):
    records = site.page("records/index.html")
    for field in ("schema_version", "run_id", "plan_hash", "backup", "rollback_test"):
        assert f"<code>{field}</code>" in records
    assert 'href="../run-record.schema.json"' in records
    assert (site.site / "run-record.schema.json").read_text() == SCHEMA_PATH.read_text()


def test_an_archive_filed_in_the_version_1_format_is_published_with_its_facts(tmp_path):
    archive = tmp_path / "archive"
    shutil.copytree(ROOT / "tests" / "fixtures" / "archive-v1", archive)

    built = build_site(tmp_path / "site", archive)

    assert built.returncode == 0, built.output
    index = built.page("archive/index.html")
    assert "The manifest verifies" in index and index.count("✓ verified") == 2
    rolled_back = unescape(built.page(
        "archive/20261201T171252Z_rollbook_demo_rollback_succeeded_unverified_8f1acd/index.html"))
    assert "0607bc5b8536 → 0607bc5b8535" in rolled_back and "verified: True" not in rolled_back
    assert "backup_rollbook_demo_20261201T171252Z_0607bc5b8536.dump" in rolled_back
    # A pg_restore --list check is said as what it was, not as a restore.
    assert "listed with pg_restore --list (not restored)" in rolled_back
    refused = unescape(built.page("archive/20261201T171250Z_rollbook_demo_rollback_refused_36da2d/index.html"))
    assert "An Exception was encountered" not in refused and "papermill encountered an exception" not in refused
    assert '<p class="admonition-title">Refused at policy gate</p>' in refused
    # The six code cells after the gate: critical tables, backup, downgrade, verification, timeline, summary.
    assert refused.count("not run: the run stopped at policy gate") == 6
    assert "The run stopped here: refused at policy gate." in refused


def test_no_password_of_a_recorded_run_reaches_any_page_or_the_search_index(tmp_path, demo_url):
    password = DatabaseTarget.from_url(demo_url).url.password
    assert password and len(password) >= 8
    spellings = {password, quote(password, safe=""), quote_plus(password), json.dumps(password)[1:-1]}
    archive = tmp_path / "archive"
    environment = {**os.environ, "DATABASE_URL": demo_url, "ALEMBIC_CONFIG": str(DEMO_CONFIG),
                   "ROLLBOOK_ARCHIVE": str(archive)}
    for runbook in ("status", "plan"):
        run = subprocess.run([ROLLBOOK, "run", runbook], env=environment, cwd=tmp_path, capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr

    built = build_site(tmp_path / "site", archive)

    assert built.returncode == 0, built.output
    pages = list((built.site / "archive").glob("*/index.html"))
    assert len(pages) == 2 and all("rbtest_" in p.read_text() for p in pages)
    files = [p for p in built.site.rglob("*") if p.is_file()]
    assert built.site / "search" / "search_index.json" in files
    for path in files:
        data = path.read_bytes()
        assert not [s for s in spellings if s.encode() in data], path
    assert not [s for s in spellings if s in built.output]


def test_a_page_with_a_password_in_a_url_fails_the_build_and_is_never_written(tmp_path):
    # A run still in progress is published from its progress file; this one was written by hand with a password.
    progress = tmp_path / "archive" / ".in-progress"
    progress.mkdir(parents=True)
    password = "hunter2-not-masked"
    (progress / "20261124T120000Z-abcdef.json").write_text(json.dumps({
        "run_id": "20261124T120000Z-abcdef", "runbook": "rollback", "outcome": "running",
        "started_at": "2026-11-24T12:00:00+00:00", "database": f"postgresql+psycopg://app:{password}@db/app",
        "steps": [],
    }))

    built = build_site(tmp_path / "site", tmp_path / "archive")

    assert built.returncode != 0
    assert "connection-string password of 18 characters" in built.output
    assert password not in built.output
    leaked = [p for p in built.site.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert not leaked


def test_an_archive_folder_that_does_not_exist_fails_the_build_with_what_to_do(tmp_path):
    built = build_site(tmp_path / "site", tmp_path / "no-such-archive")

    assert built.returncode != 0
    assert "there is no archive folder there" in built.output


def test_the_archive_index_says_when_the_manifest_does_not_verify_and_which_record_changed(tmp_path):
    archive = Archive(tmp_path / "archive")
    for number, outcome in ((1, "succeeded"), (2, "refused")):
        archive.file_summary({"run_id": f"20261124T12000{number}Z-00000{number}", "runbook": "status",
                              "outcome": outcome, "started_at": f"2026-11-24T12:00:0{number}+00:00",
                              "database": "postgresql+psycopg://app@db/app", "operator": "alice",
                              "revision_before": ["0607bc5b8536"], "revision_after": ["0607bc5b8536"],
                              "steps": [{"step": "who, where, when", "status": "done", "seconds": 0.2}]})
    edited = next(archive.root.glob("*_refused_*.json"))
    edited.write_text(edited.read_text().replace("alice", "mallory"))

    built = build_site(tmp_path / "site", archive.root)

    assert built.returncode == 0, built.output
    index = built.page("archive/index.html")
    assert "The manifest does not verify" in index and f"{edited.name} (entry #2) was changed" in index
    rows = re.findall(r"<tr>(.*?)</tr>", index, re.S)[1:]
    assert ["✗ changed or missing" in row for row in rows] == [True, False]  # newest first
    record = built.page(f"archive/{edited.stem}/index.html")
    assert "mallory" in record and "rollbook-timeline" in record
