"""``ebd serve``, ``config check``, ``offices token`` and the programs ``ebd`` starts: the
simulator, the reference receiver and the demo. Signals are handled here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import structlog

from dispatcher.cli.data import regions_file
from dispatcher.core.errors import ConfigError, ServiceError
from dispatcher.logs import configure_logging
from dispatcher.settings import Settings, load_settings

log = structlog.get_logger(__name__)


async def _wait_for_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _serve(settings: Settings, config_file: Path | None) -> None:
    from aiohttp import web

    from dispatcher.app import create_app, freeze_startup_objects

    app = create_app(settings, config_file=config_file)
    runner = web.AppRunner(app, access_log=None)
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


def cmd_serve(args: argparse.Namespace) -> int:
    config = Path(args.config) if args.config else None
    settings = load_settings(config)
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
        Offices(settings.offices, tree)
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
    return 0


def cmd_offices_token(args: argparse.Namespace) -> int:
    from dispatcher.core.auth import new_token

    token, digest = new_token()
    print(f"token         = {token}")
    print(f'token_sha256  = "{digest}"')
    print("# Give the token to the office (once); put token_sha256 in its [[offices]] entry.")
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    from dispatcher.core.regions import RegionTree
    from receiver.simulator import run_simulator_cli, village_terminals

    configure_logging("console" if sys.stderr.isatty() else "json", "warning")
    tree = RegionTree.from_csv(regions_file(args.regions_file))
    asyncio.run(
        run_simulator_cli(
            village_terminals(tree.villages(args.region), args.per_village),
            tree.name(args.region),
            args.mqtt,
            ready_file=Path(args.ready_file) if args.ready_file else None,
        )
    )
    return 0


def cmd_receiver(args: argparse.Namespace) -> int:
    from receiver.agent import run_agent

    configure_logging("auto", "info")

    async def main() -> None:
        state = Path(args.state_file or f".ebd-receiver-{args.id}.json")
        task = asyncio.create_task(
            run_agent(args.id, args.region, args.mqtt, state_file=state), name="agent"
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
        )
    )
