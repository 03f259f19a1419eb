"""Signing keys: made on the first start, rotated with an overlap, the rotation on record."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis

from dispatcher.cli.main import main
from dispatcher.core.config import SigningSettings
from dispatcher.core.signing import Keyring, Signer, SigningKey
from dispatcher.embedded.configs import REDIS_USER
from dispatcher.embedded.processes import RedisServer
from dispatcher.embedded.signing_keys import engine_keys


def test_the_first_start_makes_a_private_key_and_its_keyring(tmp_path: Path) -> None:
    keys = engine_keys(SigningSettings(), tmp_path)
    assert keys.key_file.stat().st_mode & 0o077 == 0
    assert [k.kid for k in keys.keyring.keys] == [keys.signer.kid]
    message = keys.signer.sign(b'{"v":1}')
    assert keys.keyring.verify(message, datetime.now(UTC)) == b'{"v":1}'
    # Again: the same key, not a new one.
    assert engine_keys(SigningSettings(), tmp_path).signer.kid == keys.signer.kid


def test_rotation_keeps_the_old_key_for_the_overlap_and_is_audited(
    tmp_path: Path, redis_url: str, rdb: redis.Redis
) -> None:
    state = tmp_path / "state"
    before = engine_keys(SigningSettings(), state)
    config = tmp_path / "ebd.toml"
    config.write_text(f'state_dir = "{state}"\n[redis]\nurl = "{redis_url}"\n', encoding="utf-8")
    assert main(["keys", "rotate", "--config", str(config), "--overlap-days", "2"]) == 0
    after = engine_keys(SigningSettings(), state)
    assert after.signer.kid != before.signer.kid
    kids = {k.kid: k for k in after.keyring.keys}
    assert set(kids) == {before.signer.kid, after.signer.kid}
    retired = kids[before.signer.kid].not_after
    assert retired is not None
    assert timedelta(days=1.9) < retired - datetime.now(UTC) < timedelta(days=2.1)
    # Terminals with the new keyring take both within the overlap, the old one not after it.
    old_signed = before.signer.sign(b"{}")
    assert after.keyring.verify(old_signed, datetime.now(UTC)) == b"{}"
    stranger = Signer(SigningKey.generate()).sign(b"{}")
    try:
        after.keyring.verify(stranger, datetime.now(UTC))
        raise AssertionError("a key outside the keyring was accepted")
    except ValueError:
        pass
    # The keyring file is what terminals are given: it reads back as it was written.
    assert Keyring.from_json(after.keyring.to_json()) == after.keyring
    records = [json.loads(v) for v in rdb.hvals("ebd:audit:records")]
    rotations = [r for r in records if r["action"] == "key.rotate"]
    assert [r["target"] for r in rotations] == [after.signer.kid]
    assert rotations[0]["detail"]["old"] == before.signer.kid


def test_rotation_reaches_a_redis_whose_password_is_in_a_file(
    tmp_path: Path, redis_url: str, redis_server: RedisServer, rdb: redis.Redis
) -> None:
    """As the engine does: the password from ``redis.password_file``, not the URL (before,
    the rotation was refused by Redis, or skipped with sentinels, and left no record)."""
    state = tmp_path / "state"
    before = engine_keys(SigningSettings(), state)
    secret = tmp_path / "redis-password"
    secret.write_text(redis_server.password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    bare = redis_server.bare_url.replace("redis://", f"redis://{REDIS_USER}@", 1)
    config = tmp_path / "ebd.toml"
    config.write_text(
        f'state_dir = "{state}"\n[redis]\nurl = "{bare}"\npassword_file = "{secret}"\n',
        encoding="utf-8",
    )
    assert main(["keys", "rotate", "--config", str(config), "--overlap-days", "1"]) == 0
    after = engine_keys(SigningSettings(), state)
    records = [json.loads(v) for v in rdb.hvals("ebd:audit:records")]
    rotations = [r for r in records if r["action"] == "key.rotate"]
    assert [r["detail"]["old"] for r in rotations] == [before.signer.kid]
    assert [r["target"] for r in rotations] == [after.signer.kid]
