"""``ebd alerts``: what an office does with warnings from a shell: issue, watch, list, show,
update and cancel them through the API.

Every request that creates something carries an ``Idempotency-Key`` (``--idempotency-key``,
else a new one, printed before anything is sent), so a script may run the same command again
after a failure without issuing the warning twice. ``-o table`` is for people (labels in the
chosen language, times in Beijing time); ``-o json`` prints the API's answer unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from dispatcher.cli.client import ApiClient, EngineUnreachable
from dispatcher.cli.lang import t
from dispatcher.cli.progress import Followed, coverage_table, follow, share
from dispatcher.cli.tables import beijing, render, width
from dispatcher.core.errors import ValidationFailed
from dispatcher.core.wire import ALERT_ID

# What a subcommand runs, and how main.py makes a subcommand that talks to the API
# (``--api``, ``--config``, ``--token-file``, ``-o``); passed in, as main.py imports this module.
Command = Callable[[argparse.Namespace], int]
Parser = argparse.ArgumentParser
ApiCommand = Callable[..., Parser]

OUTPUTS = ("table", "json")
# The API's own rule for the header (dispatcher/http/alerts.py), checked here first so a bad
# key is refused before anything is sent.
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")
_DURATION = re.compile(r"^(\d+)\s*([smhd]?)$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
DEFAULT_EXPIRES_IN = "6h"
# The API lists at most this many alerts at once; filters are applied to them.
API_LIST_MAX = 500

SEVERITIES = {
    "red": "red", "红": "red", "红色": "red",
    "orange": "orange", "橙": "orange", "橙色": "orange",
    "yellow": "yellow", "黄": "yellow", "黄色": "yellow",
    "blue": "blue", "蓝": "blue", "蓝色": "blue",
}  # fmt: skip
STATUSES = ("actual", "exercise", "test")
MSG_TYPES = ("alert", "update", "cancel")
DETAILS = ("city", "county", "township")
SUBMISSION_STATES = ("draft", "pending", "approved", "rejected", "expired", "sent")

# Chinese for the values the API speaks in English: colours, statuses, message types and
# delivery states (no value is in two of these sets).
CHINESE = {
    "red": "红色", "orange": "橙色", "yellow": "黄色", "blue": "蓝色",
    "actual": "正式", "exercise": "演练", "test": "测试",
    "alert": "发布", "update": "更新", "cancel": "解除",
    "queued": "排队中", "dispatching": "分发中", "partial": "部分分发", "dispatched": "已分发",
    "cancelled": "已解除", "superseded": "已被更新", "expired": "已过期",
    "draft": "草稿", "pending": "待审批", "approved": "已批准", "rejected": "已驳回",
    "sent": "已发布",
}  # fmt: skip


def label(value: Any) -> str:
    """An API value as people read it in the chosen language."""
    text = str(value)
    return t(CHINESE.get(text, text), text)


# --- arguments -------------------------------------------------------------------------------


def _bad_value(zh: str, en: str) -> argparse.ArgumentTypeError:
    """What an option's type raises: argparse names the option before the message."""
    return argparse.ArgumentTypeError(t(zh, en))


def severity(value: str) -> str:
    """A warning colour, in English or Chinese (red, 红, 红色 …)."""
    found = SEVERITIES.get(value.strip().lower())
    if found is None:
        raise _bad_value(
            f"无效的预警级别 {value!r}：可用 red/orange/yellow/blue（或 红/橙/黄/蓝）",
            f"no warning colour {value!r}: use red, orange, yellow or blue (or 红/橙/黄/蓝)",
        )
    return found


def duration(value: str) -> int:
    """Seconds from ``3600``, ``90m``, ``6h`` or ``2d``."""
    if match := _DURATION.match(value.strip().lower()):
        return int(match.group(1)) * _SECONDS[match.group(2)]
    raise _bad_value(
        f"无效的时长 {value!r}：例如 90m、6h、2d 或秒数",
        f"not a duration {value!r}: e.g. 90m, 6h, 2d or seconds",
    )


