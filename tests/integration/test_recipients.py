"""The recipient registry over HTTP and the CLI: all-or-nothing imports with line-numbered
errors, jurisdiction, merging a person's postings across offices, removal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import TAIJIANG_VILLAGE, ZHONGSHAN
from tests.integration.engine import GULOU, PROVINCE, TAIJIANG, Client, base_url, ebd


async def listed(api: Client, region: str = "35", headers: Any = PROVINCE) -> list[dict[str, Any]]:
    response = await api.get(f"/api/v1/recipients?region={region}&limit=5000", headers=headers)
    body = await response.json()
    assert response.status == 200, body
    return list(body["recipients"])


def row(phone: str = "13712345678", **fields: Any) -> dict[str, Any]:
    return {"phone": phone, "name": "张三", "region": ZHONGSHAN, "role": "village_head", **fields}


async def test_register_normalises_and_merges_a_person_listed_twice(api: Client) -> None:
    rows = [row("137 1234 5678"), row("+86-137-1234-5678", role="grid_worker")]
    response = await api.post("/api/v1/recipients", json=rows, headers=GULOU)
    body = await response.json()
    assert response.status == 200, body
    assert body == {"persons": 1, "created": 1, "updated": 0, "unchanged": 0}
    (person,) = await listed(api)
    assert person["phone"] == "+8613712345678"
    assert sorted(p["role"] for p in person["postings"]) == ["grid_worker", "village_head"]
    again = await api.post("/api/v1/recipients", json=rows, headers=GULOU)
    assert (await again.json())["unchanged"] == 1


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        ([row("12345")], "phone"),
        ([row("02787654321")], "landline"),
        ([row(region="3501x")], "region"),
        ([row(region="350199999999")], "not in the loaded region tree"),
        ([row(role="mayor")], "role"),
        ([row(), row(name="李四")], "also at item 1"),
        ([], "empty"),
        ({"phone": "13712345678"}, "list"),
        ([row(extra="x")], "extra"),
    ],
    ids=["short", "landline", "malformed-region", "unknown-region", "role", "two-names",
         "empty", "not-a-list", "unknown-field"],
)  # fmt: skip
async def test_bad_rows_are_refused_whole(api: Client, rows: Any, fragment: str) -> None:
    good = [row("13900139000")]
    body_rows = good + rows if isinstance(rows, list) and rows else rows
    response = await api.post("/api/v1/recipients", json=body_rows, headers=PROVINCE)
    body = await response.json()
    assert response.status == 422, body
    assert fragment.lower() in str(body["error"]).lower()
    assert "13712345678" not in body["error"]["message"], "a full number was echoed"
    assert await listed(api) == []


async def test_postings_outside_the_office_region_are_refused(api: Client) -> None:
    rows = [row(), row("13900139000", region=TAIJIANG_VILLAGE)]
    response = await api.post("/api/v1/recipients", json=rows, headers=GULOU)
    assert response.status == 403
    assert await listed(api) == []


async def test_an_office_import_keeps_the_postings_other_offices_made(api: Client) -> None:
    await api.post("/api/v1/recipients", json=[row(region=TAIJIANG_VILLAGE)], headers=TAIJIANG)
    response = await api.post("/api/v1/recipients", json=[row()], headers=GULOU)
    assert response.status == 200
    (person,) = await listed(api)
    assert sorted(p["region"] for p in person["postings"]) == [ZHONGSHAN, TAIJIANG_VILLAGE]
    # Gulou sees only its own posting of that person.
    (mine,) = await listed(api, "350102", GULOU)
    assert [p["region"] for p in mine["postings"]] == [ZHONGSHAN]
    # Removing through Gulou leaves Taijiang's posting.
    response = await api.delete("/api/v1/recipients/13712345678", headers=GULOU)
    assert (await response.json()) == {"removed_postings": 1}
    (person,) = await listed(api)
    assert [p["region"] for p in person["postings"]] == [TAIJIANG_VILLAGE]
    response = await api.delete("/api/v1/recipients/13712345678", headers=TAIJIANG)
    assert response.status == 200
    assert await listed(api) == []
    response = await api.delete("/api/v1/recipients/13712345678", headers=TAIJIANG)
    assert response.status == 404
    response = await api.delete("/api/v1/recipients/not-a-number", headers=TAIJIANG)
    assert response.status == 422


GOOD_CSV = (
    "phone,name,region,role,languages\n"
    "13712345678,张三,350102001001,village_head,zh\n"
    "13712345678,张三,350102001,duty_officer,zh\n"
    "+85261234567,Chan Tai Man,350102001002,resident,en;zh\n"
)


async def test_cli_import_of_a_good_csv(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(GOOD_CSV, encoding="utf-8")
    base = base_url(api)
    token_file = tmp_path / "gulou.token"
    token_file.write_text("tok-gulou\n", encoding="utf-8")
    auth = ["--api", base, "--token-file", str(token_file)]
    assert await ebd("recipients", "import", str(path), *auth) == 0
    out = capsys.readouterr().out.splitlines()
    assert f"{path}: 3 rows, 2 people: 2 new, 0 changed, 0 unchanged" in out
    people = {p["phone"]: p for p in await listed(api)}
    assert len(people["+8613712345678"]["postings"]) == 2
    assert people["+85261234567"]["languages"] == ["en", "zh"]
    argv = ["recipients", "list", *auth, "--region", "350102"]
    assert await ebd(*argv) == 0
    listing = capsys.readouterr().out
    assert "137****5678" in listing
    assert "13712345678" not in listing


@pytest.mark.parametrize(
    ("encoding", "declared"),
    [("gbk", None), ("gb18030", None), ("utf-8-sig", None), ("gbk", "gbk")],
    ids=["gbk-detected", "gb18030-detected", "utf8-bom", "gbk-declared"],
)
async def test_cli_import_of_a_csv_as_excel_saves_it(
    api: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    encoding: str,
    declared: str | None,
) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(GOOD_CSV.encode(encoding))
    token_file = tmp_path / "gulou.token"
    token_file.write_text("tok-gulou\n", encoding="utf-8")
    argv = ["recipients", "import", str(path), "--api", base_url(api), "--token-file",
            str(token_file), *(["--encoding", declared] if declared else [])]  # fmt: skip
    assert await ebd(*argv) == 0
    assert f"{path}: 3 rows, 2 people: 2 new" in capsys.readouterr().out
    names = {p["name"] for p in await listed(api)}
    assert "张三" in names


async def test_cli_import_with_a_wrong_declared_encoding_names_the_line(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(GOOD_CSV.encode("gbk"))
    token_file = tmp_path / "gulou.token"
    token_file.write_text("tok-gulou\n", encoding="utf-8")
    argv = ["recipients", "import", str(path), "--api", base_url(api), "--token-file",
            str(token_file), "--encoding", "utf-8"]  # fmt: skip
    assert await ebd(*argv) == 2
    err = capsys.readouterr().err
    assert "line 2: not UTF-8 text as declared" in err
    assert await listed(api) == []


@pytest.mark.parametrize(
    ("content", "line", "fragment"),
    [
        (b"phone,name,region\n13712345678,a,350102001001\n", 1, "role"),
        (b"phone,name,region,role\n13712345678,a,350102001001,village_head,x\n", 2, "columns"),
        (b"phone,name,region,role\n13712345678,\xff\x80,350102001001,village_head\n", 2,
         "neither UTF-8 nor GB18030"),
        (b"phone,name,region,role\n1380013800,a,350102001001,village_head\n", 2, "phone"),
        (b"phone,name,region,role\n13712345678,a,350102001001,village_head\n"
         b"13712345678,b,350102001001,grid_worker\n", 3, "line 2"),
        (b"phone,name,region,role\n", None, "empty"),
    ],
    ids=["missing-column", "too-many-cells", "not-text", "bad-phone", "two-names", "empty"],
)  # fmt: skip
async def test_cli_import_of_a_bad_csv_names_the_line_and_imports_nothing(
    api: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    line: int | None,
    fragment: str,
) -> None:
    path = tmp_path / "people.csv"
    path.write_bytes(content)
    base = base_url(api)
    token_file = tmp_path / "province.token"
    token_file.write_text("tok-province\n", encoding="utf-8")
    argv = ["recipients", "import", str(path), "--api", base, "--token-file", str(token_file)]
    assert await ebd(*argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ebd: error: ")
    if line is not None:
        assert f"line {line}" in err or f'"line": {line}' in err, err
    assert fragment.lower() in err.lower()
    assert "13712345678" not in err
    assert await listed(api) == []
