"""One run's page on the site: how it stopped (a refusal as a refusal), its facts at a glance, its pictures,
its files, then its executed notebook with the cells it stopped in and never reached marked."""

from __future__ import annotations

import json

from rollbook import markdown
from rollbook.execution.step_timings import step_times_table
from rollbook.outcomes import Outcome
from rollbook.records.model import RunRecord
from rollbook.records.record_words import glance
from rollbook.website.archive_pages import RecordPage
from rollbook.website.pictures import recorded_path_picture, timeline_picture
from rollbook.website.record_notebook import STOPPED_ANCHOR, StopMarks
from rollbook.website.runbook_pages import Runbook, UrlOf

# The class of a record page's content, which the plugin's stylesheet (rollbook.css) styles.
PAGE_CLASS = "rollbook-record"
# How each way of stopping is called out on top of the page (an admonition type of Material).
_CALLOUTS = {Outcome.REFUSED: "warning", Outcome.BAD_INPUT: "warning", Outcome.UNAVAILABLE: "warning",
             Outcome.INTERRUPTED: "warning"}


def stop_marks(record: RecordPage) -> StopMarks:
    """How the run stopped, as its notebook's marked cells say it."""
    s = record.record
    stopped_at = ((s.failed_step or s.stopped_at) if s is not None else None) or "an earlier step"
    return StopMarks(stopped_at, record.outcome, refusal=s is not None and s.outcome is Outcome.REFUSED)


def record_header(record: RecordPage, runbooks: tuple[Runbook, ...], url_of: UrlOf, notebook_html: str, *,
                  stopped_cell: bool = False, files_url: str = "") -> str:
    """How the run stopped, its facts at a glance, its pictures (unless the notebook drew them) and its files.

    Markdown below the page's title; `files_url` is the URL of the run's files relative to the page.
    """
    # An unreadable record still gets its page: its run id, why it could not be read, and its files.
    s = record.record or RunRecord(run_id=record.run_id, runbook="")
    identity = s.identity
    runbook = next((r for r in runbooks if r.name == s.runbook), None)
    facts = [
        ("run", markdown.code(record.run_id)),
        ("runbook", f"[{markdown.cell(runbook.title)}]({url_of(runbook.src_uri)})" if runbook
         else markdown.cell(s.runbook)),
        ("outcome", f"**{markdown.cell(record.outcome)}**"),
        *((fact.label, markdown.cell(fact.value)) for fact in (glance(s) if record.record else ())),
        # A run that stopped has its message in the callout on top.
        ("message", "" if stop_callout(s, record.outcome) else markdown.cell(s.message or record.unreadable)),
        ("database", markdown.code(s.database) if s.database else ""),
        ("server", markdown.cell(f"server_version {identity.server_version} system_identifier "
                                 f"{identity.system_identifier}") if identity else ""),
        ("plan", markdown.cell(" ".join(v for v in (s.plan_hash, s.plan_verdict) if v))),
        ("started", markdown.cell(s.started_at.isoformat() if s.started_at else "")),
        ("finished", markdown.cell(s.finished_at.isoformat() if s.finished_at else "")),
        ("manifest", record.manifest),
    ]
    parts = []
    if record.record is not None:
        parts.append(stop_callout(record.record, record.outcome, stopped_cell=stopped_cell))
    parts += ["## At a glance", markdown.table(["recorded", "value"], [(k, v) for k, v in facts if v])]
    timings = step_timings_section(s)
    if timings:
        parts.append(timings)
    pictures = []
    if "rollbook-downgrade-path" not in notebook_html:
        picture = recorded_path_picture(s)
        if picture is not None:
            pictures.append(picture.to_html())
    if "rollbook-timeline" not in notebook_html and s.steps:
        pictures.append(timeline_picture(s).to_html())
    if pictures:
        parts += ["## Pictures", *pictures]
    parts.append("## Files and hashes")
    parts.append(markdown.table(["file", "kind", "sha256", "filed"], [
        (markdown.code(r.file), r.kind, markdown.code(r.sha256 or ""), markdown.cell(r.filed_at or "not filed"))
        for r in record.records]))
    downloads = [f"[{r.path.name}]({files_url}{r.path.name}){{: download }}" for r in record.records
                 if r.kind != "in progress" and r.path.is_file()]
    if downloads:
        parts.append("Download: " + ", ".join(downloads) + ". Check them against the manifest with "
                     "`rollbook archive verify`.")
    if record.notebook is not None:
        parts.append("## The executed notebook\n\nAs filed in the archive (the download above is the filed file, "
                     "byte for byte): the cell the run stopped in and the cells that never ran are marked, "
                     "and the last cell is the record rollbook added when it filed the run.")
    return "\n\n".join(p for p in parts if p)


def stop_callout(record: RunRecord, verdict: str, *, stopped_cell: bool = False) -> str:
    """A run that did not succeed, called out on top: how it stopped and its message, one line per line."""
    if record.outcome.succeeded or record.outcome is Outcome.RUNNING:
        return ""
    kind = _CALLOUTS.get(record.outcome, "failure")
    lines = [line.strip() for line in (record.message or "").splitlines() if line.strip()]
    # A refusal's headline, then one "- " line per failed rule (a list here), then what to do instead.
    body = [f"    - {markdown.prose(line[2:])}" if line.startswith("- ") else f"    {markdown.prose(line)}"
            for line in lines]
    if stopped_cell:
        body.append(f"    [The cell where it stopped](#{STOPPED_ANCHOR}), in the notebook below.")
    title = verdict[:1].upper() + verdict[1:]
    return f'!!! {kind} "{title.replace(chr(34), chr(39))}"\n\n' + "\n\n".join(body)


def summary_only_page(record: RecordPage) -> str:
    """The page of a run filed without its notebook: its summary, as JSON."""
    if record.record is None:
        return f"The record of run `{record.run_id}` could not be read: {markdown.cell(record.unreadable)}\n"
    text = json.dumps(record.record.to_json(), indent=2, ensure_ascii=False)
    return ("No executed notebook was filed for this run (a plain papermill run whose notebook was not added with "
            "`rollbook archive add`, or a run that has not ended): this is its summary.\n\n"
            '??? note "The record summary (JSON)"\n\n    ```json\n'
            + "\n".join(f"    {line}" for line in text.splitlines()) + "\n    ```\n")


def step_timings_section(record: RunRecord) -> str:
    """"Estimate vs rehearsal vs real": each step's lock-time estimate beside its measured times; '' without any."""
    if not record.step_timings:
        return ""
    rehearsal = record.rehearsal or {}
    note = (f"Dress rehearsal on a restored copy: **{markdown.cell(str(rehearsal.get('status')))}**, "
            f"{markdown.prose(str(rehearsal.get('summary', '')))}." if rehearsal.get("status") not in (None, "not_run")
            else "No dress rehearsal on a copy in this run: the estimates stand alone.")
    return "\n\n".join([
        "## Estimate vs rehearsal vs real", note,
        "Measured: what each step's statements took (the time its locks were held, a wait for a lock included); "
        "of it lock waits: the part spent waiting for a lock another session held, sampled every 50 ms from a "
        "second connection (a wait shorter than that can be missed); estimated: the plan's lock time for the step, "
        "from the table sizes and a read rate measured on the server.",
        step_times_table(record.step_timings)])
