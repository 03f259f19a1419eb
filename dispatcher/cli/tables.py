"""Tables for people: columns aligned by display width (a Chinese character takes two cells),
and times in Beijing time, whatever offset the engine wrote them with."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone

# China keeps one offset all year (no daylight saving), so a fixed zone is exact and needs no
# tz database on the machine.
BEIJING = timezone(timedelta(hours=8), "CST")


def width(text: str) -> int:
    """Cells ``text`` takes on a terminal: wide and full-width characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, cells: int, right: bool) -> str:
    fill = " " * max(0, cells - width(text))
    return fill + text if right else text + fill


def render(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    right: Sequence[int] = (),
    gap: int = 2,
) -> str:
    """``rows`` under ``headers`` (none if empty); text left-aligned, numbers and the columns
    ``right`` right-aligned."""
    columns = len(headers) if headers else len(rows[0]) if rows else 0
    cells = [[str(h) for h in headers]] if headers else []
    cells += [[_cell(v) for v in row] for row in rows]
    widths = [max(width(row[i]) for row in cells) for i in range(columns)]
    numeric = [
        i in right or (bool(rows) and all(isinstance(row[i], int | float) for row in rows))
        for i in range(columns)
    ]
    lines = []
    for row in cells:
        parts = [_pad(v, widths[i], numeric[i]) for i, v in enumerate(row)]
        lines.append((" " * gap).join(parts).rstrip())
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    # Terminal control characters in stored text (a hostile headline) must not reach the
    # screen as escape sequences.
    return "".join(ch if ch.isprintable() else "?" for ch in str(value))


def beijing(value: str | None) -> str:
    """An ISO 8601 time with offset, in Beijing time to the second (``-`` when absent)."""
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return value
    if moment.tzinfo is None:
        # The engine writes offsets; a time without one is shown as it came, not guessed at.
        return value
    return moment.astimezone(BEIJING).isoformat(timespec="seconds")
