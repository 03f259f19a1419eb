"""Reading an operator's CSV file (terminals, SMS recipients) into rows for validation.

Only the file's shape is checked here: its encoding, its header and its columns. What the cells
mean is for the caller's model, which reports bad rows by the line numbers returned here. Every
error is an ``ImportFailed`` naming the file and the line, so an operator can open the file and
fix it without guessing.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from dispatcher.core.errors import ImportFailed


def read_csv_rows(
    path: Path, *, required: Sequence[str], optional: Sequence[str], what: str
) -> tuple[list[dict[str, str]], list[int]]:
    """Rows of a CSV file whose header has the ``required`` columns and perhaps ``optional``
    ones, in any order, and the line each row ends on (a quoted cell may span lines).

    An empty optional cell is left out of its row, so the model's default applies; an empty
    required cell stays, so the model says what is wrong with it. A cell missing from a short
    row is left out too. ``what`` names the rows in the error for a file without any
    (e.g. "terminals").
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot read the file: {exc.strerror}") from exc
    try:
        # utf-8-sig: spreadsheet programs on Windows save UTF-8 with a byte order mark.
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ImportFailed(
            f"{path}, line {line}: not UTF-8 text (byte {raw[exc.start]:#04x}); "
            "save the file as UTF-8"
        ) from exc
    columns = [*required, *optional]
    # csv.reader, not DictReader: DictReader.line_num is set only after a row parsed, so a
    # csv.Error would be blamed on the row before the broken one.
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        missing = [c for c in required if c not in header]
        unknown = [c for c in header if c not in columns]
        if missing or unknown:
            raise ImportFailed(
                f"{path}, line 1: header must be {','.join(columns)} "
                f"(missing {missing or 'none'}, unknown {unknown or 'none'})"
            )
        # A dict would keep one of two same-named columns and drop the other silently.
        twice = sorted(c for c, n in Counter(header).items() if n > 1)
        if twice:
            raise ImportFailed(f"{path}, line 1: header names {twice} more than once")
        rows: list[dict[str, str]] = []
        lines: list[int] = []
        for cells in reader:
            if not cells:
                continue  # a blank line; line_num still counts it
            # line_num is where the row ends: a quoted cell may span lines.
            if len(cells) > len(header):
                raise ImportFailed(f"{path}, line {reader.line_num}: too many columns")
            # strict=False: a short row's missing cells are left out, so the model names them.
            pairs = zip(header, cells, strict=False)
            rows.append({k: v for k, v in pairs if v != "" or k not in optional})
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise ImportFailed(f"{path}, line {reader.line_num}: {exc}") from exc
    if not rows:
        raise ImportFailed(f"{path}: the file is empty: no {what} after the header line")
    return rows, lines
