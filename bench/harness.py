"""What the benchmarks share: the engine as a process of its own, and readings of a process's
CPU and memory from /proc.

The benchmarks do not import the tests (those have their runner in
``tests/integration/processes.py``), so this is the benchmarks' one copy. A benchmark run as
``python bench/x.py`` finds this module next to it; importing it also puts the project root on
``sys.path`` for the engine's packages.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Mapping
from pathlib import Path
from types import FrameType
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dispatcher.core.auth import hash_token  # noqa: E402  after the path fix above
from dispatcher.embedded.processes import free_port  # noqa: E402

REGIONS_FILE = ROOT / "config" / "regions" / "fujian.csv"

# The alert every benchmark issues to the whole province (POST /api/v1/alerts).
PROVINCE_ALERT: dict[str, Any] = {
    "event": "台风",
    "event_code": "11B01",
    "severity": "red",
    "headline": "台风红色预警（演练数据）",
    "text": "预计未来24小时将有12级以上大风。",
    "areas": ["35"],
    "expires_in": 3600,
}


async def try_json(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    body: Any = None,
    *,
    headers: Mapping[str, str],
) -> tuple[int, Any]:
    """(status, JSON reply) of one API call; (0, None) when the engine does not answer (it
    may be down on purpose: the benchmarks kill it)."""
    try:
        async with http.request(method, url, json=body, headers=headers) as response:
            return response.status, await response.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, None


def say(text: str) -> None:
    """Progress goes to stderr: stdout carries the benchmark's table."""
    print(text, file=sys.stderr, flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def run_until_done(main: Coroutine[Any, Any, int]) -> int:
    """Run a benchmark's main coroutine; SIGTERM and Ctrl-C stop it the same way, its
    ``finally`` blocks and the atexit nets stopping everything it started."""
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130


def toml_value(value: Any) -> str:
    """A TOML value for a bool, number, string or list of them."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def toml_table(name: str, values: Mapping[str, Any]) -> str:
    lines = [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in values.items() if v is not None)]
    return "\n".join(lines) + "\n"


class Engine:
    """``python -m dispatcher serve`` with a config of its own (one province office whose
    token is ``token``); SIGKILL, stop, start again on the same port and instance name.

    ``mqtt`` adds keys to the ``[mqtt]`` table; ``tables`` is further TOML (``[resend]``,
    ``[sms]`` …) appended as given."""

    def __init__(
        self,
        folder: Path,
        redis_url: str,
        mqtt_url: str,
        *,
        token: str,
        instance: str = "ebd-1",
        port: int | None = None,
        mqtt: Mapping[str, Any] | None = None,
        tables: str = "",
        log_level: str | None = None,
    ) -> None:
        self.folder = folder / f"engine-{instance}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.folder / "engine.log"
        self.config = self.folder / "ebd.toml"
        self.log_level = log_level
        mqtt_table = {"url": mqtt_url, "session_expiry": 600, **(mqtt or {})}
        office = {"id": "fj-province", "name": "福建省应急管理厅", "region": "35",
                  "token_sha256": hash_token(token)}  # fmt: skip
        self.config.write_text(
            f"instance = {toml_value(instance)}\n"
            f"state_dir = {toml_value(self.folder / 'state')}\n"
            + toml_table("api", {"listen": f"127.0.0.1:{self.port}"})
            + toml_table("mqtt", mqtt_table)
            + toml_table("redis", {"url": redis_url})
            + toml_table("regions", {"file": REGIONS_FILE})
            + tables
            + toml_table("[offices]", office),
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EBD_")}
        env["EBD_LOG__FORMAT"] = "json"
        if self.log_level:
            env["EBD_LOG__LEVEL"] = self.log_level
        with self.log_path.open("ab") as log:
            return subprocess.Popen(  # noqa: S603  our own interpreter and config
                [sys.executable, "-m", "dispatcher", "serve", "--config", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )

    async def start(self, timeout: float = 60.0) -> None:
        self.proc = await asyncio.to_thread(self._spawn)
        _engines.add(self)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while time.monotonic() < deadline and self.alive:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(f"{self.base_url}/readyz") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)
        self.kill()
        raise RuntimeError(f"engine did not come up; see {self.log_path}")

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        _engines.discard(self)
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()

    async def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, 15)
        self.kill()

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def memory_kb(self) -> tuple[int, int]:
        return memory_kb(self.pid)


# Other children not yet reaped (simulators, mosquitto_sub …): killed at exit whatever
# happened, like the engines below.
CHILDREN: list[subprocess.Popen[bytes]] = []


@atexit.register
def _kill_children() -> None:
    for proc in list(CHILDREN):
        if proc.poll() is None:
            proc.kill()
        proc.wait()


# Engines not yet reaped: killed at exit whatever happened (the servers have the same net in
# dispatcher.embedded.processes).
_engines: set[Engine] = set()


@atexit.register
def _kill_engines() -> None:
    for engine in list(_engines):
        engine.kill()


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB; (0, 0) once it is gone."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
