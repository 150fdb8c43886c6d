"""A record as its page shows it: the facts at a glance in words, a refusal called out, the notebook's cells marked.

No database: the records and notebooks are the demo tour's, filed in the version-1 format (tests/fixtures/archive-v1).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rollbook.outcomes import Outcome
from rollbook.records.model import BackupFacts, RunRecord, read_record
from rollbook.records.record_words import backup_check_in_words, glance, mode_in_words, operator_in_words
from rollbook.website.pictures import PathStep, path_picture
from rollbook.website.record_notebook import NotebookRenderer, StopMarks
from rollbook.website.record_page import stop_callout

FIXTURES = Path(__file__).parents[1] / "fixtures" / "archive-v1"
REFUSED = FIXTURES / "20261201T171250Z_rollbook_demo_rollback_refused_36da2d"
ROLLED_BACK = FIXTURES / "20261201T171252Z_rollbook_demo_rollback_succeeded_unverified_8f1acd"
SOURCES = Path(__file__).parents[2] / "src" / "rollbook"
DOCS = Path(__file__).parents[2] / "docs"
# The emoji rollbook used to print (check marks, crosses, hourglass, warning sign, coloured dots): without an emoji
# font they are empty boxes. ✓ ✗ → are text symbols every common font has.
EMOJI = re.compile("[\u23e9-\u23fa\u2600-\u26ff\u2705\u274c\u274e\u2753-\u2757\u2b50\u2b55\U0001f000-\U0001faff\ufe0f]")


def _record(stem: Path) -> RunRecord:
    return read_record(json.loads(stem.with_suffix(".json").read_text()))


def _facts(record: RunRecord) -> dict[str, str]:
    return {fact.label: fact.value for fact in glance(record)}


def test_a_refused_rollback_says_what_was_asked_and_that_nothing_changed() -> None:
    facts = _facts(_record(REFUSED))

    assert facts["mode"] == "execute requested, stopped before any change"
    assert facts["target"] == "0607bc5b8535 (requested -1)"
    assert facts["environment"] == "production" and facts["accept_data_loss"] == "no"
    assert facts["operator"] == "demo-operator (parameter)"
    assert facts["approved by"] == "demo-lead" and facts["ticket"] == "DEMO-1"
    assert facts["backup"] == "no backup taken by this run" and "backup check" not in facts


def test_an_executed_rollback_names_its_backup_check_as_a_listing_not_a_restore() -> None:
    facts = _facts(_record(ROLLED_BACK))

    assert facts["mode"] == "executed" and facts["accept_data_loss"] == "yes"
    assert facts["revision before → after"] == "0607bc5b8536 → 0607bc5b8535"
    assert facts["approved by"] == "none"  # empty: said, never left out
    assert facts["backup"].endswith("backup_rollbook_demo_20261201T171252Z_0607bc5b8536.dump, 9476 bytes, sha256 "
                                    "9711dc313fc907fb029cba1bd67f3042eb80e0d61b675a6048d797b0b6b55a01")
    assert facts["backup check"] == "listed with pg_restore --list (not restored)"


@pytest.mark.parametrize(("verification", "verified", "said"), [
    ("restore", True, "restored into a scratch database"),
    ("list", False, "check FAILED (listed with pg_restore --list)"),
    ("restore", False, "check FAILED (restored into a scratch database)"),
])
def test_a_backup_check_is_said_as_it_ran(verification: str, verified: bool, said: str) -> None:
    backup = BackupFacts(path="/b/x.dump", size_bytes=10, sha256="ab", verified=verified, verification=verification)

    assert backup_check_in_words(backup) == said


def test_an_operator_taken_from_the_login_name_says_so_and_a_read_only_runbook_is_no_dry_run() -> None:
    status = RunRecord(run_id="r", runbook="status", operator="root", parameters={"database_url": "x"})
    named = RunRecord(run_id="r", runbook="rollback", operator="bob", execute=False,
                      parameters={"operator": "bob", "operator_from": "parameter", "execute": False})

    assert operator_in_words(status) == "root (login name (no operator parameter given))"
    assert operator_in_words(named) == "bob (parameter)"
    assert mode_in_words(status) == "read only (this runbook does not change the database)"
    assert mode_in_words(named) == "dry run (changes nothing)"
    assert _facts(status)["approved by"] == "none" and _facts(status)["ticket"] == "none"
    assert "accept_data_loss" not in _facts(status) and "backup" not in _facts(status)


def test_a_refusal_is_a_callout_with_a_line_per_rule() -> None:
    record = RunRecord(run_id="r", runbook="rollback", outcome=Outcome.REFUSED, failed_step="policy gate",
                       message="The policy refuses this rollback:\n- Rule 'risk' fails: pass `-p accept_data_loss true`\n"
                               "- Rule 'approver' fails: name one\nInstead, restore from a backup.")

    callout = stop_callout(record, "refused at policy gate", stopped_cell=True)

    assert callout.startswith('!!! warning "Refused at policy gate"\n\n    The policy refuses this rollback:')
    assert "\n\n    - Rule 'risk' fails: pass `-p accept_data_loss true`" in callout
    assert "\n\n    - Rule 'approver' fails: name one\n\n    Instead, restore from a backup." in callout
    assert "(#rollbook-stopped)" in callout
    assert stop_callout(record.with_facts(outcome=Outcome.SUCCEEDED), "succeeded") == ""
    assert stop_callout(record.with_facts(outcome=Outcome.FAILED), "failed at downgrade").startswith("!!! failure")


def test_the_refused_notebook_loses_papermills_banners_and_marks_where_it_stopped_and_what_never_ran() -> None:
    notebook = json.loads(REFUSED.with_suffix(".ipynb").read_text())
    assert "An Exception was encountered" in json.dumps(notebook)

    drawn = NotebookRenderer().render(notebook, StopMarks("policy gate", "refused at policy gate", refusal=True))

    page = drawn.html
    assert drawn.stopped_cell
    assert "An Exception was encountered" not in page and "papermill encountered an exception" not in page
    assert page.count("<div") == page.count("</div>")
    assert page.count("not run: the run stopped at policy gate") == 6
    stopped = page.index("rollbook-stopped-here rollbook-refusal")
    assert page.index('id="rollbook-stopped">The run stopped here: refused at policy gate.') > stopped
    assert page.index("policy_gate") > stopped > page.index("plan")
    # Code as Material highlights it, Markdown outputs as tables, no script of the record run.
    assert '<div class="highlight"><pre><span></span><code>' in page and "<table>" in page
    assert "<script" not in page
    rolled_back = NotebookRenderer().render(json.loads(ROLLED_BACK.with_suffix(".ipynb").read_text()),
                                            StopMarks("an earlier step", "succeeded"))
    assert not rolled_back.stopped_cell and "rollbook-not-run" not in rolled_back.html
    # The page's title is its one h1: the runbook's own title comes under it.
    assert "<h1" not in rolled_back.html and "<h2>Roll back a migration" in rolled_back.html


def test_a_notebooks_outputs_are_shown_as_jupyter_chooses_them_and_escaped_where_they_are_text() -> None:
    notebook = {"cells": [{"cell_type": "code", "source": ["print(1)"], "metadata": {}, "outputs": [
        {"output_type": "stream", "name": "stdout", "text": ["<b>not bold</b>\n"]},
        {"output_type": "display_data", "data": {"text/plain": "plain", "text/html": "<em>chosen</em>"}},
        {"output_type": "display_data", "data": {"application/javascript": "alert(1)"}},
        {"output_type": "display_data", "data": {"image/png": "not base64 <script>"}},
        {"output_type": "error", "ename": "E", "evalue": "v", "traceback": ["\x1b[31mTraceback\x1b[0m <x>"]},
    ]}]}

    page = NotebookRenderer().render(notebook, StopMarks("downgrade", "failed at downgrade")).html

    assert "&lt;b&gt;not bold&lt;/b&gt;" in page and "<em>chosen</em>" in page and "plain" not in page
    assert "alert(1)" not in page and "<script>" not in page
    assert "Traceback &lt;x&gt;" in page and "\x1b" not in page
    assert "rollbook-stopped-here" in page and "rollbook-refusal" not in page


def test_a_path_pictures_long_title_wraps_instead_of_being_cut() -> None:
    step = PathStep(revision="0607bc5b8536", parent="0607bc5b8535", message="", migration_type="data_migration",
                    risk="high")

    picture = path_picture([step], start="0607bc5b8536", target="0607bc5b8535", verdict="do_not_downgrade")

    titles = re.findall(r'<text x="16" y="(\d+)" font-size="15"[^>]*>([^<]*)</text>', picture.svg)
    assert [text for _, text in titles] == ["Downgrade 0607bc5b8536 → 0607bc5b8535: 1 step, verdict",
                                           "do_not_downgrade"]
    assert all(len(text) <= 62 for _, text in titles)  # what fits the 600 px picture at 15 px
    assert picture.text.splitlines()[0].endswith("verdict do_not_downgrade")


def test_no_emoji_in_what_rollbook_prints_or_publishes() -> None:
    files = [*SOURCES.rglob("*.py"), *SOURCES.glob("runbooks/*.ipynb"), *DOCS.rglob("*.md")]
    found = {str(path): EMOJI.findall(path.read_text(encoding="utf-8")) for path in files}

    assert {path: glyphs for path, glyphs in found.items() if glyphs} == {}
