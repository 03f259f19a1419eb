"""Reading operator CSV files: encoding, header, columns and the line numbers errors name."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dispatcher.core.csv_rows import read_csv_rows
from dispatcher.core.errors import ImportFailed

REQUIRED = ("phone", "name", "region", "role")
OPTIONAL = ("languages",)
HEADER = b"phone,name,region,role,languages\n"
ROW = "13800138000,张三,350102001001,village_head,zh\n".encode()


def read(tmp_path: Path, content: bytes) -> tuple[list[dict[str, str]], list[int]]:
    path = tmp_path / "recipients.csv"
    path.write_bytes(content)
    return read_csv_rows(path, required=REQUIRED, optional=OPTIONAL, what="recipients")


def fails(tmp_path: Path, content: bytes) -> str:
    with pytest.raises(ImportFailed) as info:
        read(tmp_path, content)
    message = info.value.message
    assert message.startswith(str(tmp_path / "recipients.csv")), message
    return message


def test_rows_come_back_as_dicts_with_the_line_each_ends_on(tmp_path: Path) -> None:
    rows, lines = read(tmp_path, HEADER + ROW + ROW.replace(b"zh\n", b"en\n"))
    assert rows == [
        {
            "phone": "13800138000",
            "name": "张三",
            "region": "350102001001",
            "role": "village_head",
            "languages": "zh",
        },
        {
            "phone": "13800138000",
            "name": "张三",
            "region": "350102001001",
            "role": "village_head",
            "languages": "en",
        },
    ]
    assert lines == [2, 3]


def test_a_byte_order_mark_is_not_part_of_the_first_column_name(tmp_path: Path) -> None:
    rows, _ = read(tmp_path, b"\xef\xbb\xbf" + HEADER + ROW)
    assert rows[0]["phone"] == "13800138000"


def test_columns_may_come_in_any_order_and_optional_ones_may_be_missing(tmp_path: Path) -> None:
    rows, _ = read(tmp_path, "role,region,name,phone\nresident,35,李四,13900139000\n".encode())
    assert rows == [{"role": "resident", "region": "35", "name": "李四", "phone": "13900139000"}]


def test_an_empty_optional_cell_is_left_out_and_an_empty_required_one_kept(
    tmp_path: Path,
) -> None:
    rows, _ = read(tmp_path, HEADER + b"13800138000,,350102,resident,\n")
    assert rows == [{"phone": "13800138000", "name": "", "region": "350102", "role": "resident"}]


def test_cells_missing_from_a_short_row_are_left_out(tmp_path: Path) -> None:
    rows, _ = read(tmp_path, HEADER + b"13800138000,Li\n")
    assert rows == [{"phone": "13800138000", "name": "Li"}]


def test_blank_lines_and_quoted_line_breaks_keep_line_numbers_true(tmp_path: Path) -> None:
    content = (
        HEADER
        + ROW  # line 2
        + b"\n\n"  # lines 3 and 4
        + '13900139000,"王\n五",350102,resident,en\n'.encode()  # lines 5-6
        + ROW  # line 7
    )
    rows, lines = read(tmp_path, content)
    assert lines == [2, 6, 7]
    assert rows[1]["name"] == "王\n五"


GBK_ROW = "13900139000,王五,35,resident,zh\n"


@pytest.mark.parametrize(
    "content",
    [
        HEADER + ROW + GBK_ROW.encode(),  # "CSV UTF-8" without a byte order mark
        b"\xef\xbb\xbf" + HEADER + ROW + GBK_ROW.encode(),  # … and with one, as Excel saves it
        HEADER + ROW.decode().encode("gbk") + GBK_ROW.encode("gbk"),  # "CSV" on Chinese Windows
        HEADER
        + ROW.decode().encode("gb18030")
        + "13900139000,王㐀,35,resident,zh\n".encode("gb18030"),  # a name only GB18030 has
    ],
    ids=["utf8", "utf8-bom", "gbk", "gb18030"],
)
def test_utf8_with_or_without_bom_and_gbk_are_detected(tmp_path: Path, content: bytes) -> None:
    rows, lines = read(tmp_path, content)
    assert rows[0]["name"] == "张三"
    assert rows[1]["name"] in ("王五", "王㐀")
    assert lines == [2, 3]


def test_a_declared_encoding_is_used_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "recipients.csv"
    path.write_bytes(HEADER + ROW.decode().encode("gbk"))
    rows, _ = read_csv_rows(
        path, required=REQUIRED, optional=OPTIONAL, what="recipients", encoding="GBK"
    )
    assert rows[0]["name"] == "张三"
    with pytest.raises(ImportFailed) as info:
        read_csv_rows(path, required=REQUIRED, optional=OPTIONAL, what="recipients",
                      encoding="utf-8")  # fmt: skip
    assert ", line 2: not UTF-8 text as declared (byte 0xd5)" in info.value.message
    with pytest.raises(ImportFailed) as info:
        read_csv_rows(path, required=REQUIRED, optional=OPTIONAL, what="recipients",
                      encoding="latin-1")  # fmt: skip
    assert "unknown encoding 'latin-1'" in info.value.message
    assert "gb18030" in info.value.message


def test_bytes_that_are_neither_utf8_nor_gb18030_are_named_by_line_and_value(
    tmp_path: Path,
) -> None:
    # 0x80 alone and 0xff are not GB18030 either: a file that is neither, or damaged.
    message = fails(tmp_path, HEADER + ROW + b"13900139000,\xff\x80,35,resident,zh\n")
    assert ", line 3: neither UTF-8 nor GB18030/GBK text (byte 0xff)" in message
    assert "--encoding" in message


def test_a_bom_declares_utf8_so_a_bad_byte_after_it_is_an_error(tmp_path: Path) -> None:
    message = fails(tmp_path, b"\xef\xbb\xbf" + HEADER + GBK_ROW.encode("gbk"))
    assert ", line 2: not UTF-8 text as declared (byte 0xcd)" in message


def test_utf16_is_refused_saying_how_to_save_it(tmp_path: Path) -> None:
    message = fails(tmp_path, (HEADER + ROW).decode().encode("utf-16"))
    assert "UTF-16" in message
    assert "CSV UTF-8" in message


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    message = fails(tmp_path, b"phone,name,role\n13800138000,Li,resident\n")
    assert ", line 1: header must be phone,name,region,role,languages" in message
    assert "missing ['region']" in message
    assert "unknown none" in message


def test_an_unknown_column_is_named(tmp_path: Path) -> None:
    message = fails(tmp_path, b"phone,name,area,region,role\n")
    assert "missing none" in message
    assert "unknown ['area']" in message


def test_a_column_named_twice_is_refused_rather_than_one_copy_dropped(tmp_path: Path) -> None:
    message = fails(tmp_path, b"phone,name,region,role,region\n" + ROW)
    assert ", line 1: header names ['region'] more than once" in message


def test_a_row_with_too_many_columns_is_named(tmp_path: Path) -> None:
    message = fails(tmp_path, HEADER + ROW + ROW.replace(b"\n", b",extra\n"))
    assert message.endswith(", line 3: too many columns")


def test_an_empty_file_has_no_header(tmp_path: Path) -> None:
    message = fails(tmp_path, b"")
    assert ", line 1: header must be" in message
    assert "missing ['phone', 'name', 'region', 'role']" in message


def test_a_header_without_rows_is_an_empty_file(tmp_path: Path) -> None:
    message = fails(tmp_path, HEADER + b"\n")
    assert message.endswith(": the file is empty: no recipients after the header line")


def test_a_csv_error_names_its_line(tmp_path: Path) -> None:
    huge = b"1" * (csv.field_size_limit() + 1)
    message = fails(tmp_path, HEADER + ROW + huge + b",Li,35,resident\n")
    assert ", line 3: field larger than field limit" in message


def test_an_unreadable_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match=r"missing\.csv: cannot read the file: No such file"):
        read_csv_rows(tmp_path / "missing.csv", required=REQUIRED, optional=OPTIONAL, what="x")