def aware_time(value: str) -> str:
    """An ISO 8601 time that names its offset (a time without one is ambiguous)."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        moment = None
    if moment is None or moment.tzinfo is None:
        raise _bad_value(
            f"无效的时间 {value!r}：请用带时区的 ISO 8601，例如 2026-11-27T20:00+08:00",
            f"not a time with offset {value!r}: use ISO 8601, e.g. 2026-11-27T20:00+08:00",
        )
    return moment.isoformat()


def idempotency_key(value: str) -> str:
    if not _IDEMPOTENCY_KEY.match(value):
        raise _bad_value(
            "幂等键须为 1 至 128 个可见 ASCII 字符，例如 UUID",
            "an idempotency key is 1 to 128 visible ASCII characters, e.g. a UUID",
        )
    return value


def alert_id(value: str) -> str:
    """An alert id as the engine makes them; anything else could change the request path."""
    if not ALERT_ID.fullmatch(value):
        raise _bad_value(
            f"无效的预警编号 {value!r}（见 ebd alerts list）",
            f"not an alert id {value!r} (see ebd alerts list)",
        )
    return value


def _areas(values: list[str] | None) -> list[str]:
    """``--area`` values, each possibly a comma-separated list, in order, without repeats."""
    codes = [code.strip() for value in values or [] for code in value.split(",")]
    return list(dict.fromkeys(code for code in codes if code))


def _colour_option(command: argparse.ArgumentParser, help_text: str) -> None:
    command.add_argument(
        "--severity", "--colour", "--color", type=severity, metavar="COLOUR", help=help_text
    )


def _time_option(
    command: argparse.ArgumentParser | argparse._MutuallyExclusiveGroup, name: str, help_text: str
) -> None:
    command.add_argument(name, type=aware_time, metavar="TIME", help=help_text)


def _content_options(command: argparse.ArgumentParser, *, required: bool) -> None:
    """The options that say what a warning is: for ``issue`` and ``update``."""
    command.add_argument(
        "--area",
        action="append",
        metavar="CODE",
        help=t(
            "目标区域的区划代码（可重复，或用逗号分隔），如 350102",
            "a target region code (repeat, or separate with commas), e.g. 350102",
        ),
    )
    _colour_option(
        command, t("预警级别：red/orange/yellow/blue 或 红/橙/黄/蓝", "red, orange, yellow or blue")
    )
    command.add_argument("--event", help=t("事件，如 台风", "the event, e.g. 台风 (typhoon)"))
    command.add_argument(
        "--event-code", help=t("GB/T 35561 事件代码，如 11B01", "GB/T 35561 code, e.g. 11B01")
    )
    command.add_argument("--headline", help=t("标题", "the headline"))
    command.add_argument("--text", help=t("正文（终端播报的内容）", "the text terminals say"))
    command.add_argument("--instruction", help=t("防御指引", "what people should do"))
    command.add_argument(
        "--status",
        choices=STATUSES,
        help=t("actual 正式 / exercise 演练 / test 测试", "actual, exercise or test"),
    )
    expiry = command.add_mutually_exclusive_group()
    default = f" (default {DEFAULT_EXPIRES_IN})" if required else ""
    expiry.add_argument(
        "--expires-in",
        type=duration,
        metavar="DURATION",
        help=t(
            f"有效时长，如 90m、6h、2d{'（默认 6h）' if required else ''}",
            f"how long it stays valid, e.g. 90m, 6h, 2d{default}",
        ),
    )
    _time_option(
        expiry,
        "--expires",
        t("失效时间，如 2026-11-27T20:00+08:00", "when it ends, e.g. 2026-11-27T20:00+08:00"),
    )
    command.add_argument(
        "--channel",
        action="append",
        choices=("loudspeaker", "sms"),
        help=t("渠道（可重复；默认 loudspeaker）", "a channel (repeat; default loudspeaker)"),
    )
    command.add_argument(
        "--repeat", type=int, help=t("终端播报次数（1–10）", "times a terminal plays it (1–10)")
    )


def _preview_options(command: argparse.ArgumentParser) -> None:
    """``--dry-run`` and ``--preview-id``: for ``issue`` and ``update``."""
    command.add_argument(
        "--dry-run",
        action="store_true",
        help=t(
            "只预览：列出将覆盖的村、终端、离线终端和短信条数与费用，不发布",
            "preview only: the villages, terminals, offline ones and SMS cost; nothing is sent",
        ),
    )
    command.add_argument(
        "--preview-id",
        metavar="ID",
        help=t(
            "--dry-run 给出的预览编号（以人员身份发布时必需）",
            "the preview id --dry-run printed (needed when a person issues)",
        ),
    )


def _sending_options(command: argparse.ArgumentParser, *, watch: bool = True) -> None:
    command.add_argument(
        "-q", "--quiet", action="store_true", help=t("只输出预警编号", "print only the new id")
    )
    command.add_argument(
        "--idempotency-key",
        type=idempotency_key,
        metavar="KEY",
        help=t(
            "幂等键：同一键重试只会得到第一次的结果（默认每次新生成并显示）",
            "retrying with the same key returns the first result (default: a new one, shown)",
        ),
    )
    if watch:
        command.add_argument(
            "--watch", action="store_true", help=t("发布后实时跟踪送达", "then follow it live")
        )
        _watch_options(command)


def _watch_options(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--timeout",
        type=float,
        default=900.0,
        help=t("最长跟踪秒数（默认 900）", "seconds to follow at most (default 900)"),
    )
    command.add_argument(
        "--detail",
        choices=DETAILS,
        default="city",
        help=t("覆盖率按 city/county/township 列出", "coverage by city, county or township"),
    )


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], api_command: ApiCommand
) -> None:
    """``ebd alerts …``; ``api_command`` is main.py's maker of API subcommands."""
    p = sub.add_parser(
        "alerts",
        help=t(
            "预警：发布、跟踪、列出、查看、更新、解除",
            "warnings: issue, watch, list, show, update, cancel",
        ),
        description=t(
            "发布与跟踪预警。语言：--lang zh|en，或 EBD_LANG，否则按 LANG。",
            "Issue and follow warnings. Language: --lang zh|en, or EBD_LANG, else LANG.",
        ),
    )
    alerts_sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")

    def command(name: str, help_text: str, func: Command, on_one: bool = True) -> Parser:
        """``ebd alerts NAME`` with table and JSON output, and an alert's id if ``on_one``."""
        made = api_command(alerts_sub, name, help_text, func, OUTPUTS)
        if on_one:
            made.add_argument("id", type=alert_id)
        return made

    c = command("issue", t("发布预警", "issue a warning"), cmd_issue, on_one=False)
    _content_options(c, required=True)
    c.add_argument(
        "--file",
        metavar="FILE",
        help=t(
            "请求体 JSON 文件（- 为标准输入）；命令行选项覆盖其中字段",
            "a JSON request body (- for standard input); options override its fields",
        ),
    )
    _preview_options(c)
    _sending_options(c)

    c = command("watch", t("实时跟踪一条预警的送达", "follow one alert's delivery live"), cmd_watch)
    _watch_options(c)

    c = command("list", t("列出预警（新的在前）", "list alerts, newest first"), cmd_list, False)
    c.add_argument("--status", choices=STATUSES, help=t("只列此状态", "only this status"))
    _colour_option(c, t("只列此级别", "only this colour"))
    c.add_argument("--type", choices=MSG_TYPES, help=t("只列此类型", "only this message type"))
    _time_option(
        c, "--since", t("只列此时间之后发布的", "only those sent at or after TIME (with offset)")
    )
    c.add_argument(
        "--limit",
        type=int,
        default=50,
        help=t("最多列出条数（1–500，默认 50）", "at most this many (1–500, default 50)"),
    )

    c = command("show", t("查看一条预警及各区域覆盖率", "one alert and its coverage"), cmd_show)
    c.add_argument(
        "--detail",
        choices=DETAILS,
        default="county",
        help=t("覆盖率细到哪一级（默认 county）", "coverage down to this level (default county)"),
    )

    c = command(
        "update", t("更新预警（引用它的新预警）", "update (a new alert naming it)"), cmd_update
    )
    _content_options(c, required=False)
    _preview_options(c)
    _sending_options(c)

    c = command("cancel", t("解除预警", "cancel an alert"), cmd_cancel)
    c.add_argument("--reason", help=t("解除原因（终端播报）", "why (terminals say it)"))
    _sending_options(c, watch=False)

    c = command(
        "pending",
        t("待审批的预警（本单位及下级）", "warnings waiting for approval (this office and below)"),
        cmd_pending,
        on_one=False,
    )
    c.add_argument(
        "--state",
        choices=SUBMISSION_STATES,
        default="pending",
        help=t("只列此审批状态（默认 pending）", "only this approval state (default pending)"),
    )
    command("approve", t("批准一条待审批的预警并发布", "approve a waiting warning: it goes out"),
            cmd_approve)  # fmt: skip
    c = command("reject", t("驳回一条待审批的预警", "reject a waiting warning"), cmd_reject)
    c.add_argument(
        "--reason",
        required=True,
        help=t("驳回原因（必填）", "why (required; shown to the composer)"),
    )


