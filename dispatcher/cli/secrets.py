"""``ebd secrets init``: what a compose deployment needs before its first start, generated on
the spot instead of shipped: Redis's password and users file, the engine's broker account, the
broker's ACLs and an empty terminals' password file, a CA and the broker's TLS certificate,
and the offices' tokens (printed once, only their hashes kept).

docker-compose.yml runs it as its ``secrets`` service, once (it leaves what exists alone), into
the volumes the other services mount.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
from pathlib import Path

from dispatcher.core.auth import hash_token
from dispatcher.core.broker_auth import ENGINE_ACL, ENGINE_USER, TERMINALS_ACL, password_line
from dispatcher.embedded.configs import redis_users
from dispatcher.embedded.secrets import ensure_secret, write_private
from dispatcher.embedded.tls import ensure_tls

# The broker image runs mosquitto as this user, the Redis image redis-server as that one; each
# must read its own files in the shared volume.
_MOSQUITTO_UID = 1883
_REDIS_UID = 999
_ENGINE_UID = 10001


def cmd_secrets_init(args: argparse.Namespace) -> int:
    folder, broker = Path(args.secrets_dir), Path(args.broker_dir)
    redis_password = ensure_secret(folder / "redis-password")
    write_private(folder / "redis-users.conf", redis_users(redis_password))
    engine_password = ensure_secret(folder / "mqtt-engine-password")
    tls = ensure_tls(folder / "tls", args.broker_host)
    files = {
        broker / "engine.passwd": password_line(ENGINE_USER, engine_password) + "\n",
        broker / "engine.acl": ENGINE_ACL,
        broker / "terminals.acl": TERMINALS_ACL,
    }
    for path, text in files.items():
        write_private(path, text)
    accounts = broker / "terminals.passwd"
    if not accounts.exists():
        write_private(accounts, "")
    tokens_file = folder / "office-tokens.json"
    if not tokens_file.exists():
        offices = json.loads(Path(args.offices).read_text(encoding="utf-8"))
        tokens = {office["id"]: secrets.token_urlsafe(32) for office in offices}
        write_private(tokens_file, json.dumps(tokens, indent=1) + "\n")
        configured = [{**o, "token_sha256": hash_token(tokens[o["id"]])} for o in offices]
        write_private(folder / "offices.json", json.dumps(configured, ensure_ascii=False))
        print(f"office tokens written to {tokens_file} (readable by root only): hand them out")
    _hand_to_their_readers(broker, [tls.ca_cert, tls.server_cert, tls.server_key], folder)
    print(f"secrets ready in {folder} and {broker}")
    return 0


def _hand_to_their_readers(broker: Path, tls_files: list[Path], folder: Path) -> None:
    # Each container reads only its own files: the broker (uid 1883) its ACLs, its account
    # file and its TLS key; Redis (uid 999) its users file; the engine (uid 10001, see the
    # Dockerfile) the two passwords, the offices, the CA it hands out, and it rewrites the
    # terminals' password file (0644 in a folder only it writes, for the broker to read).
    if os.geteuid() != 0:
        return
    owners = {
        folder / "redis-users.conf": _REDIS_UID,
        folder / "redis-password": _ENGINE_UID,
        folder / "mqtt-engine-password": _ENGINE_UID,
        folder / "offices.json": _ENGINE_UID,
        broker / "terminals.passwd": _ENGINE_UID,
        broker / "engine.passwd": _MOSQUITTO_UID,
        broker / "engine.acl": _MOSQUITTO_UID,
        broker / "terminals.acl": _MOSQUITTO_UID,
        **dict.fromkeys(tls_files, _MOSQUITTO_UID),
    }
    for path, uid in owners.items():
        if path.exists():
            os.chown(path, uid, uid)
    os.chown(broker, _ENGINE_UID, _ENGINE_UID)
    # Enter, not list: the others reach their files by name; a file's mode guards it.
    for path in (broker, folder, folder / "tls"):
        os.chmod(path, 0o711)  # noqa: S103
    # Hashes and certificates, not secrets: readable by the services that need them.
    for public in (broker / "terminals.passwd", tls_files[0], tls_files[1]):
        os.chmod(public, 0o644)
