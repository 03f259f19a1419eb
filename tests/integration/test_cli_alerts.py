"""``ebd alerts``: what an office does from a shell, against a real engine (real Redis and
broker), with simulated terminals where a warning must be heard.

The command runs in-process (``main`` in a thread, as the engine's loop serves the API), and
once as the real ``ebd`` executable, to show an error is one line and never a traceback."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from dispatcher.cli import lang as language
from dispatcher.cli.demo import run_demo
from dispatcher.cli.main import main
from dispatcher.cli.tables import beijing, render, width
from receiver.simulator import Behaviour
from tests.helpers import (
    FUJIAN_FILE,
    GUDONG,
    GULOU_COUNTY,
    TAIJIANG_COUNTY,
    ZHONGSHAN,
    unique,
    write_text,
)
from tests.integration.engine import (
    PROVINCE,
    Client,
    base_url,
    ebd,
    online,
    terminals_in,
)
from tests.integration.test_cli import nothing_listening

ISSUE = (
    "alerts", "issue", "--area", GULOU_COUNTY, "--severity", "橙色", "--event", "暴雨",
    "--headline", "鼓楼区暴雨橙色预警", "--text", "预计未来3小时有50毫米以上降雨。",
    "--instruction", "请远离低洼地带。", "--expires-in", "2h",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _gulou_office(monkeypatch: pytest.MonkeyPatch) -> None:
    """The county office of 鼓楼区 runs the commands; Chinese, the default language."""
    monkeypatch.setenv("EBD_TOKEN", "tok-gulou")
    monkeypatch.delenv("EBD_LANG", raising=False)
    monkeypatch.setenv("LANG", "zh_CN.UTF-8")


async def run(api: Client, *argv: str) -> int:
    """``ebd ARGV --api URL`` against the test engine: its exit status."""
    return await ebd(*argv, "--api", base_url(api))


async def run_json(api: Client, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """``ebd ARGV -o json`` that must succeed: what it printed, parsed."""
    assert await run(api, *argv, "-o", "json") == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


async def alerts_stored(api: Client) -> list[dict[str, Any]]:
    response = await api.get("/api/v1/alerts?limit=500", headers=PROVINCE)
    assert response.status == 200, await response.text()
    return list((await response.json())["alerts"])


# --- issue -----------------------------------------------------------------------------------


async def test_issue_twice_with_the_same_key_creates_one_alert(
    api: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    key = unique("typhoon")
    first = await run_json(api, capsys, *ISSUE, "--idempotency-key", key)
    again = await run_json(api, capsys, *ISSUE, "--idempotency-key", key)
    assert first["id"] == again["id"]
    assert first["severity"] == "orange"
    assert first["areas"] == [GULOU_COUNTY]
    assert [a["id"] for a in await alerts_stored(api)] == [first["id"]]


async def test_issue_shows_the_key_it_made_and_that_key_retries_safely(
    api: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(api, *ISSUE, "--quiet") == 0
    captured = capsys.readouterr()
    alert_id = captured.out.strip()
    [line] = [x for x in captured.err.splitlines() if "Idempotency-Key" in x]
    key = line.split("Idempotency-Key: ")[1].split("（")[0].strip()
    assert key.startswith("ebd-")
    assert await run(api, *ISSUE, "--quiet", "--idempotency-key", key) == 0
    assert capsys.readouterr().out.strip() == alert_id
    # A run without the key is a new warning.
    assert await run(api, *ISSUE, "--quiet") == 0
    assert capsys.readouterr().out.strip() != alert_id
    assert len(await alerts_stored(api)) == 2


async def test_issue_from_a_file_with_options_overriding_it(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    body = {
        "event": "台风", "event_code": "11B01", "severity": "blue", "headline": "台风蓝色预警",
        "text": "注意防范。", "areas": [ZHONGSHAN], "expires_in": 3600, "status": "exercise",
    }  # fmt: skip
    path = write_text(tmp_path, "alert.json", json.dumps(body, ensure_ascii=False))
    alert = await run_json(
        api, capsys, "alerts", "issue", "--file", str(path), "--severity", "yellow"
    )
    assert (alert["severity"], alert["status"], alert["event_code"]) == (
        "yellow",
        "exercise",
        "11B01",
    )
    assert alert["areas"] == [ZHONGSHAN]


async def test_issue_table_shows_chinese_labels_and_beijing_time(
    api: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(api, *ISSUE) == 0
    out = capsys.readouterr().out
    assert "橙色" in out
    assert "鼓楼区(350102)" in out
    assert "+08:00" in out
    assert "发布时间" in out


async def test_english_on_request(api: Client, capsys: pytest.CaptureFixture[str]) -> None:
    assert await run(api, *ISSUE, "--lang", "en") == 0
    out = capsys.readouterr().out
    assert "orange" in out
    assert "sent" in out
    assert "发布时间" not in out


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@asynccontextmanager
async def answer_lost_once(engine_port: int) -> AsyncIterator[tuple[str, list[int]]]:
    """A real TCP relay to the engine that loses the engine's answer to the first request
    (the engine took and stored it; the caller sees the connection drop), as a flaky link
    does; later connections pass. Its URL, and per connection the bytes of request it read."""
    requests: list[int] = []

    async def relay(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        engine_r, engine_w = await asyncio.open_connection("127.0.0.1", engine_port)
        if requests:
            requests.append(0)
            await asyncio.gather(_pipe(client_r, engine_w), _pipe(engine_r, client_w))
            return
        head = await client_r.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.lower().split(b"\r\n")
            if line.startswith(b"content-length:")
        )
        body = await client_r.readexactly(length)
        requests.append(len(head) + len(body))
        engine_w.write(head + body)
        await engine_w.drain()
        # The engine's answer has begun: it stored the alert. The caller never sees it.
        await engine_r.readuntil(b"\r\n\r\n")
        for writer in (engine_w, client_w):
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}", requests


async def test_issue_retries_a_lost_answer_with_its_key_and_issues_once(
    api: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    assert api.port is not None
    async with answer_lost_once(api.port) as (url, requests):
        code = await ebd(*ISSUE, "--quiet", "--api", url)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(requests) == 2, "the first answer was lost, the request sent again"
    stored = await alerts_stored(api)
    assert [a["id"] for a in stored] == [captured.out.strip()]


# --- watch -----------------------------------------------------------------------------------


async def test_issue_and_watch_until_every_terminal_played(
    api: Client, mqtt_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 4, unique("cli"))
    async with online(api, terminals, mqtt_url):
        code = await run(api, *ISSUE, "--watch", "--timeout", "60", "--detail", "county")
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "已播 4/4" in captured.out
        assert "全部已播" in captured.out
        [row] = [line for line in captured.out.splitlines() if line.startswith("鼓楼区")]
        assert row.split()[1:] == ["350102", "4", "4", "4", "0", "100.0%"]
        alert_id = next(a["id"] for a in await alerts_stored(api))
        # Watching it again is immediate, and its JSON is the API's.
        alert = await run_json(api, capsys, "alerts", "watch", alert_id)
    assert alert["id"] == alert_id
    assert alert["delivery"]["played"] == alert["delivery"]["expected"] == 4
    assert alert["delivery"]["by_city"][0]["code"] == "3501"


async def test_watch_exits_1_when_a_terminal_failed(
    api: Client, mqtt_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 3, unique("cli"))
    behaviour = Behaviour(fail=frozenset({terminals[0].id}))
    async with online(api, terminals, mqtt_url, behaviour):
        code = await run(api, *ISSUE, "--watch", "--timeout", "60", "-o", "json")
    assert code == 1
    delivery = json.loads(capsys.readouterr().out)["delivery"]
    assert (delivery["played"], delivery["failed"], delivery["expected"]) == (2, 1, 3)


async def test_watch_of_an_alert_no_terminal_expects_exits_1(
    api: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    alert = await run_json(api, capsys, *ISSUE)
    assert await run(api, "alerts", "watch", alert["id"], "--timeout", "30") == 1
    assert "已播 0/0" in capsys.readouterr().out


async def test_watch_stops_when_the_alert_is_cancelled(
    api: Client, capsys: pytest.CaptureFixture[str], mqtt_url: str
) -> None:
    terminals = terminals_in(GULOU_COUNTY, 2, unique("cli"))
    # The terminals never answer, so only the cancel can end the watch.
    silent = Behaviour(silent=frozenset(t.id for t in terminals))
    async with online(api, terminals, mqtt_url, silent):
        alert = await run_json(api, capsys, *ISSUE)
        assert await run(api, "alerts", "cancel", alert["id"], "--reason", "降雨减弱") == 0
        capsys.readouterr()
        assert await run(api, "alerts", "watch", alert["id"], "--timeout", "30") == 1
    assert "已解除" in capsys.readouterr().out


# --- list, show, update, cancel ----------------------------------------------------------------


async def test_update_then_cancel_and_list_and_show_them(
    api: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await run_json(api, capsys, *ISSUE)
    update = await run_json(
        api, capsys, "alerts", "update", first["id"], "--severity", "red",
        "--headline", "鼓楼区暴雨红色预警",
    )  # fmt: skip
    assert update["msg_type"] == "update"
    assert update["references"] == [first["id"]]
    assert (update["severity"], update["headline"]) == ("red", "鼓楼区暴雨红色预警")
    assert update["text"] == first["text"], "what the update does not change is kept"
    assert update["expires"] == first["expires"]
    cancel = await run_json(api, capsys, "alerts", "cancel", update["id"], "--reason", "预警解除")
    assert (cancel["msg_type"], cancel["references"]) == ("cancel", [update["id"]])
    assert cancel["text"] == "预警解除"

    listed = await run_json(api, capsys, "alerts", "list")
    assert {a["id"] for a in listed["alerts"]} == {first["id"], update["id"], cancel["id"]}
    only = await run_json(api, capsys, "alerts", "list", "--type", "cancel")
    assert [a["id"] for a in only["alerts"]] == [cancel["id"]]
    reds = await run_json(api, capsys, "alerts", "list", "--severity", "红")
    assert {a["id"] for a in reds["alerts"]} == {update["id"], cancel["id"]}
    none = await run_json(api, capsys, "alerts", "list", "--status", "exercise")
    assert none == {"alerts": [], "count": 0}
    later = await run_json(api, capsys, "alerts", "list", "--since", cancel["sent"])
    assert [a["id"] for a in later["alerts"]] == [cancel["id"]]

    assert await run(api, "alerts", "list") == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["编号", "发布时间（北京）", "级别"]
    assert sum(alert in table for alert in (first["id"], update["id"], cancel["id"])) == 3

    shown = await run_json(api, capsys, "alerts", "show", update["id"], "--detail", "city")
    assert shown["id"] == update["id"]
    assert shown["delivery"]["cancelled_by"] == cancel["id"]
    assert await run(api, "alerts", "show", update["id"]) == 0
    out = capsys.readouterr().out
    assert "已解除" in out
    assert cancel["id"] in out


async def test_update_without_a_change_is_refused_before_sending(
    api: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    first = await run_json(api, capsys, *ISSUE)
    assert await run(api, "alerts", "update", first["id"]) == 2
    assert "没有要更新的内容" in capsys.readouterr().err
    assert len(await alerts_stored(api)) == 1


# --- bad input and failures --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "code", "fragment"),
    [
        pytest.param(("--area", "350199"), 2, "350199", id="unknown-region"),
        pytest.param(("--area", "35x"), 2, "malformed", id="malformed-region"),
        pytest.param(("--area", TAIJIANG_COUNTY), 5, "refused it (403)", id="outside"),
        pytest.param(("--expires-in", "30"), 2, "expires_in", id="too-short"),
    ],
)
async def test_issue_refused_by_the_engine_gives_one_line_and_an_exit_code(
    api: Client, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], code: int, fragment: str
) -> None:
    assert await run(api, *ISSUE, *argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    first = captured.err.splitlines()[1]
    assert first.startswith("ebd: error: the engine refused it")
    assert fragment in captured.err
    assert await alerts_stored(api) == []


async def test_a_bad_colour_is_a_usage_error_naming_the_colours(
    api: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        await run(api, *ISSUE, "--severity", "purple")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "'purple'" in err
    assert "red/orange/yellow/blue" in err
    assert await alerts_stored(api) == []


async def test_missing_fields_are_named_as_options(
    api: Client, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run(api, "alerts", "issue", "--area", GULOU_COUNTY) == 2
    err = capsys.readouterr().err
    assert "--severity, --event, --headline, --text" in err


async def test_without_a_token_it_says_how_to_give_one(
    api: Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EBD_TOKEN")
    assert await run(api, *ISSUE) == 2
    err = capsys.readouterr().err
    assert "EBD_TOKEN" in err
    assert "--token-file" in err


async def test_an_unknown_token_exits_4_and_an_unknown_alert_6(
    api: Client, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert await run(api, "alerts", "show", "no-such-alert") == 6
    assert "refused it (404)" in capsys.readouterr().err
    monkeypatch.setenv("EBD_TOKEN", "not-a-token")
    assert await run(api, "alerts", "list") == 4
    err = capsys.readouterr().err
    assert "refused it (401)" in err
    assert "not-a-token" not in err


@pytest.mark.parametrize("bad", ["../../healthz", "a b", "x?y=1"])
def test_an_alert_id_that_could_change_the_path_is_refused(
    capsys: pytest.CaptureFixture[str], bad: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["alerts", "show", bad, "--api", "http://127.0.0.1:9"])
    assert exited.value.code == 2
    assert f"无效的预警编号 {bad!r}" in capsys.readouterr().err


def test_engine_down_is_one_line_and_exit_3_from_the_real_command(tmp_path: Path) -> None:
    with nothing_listening() as closed_port:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "dispatcher",
                *ISSUE,
                "--api",
                f"http://127.0.0.1:{closed_port}",
            ],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            timeout=60,
            check=False,
            env={"PATH": "/usr/bin:/bin", "EBD_TOKEN": "tok-gulou", "EBD_LANG": "en"},
        )
    assert result.returncode == 3
    assert "Traceback" not in result.stderr
    [key_line, error] = result.stderr.splitlines()
    assert key_line.startswith("Idempotency-Key: ebd-")
    assert error.startswith(
        f"ebd: error: cannot reach the engine at http://127.0.0.1:{closed_port}"
    )


# --- where the engine is -----------------------------------------------------------------------


async def test_the_address_comes_from_the_config_unless_api_or_ebd_api_say_otherwise(
    api: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert api.port is not None
    config = write_text(tmp_path, "ebd.toml", f'[api]\nlisten = "0.0.0.0:{api.port}"\n')
    assert await ebd("alerts", "list", "--config", str(config)) == 0
    assert capsys.readouterr().out.strip() == "没有预警"
    # EBD_API wins over the file, --api over both.
    with nothing_listening() as closed_port:
        monkeypatch.setenv("EBD_API", f"http://127.0.0.1:{closed_port}")
        assert await ebd("alerts", "list", "--config", str(config)) == 3
    assert str(closed_port) in capsys.readouterr().err
    assert await ebd("alerts", "list", "--config", str(config), "--api", base_url(api)) == 0
    assert capsys.readouterr().out.strip() == "没有预警"


async def test_a_bad_config_or_api_address_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_text(tmp_path, "ebd.toml", '[api]\nlisten = "8080"\n')
    assert await ebd("alerts", "list", "--config", str(config)) == 2
    assert f"{config}, field 'api.listen'" in capsys.readouterr().err
    assert await ebd("alerts", "list", "--api", "127.0.0.1:8080") == 2
    assert "--api must be the engine's URL" in capsys.readouterr().err


# --- language and tables (pure) ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "env", "lang", "rest"),
    [
        pytest.param(["alerts", "list"], {}, "zh", ["alerts", "list"], id="nothing-set"),
        pytest.param([], {"LANG": "en_US.UTF-8"}, "en", [], id="english-locale"),
        pytest.param([], {"LANG": "C.UTF-8"}, "zh", [], id="c-locale"),
        pytest.param([], {"LC_ALL": "zh_CN.UTF-8", "LANG": "en_US"}, "zh", [], id="lc-all-first"),
        pytest.param([], {"EBD_LANG": "en", "LANG": "zh_CN"}, "en", [], id="ebd-lang"),
        pytest.param(["--lang", "zh", "x"], {"EBD_LANG": "en"}, "zh", ["x"], id="option-wins"),
        pytest.param(["x", "--help", "--lang=en"], {}, "en", ["x", "--help"], id="after-help"),
        pytest.param(["--lang", "fr"], {}, "zh", ["--lang", "fr"], id="bad-left-to-parser"),
    ],
)
def test_the_language_rule(
    argv: list[str], env: dict[str, str], lang: str, rest: list[str]
) -> None:
    assert language.choose(argv, env) == rest
    assert language.current() == lang


def test_tables_align_chinese_by_display_width_and_show_beijing_time() -> None:
    table = render(["城市", "n"], [["福州市", 3022], ["厦门", 5]]).splitlines()
    # Six cells of city name, two of gap, four of right-aligned number on every line.
    assert [width(line) for line in table] == [12, 12, 12]
    assert table == ["城市       n", "福州市  3022", "厦门       5"]
    assert beijing("2026-11-27T02:00:00+00:00") == "2026-11-27T10:00:00+08:00"
    assert beijing(None) == "-"
    assert render(["h"], [["bell\x07\x1b[2J"]]).splitlines()[1] == "bell??[2J"


async def test_the_demo_follows_its_warning_with_the_same_bar_and_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``ebd demo`` on one township: its own engine, simulator and warning, followed by the
    progress module ``ebd alerts watch`` uses."""

    seen: dict[str, Any] = {}

    async def in_the_console() -> None:
        """While the demo still serves: its printed logins sign in and see its warning."""
        saved = json.loads((tmp_path / "demo-logins.json").read_text())
        seen["mode"] = (tmp_path / "demo-logins.json").stat().st_mode & 0o777
        console = saved["console"]
        base = console.removesuffix("/login")
        # unsafe: the jar keeps cookies of an IP address (127.0.0.1), as a browser does.
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
            login = {"login": "demo.approver", "password": saved["logins"]["demo.approver"]}
            async with session.post(f"{base}/api/v1/session", json=login) as answer:
                seen["login"] = answer.status
            async with session.get(f"{base}/api/v1/alerts") as answer:
                seen["alerts"] = [a["headline"] for a in (await answer.json())["alerts"]]
            async with session.get(f"{base}/alerts") as answer:
                seen["page"] = (answer.status, answer.content_type)
        seen["console"] = console

    code = await run_demo(
        region=GUDONG,
        timeout=120,
        state_dir=tmp_path,
        regions_file=FUJIAN_FILE,
        linger=in_the_console(),
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert seen["login"] == 200
    assert seen["mode"] == 0o600
    assert seen["alerts"] == ["鼓东街道台风红色预警"]
    assert seen["page"] == (200, "text/html")
    assert seen["console"] in captured.out
    assert "demo.approver" in captured.out
    [row] = [line for line in captured.out.splitlines() if line.startswith("福州市")]
    _, city, expected, received, played, failed, coverage = row.split()
    assert (city, failed, coverage) == ("3501", "0", "100.0%")
    assert int(expected) == int(played) == int(received) > 0
    assert "100%" in captured.err, "the live bar reached the end"
