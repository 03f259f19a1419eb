"""Loading settings: the TOML file, EBD_ overrides, and errors naming file, line and field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatcher.core.auth import Offices, hash_token
from dispatcher.core.errors import ConfigError
from dispatcher.core.regions import RegionTree
from dispatcher.settings import PROJECT_ROOT, Settings, load_settings
from tests.helpers import FUJIAN_FILE, office_toml, write_text

PROVINCE_HASH = hash_token("tok-province")
GULOU_HASH = hash_token("tok-gulou")


GOOD = (
    "[api]\n"
    'listen = "127.0.0.1:9090"\n'
    "max_body_bytes = 2048\n"
    "\n"
    "[mqtt]\n"
    'url = "mqtt://127.0.0.1:1883"\n'
    'client_id = "ebd-test"\n'
    "\n"
    "[redis]\n"
    'url = "redis://127.0.0.1:6379/0"\n'
    "\n"
    "[regions]\n"
    f'file = "{FUJIAN_FILE}"\n'
    "\n"
    + office_toml("fj-province", "35", PROVINCE_HASH, "福建省应急管理厅")
    + "\n"
    + office_toml("fz-gulou", "350102", GULOU_HASH, "鼓楼区应急管理局")
)


# --- good files ------------------------------------------------------------------------------


def test_a_good_config_file_loads_every_section(tmp_path: Path) -> None:
    settings = load_settings(write_text(tmp_path, "ebd.toml", GOOD))

    assert settings.api.listen == "127.0.0.1:9090"
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 9090)
    assert settings.api.max_body_bytes == 2048
    assert settings.mqtt.url == "mqtt://127.0.0.1:1883"
    assert settings.mqtt.client_id == "ebd-test"
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.regions.file == FUJIAN_FILE
    assert [(o.id, o.name, o.region, o.token_sha256) for o in settings.offices] == [
        ("fj-province", "福建省应急管理厅", "35", PROVINCE_HASH),
        ("fz-gulou", "鼓楼区应急管理局", "350102", GULOU_HASH),
    ]


def test_the_shipped_example_config_loads_and_its_offices_fit_the_tree(tree: RegionTree) -> None:
    settings = load_settings(PROJECT_ROOT / "config" / "ebd.example.toml")
    assert len(Offices(settings.offices, tree)) == len(settings.offices) == 2


def test_no_file_gives_the_defaults() -> None:
    settings = load_settings(None)
    assert settings == Settings()
    assert settings.api.listen == "127.0.0.1:8080"
    assert settings.mqtt.url is None
    assert settings.redis.url is None
    assert settings.offices == []


def test_token_hashes_are_normalised_to_lowercase(tmp_path: Path) -> None:
    text = office_toml("fj-province", "35", f"  {PROVINCE_HASH.upper()} ")
    settings = load_settings(write_text(tmp_path, "ebd.toml", text))
    assert settings.offices[0].token_sha256 == PROVINCE_HASH


def test_an_empty_mqtt_url_means_the_embedded_broker(tmp_path: Path) -> None:
    settings = load_settings(write_text(tmp_path, "ebd.toml", '[mqtt]\nurl = ""\n'))
    assert settings.mqtt.url is None


# --- EBD_ variables win over the file --------------------------------------------------------

OTHER_OFFICES = [
    {"id": "fz-city", "name": "福州市应急管理局", "region": "3501", "token_sha256": "ab" * 32}
]


@pytest.mark.parametrize(
    ("variable", "value", "read", "expected"),
    [
        ("EBD_API__LISTEN", "0.0.0.0:8081", lambda s: s.api.listen, "0.0.0.0:8081"),
        ("EBD_MQTT__URL", "mqtt://broker:1884", lambda s: s.mqtt.url, "mqtt://broker:1884"),
        ("EBD_REDIS__URL", "redis://cache:6380/2", lambda s: s.redis.url, "redis://cache:6380/2"),
        ("EBD_LOG__LEVEL", "debug", lambda s: s.log.level, "debug"),
        ("EBD_INSTANCE", "ebd-7", lambda s: s.instance, "ebd-7"),
        (
            "EBD_OFFICES",
            json.dumps(OTHER_OFFICES, ensure_ascii=False),
            lambda s: [o.model_dump(exclude_none=True, exclude_defaults=True) for o in s.offices],
            OTHER_OFFICES,
        ),
    ],
    ids=[
        "EBD_API__LISTEN",
        "EBD_MQTT__URL",
        "EBD_REDIS__URL",
        "EBD_LOG__LEVEL",
        "EBD_INSTANCE",
        "EBD_OFFICES",
    ],
)
def test_an_ebd_variable_wins_over_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    read: Callable[[Settings], Any],
    expected: Any,
) -> None:
    path = write_text(tmp_path, "ebd.toml", GOOD)
    assert read(load_settings(path)) != expected
    monkeypatch.setenv(variable, value)
    assert read(load_settings(path)) == expected


def test_one_nested_variable_keeps_the_rest_of_its_section_from_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EBD_API__LISTEN", "0.0.0.0:8081")
    monkeypatch.setenv("EBD_MQTT__URL", "mqtt://broker:1884")
    settings = load_settings(write_text(tmp_path, "ebd.toml", GOOD))
    assert settings.api.listen == "0.0.0.0:8081"
    assert settings.api.max_body_bytes == 2048
    assert settings.mqtt.url == "mqtt://broker:1884"
    assert settings.mqtt.client_id == "ebd-test"
    assert [o.id for o in settings.offices] == ["fj-province", "fz-gulou"]


@pytest.mark.parametrize(
    ("variable", "value", "said", "field"),
    [
        # The file's listen is fine; blaming the file would send the operator elsewhere.
        ("EBD_API__LISTEN", "8080", "EBD_API__LISTEN", "api.listen"),
        # Anything but ConfigError escapes `ebd`'s error handling as a traceback.
        ("EBD_OFFICES", "[{id: fj-province}]", "offices", None),
    ],
)
def test_a_bad_variable_is_a_config_error_naming_the_variable_not_the_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    value: str,
    said: str,
    field: str | None,
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(write_text(tmp_path, "ebd.toml", GOOD))
    assert said.lower() in str(caught.value).lower()
    if field is not None:
        assert caught.value.field == field


# --- bad files -------------------------------------------------------------------------------


def _gateway(**fields: object) -> str:
    values: dict[str, object] = {
        "name": "primary",
        "protocol": "generic",
        "url": "https://sms.example/v1/messages",
        "callback_secret": "0123456789abcdef",
        **fields,
    }
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "[[sms.gateways]]\n" + "\n".join(lines) + "\n"


def _offices(*entries: tuple[str, str, str]) -> str:
    return "\n".join(office_toml(*entry) for entry in entries)


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ('[api]\nlisen = "127.0.0.1:8080"\n', "api.lisen", "unknown setting"),
        ('listn = "x"\n', "listn", "unknown setting"),
        ('[mqtt]\nurl = "mqtt://x:1883"\nclientid = "x"\n', "mqtt.clientid", "unknown setting"),
        ('[api]\nlisten = "8080"\n', "api.listen", "HOST:PORT"),
        ('[api]\nlisten = "127.0.0.1:"\n', "api.listen", "HOST:PORT"),
        ('[api]\nlisten = "127.0.0.1:70000"\n', "api.listen", "HOST:PORT"),
        ("[api]\nmax_body_bytes = 10\n", "api.max_body_bytes", "1024"),
        ('[mqtt]\nurl = "http://x"\n', "mqtt.url", "mqtt://"),
        ('[mqtt]\nurl = "mqtt://"\n', "mqtt.url", "mqtt://"),
        ('[mqtt]\nurl = "mqtt://x:port"\n', "mqtt.url", "bad port"),
        ("[mqtt]\nkeepalive = 1\n", "mqtt.keepalive", "5"),
        ('[redis]\nurl = "http://x"\n', "redis.url", "redis://"),
        ('[log]\nlevel = "loud"\n', "log.level", "info"),
        (_offices(("fj-province", "35", "abc123")), "offices[0].token_sha256", "64 hex"),
        (_offices(("fj-province", "35", "g" * 64)), "offices[0].token_sha256", "64 hex"),
        (_offices(("fj-province", "35", PROVINCE_HASH + "0")), "offices[0].token_sha256", "64"),
        (_offices(("FJ Province", "35", PROVINCE_HASH)), "offices[0].id", "lowercase"),
        (_offices(("-fj", "35", PROVINCE_HASH)), "offices[0].id", "lowercase"),
        (_offices(("f" * 65, "35", PROVINCE_HASH)), "offices[0].id", "lowercase"),
        (
            _offices(("fj-province", "35", PROVINCE_HASH), ("fj-province", "350102", GULOU_HASH)),
            "offices[1].id",
            "appears twice",
        ),
        (
            _offices(("fj-province", "35", PROVINCE_HASH), ("fz-gulou", "350102", PROVINCE_HASH)),
            "offices[1].token_sha256",
            "share one token hash",
        ),
        (
            _offices(
                ("fj-province", "35", PROVINCE_HASH),
                ("fz-gulou", "350102", PROVINCE_HASH.upper()),
            ),
            "offices[1].token_sha256",
            "share one token hash",
        ),
        (
            '[[offices]]\nid = "fj-province"\nname = "省"\nregion = "35"\n',
            "offices[0].token_sha256",
            "required",
        ),
        (_gateway(protocol="smpp"), "sms.gateways[0].protocol", "generic"),
        (_gateway(url="ftp://sms.example"), "sms.gateways[0].url", "http(s) URL"),
        (_gateway(callback_secret="short"), "sms.gateways[0].callback_secret", "16"),
        (_gateway(rate=0), "sms.gateways[0].rate", "greater than or equal to 1"),
        (_gateway(batch_size=5000), "sms.gateways[0].batch_size", "1000"),
        (_gateway(name="Primary GW"), "sms.gateways[0].name", "pattern"),
        (_gateway(protocol="aliyun"), "sms.gateways[0]", "access_key_id"),
        (_gateway(auth_header="Authorization"), "sms.gateways[0]", "auth_value"),
        (_gateway() + _gateway(), "sms.gateways", "appear twice"),
        ('[sms]\ncallback_base = "ebd.example"\n', "sms.callback_base", "http(s) URL"),
        ("[sms]\nmax_segments = 0\n", "sms.max_segments", "greater than or equal to 1"),
        ('[drills]\ntimezone = "Asia/Fuzhou"\n', "drills.timezone", "unknown timezone"),
        ("[drills]\nweekdays = [0, 1]\n", "drills.weekdays", "ISO weekday"),
        ("[drills]\nweekdays = []\n", "drills.weekdays", "ISO weekday"),
        ('[drills]\nworkday_start = "16:50"\n', "drills", "shorter than a drill's window"),
        ('[drills]\nworkday_end = "25:00"\n', "drills.workday_end", "time"),
        (
            '[drills]\nblackouts = [{start = 2027-02-13, end = 2027-02-05, reason = "春节"}]\n',
            "drills.blackouts[0]",
            "ends (2027-02-05) before it starts",
        ),
        (
            "[drills]\nblackouts = [{start = 2027-02-05, end = 2027-02-13}]\n",
            "drills.blackouts[0].reason",
            "required",
        ),
        ("[drills]\npass_coverage = 1.5\n", "drills.pass_coverage", "less than or equal to 1"),
        ('[drills]\noffice = "nobody"\n', "drills.office", "no [[offices]] entry"),
        ("[drills]\ngrace = 0.5\n", "drills.grace", "greater than or equal to 1"),
    ],
)
def test_a_bad_file_is_a_config_error_naming_the_file_and_the_field(
    tmp_path: Path, text: str, field: str, fragment: str
) -> None:
    path = write_text(tmp_path, "ebd.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    error = caught.value
    assert error.path == path
    assert error.field == field
    message = str(error)
    assert message.startswith(f"{path}, field '{field}': ")
    assert fragment in message


def test_a_toml_syntax_error_names_the_file_and_the_line(tmp_path: Path) -> None:
    path = write_text(
        tmp_path, "ebd.toml", '[api]\nlisten = "127.0.0.1:8080"\nmax_body_bytes = = 5\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid TOML")
    assert "line 3" in message


def test_a_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.path == path
    assert str(caught.value) == f"{path}: cannot read config file: No such file or directory"


def test_several_problems_report_the_first_and_count_the_rest(tmp_path: Path) -> None:
    path = write_text(tmp_path, "ebd.toml", '[api]\nlisten = "8080"\n[mqtt]\nurl = "http://x"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert caught.value.field == "api.listen"
    assert "(and 1 more problems)" in str(caught.value)


# --- meaning: an office's region must be in the tree ----------------------------------------


@pytest.mark.parametrize(
    ("region", "fragment"),
    [
        ("3599", "not in the loaded region tree"),
        ("350102999999", "not in the loaded region tree"),
        ("3501x", "malformed"),
        ("350", "malformed"),
    ],
)
def test_an_office_outside_the_region_tree_is_a_config_error_naming_its_region_field(
    tmp_path: Path, tree: RegionTree, region: str, fragment: str
) -> None:
    text = _offices(("fj-province", "35", PROVINCE_HASH), ("fz-nowhere", region, GULOU_HASH))
    settings = load_settings(write_text(tmp_path, "ebd.toml", text))
    with pytest.raises(ConfigError) as caught:
        Offices(settings.offices, tree)
    assert caught.value.field == "offices[1].region"
    assert "offices[1].region" in str(caught.value)
    assert repr(region) in str(caught.value)
    assert fragment in str(caught.value)
