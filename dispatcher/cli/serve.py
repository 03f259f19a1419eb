"""``ebd serve``, ``config check``, ``offices token`` and the programs ``ebd`` starts: the
simulator, the reference receiver and the demo. Signals are handled here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, urlsplit, urlunsplit

import structlog

from dispatcher.cli.data import regions_file
from dispatcher.core.errors import ConfigError, ServiceError
from dispatcher.logs import configure_logging
from dispatcher.settings import Settings, load_settings

if TYPE_CHECKING:
    from pydantic import BaseModel

    from dispatcher.core.auth import Offices

log = structlog.get_logger(__name__)


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve(settings: Settings, config_file: Path | None) -> None:
    from aiohttp import web

    from dispatcher.app import create_app, freeze_startup_objects, prefer_the_event_loop
    from dispatcher.http.middleware import JsonErrorRunner

    app = create_app(settings, config_file=config_file)
    runner = JsonErrorRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.api.host, settings.api.port)
        try:
            await site.start()
        except OSError as exc:
            raise ServiceError(
                f"cannot listen on {settings.api.listen}: {exc.strerror}; "
                "choose another [api] listen (or EBD_API__LISTEN)"
            ) from exc
        log.info("api.listening", listen=settings.api.listen, offices=len(settings.offices))
        freeze_startup_objects()
        prefer_the_event_loop()
        await _wait_for_signal()
        log.info("engine.stopping")
    finally:
        await runner.cleanup()


@contextlib.contextmanager
def naming(config: Path | None) -> Iterator[None]:
    """Checks of meaning (office regions, region file) name the config file they came from."""
    try:
        yield
    except ConfigError as exc:
        if exc.path is not None or config is None:
            raise
        raise ConfigError(exc.message, path=config) from exc


# SHA-256 of the example tokens named in config/ebd.example.toml's comments
# ("example-province-token", "example-gulou-token"): everyone who read the file knows them.
EXAMPLE_TOKEN_SHA256 = frozenset(
    {
        "e0a2a262f06c291135bc20121110c04299be8cd21f2d721c885baffc49508f8a",
        "c6361bd3ee72d1ec7f19600f0a2d623c31bb3a531629c92e3baa1a871bced405",
    }
)
# Only for tests and try-outs on a laptop: serve even with the example tokens.
ALLOW_EXAMPLE_TOKENS = "EBD_ALLOW_EXAMPLE_TOKENS"


def refuse_example_tokens(settings: Settings) -> None:
    """``ConfigError`` if an office's token is one of the published example tokens, unless
    ``EBD_ALLOW_EXAMPLE_TOKENS=1`` (then a warning)."""
    offices = [o.id for o in settings.offices if o.token_sha256 in EXAMPLE_TOKEN_SHA256]
    if not offices:
        return
    if os.environ.get(ALLOW_EXAMPLE_TOKENS) == "1":
        log.warning("config.example_tokens", offices=offices, allowed_by=ALLOW_EXAMPLE_TOKENS)
        return
    raise ConfigError(
        f"offices {', '.join(offices)} use the example tokens of config/ebd.example.toml, "
        "which anyone can read: generate a token per office with `ebd offices token` (or "
        '`python -c "import secrets; print(secrets.token_urlsafe(32))"`), give it to the '
        "office, and put its sha256 (`printf %s TOKEN | sha256sum`) in token_sha256",
        field="offices",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    config = Path(args.config) if args.config else None
    settings = load_settings(config)
    with naming(config):
        refuse_example_tokens(settings)
    configure_logging(settings.log.format, settings.log.level)
    if not settings.offices:
        log.warning("config.no_offices", hint="add [[offices]] to the config; nobody can issue")
    with naming(config):
        asyncio.run(_serve(settings, config))
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    from dispatcher.app import load_tree
    from dispatcher.core.auth import Offices

    config = Path(args.config)
    settings = load_settings(config)
    with naming(config):
        tree = load_tree(settings, config)
        offices = Offices(settings.offices, tree)
    gateways = settings.sms.gateways
    sms = (
        "SMS via " + ", ".join(f"{g.name} ({g.protocol}, {g.rate:g}/s)" for g in gateways)
        if gateways
        else "SMS off"
    )
    print(f"{config}: OK ({len(settings.offices)} offices, {len(tree)} regions, {sms})")
    if gateways and not settings.sms.callback_base:
        print(
            "note: [sms] callback_base is not set; gateways will be told to post receipts to "
            f"http://{settings.api.listen}, which they may not reach"
        )
    for warning in _configured_but_off(settings, offices):
        print(f"warning: {warning}")
    return 0


def _changed(section: BaseModel) -> set[str]:
    """The fields of a settings section that differ from its defaults: what the file (or the
    environment) configured, however the section was built."""
    default = type(section)()
    return {
        name
        for name in type(section).model_fields
        if getattr(section, name) != getattr(default, name)
    }


def _configured_but_off(settings: Settings, offices: Offices) -> list[str]:
    """Features the file configures that will not run, and why: a config that loads can
    still leave an office waiting for drills or texts that never come."""
    warnings = []
    if _changed(settings.drills) and offices.drill_office(settings.drills.office) is None:
        warnings.append(
            "[drills] is configured but drills are off: no [[offices]] entry is at province "
            'level and [drills] office is not set; add office = "ID" (an office whose region '
            "covers the drills) under [drills]"
        )
    sms = _changed(settings.sms)
    if sms and not settings.sms.gateways:
        warnings.append(
            f"[sms] sets {', '.join(sorted(sms))} but has no [[sms.gateways]]: no text is "
            "sent, escalations to village contacts included; add a gateway (docs/sms.md)"
        )
    return warnings


def cmd_offices_token(args: argparse.Namespace) -> int:
    from dispatcher.core.auth import new_token

    token, digest = new_token()
    print(f"token         = {token}")
    print(f'token_sha256  = "{digest}"')
    print("# Give the token to the office (once); put token_sha256 in its [[offices]] entry.")
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from dispatcher.cli.provisioning import read_provisioning
    from dispatcher.core.regions import RegionTree
    from receiver.simulator import run_simulator_cli, village_terminals

    configure_logging("console" if sys.stderr.isatty() else "json", "warning")
    tree = RegionTree.from_csv(regions_file(args.regions_file))
    terminals = village_terminals(tree.villages(args.region), args.per_village)
    given = read_provisioning(Path(args.provision))
    for terminal in terminals:
        terminal.password = given.passwords.get(terminal.id)
    missing = sum(1 for t in terminals if t.password is None)
    if missing:
        print(
            f"ebd sim: {missing} of {len(terminals)} terminals have no password in "
            f"{args.provision}; they will be refused by the broker",
            file=sys.stderr,
        )
    asyncio.run(
        run_simulator_cli(
            terminals,
            tree.name(args.region),
            given.url,
            ready_file=Path(args.ready_file) if args.ready_file else None,
            keyring=given.keyring,
            ca_pem=given.ca_pem,
        )
    )
    return 0


def _with_env_password(url: str, terminal_id: str) -> str:
    """``url`` with the terminal's account from EBD_RECEIVER_PASSWORD if it has none: a
    password on the command line is visible to every user of the machine (``ps``)."""
    password = os.environ.get("EBD_RECEIVER_PASSWORD")
    parts = urlsplit(url)
    if not password or parts.password:
        return url
    netloc = f"{quote(terminal_id, safe='')}:{quote(password, safe='')}@{parts.netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def cmd_receiver(args: argparse.Namespace) -> int:
    from dispatcher.core.signing import Keyring
    from receiver.agent import PlayerError, choose_player, run_agent

    configure_logging("auto", "info")
    try:
        player = choose_player(args.player, voice=args.espeak_voice)
    except PlayerError as exc:
        print(f"ebd receiver: {exc}", file=sys.stderr)
        return 2

    keyring = Keyring.load(Path(args.keyring)) if args.keyring else None
    ca_pem = Path(args.ca_file).read_text(encoding="ascii") if args.ca_file else None

    async def main() -> None:
        state = Path(args.state_file or f".ebd-receiver-{args.id}.json")
        task = asyncio.create_task(
            run_agent(
                args.id,
                args.region,
                _with_env_password(args.mqtt, args.id),
                state_file=state,
                keyring=keyring,
                ca_pem=ca_pem,
                player=player,
            ),
            name="agent",
        )
        await _wait_for_signal()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from dispatcher.cli.demo import run_demo

    configure_logging("json", "warning")
    return asyncio.run(
        run_demo(
            region=args.region,
            per_village=args.per_village,
            timeout=args.timeout,
            state_dir=Path(args.state_dir) if args.state_dir else None,
            regions_file=regions_file(args.regions_file),
            interactive=(sys.stdin.isatty() if args.interactive is None else args.interactive),
        )
    )
