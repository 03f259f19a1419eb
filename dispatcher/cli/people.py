"""``ebd people list | create | disable | enable | token``: an office's people, through the
engine's API with the office's token (which acts as its admin) or an admin's own token.

A password never goes on the command line (the process list shows it): it is read from
``--password-file`` or asked for twice at the terminal."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from dispatcher.cli.client import ApiClient, refusing
from dispatcher.cli.lang import t
from dispatcher.core.errors import ConfigError, ValidationFailed
from dispatcher.core.passwords import password_problem
from dispatcher.core.people import ROLE_LABELS, Role

if TYPE_CHECKING:
    # Subscriptable for the type checker only: argparse's class is not, at run time.
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]
ApiCommand = Callable[..., argparse.ArgumentParser]
STDIN = "-"  # as a file name: read the password from standard input


def _json(body: Any) -> None:
    print(json.dumps(body, ensure_ascii=False, indent=2))


def _path(person_id: str, tail: str = "") -> str:
    return f"/api/v1/people/{quote(person_id, safe='')}{tail}"


def _roles(roles: list[str]) -> str:
    zh = t("zh", "en") == "zh"
    return ", ".join(ROLE_LABELS[Role(r)][0 if zh else 1] for r in roles)


def read_password(password_file: str | None) -> str:
    """The new password: the first line of ``password_file`` ("-": standard input), else
    asked for twice without echo. ``ValidationFailed`` saying what is wrong with it."""
    if password_file is not None:
        try:
            text = (
                sys.stdin.readline()
                if password_file == STDIN
                else Path(password_file).read_text(encoding="utf-8")
            )
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read the password file: {exc}", path=password_file) from exc
        password = text.splitlines()[0] if text.strip() else ""
    else:
        if not sys.stdin.isatty():
            raise ValidationFailed(
                t(
                    "没有终端可输入密码：用 --password-file FILE（或 - 表示标准输入）提供",
                    "no terminal to ask for the password: give --password-file FILE "
                    "(or - for standard input)",
                )
            )
        password = getpass.getpass(t("新密码：", "new password: "))
        if getpass.getpass(t("再输入一次：", "again: ")) != password:
            raise ValidationFailed(t("两次输入的密码不一致", "the two passwords differ"))
    problem = password_problem(password)
    if problem:
        raise ValidationFailed(problem, details=[{"field": "password", "message": problem}])
    return password


def cmd_people_list(args: argparse.Namespace) -> int:
    body = ApiClient.of(args).call("GET", "/api/v1/people")
    if args.output == "json":
        _json(body)
        return 0
    people = body["people"]
    if not people:
        print(t(f"{body['office']} 还没有人员账号", f"{body['office']} has no people yet"))
        return 0
    for p in people:
        state = t("已停用", "disabled") if p["disabled"] else t("启用", "enabled")
        tokens = t(f"{len(p['tokens'])} 个令牌", f"{len(p['tokens'])} tokens")
        print(f"{p['id']:<20} {p['name']:<12} {state:<8} {tokens:<10} {_roles(p['roles'])}")
    return 0


def cmd_people_create(args: argparse.Namespace) -> int:
    password = read_password(args.password_file)
    body = {"id": args.id, "name": args.name, "roles": args.role, "password": password}
    created = ApiClient.of(args).call("POST", "/api/v1/people", body)["person"]
    print(
        t(
            f"已创建 {created['id']}（{created['name']}），单位 {created['office_id']}，"
            f"角色：{_roles(created['roles'])}",
            f"created {created['id']} ({created['name']}) in {created['office_id']}, "
            f"roles: {_roles(created['roles'])}",
        )
    )
    return 0


def cmd_people_disable(args: argparse.Namespace) -> int:
    ApiClient.of(args).call("POST", _path(args.id, "/disable"))
    print(
        t(
            f"{args.id} 已停用：其登录会话和令牌即刻失效",
            f"{args.id} is disabled: their sessions and tokens stop working now",
        )
    )
    return 0


def cmd_people_enable(args: argparse.Namespace) -> int:
    ApiClient.of(args).call("POST", _path(args.id, "/enable"))
    print(t(f"{args.id} 已重新启用", f"{args.id} is enabled again"))
    return 0


def cmd_people_token(args: argparse.Namespace) -> int:
    """A new API token of the person: written to ``--out`` (owner-readable) or printed once."""
    out = Path(args.out) if args.out else None
    if out is not None and out.exists():
        raise ConfigError("exists already; give --out a new file", path=out)
    body = ApiClient.of(args).call("POST", _path(args.id, "/tokens"))
    if out is None:
        print(body["token"])
        print(
            t(
                f"（{args.id} 的令牌 {body['id']}，只显示这一次；请妥善保存）",
                f"(token {body['id']} of {args.id}, shown this once: keep it safe)",
            ),
            file=sys.stderr,
        )
        return 0
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(body["token"] + "\n")
    print(
        t(
            f"{args.id} 的新令牌 {body['id']} 已写入 {out}（仅本人可读）",
            f"the new token {body['id']} of {args.id} is in {out} (owner-readable)",
        )
    )
    return 0


# ``--password`` refused, saying why: without it, argparse would read it as an abbreviation
# of ``--password-file``.
_RefusePassword = refusing(
    lambda: t(
        "密码不能写在命令行上（进程列表会显示它）：用 --password-file FILE，或按提示输入",
        "no password on the command line (the process list shows it): use "
        "--password-file FILE, or answer the prompt",
    )
)


def add_commands(
    sub: SubParsers,
    parser: Callable[[SubParsers, str, str, str], argparse.ArgumentParser],
    api_command: ApiCommand,
) -> None:
    """``ebd people …`` on the command's subparsers (``parser`` and ``api_command`` are the
    main module's builders, so these commands take ``--api`` and ``--token-file`` like all)."""
    p = parser(sub, "people", "单位人员账号", "the office's people (accounts)")
    people_sub = p.add_subparsers(dest="action", required=True)
    api_command(
        people_sub,
        "list",
        t("列出本单位人员及其角色", "the office's people and their roles"),
        cmd_people_list,
        ("table", "json"),
    )
    person_id = t("登录名，如 zhang.wei", "the login id, e.g. zhang.wei")
    create = api_command(
        people_sub,
        "create",
        t("为本单位创建人员账号", "create an account of the office"),
        cmd_people_create,
    )
    create.add_argument("id", help=person_id)
    create.add_argument("--name", required=True, help=t("姓名", "the person's name"))
    create.add_argument(
        "--role",
        action="append",
        required=True,
        choices=[r.value for r in Role],
        help=t(
            "角色（可重复）：composer 编制员、approver 审批员、coordinator 演练协调员、"
            "viewer 查看员、admin 管理员",
            "a role (repeat for several): composer, approver, coordinator, viewer, admin",
        ),
    )
    create.add_argument(
        "--password-file",
        metavar="FILE",
        help=t(
            "从文件首行读取初始密码（- 表示标准输入；默认在终端上询问）；密码不能写在命令行上",
            "read the first password from the file's first line (- for standard input; "
            "default: asked at the terminal); never on the command line",
        ),
    )
    create.add_argument("--password", action=_RefusePassword, help=argparse.SUPPRESS)
    for name, zh, en, func in (
        ("disable", "停用账号：会话与令牌即刻失效", "disable an account: its sessions and "
         "tokens stop at once", cmd_people_disable),
        ("enable", "重新启用账号", "enable an account again", cmd_people_enable),
        ("token", "为人员签发脚本用的 API 令牌", "issue an API token of the person, for "
         "scripts", cmd_people_token),
    ):  # fmt: skip
        command = api_command(people_sub, name, t(zh, en), func)
        command.add_argument("id", help=person_id)
    people_sub.choices["token"].add_argument(
        "--out",
        metavar="FILE",
        help=t(
            "令牌写入的新文件（仅本人可读；默认打印一次）",
            "a new file to write the token to (owner-readable; default: printed once)",
        ),
    )
