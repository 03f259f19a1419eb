"""Secrets the engine makes for itself, and the ones `ebd secrets init` makes for compose."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from dispatcher.cli.main import main
from dispatcher.core.errors import ConfigError
from dispatcher.embedded.secrets import ensure_secret, read_secret


def test_a_secret_is_made_once_private_and_then_kept(tmp_path: Path) -> None:
    path = tmp_path / "s" / "redis-password"
    first = ensure_secret(path)
    assert len(first) >= 40
    assert path.stat().st_mode & 0o077 == 0
    assert path.parent.stat().st_mode & 0o077 == 0
    assert ensure_secret(path) == first


def test_a_secret_others_can_read_is_refused_saying_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "redis-password"
    path.write_text("hunter2hunter2\n", encoding="utf-8")
    path.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        read_secret(path)
    assert "chmod 600" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_an_empty_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_text("\n", encoding="utf-8")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="non-empty line"):
        read_secret(path)


def test_secrets_init_makes_what_compose_needs_and_keeps_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    offices = tmp_path / "offices.json"
    offices.write_text(
        json.dumps([{"id": "fj-province", "name": "福建省应急管理厅", "region": "35"}]),
        encoding="utf-8",
    )
    secrets_dir, broker_dir = tmp_path / "secrets", tmp_path / "broker"
    argv = [
        "secrets", "init", "--secrets-dir", str(secrets_dir), "--broker-dir", str(broker_dir),
        "--broker-host", "mosquitto", "--offices", str(offices),
    ]  # fmt: skip
    assert main(argv) == 0
    password = (secrets_dir / "redis-password").read_text(encoding="utf-8").strip()
    users = (secrets_dir / "redis-users.conf").read_text(encoding="utf-8")
    # Redis is given the hash, never the password.
    assert password not in users
    assert hashlib.sha256(password.encode()).hexdigest() in users
    tokens = json.loads((secrets_dir / "office-tokens.json").read_text(encoding="utf-8"))
    configured = json.loads((secrets_dir / "offices.json").read_text(encoding="utf-8"))
    assert (
        configured[0]["token_sha256"] == hashlib.sha256(tokens["fj-province"].encode()).hexdigest()
    )
    assert (secrets_dir / "office-tokens.json").stat().st_mode & 0o077 == 0
    assert (broker_dir / "engine.passwd").read_text(encoding="utf-8").startswith("ebd-engine:$7$")
    assert (broker_dir / "terminals.passwd").read_text(encoding="utf-8") == ""
    assert "BEGIN CERTIFICATE" in (secrets_dir / "tls" / "ca.crt").read_text(encoding="ascii")
    assert "tokens written" in capsys.readouterr().out
    # A second run (every `docker compose up`) changes no secret and hands out no new token.
    assert main(argv) == 0
    assert (secrets_dir / "redis-password").read_text(encoding="utf-8").strip() == password
    assert json.loads((secrets_dir / "office-tokens.json").read_text(encoding="utf-8")) == tokens
    assert "tokens written" not in capsys.readouterr().out
