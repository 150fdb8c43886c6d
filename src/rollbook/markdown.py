"""Small Markdown builders for the notebook views of rollbook's results."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def cell(value: object) -> str:
    """A value made safe for one Markdown table cell."""
    return " ".join(str(value).split()).replace("|", "\\|")


def code(value: object) -> str:
    """Inline code that survives backticks and table pipes in the value."""
    text = cell(value)
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; cells are written as given (use `cell` or `code` on raw values)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)