# --- issue, update, cancel -------------------------------------------------------------------


def _key(args: argparse.Namespace) -> str:
    """The request's Idempotency-Key, shown before anything is sent: if the command fails
    on the way, the same command with this key cannot issue the warning twice."""
    key: str = args.idempotency_key or f"ebd-{uuid.uuid4()}"
    print(
        t(
            f"幂等键 Idempotency-Key: {key}（重试时加 --idempotency-key {key}，不会重复发布）",
            f"Idempotency-Key: {key} (retry with --idempotency-key {key}; it cannot issue twice)",
        ),
        file=sys.stderr,
    )
    return key


def _read_body(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValidationFailed(f"cannot read {path}: {getattr(exc, 'strerror', exc)}") from exc
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ValidationFailed(f"{path} is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValidationFailed(f"{path} must hold a JSON object: the alert's fields")
    return body


def _given_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The alert fields given as options."""
    fields = {
        "areas": _areas(args.area) or None,
        "severity": args.severity,
        "event": args.event,
        "event_code": args.event_code,
        "headline": args.headline,
        "text": args.text,
        "instruction": args.instruction,
        "status": args.status,
        "channels": list(dict.fromkeys(args.channel)) if args.channel else None,
        "repeat": args.repeat,
    }
    given = {name: value for name, value in fields.items() if value is not None}
    if args.expires is not None:
        given["expires"] = args.expires
    elif args.expires_in is not None:
        given["expires_in"] = args.expires_in
    return given


def _missing(body: dict[str, Any], names: dict[str, str]) -> None:
    missing = [option for name, option in names.items() if not body.get(name)]
    if missing:
        raise ValidationFailed(
            t(
                f"缺少 {', '.join(missing)}（或用 --file 给出请求体）",
                f"missing {', '.join(missing)} (or give the body with --file)",
            )
        )


def cmd_issue(args: argparse.Namespace) -> int:
    body = _read_body(args.file) if args.file else {}
    given = _given_fields(args)
    if "expires" in given or "expires_in" in given:
        body.pop("expires", None)
        body.pop("expires_in", None)
    body.update(given)
    if "expires" not in body and "expires_in" not in body:
        body["expires_in"] = duration(DEFAULT_EXPIRES_IN)
    _missing(
        body,
        {
            "areas": "--area",
            "severity": "--severity",
            "event": "--event",
            "headline": "--headline",
            "text": "--text",
        },
    )
    if args.dry_run:
        return _dry_run(args, body)
    if args.preview_id:
        body["preview_id"] = args.preview_id
    return _send(args, "/api/v1/alerts", body)


def _dry_run(args: argparse.Namespace, body: dict[str, Any]) -> int:
    """What the warning would reach; nothing is sent, so no Idempotency-Key is needed."""
    preview = ApiClient.of(args).call("POST", "/api/v1/alerts?dry_run=1", body)
    if args.output == "json":
        _print_json(preview)
        return 0
    totals = preview.get("totals", {})
    names = ", ".join(f"{a.get('name')}({a.get('code')})" for a in preview.get("areas", []))
    rows = [
        [t("区域", "areas"), names],
        [t("村（无终端）", "villages (without terminal)"),
         f"{totals.get('villages', 0)} ({totals.get('villages_without_terminal', 0)})"],
        [t("终端（离线）", "terminals (offline)"),
         f"{totals.get('terminals', 0)} ({totals.get('terminals_offline', 0)})"],
        [t("短信接收人（覆盖离线）", "SMS recipients (covering offline)"),
         f"{totals.get('recipients', 0)} ({totals.get('recipients_covering_offline', 0)})"],
        [t("短信条数/费用（元）", "SMS messages/cost (yuan)"),
         f"{totals.get('sms_messages', 0)}/{totals.get('sms_cost_yuan', 0)}"],
        [t("预览编号", "preview id"), preview.get("preview_id")],
    ]  # fmt: skip
    print(render([], rows))
    print(
        t(
            "未发布。确认无误后去掉 --dry-run，"
            f"加 --preview-id {preview.get('preview_id')} 再次运行",
            f"nothing was sent; to send it, run again without --dry-run and with "
            f"--preview-id {preview.get('preview_id')}",
        )
    )
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    given = _given_fields(args)
    if not given:
        raise ValidationFailed(
            t(
                "没有要更新的内容：请给出 --headline、--text、--severity、--area、--expires-in 等",
                "nothing to update: give --headline, --text, --severity, --area, --expires-in …",
            )
        )
    client = ApiClient.of(args)
    old = client.call("GET", f"/api/v1/alerts/{quote(args.id)}?detail=city")
    body: dict[str, Any] = {
        name: old[name]
        for name in (
            "event",
            "event_code",
            "severity",
            "headline",
            "text",
            "instruction",
            "areas",
            "channels",
            "status",
            "repeat",
            "sms_text",
            "sms_roles",
        )
        if old.get(name) is not None
    }
    # The old expiry as a time, not a duration: the same command sends the same body, so a
    # retry with its key is recognised.
    body["expires"] = old["expires"]
    if "expires" in given or "expires_in" in given:
        del body["expires"]
    body.update(given)
    body["msg_type"] = "update"
    body["references"] = [args.id]
    if args.dry_run:
        return _dry_run(args, body)
    if args.preview_id:
        body["preview_id"] = args.preview_id
    return _send(args, "/api/v1/alerts", body, client)


def cmd_cancel(args: argparse.Namespace) -> int:
    body = {"reason": args.reason} if args.reason else {}
    args.watch = False
    return _send(args, f"/api/v1/alerts/{quote(args.id)}/cancel", body)


def _send(
    args: argparse.Namespace, path: str, body: dict[str, Any], client: ApiClient | None = None
) -> int:
    client = client or ApiClient.of(args)
    key = _key(args)
    alert = client.call("POST", path, body, headers={"Idempotency-Key": key})
    if alert.get("state") == "pending":
        # Kept for an approver (202): nothing was sent, there is nothing to watch yet.
        _print_submission(args, alert)
        return 0
    if args.watch:
        return _watch(args, client, str(alert["id"]), first=alert)
    if args.output == "json":
        _print_json(alert)
    elif getattr(args, "quiet", False):
        print(alert["id"])
    else:
        print(_alert_block(alert))
    return 0


# --- approvals -------------------------------------------------------------------------------


def _print_submission(args: argparse.Namespace, submission: dict[str, Any]) -> None:
    if args.output == "json":
        _print_json(submission)
        return
    if getattr(args, "quiet", False):
        print(submission["id"])
        return
    print(_submission_block(submission))
    if submission.get("state") == "pending":
        print(
            t(
                f"尚未发布：须由另一名审批员批准（ebd alerts approve {submission['id']}）",
                f"not sent yet: another person must approve it "
                f"(ebd alerts approve {submission['id']})",
            )
        )


def _submission_block(submission: dict[str, Any]) -> str:
    names = submission.get("area_names") or {}
    areas = ", ".join(f"{names.get(code, '?')}({code})" for code in submission.get("cover", []))
    rows = [
        [t("编号", "id"), submission["id"]],
        [t("审批状态", "approval state"), label(submission.get("state"))],
        [t("级别", "colour"), label(submission.get("severity"))],
        [t("标题", "headline"), submission.get("headline")],
        [t("区域", "areas"), areas],
        [t("提交单位", "office"), submission.get("office_name")],
        [t("编制人", "composer"), submission.get("composer_name") or submission.get("composer")],
        [t("提交时间", "submitted"), beijing(submission.get("submitted_at"))],
        [t("审批期限", "approve by"), beijing(submission.get("expires_at"))],
    ]
    if submission.get("decided_by"):
        rows.append([t("审批人", "decided by"), submission.get("decided_by_name")])
    if submission.get("reason"):
        rows.append([t("驳回原因", "reason"), submission["reason"]])
    return render([], rows)


def cmd_pending(args: argparse.Namespace) -> int:
    body = ApiClient.of(args).call("GET", f"/api/v1/approvals?{urlencode({'state': args.state})}")
    if args.output == "json":
        _print_json(body)
        return 0
    if not body["approvals"]:
        print(t("没有待审批的预警", "nothing is waiting") if args.state == "pending" else
              t("没有", "none"))  # fmt: skip
        return 0
    headers = [
        t("编号", "id"),
        t("提交时间（北京）", "submitted (Beijing)"),
        t("级别", "colour"),
        t("状态", "state"),
        t("编制人", "composer"),
        t("标题", "headline"),
    ]
    rows = [
        [
            s["id"],
            beijing(s["submitted_at"]),
            label(s["severity"]),
            label(s["state"]),
            s.get("composer_name") or s.get("composer") or s.get("office_id"),
            _clip(s["headline"], 40),
        ]
        for s in body["approvals"]
    ]
    print(render(headers, rows))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    alert = ApiClient.of(args).call("POST", f"/api/v1/approvals/{quote(args.id)}/approve")
    if args.output == "json":
        _print_json(alert)
    else:
        print(_alert_block(alert))
    return 0


def cmd_reject(args: argparse.Namespace) -> int:
    submission = ApiClient.of(args).call(
        "POST", f"/api/v1/approvals/{quote(args.id)}/reject", {"reason": args.reason}
    )
    _print_submission(args, submission)
    return 0


# --- watch, list, show -----------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace) -> int:
    return _watch(args, ApiClient.of(args), args.id)


def _watch(
    args: argparse.Namespace, client: ApiClient, alert: str, first: dict[str, Any] | None = None
) -> int:
    """Follows the alert with a live bar; 0 once every expected terminal played it, 1 if it
    ended, timed out or some terminals failed first."""
    path = f"/api/v1/alerts/{quote(alert)}?detail={args.detail}"
    if first is not None and args.output == "table":
        print(_alert_block(first))
    followed = asyncio.run(follow(lambda: client.fetch("GET", path), timeout=args.timeout))
    if not followed.delivery:
        raise EngineUnreachable(
            f"no answer about alert {alert} from {client.base} within {args.timeout:g} s"
        )
    if args.output == "json":
        _print_json(followed.alert)
    else:
        print(_delivery_summary(followed))
        if followed.delivery.get(f"by_{args.detail}"):
            print(coverage_table(followed.delivery, args.detail))
    return 0 if followed.complete else 1


def _delivery_summary(followed: Followed) -> str:
    d = followed.delivery
    why = {
        "done": t("送达完成", "delivery settled"),
        "timeout": t("跟踪超时", "stopped following: timed out"),
    }.get(followed.why, label(followed.why))
    verdict = t("全部已播", "complete") if followed.complete else t("未完全覆盖", "NOT complete")
    summary = (
        f"{why}: {t('已播', 'played')} {d['played']}/{d['expected']} "
        f"({share(d):.1f}%), {t('失败', 'failed')} {d['failed']}, "
        f"{t('未确认', 'pending')} {d.get('pending', 0)} — {verdict}"
    )
    if not d.get("expected"):
        summary += t(
            "\n这些区域没有登记的终端（用 ebd terminals import 登记）",
            "\nno terminal is registered in these areas (register them: ebd terminals import)",
        )
    return summary


def cmd_list(args: argparse.Namespace) -> int:
    if not 1 <= args.limit <= API_LIST_MAX:
        raise ValidationFailed(f"--limit must be 1 to {API_LIST_MAX}; got {args.limit}")
    filtered = any((args.status, args.severity, args.type, args.since))
    # The API filters by nothing but count: filters are applied to the newest it lists.
    query = urlencode({"limit": API_LIST_MAX if filtered else args.limit})
    body = ApiClient.of(args).call("GET", f"/api/v1/alerts?{query}")
    since = datetime.fromisoformat(args.since) if args.since else None
    alerts = [
        a
        for a in body["alerts"]
        if (args.status is None or a["status"] == args.status)
        and (args.severity is None or a["severity"] == args.severity)
        and (args.type is None or a["msg_type"] == args.type)
        and (since is None or datetime.fromisoformat(a["sent"]) >= since)
    ][: args.limit]
    if args.output == "json":
        _print_json({"alerts": alerts, "count": len(alerts)})
        return 0
    if not alerts:
        print(t("没有预警", "no alerts"))
        return 0
    headers = [
        t("编号", "id"),
        t("发布时间（北京）", "sent (Beijing)"),
        t("级别", "colour"),
        t("事件", "event"),
        t("类型", "type"),
        t("性质", "status"),
        t("分发", "dispatch"),
        t("已播/应到", "played/expected"),
        t("标题", "headline"),
    ]
    rows = [
        [
            a["id"],
            beijing(a["sent"]),
            label(a["severity"]),
            a["event"],
            label(a["msg_type"]),
            label(a["status"]),
            label(a.get("dispatch", {}).get("state")),
            f"{a.get('dispatch', {}).get('played', 0)}/{a.get('dispatch', {}).get('expected', 0)}",
            _clip(a["headline"], 40),
        ]
        for a in alerts
    ]
    print(render(headers, rows, right=(7,)))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    alert = ApiClient.of(args).call(
        "GET", f"/api/v1/alerts/{quote(args.id)}?{urlencode({'detail': args.detail})}"
    )
    if args.output == "json":
        _print_json(alert)
        return 0
    d = alert["delivery"]
    print(_alert_block(alert) + "\n")
    print(
        render(
            [],
            [
                [t("分发状态", "state"), label(d["state"])],
                [t("分发时间", "dispatched at"), beijing(d.get("dispatched_at"))],
                [
                    t("应到/已收/已播", "expected/received/played"),
                    f"{d['expected']}/{d['received']}/{d['played']} ({share(d):.1f}%)",
                ],
                [
                    t("失败（其中未确认）", "failed (of which no ack)"),
                    f"{d['failed']} ({d.get('no_ack', 0)})",
                ],
                [t("待确认", "pending"), d.get("pending", 0)],
                [t("分发时离线", "offline at dispatch"), d.get("offline_at_dispatch", 0)],
                [
                    t("重发/升级", "resends/escalated"),
                    f"{d.get('resends', 0)}/{d.get('escalated', 0)}",
                ],
                [t("最后确认", "last ack"), beijing(d.get("last_ack_at"))],
                [t("解除者", "cancelled by"), d.get("cancelled_by")],
                [t("更新者", "superseded by"), d.get("superseded_by")],
            ],
        )
    )
    for level in DETAILS:
        if d.get(f"by_{level}"):
            print()
            print(coverage_table(d, level))
        if level == args.detail:
            break
    return 0


# --- output ----------------------------------------------------------------------------------


def _print_json(body: Any) -> None:
    print(json.dumps(body, ensure_ascii=False, indent=2))


def _clip(text: str, cells: int) -> str:
    if width(text) <= cells:
        return text
    out = ""
    for ch in text:
        if width(out + ch) > cells - 1:
            break
        out += ch
    return out + "…"


def _alert_block(alert: dict[str, Any]) -> str:
    """An alert's fields, one a line, for people."""
    names = alert.get("area_names") or {}
    areas = ", ".join(f"{names.get(code, '?')}({code})" for code in alert["areas"])
    rows = [
        [t("编号", "id"), alert["id"]],
        [t("类型", "type"), label(alert["msg_type"])],
        [t("性质", "status"), label(alert["status"])],
        [t("级别", "colour"), label(alert["severity"])],
        [t("事件", "event"), f"{alert['event']} {alert.get('event_code') or ''}".strip()],
        [t("标题", "headline"), alert["headline"]],
        [t("区域", "areas"), areas],
        [t("发布单位", "sender"), alert.get("sender_name")],
        [t("发布时间", "sent"), beijing(alert.get("sent"))],
        [t("失效时间", "expires"), beijing(alert.get("expires"))],
    ]
    if alert.get("references"):
        rows.append([t("引用", "references"), ", ".join(alert["references"])])
    dispatch = alert.get("dispatch")
    if isinstance(dispatch, dict) and dispatch.get("state"):
        rows.append([t("分发", "dispatch"), label(dispatch["state"])])
    return render([], rows)
