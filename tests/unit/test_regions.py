"""The five-level region tree: codes, topics, lookups, cover and region-file checks."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from dispatcher.core.errors import MalformedRegionCode, RegionFileError, UnknownRegion
from dispatcher.core.regions import (
    ALERT_TOPIC_PREFIX,
    CODE_LENGTHS,
    Level,
    Region,
    RegionTree,
    alert_topic,
    code_from_alert_topic,
    code_path,
    level_of_code,
    villages_without_terminal,
)
from tests.helpers import write_text

# Real codes and names from the Fujian file, plus a second province so roots and cover
# have something to tell apart.
TREE_ROWS = [
    ("35", "福建省", Level.PROVINCE, None),
    ("3501", "福州市", Level.CITY, "35"),
    ("350102", "鼓楼区", Level.COUNTY, "3501"),
    ("350102001", "鼓东街道", Level.TOWNSHIP, "350102"),
    ("350102001001", "中山社区", Level.VILLAGE, "350102001"),
    ("350102001002", "庆城社区", Level.VILLAGE, "350102001"),
    ("350102002", "鼓西街道", Level.TOWNSHIP, "350102"),
    ("350102002001", "晶都社区", Level.VILLAGE, "350102002"),
    ("350103", "台江区", Level.COUNTY, "3501"),
    ("3502", "厦门市", Level.CITY, "35"),
    ("36", "江西省", Level.PROVINCE, None),
]


@pytest.fixture
def small_tree() -> RegionTree:
    """TREE_ROWS as a tree (the session's ``tree`` is the project's Fujian file)."""
    return RegionTree.from_regions(Region(*row) for row in TREE_ROWS)


def names(regions: list[Region]) -> list[str]:
    return [region.code for region in regions]


def code_in_message(code: str) -> str:
    return re.escape(repr(code))


# --- codes and topics, no tree ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "zh", "en"),
    [
        (Level.PROVINCE, "省", "province"),
        (Level.CITY, "市", "city"),
        (Level.COUNTY, "县", "county"),
        (Level.TOWNSHIP, "乡镇", "township"),
        (Level.VILLAGE, "村", "village"),
    ],
)
def test_level_labels(level: Level, zh: str, en: str) -> None:
    assert (level.label_zh, level.label_en) == (zh, en)


def test_code_lengths_map_every_level_once() -> None:
    assert CODE_LENGTHS == {
        2: Level.PROVINCE,
        4: Level.CITY,
        6: Level.COUNTY,
        9: Level.TOWNSHIP,
        12: Level.VILLAGE,
    }


@pytest.mark.parametrize(
    ("code", "level"),
    [
        ("35", Level.PROVINCE),
        ("3501", Level.CITY),
        ("350102", Level.COUNTY),
        ("350102001", Level.TOWNSHIP),
        ("350102001001", Level.VILLAGE),
        ("00", Level.PROVINCE),
    ],
)
def test_level_of_code_follows_length(code: str, level: Level) -> None:
    assert level_of_code(code) is level


@pytest.mark.parametrize(
    "code",
    [
        "",
        "3",
        "350",
        "35010",
        "3501020",
        "35010200",
        "3501020010",
        "35010200100",
        "3501020010011",
        "35a1",
        " 35",
        "35 ",
        "35\n",
        "-35",
        "+350",
        "３５",  # full-width digits pass str.isdigit()
        "3²",  # so does a superscript
        "35.0",
    ],
)
def test_level_of_code_rejects_malformed_codes_naming_them(code: str) -> None:
    with pytest.raises(MalformedRegionCode, match=code_in_message(code)) as info:
        level_of_code(code)
    assert info.value.region_code == code


@pytest.mark.parametrize(
    ("code", "path"),
    [
        ("35", ["35"]),
        ("3501", ["35", "3501"]),
        ("350102", ["35", "3501", "350102"]),
        ("350102001", ["35", "3501", "350102", "350102001"]),
        ("350102001001", ["35", "3501", "350102", "350102001", "350102001001"]),
    ],
)
def test_code_path_is_the_prefixes_down_to_the_code(code: str, path: list[str]) -> None:
    assert code_path(code) == path


def test_code_path_rejects_a_malformed_code() -> None:
    with pytest.raises(MalformedRegionCode, match=code_in_message("35010")):
        code_path("35010")


@pytest.mark.parametrize(
    ("code", "topic"),
    [
        ("35", "eb/v1/alert/35"),
        ("3501", "eb/v1/alert/35/3501"),
        ("350102", "eb/v1/alert/35/3501/350102"),
        ("350102001", "eb/v1/alert/35/3501/350102/350102001"),
        ("350102001001", "eb/v1/alert/35/3501/350102/350102001/350102001001"),
    ],
)
def test_alert_topic_and_its_inverse(code: str, topic: str) -> None:
    assert alert_topic(code) == topic
    assert topic.startswith(ALERT_TOPIC_PREFIX)
    assert code_from_alert_topic(topic) == code


def test_alert_topic_rejects_a_malformed_code() -> None:
    with pytest.raises(MalformedRegionCode, match=code_in_message("3501x")):
        alert_topic("3501x")


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "eb/v1/alert",
        "eb/v1/alert/",
        "eb/v1/alert/35/",
        "eb/v1/alert//35",
        "eb/v1/alert/3501",  # the province is missing from the path
        "eb/v1/alert/35/3502/350102",  # the path disagrees with the code
        "eb/v1/alert/35/3501/350102/350102001/350102001001/1",
        "eb/v1/alert/35/#",
        "eb/v1/alert/+/3501",
        "eb/v1/alert/35/3501/#",
        "eb/v2/alert/35",
        "eb/v1/term/t-1/cmd",
        "/eb/v1/alert/35",
        "eb/v1/alert/35/3501 ",
    ],
)
def test_code_from_alert_topic_rejects_anything_alert_topic_would_not_give(topic: str) -> None:
    with pytest.raises(MalformedRegionCode, match=code_in_message(topic)):
        code_from_alert_topic(topic)


# --- lookups -------------------------------------------------------------------------------


def test_tree_size_membership_and_file_order(small_tree: RegionTree) -> None:
    assert len(small_tree) == len(TREE_ROWS)
    assert names(list(small_tree)) == [row[0] for row in TREE_ROWS]
    assert "350102001001" in small_tree
    assert "350102001003" not in small_tree
    assert "nonsense" not in small_tree
    assert 35 not in small_tree


def test_get_name_level_parent(small_tree: RegionTree) -> None:
    assert small_tree.get("350102001001") == Region(
        "350102001001", "中山社区", Level.VILLAGE, "350102001"
    )
    assert small_tree.name("350102") == "鼓楼区"
    assert small_tree.level("350102001") is Level.TOWNSHIP
    parent = small_tree.parent("350102001001")
    assert parent is not None
    assert parent.code == "350102001"
    assert small_tree.parent("35") is None


@pytest.mark.parametrize(
    ("code", "ancestors"),
    [
        ("35", []),
        ("3501", ["35"]),
        ("350102", ["35", "3501"]),
        ("350102001001", ["35", "3501", "350102", "350102001"]),
    ],
)
def test_ancestors_and_path_run_from_the_province_down(
    small_tree: RegionTree, code: str, ancestors: list[str]
) -> None:
    assert names(small_tree.ancestors(code)) == ancestors
    assert names(small_tree.path(code)) == [*ancestors, code]


@pytest.mark.parametrize(
    ("code", "children"),
    [
        ("35", ["3501", "3502"]),
        ("3501", ["350102", "350103"]),
        ("350102", ["350102001", "350102002"]),
        ("350102001", ["350102001001", "350102001002"]),
        ("350102001001", []),
        ("350103", []),
        ("36", []),
    ],
)
def test_children_in_file_order(small_tree: RegionTree, code: str, children: list[str]) -> None:
    assert names(small_tree.children(code)) == children


def test_children_returns_a_copy(small_tree: RegionTree) -> None:
    small_tree.children("35").clear()
    assert names(small_tree.children("35")) == ["3501", "3502"]


@pytest.mark.parametrize(
    ("code", "level", "descendants"),
    [
        (
            "3501",
            None,
            [
                "350102",
                "350102001",
                "350102001001",
                "350102001002",
                "350102002",
                "350102002001",
                "350103",
            ],
        ),
        ("35", Level.VILLAGE, ["350102001001", "350102001002", "350102002001"]),
        ("35", Level.COUNTY, ["350102", "350103"]),
        ("350102", Level.TOWNSHIP, ["350102001", "350102002"]),
        ("350102", Level.COUNTY, []),
        ("350102", Level.CITY, []),
        ("350102001001", None, []),
        ("36", None, []),
    ],
)
def test_descendants_depth_first_optionally_one_level(
    small_tree: RegionTree, code: str, level: Level | None, descendants: list[str]
) -> None:
    assert names(small_tree.descendants(code, level)) == descendants


def test_roots_and_counts(small_tree: RegionTree) -> None:
    assert names(small_tree.roots()) == ["35", "36"]
    assert small_tree.counts() == {
        Level.PROVINCE: 2,
        Level.CITY: 2,
        Level.COUNTY: 2,
        Level.TOWNSHIP: 2,
        Level.VILLAGE: 3,
    }


def test_counts_list_every_level_even_when_empty() -> None:
    assert RegionTree.from_regions([]).counts() == dict.fromkeys(Level, 0)


@pytest.mark.parametrize(
    ("inner", "outer", "within"),
    [
        ("350102001001", "350102001001", True),
        ("350102001001", "350102001", True),
        ("350102001001", "350102", True),
        ("350102001001", "3501", True),
        ("350102001001", "35", True),
        ("350102001001", "350102002", False),
        ("350102001001", "350103", False),
        ("350102001001", "36", False),
        ("350102", "350102001001", False),
        ("35", "36", False),
        ("3502", "3501", False),
    ],
)
def test_is_within(small_tree: RegionTree, inner: str, outer: str, within: bool) -> None:
    assert small_tree.is_within(inner, outer) is within


@pytest.mark.parametrize(
    ("codes", "cover"),
    [
        ([], []),
        (["350102", "350102001001"], ["350102"]),
        (["350102001001", "350102"], ["350102"]),
        (["350102001001", "350102002001"], ["350102001001", "350102002001"]),
        (["350102002001", "3502", "350102001001", "35"], ["35"]),
        (["35", "36"], ["35", "36"]),
        (["3501", "3501", "3501"], ["3501"]),
        (["350102001001", "350102001001", "350102001002"], ["350102001001", "350102001002"]),
        # All children of 350102001 are given: the cover stays as given, no promotion.
        (["350102001001", "350102001002"], ["350102001001", "350102001002"]),
        (["350102001", "350102002"], ["350102001", "350102002"]),
        (["350103", "350102001001", "3502"], ["350102001001", "350103", "3502"]),
    ],
)
def test_cover(small_tree: RegionTree, codes: list[str], cover: list[str]) -> None:
    assert small_tree.cover(codes) == cover
    assert small_tree.cover(iter(codes)) == cover


@pytest.mark.parametrize(
    ("codes", "error", "bad"),
    [
        (["3501", "350199", "35x"], UnknownRegion, "350199"),
        (["3501", "35x", "350199"], MalformedRegionCode, "35x"),
        (["", "3501"], MalformedRegionCode, ""),
        (["35", "37"], UnknownRegion, "37"),
    ],
)
def test_cover_raises_for_the_first_bad_code(
    small_tree: RegionTree, codes: list[str], error: type[Exception], bad: str
) -> None:
    with pytest.raises(error, match=code_in_message(bad)):
        small_tree.cover(codes)


def test_cover_refuses_a_bare_string(small_tree: RegionTree) -> None:
    with pytest.raises(TypeError):
        small_tree.cover("3501")


def test_topic_and_subscription_topics(small_tree: RegionTree) -> None:
    assert small_tree.topic("350102") == "eb/v1/alert/35/3501/350102"
    assert small_tree.subscription_topics("350102001001") == [
        "eb/v1/alert/35",
        "eb/v1/alert/35/3501",
        "eb/v1/alert/35/3501/350102",
        "eb/v1/alert/35/3501/350102/350102001",
        "eb/v1/alert/35/3501/350102/350102001/350102001001",
    ]
    assert small_tree.subscription_topics("35") == ["eb/v1/alert/35"]


LOOKUPS = [
    pytest.param(lambda t, c: t.get(c), id="get"),
    pytest.param(lambda t, c: t.name(c), id="name"),
    pytest.param(lambda t, c: t.level(c), id="level"),
    pytest.param(lambda t, c: t.parent(c), id="parent"),
    pytest.param(lambda t, c: t.ancestors(c), id="ancestors"),
    pytest.param(lambda t, c: t.path(c), id="path"),
    pytest.param(lambda t, c: t.children(c), id="children"),
    pytest.param(lambda t, c: t.descendants(c), id="descendants"),
    pytest.param(lambda t, c: t.is_within(c, "35"), id="is_within-inner"),
    pytest.param(lambda t, c: t.is_within("350102", c), id="is_within-outer"),
    pytest.param(lambda t, c: t.cover([c]), id="cover"),
    pytest.param(lambda t, c: t.topic(c), id="topic"),
    pytest.param(lambda t, c: t.subscription_topics(c), id="subscription_topics"),
]


@pytest.mark.parametrize("lookup", LOOKUPS)
@pytest.mark.parametrize(
    ("code", "error"),
    [
        ("350102001003", UnknownRegion),
        ("37", UnknownRegion),
        ("3501020010", MalformedRegionCode),
        ("35O1", MalformedRegionCode),
    ],
)
def test_every_lookup_names_a_bad_code(
    small_tree: RegionTree,
    lookup: Callable[[RegionTree, str], object],
    code: str,
    error: type[Exception],
) -> None:
    with pytest.raises(error, match=code_in_message(code)) as info:
        lookup(small_tree, code)
    assert getattr(info.value, "region_code", None) == code


# --- building a tree ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("region", "field", "message"),
    [
        (Region("3503x", "莆田市", Level.CITY, "35"), "code", "malformed"),
        (Region("3503", "莆田市", Level.COUNTY, "35"), "level", "city code"),
        (Region("3503", "", Level.CITY, "35"), "name", "empty name"),
        (Region("3503", "莆田市", Level.CITY, None), "parent", "needs its province"),
        (Region("3503", "莆田市", Level.CITY, "350"), "parent", "malformed"),
        (Region("350302", "城厢区", Level.COUNTY, "35"), "parent", "must be a city"),
        (Region("350302", "城厢区", Level.COUNTY, "3502"), "parent", "does not start with"),
        (Region("350302", "城厢区", Level.COUNTY, "3503"), "parent", "not in the region file"),
        (Region("3501", "福州市", Level.CITY, "35"), "code", "duplicate"),
        (Region("37", "山东省", Level.PROVINCE, "35"), "parent", "cannot have a parent"),
    ],
)
def test_from_regions_checks_like_the_file_loader(region: Region, field: str, message: str) -> None:
    regions = [Region(*row) for row in TREE_ROWS]
    with pytest.raises(RegionFileError, match=message) as info:
        RegionTree.from_regions([*regions, region])
    assert info.value.field == field
    assert repr(region.code) in str(info.value)


GOOD_HEAD = "code,name,level,parent\n35,福建省,1,\n3501,福州市,2,35\n"


@pytest.mark.parametrize(
    ("text", "line", "field", "message"),
    [
        ("", 1, None, "header must be"),
        ("code,name,level\n35,福建省,1\n", 1, None, "header must be"),
        ("code,name,parent,level\n35,福建省,,1\n", 1, None, "header must be"),
        ("Code,Name,Level,Parent\n35,福建省,1,\n", 1, None, "header must be"),
        ("code,name,level,parent\n", 2, None, "no regions"),
        (GOOD_HEAD + "350102,鼓楼区,3\n", 4, None, "expected 4 fields"),
        (GOOD_HEAD + "350102,鼓楼区,3,3501,x\n", 4, None, "expected 4 fields"),
        (GOOD_HEAD + "35010,鼓楼区,3,3501\n", 4, "code", "'35010' is malformed"),
        (GOOD_HEAD + " 350102,鼓楼区,3,3501\n", 4, "code", "malformed"),
        (GOOD_HEAD + "35010x,鼓楼区,x,3501\n", 4, "code", "malformed"),
        (GOOD_HEAD + "3501,福州市,2,35\n", 4, "code", r"duplicate code '3501' \(first on line 3\)"),
        (GOOD_HEAD + "350102,鼓楼区,4,3501\n", 4, "level", "'350102' is a county code"),
        (GOOD_HEAD + "350102,鼓楼区,county,3501\n", 4, "level", "'county' of '350102'"),
        (GOOD_HEAD + "350102,鼓楼区, 3,3501\n", 4, "level", "not 1 to 5"),
        (GOOD_HEAD + "350102,鼓楼区,,3501\n", 4, "level", "not 1 to 5"),
        (GOOD_HEAD + "350102,鼓楼区,6,3501\n", 4, "level", "not 1 to 5"),
        (GOOD_HEAD + "350102,,3,3501\n", 4, "name", "'350102' has an empty name"),
        (GOOD_HEAD + "350102,  ,3,3501\n", 4, "name", "empty name"),
        (GOOD_HEAD + "350102,鼓楼区,3,\n", 4, "parent", "needs its city as parent"),
        (GOOD_HEAD + "350102,鼓楼区,3,35\n", 4, "parent", "must be a city, but '35' is a province"),
        (GOOD_HEAD + "350102,鼓楼区,3,3502\n", 4, "parent", "does not start with"),
        (GOOD_HEAD + "350102,鼓楼区,3,350\n", 4, "parent", "parent '350' of '350102' is malformed"),
        (GOOD_HEAD + "36,江西省,1,35\n", 4, "parent", "province '36' cannot have a parent"),
        (
            GOOD_HEAD + "350102001,鼓东街道,4,350102\n",
            4,
            "parent",
            "parent '350102' of '350102001' is not in the region file",
        ),
    ],
)
def test_from_csv_names_file_line_and_field(
    tmp_path: Path, text: str, line: int, field: str | None, message: str
) -> None:
    path = write_text(tmp_path, "regions.csv", text)
    with pytest.raises(RegionFileError, match=message) as info:
        RegionTree.from_csv(path)
    error = info.value
    assert (error.path, error.line, error.field) == (path, line, field)
    assert str(error).startswith(f"{path}, line {line}")


def test_from_csv_reports_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.csv"
    with pytest.raises(RegionFileError, match="cannot read") as info:
        RegionTree.from_csv(path)
    assert info.value.path == path


def test_from_csv_reports_a_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "gbk.csv"
    path.write_bytes("code,name,level,parent\n35,福建省,1,\n".encode("gbk"))
    with pytest.raises(RegionFileError, match="not UTF-8"):
        RegionTree.from_csv(path)


def test_from_csv_accepts_any_row_order_bom_crlf_and_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "regions.csv"
    text = (
        "\ufeffcode,name,level,parent\r\n"
        "350102,鼓楼区,3,3501\r\n"
        "\r\n"
        "3501,福州市,2,35\r\n"
        "35,福建省,1,\r\n"
    )
    path.write_text(text, encoding="utf-8", newline="")
    tree = RegionTree.from_csv(str(path))
    assert names(list(tree)) == ["350102", "3501", "35"]
    assert names(tree.path("350102")) == ["35", "3501", "350102"]


def test_from_csv_reads_quoted_names(tmp_path: Path) -> None:
    path = write_text(tmp_path, "regions.csv", 'code,name,level,parent\n35,"福建省, 闽",1,\n')
    assert RegionTree.from_csv(path).name("35") == "福建省, 闽"


# --- the project's region file ---------------------------------------------------------------


def test_the_fujian_file_loads_with_the_known_counts(tree: RegionTree) -> None:
    assert tree.counts() == {
        Level.PROVINCE: 1,
        Level.CITY: 9,
        Level.COUNTY: 84,
        Level.TOWNSHIP: 1170,
        Level.VILLAGE: 17498,
    }
    assert len(tree) == 18762
    assert names(tree.roots()) == ["35"]


def test_the_fujian_file_knows_a_village_by_its_path(tree: RegionTree) -> None:
    assert [r.name for r in tree.path("350102001001")] == [
        "福建省",
        "福州市",
        "鼓楼区",
        "鼓东街道",
        "中山社区",
    ]
    assert len(tree.descendants("35", Level.VILLAGE)) == 17498
    assert names(tree.children("35"))[0] == "3501"


# --- virtual townships, search, coverage gaps ------------------------------------------------

VIRTUAL_ROWS = [
    *TREE_ROWS,
    # A state farm listed as a township with only a placeholder "village", and a development
    # zone with no village at all: both virtual.
    ("350102400", "红星农场", Level.TOWNSHIP, "350102"),
    ("350102400498", "红星农场虚拟生活区", Level.VILLAGE, "350102400"),
    ("350102401", "开发区", Level.TOWNSHIP, "350102"),
]


def test_virtual_townships_and_villages_are_marked() -> None:
    tree = RegionTree.from_regions(Region(*row) for row in VIRTUAL_ROWS)
    assert tree.is_virtual("350102400")
    assert tree.is_virtual("350102401")
    assert tree.is_virtual("350102400498")
    assert not tree.is_virtual("350102001")
    assert not tree.is_virtual("350102001001")
    assert not tree.is_virtual("350102")
    assert names(tree.townships("350102")) == ["350102001", "350102002"]
    assert names(tree.townships("35", virtual=True)) == [
        "350102001", "350102002", "350102400", "350102401",
    ]  # fmt: skip
    assert names(tree.townships("350102001")) == ["350102001"]
    assert tree.townships("350102400") == []
    assert tree.townships("350102001001") == []
    with pytest.raises(UnknownRegion):
        tree.is_virtual("350102999")


def test_the_fujian_file_has_41_virtual_townships_mazu_among_them(tree: RegionTree) -> None:
    virtual = [t.code for t in tree.townships("35", virtual=True) if tree.is_virtual(t.code)]
    assert len(virtual) == 41
    assert "350122400" in virtual  # 马祖乡, 连江县
    assert len(tree.townships("35")) == 1170 - 41


def test_find_by_name_or_code_prefix(tree: RegionTree) -> None:
    found = tree.find("黄岐")
    assert found[0].code == "350122112"
    assert tree.full_name("350122112") == "福建省/福州市/连江县/黄岐镇"
    assert all("黄岐" in r.name for r in found)
    # Highest level first: the township before the villages named after it.
    assert [r.level for r in found] == sorted(r.level for r in found)
    assert [r.code for r in tree.find("3501221")][:2] == ["350122100", "350122101"]
    assert tree.find("  ") == []
    assert tree.find("不存在的地名") == []
    assert len(tree.find("社区", limit=5)) == 5


def test_villages_without_terminal(small_tree: RegionTree) -> None:
    reached = {"350102001001", "350102002"}  # a village, and a township's own terminal
    gaps = villages_without_terminal(small_tree, ["350102"], reached)
    # A terminal registered at the township reaches no particular village.
    assert names(gaps) == ["350102001002", "350102002001"]
    assert villages_without_terminal(small_tree, ["350102001001"], reached) == []
    assert names(villages_without_terminal(small_tree, ["350102001", "350102"], set())) == [
        "350102001001", "350102001002", "350102002001",
    ]  # fmt: skip
    tree = RegionTree.from_regions(Region(*row) for row in VIRTUAL_ROWS)
    # Placeholder villages are nobody's gap.
    assert "350102400498" not in names(villages_without_terminal(tree, ["35"], set()))


def test_village_codes_are_the_villages_in_code_order(tree: RegionTree) -> None:
    for code in ("35", "3501", "350122", "350122112", "350122112001"):
        assert tree.village_codes(code) == sorted(tree.villages(code))
    assert len(tree.village_codes("35")) == 17498
    with pytest.raises(UnknownRegion):
        tree.village_codes("350199")
