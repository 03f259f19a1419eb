"""``ebd cap import FILE...``: CAP 1.2 documents posted to the engine (``POST /api/v1/cap``),
one line per file: the alert it was issued as, or why it was refused (the CAP element and
line). The exit code is 0 only if every file was taken; else that of the first failure (as
``dispatcher.cli.client`` numbers them: 2 a refused document, 3 no engine, 4 a bad token…).

The client's ``ApiClient`` speaks JSON; a CAP body is XML, so the post is made here, on the
same address and token (``api_base``, ``office_token``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from dispatcher.cli.client import (
    TIMEOUT,
    EngineRefused,
    EngineUnreachable,
    api_base,
    exit_code,
    office_token,
)
from dispatcher.cli.lang import t
from dispatcher.core.errors import ValidationFailed

# dispatcher.cli.main's ``_api_command``: passed in, since main imports this module.
ApiCommand = Callable[..., argparse.ArgumentParser]
CAP_TYPE = "application/cap+xml"


def add_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], api_command: ApiCommand
) -> None:
    """``ebd cap import`` under the ``ebd`` parser's subcommands ``sub``."""
    parser = sub.add_parser(
        "cap", help=t("CAP 1.2 预警（与预警发布系统对接）", "CAP 1.2 warnings (linked systems)")
    )
    cap_sub = parser.add_subparsers(dest="action", required=True)
    command = api_command(
        cap_sub,
        "import",
        t(
            "导入并发布 CAP 1.2 预警文件（同一消息重复导入不会重复发布）",
            "import and issue CAP 1.2 files (a message imported again is not issued again)",
        ),
        cmd_cap_import,
        ("text", "json"),
    )
    command.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help=t("CAP 文件；- 表示标准输入", "CAP files; - for standard input"),
    )


def cmd_cap_import(args: argparse.Namespace) -> int:
    base, token = api_base(args), office_token(args.token_file)
    documents = [(name, _read(name)) for name in args.files]
    results = asyncio.run(_post_all(base, token, documents))
    failures = [exc for _, exc in results if isinstance(exc, Exception)]
    for (name, _), (_, outcome) in zip(documents, results, strict=True):
        if args.output == "json":
            print(json.dumps(_as_json(name, outcome), ensure_ascii=False))
        else:
            _show(name, outcome)
    return exit_code(failures[0]) if failures else 0


def _read(name: str) -> bytes | OSError:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        return exc


async def _post_all(
    base: str, token: str, documents: list[tuple[str, bytes | OSError]]
) -> list[tuple[int, dict[str, Any] | Exception]]:
    """Each document posted in turn (an Update after the Alert it names)."""
    results: list[tuple[int, dict[str, Any] | Exception]] = []
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        for _, data in documents:
            if isinstance(data, OSError):
                results.append((0, _unreadable(data)))
                continue
            results.append(await _post(session, base, token, data))
    return results


def _unreadable(exc: OSError) -> ValidationFailed:
    # Exit code 2, as for any bad input.
    return ValidationFailed(f"cannot read the file: {exc.strerror or exc}")


async def _post(
    session: aiohttp.ClientSession, base: str, token: str, data: bytes
) -> tuple[int, dict[str, Any] | Exception]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": CAP_TYPE}
    try:
        async with session.post(f"{base}/api/v1/cap", data=data, headers=headers) as response:
            status, text = response.status, await response.text()
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, EngineUnreachable(
            f"cannot reach the engine at {base}: {exc or type(exc).__name__}; is `ebd serve` "
            "running there? (the address comes from --api, EBD_API or the [api] listen of "
            "--config)"
        )
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if status < 400 and isinstance(body, dict):
        return status, body
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": text[:300]}
    if status >= 500:
        return status, EngineUnreachable(f"the engine failed ({status}): {error.get('message')}")
    return status, EngineRefused(status, str(error.get("message")), error.get("details"))


def _show(name: str, outcome: dict[str, Any] | Exception) -> None:
    if isinstance(outcome, Exception):
        print(f"{name}: {t('拒绝', 'refused')}: {getattr(outcome, 'message', outcome)}")
        details = getattr(outcome, "details", None)
        for detail in details if isinstance(details, list) else []:
            if isinstance(detail, dict):
                where = detail.get("field", "")
                if detail.get("line") is not None:
                    where += f" ({t('第', 'line ')}{detail['line']}{t(' 行', '')})"
                print(f"  {where}: {detail.get('message')}")
        return
    if outcome.get("cap", {}).get("duplicate"):
        what = t("此前已导入为", "imported before as")
    elif outcome.get("state") == "pending":
        what = t("待审批", "awaiting approval as")
    else:
        what = t("已发布为", "issued as")
    print(f"{name}: {what} {outcome.get('id')}")


def _as_json(name: str, outcome: dict[str, Any] | Exception) -> dict[str, Any]:
    if isinstance(outcome, Exception):
        return {
            "file": name,
            "error": getattr(outcome, "message", str(outcome)),
            "status": getattr(outcome, "http_status", None),
            "details": getattr(outcome, "details", None),
        }
    return {
        "file": name,
        "alert_id": outcome.get("id"),
        "msg_type": outcome.get("msg_type"),
        "duplicate": bool(outcome.get("cap", {}).get("duplicate")),
        "cap": outcome.get("cap"),
    }
