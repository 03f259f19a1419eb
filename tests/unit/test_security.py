"""The pure security rules: the failed-authentication throttle, who may replace an alert,
refused characters in alert texts, the example tokens ``ebd serve`` refuses, run-now."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dispatcher.cli.serve import EXAMPLE_TOKEN_SHA256, refuse_example_tokens
from dispatcher.core.auth import AuthThrottle, Offices, hash_token
from dispatcher.core.config import OfficeConfig
from dispatcher.core.errors import ConfigError, Forbidden
from dispatcher.core.models import plain_text
from dispatcher.settings import PROJECT_ROOT, Settings, load_settings
from drills.plan import coordinates
from drills.settings import DrillSettings
from tests.helpers import OFFICES, fujian


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_throttle_blocks_a_source_at_the_limit_for_the_window() -> None:
    clock = Clock()
    throttle = AuthThrottle(3, window=60.0, clock=clock)
    assert [throttle.failed("10.0.0.1") for _ in range(2)] == [1, 2]
    assert throttle.blocked_for("10.0.0.1") == 0.0
    assert throttle.failed("10.0.0.1") == 3
    assert throttle.blocked_for("10.0.0.1") == 60.0
    assert throttle.blocked_for("10.0.0.2") == 0.0  # per source
    clock.now += 59.5
    assert throttle.blocked_for("10.0.0.1") == pytest.approx(0.5)
    clock.now += 1.0
    assert throttle.blocked_for("10.0.0.1") == 0.0


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    throttle = AuthThrottle(3, window=60.0, clock=clock)
    throttle.failed("a")
    throttle.failed("a")
    clock.now += 61
    assert throttle.failed("a") == 1
    assert throttle.blocked_for("a") == 0.0


def test_the_throttle_forgets_the_oldest_sources_beyond_its_bound() -> None:
    throttle = AuthThrottle(1, clock=Clock(), max_sources=2)
    for source in ("a", "b", "c"):
        throttle.failed(source)
    assert throttle.blocked_for("a") == 0.0
    assert throttle.blocked_for("c") == 60.0


def offices() -> Offices:
    return Offices(
        [
            OfficeConfig(id=oid, name=name, region=region, token_sha256=hash_token(token))
            for token, (oid, name, region) in OFFICES.items()
        ],
        fujian(),
    )


@pytest.mark.parametrize(
    ("actor", "issuer", "allowed"),
    [
        ("fz-gulou", "fz-gulou", True),
        ("fz-city", "fz-gulou", True),
        ("fj-province", "fz-gulou", True),
        ("fz-taijiang", "fz-gulou", False),
        ("fz-gulou", "fz-city", False),
        ("fz-gulou", "fj-province", False),
        ("fz-city", "fj-province", False),
        ("fz-gulou", "gone-office", False),
        ("fj-province", "gone-office", True),
    ],
)
def test_only_the_issuer_or_an_office_above_it_replaces_an_alert(
    actor: str, issuer: str, allowed: bool
) -> None:
    known = offices()
    office = known.get(actor)
    assert office is not None
    if allowed:
        known.require_may_replace(office, issuer, "a-1", "cancel")
        return
    with pytest.raises(Forbidden) as refused:
        known.require_may_replace(office, issuer, "a-1", "cancel")
    assert issuer in refused.value.message
    assert "cancel" in refused.value.message


@pytest.mark.parametrize(
    ("text", "multiline", "char"),
    [
        ("a\u202eb", True, "U+202E"),
        ("a\u2069b", True, "U+2069"),
        ("a\u200eb", True, "U+200E"),
        ("a\x00b", True, "U+0000"),
        ("a\x7fb", True, "U+007F"),
        ("a\x9bb", True, "U+009B"),
        ("a\rb", True, "U+000D"),
        ("a\nb", False, "U+000A"),
        ("a\tb", False, "U+0009"),
    ],
)
def test_refused_characters_are_named(text: str, multiline: bool, char: str) -> None:
    with pytest.raises(ValueError, match=re.escape(char)):
        plain_text(text, multiline=multiline)


def test_plain_texts_pass() -> None:
    assert plain_text("台风红色预警 Typhoon!\n\t请转移", multiline=True) == (
        "台风红色预警 Typhoon!\n\t请转移"
    )
    assert plain_text(None, multiline=False) is None


def test_serve_refuses_the_example_tokens_of_the_shipped_config(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("EBD_ALLOW_EXAMPLE_TOKENS", raising=False)
    example = PROJECT_ROOT / "config" / "ebd.example.toml"
    text = example.read_text(encoding="utf-8")
    # The tokens the file's comments name are the ones refused.
    assert {hash_token("example-province-token"), hash_token("example-gulou-token")} == set(
        EXAMPLE_TOKEN_SHA256
    )
    assert all(digest in text for digest in EXAMPLE_TOKEN_SHA256)
    with pytest.raises(ConfigError) as refused:
        refuse_example_tokens(load_settings(example))
    assert "token_urlsafe" in refused.value.message
    assert "sha256" in refused.value.message


def test_the_escape_variable_lets_tests_serve_example_tokens(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("EBD_ALLOW_EXAMPLE_TOKENS", "1")
    refuse_example_tokens(load_settings(PROJECT_ROOT / "config" / "ebd.example.toml"))
    monkeypatch.delenv("EBD_ALLOW_EXAMPLE_TOKENS")
    own = Settings.model_validate(
        {"offices": [{"id": "fj", "name": "省", "region": "35", "token_sha256": "a" * 64}]}
    )
    refuse_example_tokens(own)  # a real token's hash passes


@pytest.mark.parametrize(
    ("office_id", "region", "configured", "free"),
    [
        ("fj-province", "35", None, True),
        ("fz-city", "3501", None, True),
        ("fz-gulou", "350102", None, False),
        ("fz-gulou", "350102", "fz-gulou", True),
    ],
)
def test_who_runs_drills_whatever_the_rules(
    office_id: str, region: str, configured: str | None, free: bool
) -> None:
    assert coordinates(office_id, region, DrillSettings(office=configured)) is free
