"""Pictures where people would rather look than read: the downgrade path and the timeline of a run.

Both are plain SVG written here (no graphviz, no plotting library), wrapped in an HTML figure: a
notebook shows the `text/html` output inline, nbconvert (and so the docs site) copies it into the page
as it is, and the record keeps a `text/plain` version for readers without HTML. nbconvert would turn an
`image/svg+xml` output into a base64 <img>, whose text a reader can neither select nor search.

Everything drawn comes from a plan or a run's record (rollbook.records.model), which never hold a
password; every text is XML-escaped, so a migration message cannot inject markup.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rollbook.records.model import RunRecord

if TYPE_CHECKING:  # the site build draws records without importing the planner's stack
    from rollbook.planning.plan import DowngradePlan

RISK_COLOURS = {"low": "#2e7d32", "medium": "#b26a00", "high": "#c62828", "unknown": "#5e35b1"}
# A step's status in a record: done, running (never finished), or the outcome that stopped it.
STATUS_COLOURS = {"done": "#1565c0", "refused": "#b26a00", "running": "#9e9e9e"}
FAILED_COLOUR = "#c62828"
TEXT = "#212121"
MUTED = "#616161"
FONT = "font-family=\"system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif\""
MONO = "font-family=\"ui-monospace, 'SFMono-Regular', Menlo, Consolas, monospace\""

_WIDTH = 600
_ROW = 62
_BAR_LEFT = 150
_BAR_RIGHT = 470
_BAR_ROW = 26
# Characters of a 15 px semibold title that fit the picture's width (about 9 px each, with the margins).
_TITLE_CHARACTERS = 62


@dataclass(frozen=True)
class Picture:
    """A drawing as inline SVG, with a caption, and a text version for views without HTML."""

    kind: str
    svg: str
    caption: str
    text: str

    def to_html(self) -> str:
        """The figure: the SVG inline, then its caption."""
        return (f'<figure class="rollbook-picture rollbook-{self.kind}" style="margin:0.5em 0">{self.svg}'
                f'<figcaption style="font-size:0.8em;font-style:normal;text-align:left;max-width:none;margin:0.3em 0;'
                f'color:{MUTED}">{_x(self.caption)}</figcaption></figure>')

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/html": self.to_html(), "text/plain": self.text}


@dataclass(frozen=True)
class PathStep:
    """One revision the downgrade undoes, as the path picture draws it."""

    revision: str
    parent: str
    message: str
    migration_type: str
    risk: str
    effect: str = ""
    # What the step's locks block, and for about how long (an estimate): "blocks writes to users for about 40 s".
    blocking: str = ""


def downgrade_path_picture(plan: DowngradePlan) -> Picture:
    """The revision chain from the current revision down to the target, each step coloured by its risk."""
    steps = tuple(
        PathStep(revision=s.revision.revision, parent=s.revision.down_revision or "base", message=s.revision.message,
                 migration_type=s.migration_type, risk=s.risk.value, effect=_effects(s.operations),
                 blocking=s.blocking.described() if s.blocking.tables or s.blocking.row_locks else "")
        for s in plan.steps)
    blocked = plan.blocking_lines()
    return path_picture(steps, start=plan.path.start, target=plan.path.target_label, verdict=plan.verdict.code,
                        blocked=" ".join([blocked[0], "; ".join(blocked[1:])]).strip())


def recorded_path_picture(record: RunRecord) -> Picture | None:
    """The path picture from a run record's plan (`plan_steps`), or None if the run planned nothing."""
    planned = record.plan_steps
    if not planned:
        return None
    revisions = [s.revision for s in planned]
    target = record.target or "base"
    steps = tuple(
        PathStep(revision=row.revision, parent=revisions[i + 1] if i + 1 < len(revisions) else target, message="",
                 migration_type=row.migration_type or "unknown", risk=row.risk or "unknown")
        for i, row in enumerate(planned))
    return path_picture(steps, start=revisions[0], target=target, verdict=record.plan_verdict or "")


