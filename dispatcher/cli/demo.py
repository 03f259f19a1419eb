"""``ebd demo``: the main job end to end on one machine.

Starts the engine with its embedded mosquitto and redis-server, a simulated province (one
terminal per village, in a child process so it has a core of its own), registers the
terminals, issues a province-wide red typhoon warning through the HTTP API, follows the
delivery live and prints the coverage per city. Exits 0 once every terminal has played it.

It also opens the console: three ready logins of the demo office (a composer, an approver, an
administrator) with fresh passwords, printed with the console's address and kept in
``demo-logins.json`` (0600) in the state folder. In a terminal the demo waits for Enter before
it issues the warning (time to sign in and open the alert list) and keeps serving the console
after it, until Ctrl-C; without a terminal (CI, a pipe) it runs straight through and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from dispatcher.app import create_app
from dispatcher.cli.progress import coverage_table, follow
from dispatcher.cli.provisioning import write_provisioning
from dispatcher.core.auth import new_token
from dispatcher.core.clock import display_zone
from dispatcher.core.config import (
    ApiSettings,
    LogSettings,
    OfficeConfig,
    RegionsSettings,
)
from dispatcher.core.errors import DemoFailed
from dispatcher.core.regions import RegionTree
from dispatcher.embedded.processes import free_port
from dispatcher.http.middleware import JsonErrorRunner
from dispatcher.http.state import BROKER_FOR_TERMINALS
from dispatcher.settings import Settings
from receiver.simulator import village_terminals

CHUNK = 5000
# The demo's people: login → (name, roles, office). The composer sits in a county office and
# the approver in its city's, so a red warning from the console takes the path it takes in
# production; each gets a fresh password per run.
DEMO_PEOPLE = {
    "demo.composer": ("县级编制员", ["composer", "viewer"], "demo-county"),
    "demo.approver": ("市级审批员", ["approver", "viewer"], "demo-city"),
    "demo.coordinator": ("演练协调员", ["coordinator", "viewer"], "demo-office"),
    "demo.admin": ("管理员", ["admin", "composer", "approver", "coordinator", "viewer"],
                   "demo-office"),
}  # fmt: skip


def say(zh: str, en: str) -> None:
    print(f"▶ {zh}  ({en})", flush=True)


async def _call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> dict[str, Any]:
    async with session.request(method, url, **kw) as response:
        body = await response.json(content_type=None)
        if response.status >= 400:
            raise DemoFailed(f"{method} {url} → {response.status}: {body}")
        return dict(body)


async def _wait_ready(sim: asyncio.subprocess.Process, ready: Path, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not ready.exists():  # noqa: ASYNC240  one stat per 0.2 s
            if sim.returncode is not None:
                raise DemoFailed(f"the terminal simulator exited with code {sim.returncode}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.2):
                    await sim.wait()


async def run_demo(
    *,
    region: str = "35",
    per_village: int = 1,
    timeout: float = 600.0,
    state_dir: Path | None = None,
    regions_file: Path,
    interactive: bool = False,
    linger: Awaitable[None] | None = None,
) -> int:
    """``interactive``: wait for Enter before issuing and serve the console until Ctrl-C
    after. ``linger``: awaited (with the engine still serving) once the warning is followed
    to the end, e.g. by a test that signs in to the console meanwhile."""
    tree = RegionTree.from_csv(regions_file)
    office_region = tree.get(region)
    state = state_dir or Path(tempfile.mkdtemp(prefix="ebd-demo-"))
    # The demo's own office (its token issues the demo's warning, as a linked release system
    # would) and a city and a county office for the console's people.
    city = region[:4] if len(region) >= 4 else tree.children(region)[0].code
    county = region[:6] if len(region) >= 6 else tree.children(city)[0].code
    offices = {
        "demo-office": (f"{office_region.name}应急管理部门", region),
        "demo-city": (f"{tree.name(city)}应急管理局", city),
        "demo-county": (f"{tree.name(county)}应急管理局", county),
    }
    tokens = {office_id: new_token() for office_id in offices}
    token = tokens["demo-office"][0]
    settings = Settings(
        # The demo is self-contained: an exported EBD_OFFICES or EBD_MQTT__URL must not
        # replace its office or send it to another broker.
        _env_prefix="EBD_DEMO_UNUSED_",  # type: ignore[call-arg]  # a pydantic-settings init option
        api=ApiSettings(listen=f"127.0.0.1:{free_port()}"),
        regions=RegionsSettings(file=regions_file),
        log=LogSettings(format="json", level="warning"),
        offices=[
            OfficeConfig(
                id=office_id,
                name=name,
                region=code,
                token_sha256=tokens[office_id][1],
                # The demo's token is a machine whose warning goes out without an approver;
                # people's red warnings wait for one.
                machine_approved=office_id == "demo-office",
            )
            for office_id, (name, code) in offices.items()
        ],
        state_dir=state,
    )
    say(
        "启动调度引擎（内置 mosquitto 与 redis-server）",
        "starting the engine with embedded broker and Redis",
    )
    app = create_app(settings, tree=tree)
    runner = JsonErrorRunner(app, access_log=None)
    await runner.setup()
    sim: asyncio.subprocess.Process | None = None
    base = f"http://{settings.api.listen}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        await web.TCPSite(runner, settings.api.host, settings.api.port).start()
        terminal_broker = app[BROKER_FOR_TERMINALS]["url"]
        print(f"  API {base}  MQTT (terminals) {terminal_broker}  state {state}")
        terminals = village_terminals(tree.villages(region), per_village)
        async with aiohttp.ClientSession(headers=headers) as session:
            say(
                f"登记 {len(terminals)} 个村级终端",
                f"registering {len(terminals)} village terminals",
            )
            answers = []
            for start in range(0, len(terminals), CHUNK):
                part = terminals[start : start + CHUNK]
                answers.append(
                    await _call(
                        session,
                        "POST",
                        f"{base}/api/v1/terminals",
                        json=[{"id": t.id, "region": t.region} for t in part],
                    )
                )
            logins = await _console_people(
                session, base, state, {k: v[0] for k, v in tokens.items()}
            )
            _show_console(base, logins, offices)
            # Each terminal's own broker account, the broker's CA and the keyring: what a
            # technician would load into real terminals, here into the simulator.
            provision = state / "terminals.provision.json"
            await asyncio.to_thread(write_provisioning, provision, answers)
            say("启动模拟终端并连接消息服务器", "starting the simulated terminals")
            ready = state / "sim.ready"
            ready.unlink(missing_ok=True)
            sim = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dispatcher", "sim",
                "--region", region, "--per-village", str(per_village),
                "--provision", str(provision), "--regions-file", str(regions_file),
                "--ready-file", str(ready),
                stdout=asyncio.subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
            started = time.monotonic()
            await _wait_ready(sim, ready, timeout=min(timeout, 300))
            print(f"  {len(terminals)} terminals online in {time.monotonic() - started:.1f} s")
            if interactive:
                await _until_enter(
                    f"在浏览器中打开 {base}/login 并登录后，按回车发布预警",
                    f"open {base}/login and sign in, then press Enter to issue the warning",
                )
            say(
                f"发布{office_region.name}全域台风红色预警",
                "issuing a region-wide red typhoon warning",
            )
            posted_at = time.time()
            alert = await _call(
                session,
                "POST",
                f"{base}/api/v1/alerts",
                json={
                    "event": "台风",
                    "event_code": "11B01",
                    "severity": "red",
                    "headline": f"{office_region.name}台风红色预警",
                    "text": "受强台风影响，预计未来24小时内将出现12级以上大风和特大暴雨。",
                    "instruction": "请立即停止户外作业，转移至安全场所，远离危房、河道和山体。",
                    "areas": [region],
                    "expires_in": 6 * 3600,
                },
            )
            alert_url = f"{base}/api/v1/alerts/{alert['id']}"
            print(f"  alert {alert['id']}  console {base}/alerts/{alert['id']}")
            followed = await follow(
                lambda: _call(session, "GET", alert_url + "?detail=city"),
                timeout=timeout,
                total=len(terminals),
            )
            delivery = followed.delivery
            if followed.why == "timeout":
                raise TimeoutError
            if delivery["failed"] or not followed.complete:
                raise DemoFailed(
                    f"{delivery['failed']} terminals failed to play; the alert is {followed.why}"
                )
            last_ack = delivery.get("last_ack_at")
            seconds = _iso_ts(last_ack) - posted_at if isinstance(last_ack, str) else float("nan")
            print("\n" + coverage_table(delivery))
            print(
                f"\n全部 {delivery['played']}/{delivery['expected']} 个终端已播发并确认；"
                f"从发布到最后一个确认 {seconds:.2f} 秒\n"
                f"All {delivery['played']}/{delivery['expected']} terminals played and "
                f"acknowledged; POST to last ack recorded: {seconds:.2f} s"
            )
            if len(region) == 2:
                await _plan_drills(session, base)
            if interactive:
                linger = _until_interrupted(base)
            if linger is not None:
                await linger
            return 0
    except (DemoFailed, TimeoutError) as exc:
        print(f"demo failed: {exc or 'timed out'}", file=sys.stderr)
        return 1
    finally:
        if sim is not None and sim.returncode is None:
            sim.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(20):
                    await sim.wait()
            if sim.returncode is None:
                sim.kill()
                await sim.wait()
        await runner.cleanup()


async def _console_people(
    session: aiohttp.ClientSession, base: str, state: Path, tokens: dict[str, str]
) -> dict[str, str]:
    """The demo's people, each made through the accounts API with its office's token (which
    acts as that office's admin); login → password, also written to ``demo-logins.json``
    readable by its owner only."""
    logins: dict[str, str] = {}
    for login, (name, roles, office_id) in DEMO_PEOPLE.items():
        password = secrets.token_urlsafe(12)
        body = {"id": login, "name": name, "roles": roles, "password": password}
        auth = {"Authorization": f"Bearer {tokens[office_id]}"}
        await _call(session, "POST", f"{base}/api/v1/people", json=body, headers=auth)
        logins[login] = password
    path = state / "demo-logins.json"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump({"console": f"{base}/login", "logins": logins}, out, ensure_ascii=False)
    return logins


async def _plan_drills(session: aiohttp.ClientSession, base: str) -> None:
    """Next year's drills of every township, for the console's calendar (a coordinator can run
    one at once from its page and read its report while the terminals are up)."""
    year = datetime.now(display_zone()).year + 1
    plan = await _call(session, "POST", f"{base}/api/v1/drills/plan", json={"year": year})
    say(f"已排定 {year} 年演练计划", f"planned the drills of {year}")
    print(f"  {plan['planned']} drills  console {base}/drills?year={year}&month=1")


def _show_console(base: str, logins: dict[str, str], offices: dict[str, tuple[str, str]]) -> None:
    say("控制台已就绪", "the console is ready")
    print(f"  控制台 console: {base}/login")
    for login, password in logins.items():
        name, roles, office_id = DEMO_PEOPLE[login]
        print(f"  {login:<17} {password}  {offices[office_id][0]} {name} ({', '.join(roles)})")


async def _until_enter(zh: str, en: str) -> None:
    """Wait for a line on the terminal (stdin), without a thread that would outlive the loop."""
    say(zh, en)
    loop = asyncio.get_running_loop()
    line: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        sys.stdin.readline()
        if not line.done():
            line.set_result(None)

    loop.add_reader(sys.stdin.fileno(), readable)
    try:
        await line
    finally:
        loop.remove_reader(sys.stdin.fileno())


async def _until_interrupted(base: str) -> None:
    """Serve the console until Ctrl-C (or SIGTERM)."""
    say(
        f"控制台继续运行：{base}/alerts ；按 Ctrl-C 结束",
        "the console keeps running; press Ctrl-C to stop",
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _iso_ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()
