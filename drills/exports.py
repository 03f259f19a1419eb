"""The drills' CSV exports as people open them: headers in Chinese (``zh``, the default of
the API) or as the stable English column keys scripts rely on (``en``), and the byte order mark
that makes Excel read UTF-8 (without one, Excel on a Chinese Windows reads a CSV as GBK and
shows 鍥涘窛 for 四川). Pure: the CSV writers give the text, the handlers send it.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["BOM", "LANGS", "csv_text", "header"]

BOM = "\ufeff"
LANGS = ("zh", "en")

# Every column of every drill export, in Chinese; the English header is the key itself.
_ZH = {
    # regions: a name beside every code
    "city": "市代码",
    "city_code": "市代码",
    "city_name": "市",
    "county": "县（区）代码",
    "county_code": "县（区）代码",
    "county_name": "县（区）",
    "township": "乡镇（街道）代码",
    "township_name": "乡镇（街道）",
    "code": "乡镇（街道）代码",
    "village": "村（社区）代码",
    "village_name": "村（社区）",
    # drills
    "id": "演练编号",
    "drill": "演练编号",
    "drill_id": "演练编号",
    "year": "年度",
    "scheduled_at": "计划时间",
    "status": "状态",
    "origin": "来源",
    "alert_id": "预警编号",
    "late_by": "延迟（秒）",
    "coverage": "覆盖率",
    # compliance
    "compliant": "达标",
    "best_status": "最好结果",
    "drills": "演练次数",
    "last_status": "最近结果",
    "last_drill_id": "最近演练编号",
    "villages": "村（社区）数",
    "villages_without_terminal": "无登记终端的村（社区）数",
    # terminals and acks
    "terminal": "终端编号",
    "terminal_id": "终端编号",
    "outcome": "结果",
    "first_ack_s": "首次确认（秒）",
    "played_s": "播放（秒）",
    "late": "迟到",
    "offline": "下发时离线",
    "no_ack": "无应答升级",
    "after_window": "窗口后响应",
    "late_state": "窗口后状态",
    "late_ack_s": "窗口后首次回执（秒）",
    "played_late": "窗口后才播放",
    "state": "状态",
    "terminal_at": "终端时间",
    "recorded_at": "记录时间",
    "counted": "计入",
}


def header(columns: Sequence[str], lang: str, zh: Mapping[str, str] | None = None) -> list[str]:
    """The header line of ``columns`` in ``lang`` (``LANGS``); ``zh`` names the Chinese of
    columns that mean something else in this export."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {LANGS}, got {lang!r}")
    if lang == "en":
        return list(columns)
    names = {**_ZH, **(zh or {})}
    return [names[c] for c in columns]


def csv_text(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
    lang: str,
    zh: Mapping[str, str] | None = None,
) -> str:
    """The CSV text of ``rows`` (cells in ``columns`` order, or dicts by column key) under
    ``columns``' header in ``lang``; without the byte order mark, which is the file's."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header(columns, lang, zh))
    for row in rows:
        writer.writerow([row.get(c, "") for c in columns] if isinstance(row, Mapping) else row)
    return out.getvalue()
