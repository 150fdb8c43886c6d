"""The pictures a reader looks at: the downgrade path coloured by risk, and a run's timeline."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

import pytest

from rollbook.pg.database import DatabaseTarget
from rollbook.planning.plan import plan_downgrade
from rollbook.records.model import InvalidRecord, RunRecord, read_record
from rollbook.website.pictures import (
    RISK_COLOURS,
    PathStep,
    downgrade_path_picture,
    path_picture,
    recorded_path_picture,
    timeline_picture,
)

SVG = "{http://www.w3.org/2000/svg}"


def svg_texts(svg: str) -> list[str]:
    root = ElementTree.fromstring(svg)  # well-formed XML, or this raises
    return ["".join(element.itertext()) for element in root.iter(f"{SVG}text")]


def test_the_path_picture_draws_every_revision_down_to_the_target_in_the_colour_of_its_risk(demo_url, demo_project):
    plan = plan_downgrade(DatabaseTarget.from_url(demo_url), demo_project, "base")

    picture = downgrade_path_picture(plan)

    texts = svg_texts(picture.svg)
    revisions = [step.revision.revision for step in plan.steps]
    shown = [t for t in texts if t in revisions or t == "base"]
    assert shown == [*revisions, "base"]  # newest first, ending at the target
    for step in plan.steps:
        assert RISK_COLOURS[step.risk.value] in picture.svg
    assert {"LOW", "MEDIUM", "HIGH"} <= set(texts)
    assert "9 rows rewritten" in picture.svg  # the live count of the data migration's downgrade
    bundle = picture._repr_mimebundle_()
    assert bundle["text/html"].startswith('<figure class="rollbook-picture rollbook-downgrade-path"')
    assert "<svg" in bundle["text/html"] and "0607bc5b8536 -> 0607bc5b8535" in bundle["text/plain"]


def test_text_from_a_migration_cannot_inject_markup_into_the_picture():
    hostile = PathStep(revision="<b>abc</b>", parent="base", message='"><script>alert(1)</script>',
                       migration_type="add_column", risk="low")

    picture = path_picture([hostile], start="<b>abc</b>", target="base")

    assert "<script>" not in picture.svg and "<b>" not in picture.svg
    assert "<b>abc</b>" in svg_texts(picture.svg)


def test_the_timeline_draws_each_step_as_long_as_it_took_and_marks_how_it_ended():
    record = read_record({"schema_version": 2, "run_id": "20261124T123456Z-3f9a1c", "runbook": "rollback",
                          "outcome": "failed", "steps": [
                              {"step": "backup", "status": "done", "seconds": 2.5},
                              {"step": "downgrade", "status": "failed", "seconds": 7.5},
                              {"step": "verification", "status": "running", "seconds": None},
                          ]})

    picture = timeline_picture(record)

    root = ElementTree.fromstring(picture.svg)
    bars = {"".join(bar.itertext()).split(":")[0]: bar for bar in root.iter(f"{SVG}rect") if bar.find(f"{SVG}title")
            is not None}
    assert list(bars) == ["backup", "downgrade", "verification"]
    assert float(bars["downgrade"].get("width")) == 3 * float(bars["backup"].get("width"))
    assert float(bars["downgrade"].get("x")) > float(bars["backup"].get("x"))
    assert bars["downgrade"].get("fill") != bars["backup"].get("fill")
    assert "rollback: 3 steps, 10.0 s in steps, failed" in svg_texts(picture.svg)
    assert "verification: running, did not finish" in picture.text


def test_a_damaged_record_is_refused_by_the_model_and_odd_durations_still_give_a_picture():
    for damaged in ({"steps": "nonsense"}, {"steps": [None]}, {"steps": [{"seconds": "x"}]}):
        with pytest.raises(InvalidRecord):
            read_record({"run_id": "20261124T123456Z-3f9a1c", "runbook": "rollback", **damaged})
    odd = [{"step": "a", "status": "done", "seconds": float("nan")}, {"step": "b", "status": "done", "seconds": -1}]
    for steps in ([], odd):
        picture = timeline_picture(RunRecord(run_id="20261124T123456Z-3f9a1c", runbook="rollback", steps=steps))
        ElementTree.fromstring(picture.svg)


def test_a_record_without_the_picture_gets_its_path_drawn_from_its_summary():
    record = RunRecord(run_id="20261124T123456Z-3f9a1c", runbook="rollback", target="0607bc5b8534",
                       plan_verdict="do_not_downgrade", plan_steps=[
        {"revision": "0607bc5b8536", "migration_type": "data_migration", "risk": "high", "atomic": True},
        {"revision": "0607bc5b8535", "migration_type": "drop_table", "risk": "high", "atomic": True},
    ])

    picture = recorded_path_picture(record)

    assert picture is not None
    assert [t for t in svg_texts(picture.svg) if t.startswith("0607")] == ["0607bc5b8536", "0607bc5b8535",
                                                                            "0607bc5b8534"]
    assert "0607bc5b8535 -> 0607bc5b8534: drop_table, HIGH risk" in picture.text
    assert recorded_path_picture(RunRecord(run_id="20261124T123456Z-3f9a1c", runbook="plan", plan_steps=[])) is None
