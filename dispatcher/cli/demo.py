"""``ebd demo``: the main job end to end on one machine.

Starts the engine with its embedded mosquitto and redis-server, a simulated province (one
terminal per village, in a child process so it has a core of its own), registers the
terminals, issues a province-wide red typhoon warning through the HTTP API, follows the
delivery live and prints the coverage per city. Exits 0 once every terminal has played it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from dispatcher.app import create_app
from dispatcher.cli.progress import coverage_table, follow
from dispatcher.cli.provisioning import write_provisioning
from dispatcher.core.auth import new_token
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
) -> int:
    tree = RegionTree.from_csv(regions_file)
    office_region = tree.get(region)
    state = state_dir or Path(tempfile.mkdtemp(prefix="ebd-demo-"))
    token, digest = new_token()
    settings = Settings(
        # The demo is self-contained: an exported EBD_OFFICES or EBD_MQTT__URL must not
        # replace its office or send it to another broker.
        _env_prefix="EBD_DEMO_UNUSED_",  # type: ignore[call-arg]  # a pydantic-settings init option
        api=ApiSettings(listen=f"127.0.0.1:{free_port()}"),
        regions=RegionsSettings(file=regions_file),
        log=LogSettings(format="json", level="warning"),
        offices=[
            OfficeConfig(
                id="demo-office",
                name=f"{office_region.name}应急管理部门",
                region=region,
                token_sha256=digest,
            )
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
            print(f"  alert {alert['id']}")
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


def _iso_ts(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()
