"""The `ebd` command: exit codes, what it prints, and terminal import against a real engine.

Most cases call ``dispatcher.cli.main`` in-process; a few run ``python -m dispatcher`` to prove
the module entry point works. ``main`` is sync and runs its own event loop, so tests that also
run an engine call it in a thread.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from dispatcher.cli.main import main
from dispatcher.cli.provisioning import read_provisioning
from dispatcher.core.auth import hash_token
from tests.helpers import (
    ROOT,
    SHARED_REGIONS,
    needs_shared_regions,
    office_toml,
    write_tables,
    write_text,
)
from tests.integration.engine import PROVINCE, REGIONS_FILE, Client, base_url, ebd

ZHONGSHAN_PATH = (
    "福建省(35) > 福州市(3501) > 鼓楼区(350102) > 鼓东街道(350102001) > 中山社区(350102001001)"
)


def run_module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m dispatcher`` in ``cwd``, in this environment (no EBD_ variables: the suite's
    autouse fixture removed them)."""
    return subprocess.run(
        [sys.executable, "-m", "dispatcher", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
        check=False,
    )


# --- offices token ---------------------------------------------------------------------------


def parse_token_output(out: str) -> tuple[str, str]:
    token = re.search(r"^token\s+= (\S+)$", out, re.MULTILINE)
    assert token is not None, out
    # The hash line is meant to be pasted into an [[offices]] entry: it must be valid TOML.
    [hash_line] = [line for line in out.splitlines() if line.startswith("token_sha256")]
    digest = tomllib.loads(hash_line)["token_sha256"]
    return token.group(1), digest


def test_offices_token_prints_a_token_and_its_sha256(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["offices", "token"]) == 0
    token, digest = parse_token_output(capsys.readouterr().out)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert hash_token(token) == digest


def test_python_m_dispatcher_runs_ebd(tmp_path: Path) -> None:
    result = run_module("offices", "token", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    token, digest = parse_token_output(result.stdout)
    assert hash_token(token) == digest


def test_python_m_dispatcher_without_a_command_is_a_usage_error(tmp_path: Path) -> None:
    result = run_module(cwd=tmp_path)
    assert result.returncode == 2
    assert "usage: ebd" in result.stderr


# --- config check ----------------------------------------------------------------------------


GOOD_CONFIG = (
    '[api]\nlisten = "127.0.0.1:9090"\n\n'
    f'[regions]\nfile = "{REGIONS_FILE}"\n\n'
    + office_toml("fj-province", "35", hash_token("tok-province"))
    + office_toml("fz-gulou", "350102", hash_token("tok-gulou"))
)


def test_config_check_of_a_good_file_is_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_text(tmp_path, "ebd.toml", GOOD_CONFIG)
    assert main(["config", "check", "--config", str(path)]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{path}: OK (2 offices, 18762 regions, SMS off)\n"
    assert captured.err == ""


def test_config_check_of_the_shipped_example_runs_from_any_folder(tmp_path: Path) -> None:
    example = ROOT / "config" / "ebd.example.toml"
    result = run_module("config", "check", "--config", str(example), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{example}: OK (2 offices, 18762 regions, SMS off)\n"


@pytest.mark.parametrize(
    ("text", "where"),
    [
        pytest.param('[api]\nlisen = "127.0.0.1:8080"\n', "field 'api.lisen'", id="unknown-key"),
        pytest.param('[api]\nlisten = "8080"\n', "field 'api.listen'", id="bad-listen"),
        pytest.param('[mqtt]\nurl = "http://x"\n', "field 'mqtt.url'", id="bad-mqtt-url"),
        pytest.param('[api]\nlisten = "127.0.0.1:8080\n', "line 2", id="toml-syntax"),
        pytest.param(
            office_toml("fj", "35", hash_token("a")) + office_toml("fj", "3501", hash_token("b")),
            "field 'offices[1].id'",
            id="duplicate-office",
        ),
        pytest.param(
            office_toml("fj", "35", "abc"),
            "field 'offices[0].token_sha256'",
            id="bad-hash",
        ),
        pytest.param(
            f'[regions]\nfile = "{REGIONS_FILE}"\n' + office_toml("fj", "3599", hash_token("a")),
            "field 'offices[0].region'",
            id="office-region-not-in-tree",
        ),
        pytest.param(
            '[regions]\nfile = "/nonexistent/regions.csv"\n',
            "field 'regions.file'",
            id="region-file-missing",
        ),
    ],
)
def test_config_check_of_a_bad_file_exits_2_naming_the_file_and_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, where: str
) -> None:
    path = write_text(tmp_path, "ebd.toml", text)
    assert main(["config", "check", "--config", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("ebd: error: ")
    assert str(path) in captured.err
    assert where in captured.err


def test_config_check_of_a_missing_file_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "nowhere.toml"
    assert main(["config", "check", "--config", str(path)]) == 2
    assert f"{path}: cannot read config file" in capsys.readouterr().err


def test_config_check_error_from_python_m_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    path = write_text(tmp_path, "ebd.toml", '[api]\nlisten = "8080"\n')
    result = run_module("config", "check", "--config", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith(f"ebd: error: {path}, field 'api.listen': ")
    assert "Traceback" not in result.stderr


# --- regions show ----------------------------------------------------------------------------


def test_regions_show_prints_the_path_level_and_topic(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regions", "show", "350102001001"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        ZHONGSHAN_PATH,
        "level: 村 / village",
        "topic: eb/v1/alert/35/3501/350102/350102001/350102001001",
        "children: 0",
    ]


def test_regions_show_of_a_county_counts_its_townships(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["regions", "show", "350102"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("福建省(35) > 福州市(3501) > 鼓楼区(350102)\nlevel: 县 / county\n")
    assert re.search(r"^children: [1-9]\d*$", out, re.MULTILINE)


def test_regions_show_through_python_m_from_another_folder(tmp_path: Path) -> None:
    result = run_module("regions", "show", "350102001001", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == ZHONGSHAN_PATH


def test_regions_show_reads_the_given_regions_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    regions = write_text(
        tmp_path, "r.csv", "code,name,level,parent\n36,江西省,1,\n3601,南昌市,2,36\n"
    )
    assert main(["regions", "show", "3601", "--regions-file", str(regions)]) == 0
    assert capsys.readouterr().out.startswith("江西省(36) > 南昌市(3601)\nlevel: 市 / city\n")


@pytest.mark.parametrize(
    ("code", "fragment"),
    [
        ("3501x", "malformed"),
        ("350", "malformed"),
        ("3599", "not in the loaded region tree"),
        ("350102001999", "not in the loaded region tree"),
    ],
)
def test_regions_show_of_a_bad_code_exits_2_naming_the_code(
    capsys: pytest.CaptureFixture[str], code: str, fragment: str
) -> None:
    assert main(["regions", "show", code]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"region code {code!r}" in captured.err
    assert fragment in captured.err


# --- regions import --------------------------------------------------------------------------


@needs_shared_regions
def test_regions_import_of_the_shared_tables_writes_the_project_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "x.csv"
    argv = ["regions", "import", str(SHARED_REGIONS), "--province", "35", "--out", str(out)]
    assert main(argv) == 0
    assert capsys.readouterr().out == (
        f"wrote {out}: province 1, city 9, county 84, township 1170, village 17498\n"
    )
    assert out.read_bytes() == REGIONS_FILE.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.csv"]


TABLES = {
    "provinces.csv": "code,name\n35,福建省\n",
    "cities.csv": "code,name,provinceCode\n3501,福州市,35\n",
    "areas.csv": "code,name,cityCode,provinceCode\n350102,鼓楼区,3501,35\n",
    "streets.csv": "code,name,areaCode,provinceCode,cityCode\n350102001,鼓东街道,350102,35,3501\n",
    "villages.csv": (
        "code,name,streetCode,provinceCode,cityCode,areaCode\n"
        "350102001001,中山社区,350102001,35,3501,350102\n"
        "350102001002,庆城社区,350102001,35,3501,350102\n"
    ),
}


def test_regions_import_of_a_small_folder_writes_a_loadable_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_tables(tmp_path / "src", TABLES)
    out = tmp_path / "out" / "regions.csv"
    out.parent.mkdir()
    assert main(["regions", "import", str(source), "--out", str(out)]) == 0
    assert "province 1, city 1, county 1, township 1, village 2" in capsys.readouterr().out
    assert main(["regions", "show", "350102001002", "--regions-file", str(out)]) == 0
    assert "庆城社区(350102001002)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("replace", "where"),
    [
        pytest.param(
            {"villages": TABLES["villages.csv"] + "350102001x03,坏社区,350102001,35,3501,350102\n"},
            "villages.csv, line 4, field 'code'",
            id="malformed-code",
        ),
        pytest.param(
            {
                "villages": TABLES["villages.csv"].replace(
                    ",庆城社区,350102001,", ",庆城社区,350102002,"
                )
            },
            "villages.csv, line 3, field 'streetCode'",
            id="unknown-parent",
        ),
        pytest.param(
            {"streets": TABLES["streets.csv"] + "350102002,鼓西街道,350102\n"},
            "streets.csv, line 3",
            id="short-row",
        ),
        pytest.param(
            {"cities": "code,name\n3501,福州市\n"},
            "cities.csv, line 1, field 'provinceCode'",
            id="missing-column",
        ),
    ],
)
def test_regions_import_of_a_bad_row_exits_2_naming_file_and_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], replace: dict[str, str], where: str
) -> None:
    source = write_tables(tmp_path / "src", TABLES, **replace)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "regions.csv"
    assert main(["regions", "import", str(source), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"{source}/{where}" in captured.err
    assert list(out_dir.iterdir()) == []


def test_regions_import_keeps_the_old_file_when_the_new_one_is_bad(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_tables(tmp_path / "src", TABLES, villages=TABLES["villages.csv"] + "oops\n")
    out = write_text(tmp_path, "regions.csv", "the old file\n")
    assert main(["regions", "import", str(source), "--out", str(out)]) == 2
    assert "villages.csv, line 4" in capsys.readouterr().err
    assert out.read_text(encoding="utf-8") == "the old file\n"


@pytest.mark.parametrize("province", ["3", "350", "ab"])
def test_regions_import_of_a_bad_province_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], province: str
) -> None:
    source = write_tables(tmp_path / "src", TABLES)
    out = tmp_path / "regions.csv"
    assert main(["regions", "import", str(source), "--province", province, "--out", str(out)]) == 2
    assert f"got {province!r}" in capsys.readouterr().err
    assert not out.exists()


def test_regions_import_of_a_folder_without_tables_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["regions", "import", str(tmp_path), "--out", str(tmp_path / "r.csv")]) == 2
    assert f"{tmp_path}: no *provinces.csv in this folder" in capsys.readouterr().err


# --- terminals import ------------------------------------------------------------------------


async def registered(api: Client, region: str = "35") -> list[dict[str, Any]]:
    response = await api.get(f"/api/v1/terminals?region={region}&limit=5000", headers=PROVINCE)
    assert response.status == 200, await response.text()
    listing = await response.json()
    assert listing["total"] == len(listing["terminals"])
    return list(listing["terminals"])


HEADER = b"id,region,kind\n"
GOOD_ROW = b"gl-1,350102001001,loudspeaker\n"

BAD_CSVS = [
    pytest.param(b"id,area,kind\n" + GOOD_ROW, "line 1", "unknown ['area']", id="wrong-header"),
    pytest.param(b"region,kind\n350102001001,display\n", "line 1", "'id'", id="header-no-id"),
    pytest.param(
        HEADER + GOOD_ROW + b"gl-2,350102001001,display,extra\n",
        "line 3",
        "too many columns",
        id="too-many-columns",
    ),
    pytest.param(
        HEADER + GOOD_ROW + b"gl-2,3501x,loudspeaker\n", "line 3", "'3501x'", id="malformed-region"
    ),
    pytest.param(
        HEADER + GOOD_ROW + b"gl-2,359999,loudspeaker\n", "line 3", "'359999'", id="unknown-region"
    ),
    pytest.param(
        HEADER + GOOD_ROW + b"gl-1,350102001002,loudspeaker\n",
        "line 3",
        "also at line 2",
        id="duplicate-id",
    ),
    pytest.param(HEADER + GOOD_ROW + b"gl-2,350102001001,siren\n", "line 3", "kind", id="bad-kind"),
    pytest.param(HEADER + GOOD_ROW + b"gl/2,350102001001,\n", "line 3", "id", id="bad-id"),
    pytest.param(
        HEADER + GOOD_ROW + b"gl-2,\xff\xfe350102001001,loudspeaker\n",
        "line 3",
        "UTF-8",
        id="non-utf8-bytes",
    ),
    pytest.param(b"", "line 1", "header", id="empty-file"),
    pytest.param(
        HEADER + GOOD_ROW + b"\n" + b"gl-2,3501x,loudspeaker\n",
        "line 4",
        "'3501x'",
        id="blank-line-before-bad-row",
    ),
]


@pytest.mark.parametrize(("content", "line", "fragment"), BAD_CSVS)
async def test_terminals_import_of_a_bad_csv_exits_2_naming_the_line_and_registers_nothing(
    api: Client,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: bytes,
    line: str,
    fragment: str,
) -> None:
    csv_file = tmp_path / "terminals.csv"
    csv_file.write_bytes(content)
    assert await import_csv(api, csv_file, "tok-province") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("ebd: error: ")
    assert re.search(rf"\b{line}\b", captured.err), captured.err
    assert fragment.lower() in captured.err.lower()
    assert await registered(api) == []


async def import_csv(api: Client, csv_file: Path, token: str) -> int:
    """``ebd terminals import`` of ``csv_file`` with ``token`` (in a token file beside it): its
    exit status."""
    token_file = csv_file.parent / f"{csv_file.name}.token"
    token_file.write_text(token + "\n", encoding="utf-8")
    argv = ["terminals", "import", str(csv_file), "--api", base_url(api)]
    return await ebd(*argv, "--token-file", str(token_file))


async def test_terminals_import_of_a_header_only_csv_exits_2_and_registers_nothing(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "terminals.csv"
    csv_file.write_bytes(HEADER)
    assert await import_csv(api, csv_file, "tok-province") == 2
    assert "empty" in capsys.readouterr().err
    assert await registered(api) == []


async def test_terminals_import_reports_every_bad_line_not_only_the_first(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = tmp_path / "terminals.csv"
    csv_file.write_bytes(
        HEADER + b"gl-1,3501x,\n" + GOOD_ROW.replace(b"gl-1", b"gl-2") + b"gl-3,359999,\n"
    )
    assert await import_csv(api, csv_file, "tok-province") == 2
    err = capsys.readouterr().err
    assert "2 bad line(s); nothing was imported. First: line 2, region" in err
    assert '"line": 2' in err
    assert '"line": 4' in err
    assert await registered(api) == []


GOOD_CSV = (
    "id,region,kind\n"
    "gl-1,350102001001,loudspeaker\n"
    "gl-2,350102001002,display\n"
    "gl-3,350102001001,\n"  # an empty kind is the default, a loudspeaker
)


def credential_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("terminals.credentials-*.json"))


async def test_terminals_import_of_a_good_csv_registers_every_row(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = write_text(tmp_path, "terminals.csv", GOOD_CSV)
    assert await import_csv(api, csv_file, "tok-gulou") == 0
    first, issued = capsys.readouterr().out.splitlines()
    assert first == f"{csv_file}: 3 terminals: 3 new, 0 moved, 0 unchanged"
    assert issued.startswith("3 broker accounts issued")
    # Their passwords went to one file beside the CSV, readable by its owner alone.
    (saved,) = credential_files(tmp_path)
    assert saved.stat().st_mode & 0o077 == 0
    given = read_provisioning(saved)
    assert sorted(given.passwords) == ["gl-1", "gl-2", "gl-3"]
    assert given.url.startswith("mqtts://")
    terminals = await registered(api)
    assert [(t["id"], t["region"], t["kind"]) for t in terminals] == [
        ("gl-1", "350102001001", "loudspeaker"),
        ("gl-2", "350102001002", "display"),
        ("gl-3", "350102001001", "loudspeaker"),
    ]
    assert len(await registered(api, "350102001001")) == 2

    # Importing the same file again changes nothing and issues no password.
    assert await import_csv(api, csv_file, "tok-gulou") == 0
    assert capsys.readouterr().out.endswith("0 new, 0 moved, 3 unchanged\n")
    assert len(await registered(api)) == 3
    assert credential_files(tmp_path) == [saved]


async def test_terminals_import_refuses_to_overwrite_a_credentials_file(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = write_text(tmp_path, "terminals.csv", GOOD_CSV)
    taken = write_text(tmp_path, "old.json", "{}")
    token_file = write_text(tmp_path, "token", "tok-gulou\n")
    argv = ["terminals", "import", str(csv_file), "--api", base_url(api)]
    code = await ebd(*argv, "--token-file", str(token_file), "--credentials-out", str(taken))
    assert code == 2
    assert "exists already" in capsys.readouterr().err
    assert taken.read_text(encoding="utf-8") == "{}"
    assert await registered(api) == [], "nothing registered, so no password was lost"


async def test_terminals_import_takes_the_token_from_ebd_token_and_a_bom(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Spreadsheets save CSV with a UTF-8 byte order mark; the header must still be read."""
    csv_file = tmp_path / "terminals.csv"
    csv_file.write_bytes(GOOD_CSV.encode("utf-8-sig"))
    monkeypatch.setenv("EBD_TOKEN", "tok-province")
    assert await ebd("terminals", "import", str(csv_file), "--api", base_url(api)) == 0
    assert "3 new" in capsys.readouterr().out
    assert len(await registered(api)) == 3


async def test_terminals_import_outside_the_office_jurisdiction_exits_5_naming_the_region(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = write_text(tmp_path, "terminals.csv", GOOD_CSV)
    assert await import_csv(api, csv_file, "tok-taijiang") == 5
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "refused it (403)" in captured.err
    assert "350102001001" in captured.err
    assert "350102001002" in captured.err
    assert await registered(api) == []


async def test_terminals_import_with_an_unknown_token_exits_4(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_file = write_text(tmp_path, "terminals.csv", GOOD_CSV)
    assert await import_csv(api, csv_file, "nope") == 4
    assert "refused it (401)" in capsys.readouterr().err
    assert await registered(api) == []


async def test_terminals_import_without_a_token_exits_2_saying_how_to_give_one(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EBD_TOKEN", raising=False)
    csv_file = write_text(tmp_path, "terminals.csv", GOOD_CSV)
    assert await ebd("terminals", "import", str(csv_file), "--api", base_url(api)) == 2
    err = capsys.readouterr().err
    assert "--token-file FILE" in err
    assert "EBD_TOKEN" in err
    assert await registered(api) == []


async def test_the_token_is_never_an_argument_but_the_variable_works(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--token`` is gone (it shows in the process list): argparse refuses it, nothing is
    registered; the same import with ``EBD_TOKEN`` works."""
    monkeypatch.delenv("EBD_TOKEN", raising=False)
    csv_file = write_text(tmp_path, "terminals.csv", GOOD_CSV)
    argv = ["terminals", "import", str(csv_file), "--api", base_url(api)]
    with pytest.raises(SystemExit) as exited:
        await ebd(*argv, "--token", "tok-gulou")
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--token was removed" in err
    assert "tok-gulou" not in err
    assert await registered(api) == []
    monkeypatch.setenv("EBD_TOKEN", "tok-gulou")
    assert await ebd(*argv) == 0
    assert len(await registered(api)) > 0


async def test_an_unreadable_token_file_exits_2_naming_it(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EBD_TOKEN", "tok-gulou")  # the file, when given, wins
    csv_file = write_text(tmp_path, "terminals.csv", GOOD_CSV)
    missing = tmp_path / "no-such.token"
    argv = ["terminals", "import", str(csv_file), "--api", base_url(api)]
    assert await ebd(*argv, "--token-file", str(missing)) == 2
    err = capsys.readouterr().err
    assert str(missing) in err
    assert "EBD_TOKEN" in err
    assert await registered(api) == []


@contextmanager
def nothing_listening() -> Iterator[int]:
    """A loopback port nothing listens on: bound (so nobody else gets it) but not listening."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def closed_port() -> Iterator[int]:
    with nothing_listening() as port:
        yield port


def test_terminals_import_with_no_engine_listening_exits_3_naming_the_url(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    closed_port: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("EBD_TOKEN", "tok-gulou")
    csv_file = write_text(tmp_path, "terminals.csv", GOOD_CSV)
    url = f"http://127.0.0.1:{closed_port}"
    argv = ["terminals", "import", str(csv_file), "--api", url]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert err.startswith("ebd: error: ")
    assert f"127.0.0.1:{closed_port}" in err
    assert not list(tmp_path.glob("*.credentials-*")), "nothing was registered, nothing saved"


async def test_terminals_import_finds_the_engine_at_the_listen_of_its_config(
    api: Client, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --api: the address is the config's ``[api] listen`` (a wildcard reached on
    loopback), not the default :8080."""
    monkeypatch.setenv("EBD_TOKEN", "tok-gulou")
    assert api.port is not None
    config = write_text(tmp_path, "ebd.toml", f'[api]\nlisten = "0.0.0.0:{api.port}"\n')
    csv_file = write_text(tmp_path, "terminals.csv", GOOD_CSV)
    assert await ebd("terminals", "import", str(csv_file), "--config", str(config)) == 0
    assert "3 new" in capsys.readouterr().out
    assert len(await registered(api)) == 3


@pytest.mark.parametrize(
    "command",
    [
        ("terminals", "import", "x.csv"),
        ("recipients", "import", "x.csv"),
        ("recipients", "list"),
        ("escalations", "list"),
        ("drills", "list"),
        ("drills", "plan", "--year", "2027"),
        ("audit", "verify"),
        ("alerts", "list"),
    ],
)
def test_every_api_command_takes_the_address_from_config_api_or_ebd_api(
    command: tuple[str, ...], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dispatcher.cli.client import api_base
    from dispatcher.cli.main import build_parser

    config = write_text(tmp_path, "ebd.toml", '[api]\nlisten = "[::]:9191"\n')
    parse = build_parser().parse_args
    assert api_base(parse([*command, "--config", str(config)]), {}) == "http://[::1]:9191"
    assert api_base(parse([*command]), {}) == "http://127.0.0.1:8080"
    env = {"EBD_API": "http://engine.example:8081/"}
    assert api_base(parse([*command, "--config", str(config)]), env) == (
        "http://engine.example:8081"
    )
    given = parse([*command, "--config", str(config), "--api", "https://ebd.example"])
    assert api_base(given, env) == "https://ebd.example"
    assert api_base(parse([*command]), {"EBD_API__LISTEN": "10.0.0.5:9000"}) == (
        "http://10.0.0.5:9000"
    )


def test_serve_on_a_port_in_use_exits_2_saying_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], redis_url: str, mqtt_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "ebd.toml"
        config.write_text(
            f'[api]\nlisten = "127.0.0.1:{port}"\n[mqtt]\nurl = "{mqtt_url}"\n'
            f'[redis]\nurl = "{redis_url}"\n',
            encoding="utf-8",
        )
        assert main(["serve", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "cannot listen" in err
    assert str(port) in err
