"""Small Markdown builders for the notebook views of rollbook's results.

Names and messages come from migrations and the database: escaped, a table called `_tmp_` or a
value with `*` cannot turn into markup, and a `|` cannot break a table.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_SPECIAL = re.compile(r"([\\`*_{}\[\]#|~])")


def escape(text: object) -> str:
    """Plain text with every Markdown special character escaped (angle brackets as entities, for every renderer)."""
    return _SPECIAL.sub(r"\\\1", str(text)).replace("<", "&lt;").replace(">", "&gt;")


def prose(text: object) -> str:
    """Text whose `backtick` spans stay code and whose other parts are escaped."""
    return _render(str(text), in_table=False)


def cell(value: object) -> str:
    """A value made safe for one Markdown table cell (one line, pipes escaped, code spans kept)."""
    return _render(" ".join(str(value).split()), in_table=True)


def code(value: object) -> str:
    """Inline code that survives backticks and table pipes in the value."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; cells are written as given (use `cell` or `code` on raw values)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _render(text: str, *, in_table: bool) -> str:
    parts = text.split("`")
    out = []
    for index, part in enumerate(parts):
        if index % 2 and index < len(parts) - 1:
            out.append(f"`{part.replace('|', chr(92) + '|') if in_table else part}`")
        else:
            out.append(escape(part) if index == 0 or index % 2 == 0 else escape("`" + part))
    return "".join(out)
