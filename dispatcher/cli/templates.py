"""``ebd templates list`` and ``ebd templates show``: the warning templates as the office
edited them, and the alert body a template gives for some areas, through the API."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from dispatcher.cli import lang
from dispatcher.cli.client import ApiClient
from dispatcher.cli.lang import t
from dispatcher.cli.tables import render

# dispatcher.cli.main's ``_api_command``: passed in, since main imports this module.
ApiCommand = Callable[..., argparse.ArgumentParser]

_SEVERITIES = ("red", "orange", "yellow", "blue")


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], api_command: ApiCommand
) -> None:
    """``ebd templates list|show`` under the ``ebd`` parser's subcommands ``sub``."""
    parser = sub.add_parser("templates", help=t("预警模板", "warning templates"))
    templates_sub = parser.add_subparsers(dest="action", required=True)
    listing = api_command(
        templates_sub,
        "list",
        t("列出预警模板（含本单位的修改）", "the warning templates, with the office's edits"),
        cmd_templates_list,
        ("table", "json"),
    )
    listing.add_argument("--hazard", help=t("只列此灾种，如 typhoon", "only this hazard"))
    listing.add_argument(
        "--severity", choices=_SEVERITIES, help=t("只列此颜色", "only this colour")
    )
    show = api_command(
        templates_sub,
        "show",
        t(
            "查看一个模板；给出 --areas 时输出可直接发布的预警内容（JSON）",
            "one template; with --areas, the alert body it gives (JSON, ready to issue)",
        ),
        cmd_templates_show,
        ("table", "json"),
    )
    show.add_argument("id", help=t("模板编号，如 typhoon-red", "the template id, e.g. typhoon-red"))
    show.add_argument(
        "--areas",
        help=t("区划代码，逗号分隔，如 350102,350103", "region codes, comma-separated"),
    )
    show.add_argument(
        "--text-lang",
        choices=("zh", "en"),
        default="zh",
        help=t("预警文字的语言（默认 zh）", "the language of the alert's texts (default zh)"),
    )


def cmd_templates_list(args: argparse.Namespace) -> int:
    query = {k: v for k, v in (("hazard", args.hazard), ("severity", args.severity)) if v}
    path = "/api/v1/templates" + ("?" + urlencode(query) if query else "")
    body = ApiClient.of(args).call("GET", path)
    if args.output == "json":
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    en = lang.current() == "en"
    rows = [
        [
            item["id"],
            item["event_en"] if en else item["event"],
            item["event_code"],
            item["headline"]["en" if en else "zh"],
            item["expires_in"] // 3600,
            t("已修改", "edited") if item["edited"] else "",
        ]
        for item in body["templates"]
    ]
    headers = [
        t("编号", "id"),
        t("灾种", "event"),
        t("代码", "code"),
        t("标题", "headline"),
        t("时效(小时)", "hours"),
        "",
    ]
    print(render(headers, rows))
    return 0


def cmd_templates_show(args: argparse.Namespace) -> int:
    path = f"/api/v1/templates/{quote(args.id, safe='')}"
    if args.areas:
        path += "?" + urlencode({"areas": args.areas, "lang": args.text_lang})
    body: dict[str, Any] = ApiClient.of(args).call("GET", path)
    if args.areas or args.output == "json":
        # The alert body is for piping into ``ebd alerts issue``: always JSON.
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    label = {
        "headline": t("标题", "headline"),
        "text": t("播报内容", "spoken text"),
        "instruction": t("防御指南", "instruction"),
        "sms_text": t("短信", "SMS"),
    }
    lines = [
        f"{body['id']}  {body['event']} / {body['event_en']}  {body['event_code']}  "
        f"{body['severity']}" + (t("  （已修改）", "  (edited)") if body["edited"] else ""),
        t(f"时效：{body['expires_in'] // 60} 分钟", f"lasts: {body['expires_in'] // 60} minutes"),
    ]
    for field, name in label.items():
        lines.append("")
        lines.append(f"{name}:")
        for text_lang in ("zh", "en"):
            lines.append(f"  [{text_lang}] {body[field][text_lang]}")
    print("\n".join(lines))
    return 0
