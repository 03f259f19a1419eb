"""``ebd terminals show | ping | delete | rotate-credentials ID``: what a technician and an
office do with one terminal, through the engine's API."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from dispatcher.cli.client import ApiClient
from dispatcher.cli.lang import t
from dispatcher.cli.provisioning import write_provisioning
from dispatcher.cli.tables import beijing
from dispatcher.core.errors import ConfigError


def _path(args: argparse.Namespace, tail: str = "") -> str:
    return f"/api/v1/terminals/{quote(args.id, safe='')}{tail}"


def _json(body: Any) -> None:
    print(json.dumps(body, ensure_ascii=False, indent=2))


def _state(state: dict[str, Any] | None) -> str:
    if state is None:
        return t("从未上报", "never reported")
    when = f" {t('自', 'since')} {beijing(state['at'])}" if state.get("at") else ""
    firmware = f", {state['firmware']}" if state.get("firmware") else ""
    return f"{state['state']}{when}{firmware}"


def cmd_terminals_show(args: argparse.Namespace) -> int:
    body = ApiClient.of(args).call("GET", _path(args))
    if args.output == "json":
        _json(body)
        return 0
    region = f"{t('区划', 'region')} {body['region']}"
    print(f"{t('终端', 'terminal')} {body['id']}  {body['kind']}  {region}")
    print(f"{t('状态', 'state')}: {_state(body['state'])}")
    print(f"{t('登记于', 'registered')}: {beijing(body['registered_at'])}")
    rejections = body["rejections"]
    if not rejections:
        print(t("回执未被拒收过", "no refused acks"))
        return 0
    print(
        t(
            f"最近被拒收的回执（{len(rejections)} 条）：",
            f"latest refused acks ({len(rejections)}):",
        )
    )
    for entry in rejections:
        print(f"  {beijing(entry['at'])}  {entry['reason']}")
    return 0


def cmd_terminals_ping(args: argparse.Namespace) -> int:
    """Exit 0 when the terminal answered, 1 when it did not."""
    body = ApiClient.of(args).call("POST", _path(args, f"/ping?timeout={args.timeout}"))
    if args.output == "json":
        _json(body)
    elif body["answered"]:
        ack = body["ack"]
        print(
            t(
                f"{body['id']} 已应答：{body['rtt_ms']} ms（回执 {ack['state']}）；链路正常",
                f"{body['id']} answered in {body['rtt_ms']} ms (ack {ack['state']}): "
                "the link works",
            )
        )
    else:
        print(
            t(
                f"{body['id']} 在 {body['timeout']} 秒内没有应答；状态：{_state(body['state'])}。"
                "请检查供电、网络、接入账号和公钥环",
                body["message"],
            )
        )
    return 0 if body["answered"] else 1


def cmd_terminals_delete(args: argparse.Namespace) -> int:
    body = ApiClient.of(args).call("DELETE", _path(args))
    print(
        t(
            f"终端 {body['id']} 已注销（区划 {body['region']}），其接入账号已吊销",
            f"terminal {body['id']} unregistered (region {body['region']}); its broker account "
            "is revoked",
        )
    )
    return 0


def cmd_terminals_rotate(args: argparse.Namespace) -> int:
    """A new broker password, written to a private file (never printed): the terminal needs
    it, with the broker's CA and the keyring that come with it, before it can connect again."""
    out = Path(args.credentials_out or f"{args.id}.credentials-{_stamp()}.json")
    if out.exists():
        raise ConfigError("exists already; give --credentials-out a new file", path=out)
    body = ApiClient.of(args).call("POST", _path(args, "/credentials"))
    write_provisioning(out, [body])
    print(
        t(
            f"终端 {args.id} 的新密码已写入 {out}（仅本人可读）；旧密码已失效",
            f"the new password of {args.id} is in {out} (owner-readable); the old one no "
            "longer works",
        )
    )
    return 0


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
