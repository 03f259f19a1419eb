"""Reading an operator's CSV file (terminals, SMS recipients) into rows for validation.

Only the file's shape is checked here: its encoding, its header and its columns. What the cells
mean is for the caller's model, which reports bad rows by the line numbers returned here. Every
error is an ``ImportFailed`` naming the file and the line, so an operator can open the file and
fix it without guessing.

Encodings: UTF-8 with or without a byte order mark (what "CSV UTF-8" saves), else GB18030,
the superset of GBK and GB2312 that Excel and WPS save "CSV" in on a Chinese-locale Windows.
A file is read as UTF-8 when it decodes as UTF-8 (Chinese text in GBK practically never does),
else as GB18030; ``encoding`` declares it instead.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from dispatcher.core.errors import ImportFailed

# The encodings an operator may declare (``--encoding``), and what each is read as.
ENCODINGS = {
    "utf-8": "utf-8-sig",
    "utf8": "utf-8-sig",
    "gb18030": "gb18030",
    # GB18030 decodes every GBK and GB2312 file the same way, and more characters besides.
    "gbk": "gb18030",
    "gb2312": "gb18030",
}
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def decode_csv(raw: bytes, path: Path, encoding: str | None = None) -> tuple[str, str]:
    """The text of a CSV file's bytes and the encoding it was read as (``ENCODINGS``)."""
    if encoding is not None:
        codec = ENCODINGS.get(encoding.strip().lower())
        if codec is None:
            raise ImportFailed(
                f"{path}: unknown encoding {encoding!r}; give one of {', '.join(ENCODINGS)}"
            )
        return _decode(raw, path, codec, declared=True), codec.removesuffix("-sig")
    if raw.startswith(_UTF16_BOMS):
        raise ImportFailed(
            f'{path}: UTF-16 text (Excel\'s "Unicode text"), not CSV; save it as '
            '"CSV UTF-8" or "CSV"'
        )
    if raw.startswith(codecs.BOM_UTF8):
        # The byte order mark declares UTF-8: a bad byte after it is an error, not GB18030.
        return _decode(raw, path, "utf-8-sig", declared=True), "utf-8"
    try:
        return raw.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    return _decode(raw, path, "gb18030", declared=False), "gb18030"


def _decode(raw: bytes, path: Path, codec: str, *, declared: bool) -> str:
    # The byte order mark is cut here rather than by utf-8-sig, whose error positions would
    # then not be positions in ``raw``.
    skip = len(codecs.BOM_UTF8) if codec == "utf-8-sig" and raw.startswith(codecs.BOM_UTF8) else 0
    try:
        return raw[skip:].decode(codec.removesuffix("-sig"))
    except UnicodeDecodeError as exc:
        at = skip + exc.start
        line = raw[:at].count(b"\n") + 1
        tried = (
            f"not {codec.removesuffix('-sig').upper()} text as declared"
            if declared
            else "neither UTF-8 nor GB18030/GBK text"
        )
        raise ImportFailed(
            f"{path}, line {line}: {tried} (byte {raw[at]:#04x}); save the file as "
            '"CSV UTF-8", or give --encoding with the one it was saved in'
        ) from exc


def read_csv_rows(
    path: Path,
    *,
    required: Sequence[str],
    optional: Sequence[str],
    what: str,
    encoding: str | None = None,
) -> tuple[list[dict[str, str]], list[int]]:
    """Rows of a CSV file whose header has the ``required`` columns and perhaps ``optional``
    ones, in any order, and the line each row ends on (a quoted cell may span lines).

    An empty optional cell is left out of its row, so the model's default applies; an empty
    required cell stays, so the model says what is wrong with it. A cell missing from a short
    row is left out too. ``what`` names the rows in the error for a file without any
    (e.g. "terminals"). ``encoding`` declares the file's encoding (``ENCODINGS``); without
    it UTF-8 or GB18030 is detected (``decode_csv``).
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportFailed(f"{path}: cannot read the file: {exc.strerror}") from exc
    text, _ = decode_csv(raw, path, encoding)
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
