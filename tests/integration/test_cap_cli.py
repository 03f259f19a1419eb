"""``ebd cap import`` against a real engine: each file's alert id or its refusal with the CAP
element and line, a message imported again named as such, standard input, and an exit code
that is 0 only when every file was taken."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from tests.helpers import unique, write_text
from tests.integration.engine import PROVINCE, Client, base_url, ebd
from tests.integration.test_cap_api import POLYGON_AREA, cap_doc

SENDER = "fzqxt@fjmb.cn"


def cap_file(folder: Path, name: str, data: bytes) -> str:
    path = folder / name
    path.write_bytes(data)
    return str(path)


async def get_alert(api: Client, alert_id: str) -> dict[str, object]:
    response = await api.get(f"/api/v1/alerts/{alert_id}", headers=PROVINCE)
    assert response.status == 200, await response.text()
    return dict(await response.json())


async def test_files_are_issued_in_order_and_a_refused_one_names_element_and_line(
    api: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EBD_TOKEN", "tok-province")
    first = unique("id")
    alert = cap_file(tmp_path, "alert.xml", cap_doc(first))
    update = cap_file(
        tmp_path,
        "update.xml",
        cap_doc(
            unique("id"),
            sent="2026-12-06T21:00:00+08:00",
            msg_type="Update",
            severity="Severe",
            references=f"{SENDER},{first},2026-12-06T20:30:00+08:00",
        ),
    )
    polygon = cap_file(tmp_path, "polygon.xml", cap_doc(unique("id"), areas=POLYGON_AREA))
    files = (alert, polygon, update)
    code = await ebd("--lang", "en", "cap", "import", *files, "--api", base_url(api))
    assert code == 2  # one refused: the exit code of a refused input
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith(f"{alert}: issued as fj-province-")
    assert out[1].startswith(f"{polygon}: refused: the engine refused it (422): CAP ")
    assert "/alert/info[1]/area[1], line 25" in out[1]
    assert "given only as a polygon" in out[1]
    assert out[2] == "  /alert/info[1]/area[1] (line 25): " + out[1].partition("line 25: ")[2]
    assert out[3].startswith(f"{update}: issued as fj-province-")
    alert_id, update_id = out[0].rpartition(" ")[2], out[3].rpartition(" ")[2]
    issued = await get_alert(api, update_id)
    assert (issued["msg_type"], issued["references"], issued["severity"]) == (
        "update",
        [alert_id],
        "orange",
    )

    # Again: nothing issued twice, and it says so; every file taken, exit 0.
    code = await ebd("--lang", "en", "cap", "import", alert, "--api", base_url(api))
    assert code == 0
    assert capsys.readouterr().out == f"{alert}: imported before as {alert_id}\n"


async def test_standard_input_and_json_output(
    api: Client,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EBD_TOKEN", "tok-province")
    identifier = unique("id")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(cap_doc(identifier))))
    code = await ebd("cap", "import", "-", "-o", "json", "--api", base_url(api))
    assert code == 0
    [line] = capsys.readouterr().out.splitlines()
    result = json.loads(line)
    assert result["file"] == "-"
    assert (result["msg_type"], result["duplicate"]) == ("alert", False)
    assert result["cap"]["identifier"] == identifier
    assert (await get_alert(api, result["alert_id"]))["areas"] == ["350102"]


async def test_a_bad_token_exits_4_and_an_unreadable_file_exits_2(
    api: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = cap_file(tmp_path, "alert.xml", cap_doc(unique("id")))
    token = write_text(tmp_path, "token", "not-a-token\n")
    argv = ("--lang", "en", "cap", "import", data, "--api", base_url(api))
    assert await ebd(*argv, "--token-file", str(token)) == 4
    assert "refused it (401)" in capsys.readouterr().out
    monkeypatch.setenv("EBD_TOKEN", "tok-province")
    missing = str(tmp_path / "missing.xml")
    code = await ebd("--lang", "en", "cap", "import", missing, "--api", base_url(api))
    assert code == 2
    assert capsys.readouterr().out == (
        f"{missing}: refused: cannot read the file: No such file or directory\n"
    )


async def test_a_cap_1_1_file_is_refused_saying_which_version_to_send(
    api: Client,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("EBD_TOKEN", "tok-province")
    old = cap_doc(unique("id")).replace(b"emergency:cap:1.2", b"emergency:cap:1.1")
    path = cap_file(tmp_path, "old.xml", old)
    assert await ebd("--lang", "en", "cap", "import", path, "--api", base_url(api)) == 2
    out = capsys.readouterr().out
    assert "CAP /alert, line 2: this is CAP 1.1" in out
    assert "ask the sender for CAP 1.2" in out