def path_picture(steps: Sequence[PathStep], *, start: str, target: str, verdict: str = "",
                 blocked: str = "") -> Picture:
    """Draw a downgrade path: one node per revision undone (newest first), then the target.

    `blocked` is the plan's estimated blocked time per table, said under the picture.
    """
    count = len(steps)
    header = (f"Downgrade {start} → {target}: {count} step{'s' if count != 1 else ''}"
              + (f", verdict {verdict}" if verdict else ""))
    titles = _title_lines(header)
    top = 22 + 18 * len(titles)
    height = top + _ROW * (count + 1) + 34
    parts = [_svg_open(_WIDTH, height, header), *_title(titles)]
    x = 30
    for index, step in enumerate(steps):
        y = top + index * _ROW + 14
        colour = RISK_COLOURS.get(step.risk, RISK_COLOURS["unknown"])
        # The edge to the next node: what undoing this revision does to the chain.
        parts.append(f'<line x1="{x}" y1="{y + 10}" x2="{x}" y2="{y + _ROW - 10}" stroke="{colour}" '
                     'stroke-width="4"/>')
        parts.append(f'<path d="M{x - 6},{y + _ROW - 18} L{x},{y + _ROW - 10} L{x + 6},{y + _ROW - 18}" '
                     f'fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.append(f'<circle cx="{x}" cy="{y}" r="10" fill="{colour}"><title>{_x(step.risk)} risk</title></circle>')
        parts.append(f'<text x="{x + 22}" y="{y + 5}" font-size="14" font-weight="600" fill="{TEXT}" {MONO}>'
                     f'{_x(step.revision)}</text>')
        badge_x = x + 22 + 9 * min(len(step.revision), 40) + 12
        label = step.risk.upper()
        badge_width = 12 + 10 * len(label)
        parts.append(f'<rect x="{badge_x}" y="{y - 10}" width="{badge_width}" height="19" rx="4" fill="{colour}"/>')
        parts.append(f'<text x="{badge_x + badge_width / 2}" y="{y + 4}" font-size="12" font-weight="700" '
                     f'text-anchor="middle" fill="#ffffff" {FONT}>{_x(label)}</text>')
        parts.append(f'<text x="{badge_x + badge_width + 8}" y="{y + 4}" font-size="13" fill="{TEXT}" {FONT}>'
                     f'{_x(step.migration_type.replace("_", " "))}</text>')
        detail = " · ".join(p for p in (_clip(step.message, 60), step.effect) if p)
        parts.append(f'<text x="{x + 22}" y="{y + 24}" font-size="12" fill="{MUTED}" {FONT}>{_x(_clip(detail, 82))}'
                     '</text>')
        if step.blocking:
            parts.append(f'<text x="{x + 22}" y="{y + 39}" font-size="11" fill="{MUTED}" {FONT}>'
                         f'{_x(_clip("estimate: " + step.blocking, 90))}</text>')
    y = top + count * _ROW + 14
    parts.append(f'<circle cx="{x}" cy="{y}" r="10" fill="#ffffff" stroke="{TEXT}" stroke-width="3"/>')
    parts.append(f'<text x="{x + 22}" y="{y + 5}" font-size="14" font-weight="600" fill="{TEXT}" {MONO}>'
                 f'{_x(target)}</text>')
    parts.append(f'<text x="{x + 22}" y="{y + 24}" font-size="12" fill="{MUTED}" {FONT}>'
                 f'{"target: the database ends here" if count else "the database is already at the target"}</text>')
    parts += _legend(16, height - 14)
    parts.append("</svg>")
    lines = [header] + [f"{i}. {s.revision} -> {s.parent}: {s.migration_type}, {s.risk.upper()} risk"
                        + (f" ({s.effect})" if s.effect else "")
                        + (f"; estimate: {s.blocking}" if s.blocking else "") for i, s in enumerate(steps, 1)]
    caption = "Each revision the downgrade undoes, newest first, coloured by the data-loss risk of undoing it."
    if blocked:
        lines.append(blocked)
        caption = f"{caption} {blocked}"
    return Picture("downgrade-path", "".join(parts), caption, "\n".join(lines))


@dataclass(frozen=True)
class TimelineStep:
    """One recorded step of a run: its name, status and duration (None if it never finished)."""

    name: str
    status: str
    seconds: float | None


def timeline_picture(record: RunRecord) -> Picture:
    """The run's steps in order as bars as long as each took, coloured by how the step ended."""
    steps = recorded_steps(record)
    total = sum(s.seconds or 0.0 for s in steps)
    outcome = record.outcome.value
    # Drawn during a run (outcome "running"), the header says how far it got rather than how it ended.
    header = (f"{record.runbook or 'run'}: {len(steps)} step{'s' if len(steps) != 1 else ''}, "
              f"{_duration(total)} in steps" + ("" if outcome == "running" else f", {outcome}"))
    titles = _title_lines(header)
    top = 22 + 18 * len(titles)
    height = top + _BAR_ROW * max(len(steps), 1) + 48
    scale = (_BAR_RIGHT - _BAR_LEFT) / total if total > 0 else 0.0
    parts = [_svg_open(_WIDTH, height, header), *_title(titles)]
    offset = 0.0
    for index, step in enumerate(steps):
        y = top + index * _BAR_ROW
        colour = STATUS_COLOURS.get(step.status, FAILED_COLOUR)
        width = max((step.seconds or 0.0) * scale, 2.0)
        left = _BAR_LEFT + offset * scale
        dashed = ' stroke-dasharray="4 3" stroke="#424242" fill-opacity="0.35"' if step.seconds is None else ""
        parts.append(f'<text x="{_BAR_LEFT - 8}" y="{y + 15}" font-size="13" text-anchor="end" fill="{TEXT}" {FONT}>'
                     f'{_x(_clip(step.name, 22))}</text>')
        parts.append(f'<rect x="{left:.1f}" y="{y + 3}" width="{width:.1f}" height="17" rx="3" fill="{colour}"'
                     f'{dashed}><title>{_x(step.name)}: {_x(_step_text(step))}</title></rect>')
        parts.append(f'<text x="{min(left + width + 6, _BAR_RIGHT + 6):.1f}" y="{y + 15}" font-size="12" '
                     f'fill="{MUTED}" {FONT}>{_x(_step_text(step))}</text>')
        offset += step.seconds or 0.0
    if not steps:
        parts.append(f'<text x="{_BAR_LEFT}" y="{top + 15}" font-size="13" fill="{MUTED}" {FONT}>'
                     'no step was recorded</text>')
    axis_y = top + _BAR_ROW * max(len(steps), 1) + 8
    parts.append(f'<line x1="{_BAR_LEFT}" y1="{axis_y}" x2="{_BAR_RIGHT}" y2="{axis_y}" stroke="{MUTED}"/>')
    for value in _ticks(total):
        tick = _BAR_LEFT + value * scale
        parts.append(f'<line x1="{tick:.1f}" y1="{axis_y}" x2="{tick:.1f}" y2="{axis_y + 5}" stroke="{MUTED}"/>')
        parts.append(f'<text x="{tick:.1f}" y="{axis_y + 19}" font-size="11" text-anchor="middle" fill="{MUTED}" '
                     f'{FONT}>{value:g} s</text>')
    parts.append("</svg>")
    lines = [header] + [f"{s.name}: {_step_text(s)}" for s in steps]
    caption = ("The run's steps in the order they ran, each bar as long as the step took; time between steps "
               "(starting the kernel, moving between cells) is not drawn.")
    return Picture("timeline", "".join(parts), caption, "\n".join(lines))


def recorded_steps(record: RunRecord) -> tuple[TimelineStep, ...]:
    """The steps of a run record; a duration that is not a finite number is drawn as unknown."""
    return tuple(
        TimelineStep(entry.step, entry.status,
                     max(entry.seconds, 0.0) if entry.seconds is not None and math.isfinite(entry.seconds) else None)
        for entry in record.steps)


def _effects(operations: Sequence[Any]) -> str:
    """The live counts of a step as the plan words them ("5 values lost", "3 rows that would make it fail")."""
    counts = [op.count_text() for op in operations if op.check is not None]
    return ", ".join(dict.fromkeys(c for c in counts if c and not c.startswith("0 ")))


def _ticks(total: float) -> list[float]:
    """Round axis values from 0 to about `total`: at most six, spaced 1, 2 or 5 times a power of ten."""
    if total <= 0:
        return [0.0]
    step = 10 ** math.floor(math.log10(total / 5))
    for factor in (1, 2, 5, 10):
        if total / (step * factor) <= 5:
            step *= factor
            break
    return [i * step for i in range(int(total / step + 1e-9) + 1)]


def _legend(x: int, y: int) -> list[str]:
    parts = []
    for risk, colour in RISK_COLOURS.items():
        parts.append(f'<circle cx="{x + 6}" cy="{y - 4}" r="6" fill="{colour}"/>')
        parts.append(f'<text x="{x + 16}" y="{y}" font-size="12" fill="{MUTED}" {FONT}>{risk}</text>')
        x += 30 + 8 * len(risk)
    return parts


def _title_lines(title: str) -> list[str]:
    """The title in lines that fit the picture's width, broken at spaces (one line when it fits)."""
    lines = [""]
    for word in title.split(" "):
        if lines[-1] and len(lines[-1]) + 1 + len(word) > _TITLE_CHARACTERS:
            lines.append(word)
        else:
            lines[-1] = f"{lines[-1]} {word}".strip()
    return [_clip(line, _TITLE_CHARACTERS) for line in lines]


def _title(lines: list[str]) -> list[str]:
    return [f'<text x="16" y="{24 + 18 * i}" font-size="15" font-weight="600" fill="{TEXT}" {FONT}>{_x(line)}</text>'
            for i, line in enumerate(lines)]


def _svg_open(width: int, height: int, label: str) -> str:
    # A white card, so the drawing reads the same on a light or a dark page.
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="{_x(label)}" '
            f'viewBox="0 0 {width} {height}" width="100%" style="max-width:{width}px;height:auto">'
            f'<title>{_x(label)}</title>'
            f'<rect x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" rx="8" fill="#ffffff" stroke="#e0e0e0"/>')


def _step_text(step: TimelineStep) -> str:
    if step.seconds is None:
        return f"{step.status}, did not finish"
    return _duration(step.seconds) + ("" if step.status == "done" else f", {step.status}")


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s"


def _clip(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _x(text: object) -> str:
    return html.escape(str(text), quote=True)
