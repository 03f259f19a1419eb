"""What the benchmarks drive: the engine (the tests' runner, ``tests.support.engine_process``,
with the province office of a throwaway token), the province's terminals and their
registration, the alert issued to them, and those terminals simulated in a child process.

A benchmark run as ``python bench/x.py`` finds this module next to it; importing it also puts
the project root on ``sys.path`` for the engine's packages and the runner.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import json
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# After the path fix above.
from dispatcher.core.broker_auth import password_line  # noqa: E402
from dispatcher.core.models import (  # noqa: E402
    Alert,
    Channel,
    MsgType,
    Severity,
    Status,
    new_alert_id,
)
from dispatcher.core.regions import Level, RegionTree  # noqa: E402
from dispatcher.embedded.processes import MosquittoServer  # noqa: E402
from dispatcher.embedded.secrets import write_private  # noqa: E402
from dispatcher.http.terminals import MAX_TERMINALS_PER_REQUEST  # noqa: E402
from receiver.mqtt_lite import (  # noqa: E402
    MessageHandler,
    MqttConnection,
    open_connection,
    parse_mqtt_url,
)
from receiver.simulator import Simulator  # noqa: E402
from tests.support.broker import TEST_KEYRING, grant, until_accepted  # noqa: E402
from tests.support.engine_process import EngineApi, EngineProcess  # noqa: E402

REGIONS_FILE = ROOT / "config" / "regions" / "fujian.csv"
PROVINCE = "35"
TOKEN = "bench-province-token"  # noqa: S105  a throwaway token of a throwaway engine
PROVINCE_OFFICE = ("fj-province", "福建省应急管理厅", PROVINCE)
# Terminals per POST /api/v1/terminals: as many as the API takes in one request.
REGISTER_PART = MAX_TERMINALS_PER_REQUEST
# Every village has a terminal at 17,498; the scaling runs go to two per village.
MAX_PER_VILLAGE = 2
# A loaded machine (two cores, a province of terminals) starts an engine slower than a test's.
ENGINE_START_TIMEOUT = 60.0
# The child's progress reports come at most this often; its storm events go out at once.
PROGRESS_EVERY = 0.25

# The alert every benchmark issues to the whole province (POST /api/v1/alerts).
PROVINCE_ALERT: dict[str, Any] = {
    "event": "台风",
    "event_code": "11B01",
    "severity": "red",
    "headline": "台风红色预警（演练数据）",
    "text": "预计未来24小时将有12级以上大风。",
    "areas": [PROVINCE],
    "expires_in": 3600,
}

# An engine whose only office is the province's, under TOKEN (``offices`` adds others: pass
# the province's too). Keyword arguments are the runner's.
province_engine = functools.partial(
    EngineProcess, offices={TOKEN: PROVINCE_OFFICE}, start_timeout=ENGINE_START_TIMEOUT
)


def province_api(engine: EngineProcess, timeout: float = 60.0) -> EngineApi:
    """The province office's client of ``engine``; ``timeout`` bounds each request."""
    return EngineApi(engine.base_url, TOKEN, timeout=timeout)


async def issue(api: EngineApi, base_url: str | None = None, **fields: Any) -> str:
    """Issue ``PROVINCE_ALERT`` (``fields`` change or add to it); its id."""
    # The runner's defaults have an instruction the benchmarks' alert never had.
    return await api.issue(base_url, **{**PROVINCE_ALERT, "instruction": None, **fields})


@functools.cache
def fujian() -> RegionTree:
    return RegionTree.from_csv(REGIONS_FILE)


def pick_terminals(n: int) -> list[dict[str, str]]:
    """``n`` terminals spread evenly over the province's villages: one per village up to
    17,498, then a second round (``sim-{village}-2``) and so on."""
    villages = fujian().descendants(PROVINCE, level=Level.VILLAGE)
    if not 1 <= n <= MAX_PER_VILLAGE * len(villages):
        raise SystemExit(f"sizes must be from 1 to {MAX_PER_VILLAGE * len(villages)}")
    chosen: list[dict[str, str]] = []
    for copy in range(1, MAX_PER_VILLAGE + 1):
        m = min(len(villages), n - len(chosen))
        for i in range(m):
            code = villages[i * len(villages) // m].code
            chosen.append({"id": f"sim-{code}-{copy}", "region": code})
    return chosen


def new_alert(sender: str) -> Alert:
    """The province alert as the engine would publish it, for publishing without one."""
    sent = datetime.now(UTC).replace(microsecond=0)
    return Alert(
        id=new_alert_id(sender, sent),
        sender=sender,
        sender_name="福建省应急管理厅",
        sent=sent,
        status=Status.ACTUAL,
        msg_type=MsgType.ALERT,
        event="台风",
        event_code="11B01",
        severity=Severity.RED,
        headline="台风红色预警（演练数据）",
        text="预计未来24小时将有12级以上大风。",
        expires=sent + timedelta(hours=1),
        areas=[PROVINCE],
        channels=[Channel.LOUDSPEAKER],
    )


async def throwaway_client(
    mqtt_url: str, name: str, *, on_message: MessageHandler | None = None
) -> MqttConnection:
    """A clean-start MQTT connection under a client id of its own: ``name`` and a random
    tail, so a run never takes over another's session."""
    url = parse_mqtt_url(mqtt_url)
    conn, _ = await open_connection(
        url.host,
        url.port,
        f"{name}-{uuid.uuid4().hex[:8]}",
        clean_start=True,
        on_message=on_message,
        username=url.username,
        password=url.password,
    )
    return conn


async def forget_sessions(mqtt_url: str, client_ids: Iterable[str]) -> None:
    """End clients' persistent sessions: connect as each with Clean Start and no expiry (for
    an id without a session this does nothing)."""
    url = parse_mqtt_url(mqtt_url)
    for client_id in client_ids:
        conn, _ = await open_connection(
            url.host,
            url.port,
            client_id,
            clean_start=True,
            session_expiry=0,
            username=url.username,
            password=url.password,
        )
        conn.disconnect()
        await conn.closed


# -- children -----------------------------------------------------------------------------------

# Children not yet reaped (simulators, mosquitto_sub …): killed at exit whatever happened, as
# the runner does for engines and dispatcher.embedded.processes for the servers.
CHILDREN: set[int] = set()


@atexit.register
def _kill_children() -> None:
    for pid in list(CHILDREN):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def emit(out: TextIO, event: str, **fields: Any) -> None:
    """One event of the simulator child to its parent: a JSON line stamped with
    ``time.monotonic()``, the same clock (CLOCK_MONOTONIC) as the parent's."""
    out.write(json.dumps({"event": event, "t": time.monotonic(), **fields}) + "\n")
    out.flush()


async def serve_terminals(
    sim: Simulator, timeout: float, out: TextIO, up: Callable[[], int] | None = None
) -> None:
    """The simulator child's life: connect every terminal, say ``ready`` on ``out``, then run
    them until SIGTERM, reporting ``progress`` whenever ``up()`` (terminals up) changed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    sim.on_first_received = lambda alert_id: emit(out, "heard", alert_id=alert_id)
    await sim.start(timeout=timeout)
    try:
        shown = len(sim.terminals) if up is None else up()
        emit(out, "ready", up=shown, seconds=time.monotonic() - started)
        if up is None:
            await stop.wait()
            return
        while not stop.is_set():
            # Bounded: progress is a record for the JSON, not what anything waits on.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROGRESS_EVERY):
                    await stop.wait()
            if up() != shown:
                shown = up()
                emit(out, "progress", up=shown)
    finally:
        await sim.stop()


_GRANTED: dict[str, MosquittoServer] = {}


async def engine_listener_account(
    server: MosquittoServer, user: str, acl: str, password: str | None = None
) -> str:
    """An account of a benchmark's own on a broker's engine listener, allowed what ``acl``
    (Mosquitto ACL lines) says and nothing else, as an operator would add one (a line in the
    password file and the ACL, then SIGHUP); its URL, once the broker takes it."""
    password = password or secrets.token_urlsafe(24)

    def write() -> None:
        with Path(server.files.engine_passwd).open("a", encoding="utf-8") as passwd:
            passwd.write(password_line(user, password) + "\n")
        with Path(server.files.engine_acl).open("a", encoding="utf-8") as rules:
            rules.write(f"\nuser {user}\n{acl}")
        server.reload()

    await asyncio.to_thread(write)
    url = parse_mqtt_url(server.url)
    if not await until_accepted(url.host, url.port, user, password, tls=None):
        raise RuntimeError(f"{server!r} did not take the account {user!r}")
    return f"mqtt://{user}:{password}@{url.host}:{url.port}"


async def grant_terminals(server: MosquittoServer, terminals: list[dict[str, str]]) -> None:
    """Broker accounts for the benchmark's terminals (``password`` added to each row), as a
    deployment that manages its terminals' accounts itself has them: the benchmarks' engines
    issue none, so that the terminals can be online before the engine starts."""
    # Not in tests.support.broker.BROKERS: an engine that knew this broker would issue the
    # accounts itself, and its password file would leave these out.
    _GRANTED[server.url] = server
    passwords = await grant(server, [t["id"] for t in terminals])
    for row in terminals:
        row["password"] = passwords[row["id"]]


def terminal_access(mqtt_url: str) -> dict[str, str]:
    """Where the terminals of the broker at ``mqtt_url`` connect, its CA and the keyring (the
    tests' key, which the benchmarks' engines sign with)."""
    server = _GRANTED[mqtt_url]
    return {
        "mqtt": f"mqtts://127.0.0.1:{server.terminal_port}",
        "ca_pem": server.ca_file.read_text(encoding="ascii"),
        "keyring": TEST_KEYRING.to_json(),
    }


class SimChild:
    """The terminals in a child process, so they have a core of their own: ``script
    --sim-child SPEC`` (``skeleton.main`` answers it with ``serve_terminals``); its events
    arrive as JSON lines on its stdout, its logs go to ``sim.log``."""

    def __init__(
        self,
        folder: Path,
        terminals: list[dict[str, str]],
        mqtt_url: str,
        timeout: float,
        script: Path,
        *,
        niceness: int = 0,
    ) -> None:
        """``mqtt_url`` is the broker's engine URL: the child's terminals connect to its TLS
        listener, each with the account ``grant_terminals`` gave it. ``niceness`` > 0 runs
        the child niced: its terminals take the cores only when the engine, the broker and
        Redis leave them (the nearest this one machine comes to terminals elsewhere)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.script = script
        self.n = len(terminals)
        self.log_path = folder / "sim.log"
        self.spec = folder / "sim.json"
        # Written when it starts: the terminals' accounts are granted once the broker runs.
        self._spec = {"terminals": terminals, "timeout": timeout}
        self._mqtt_url = mqtt_url
        self._niceness = niceness
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self.up = 0
        self.exited = False
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    async def start(self, timeout: float) -> float:
        """Spawn the child and wait until all its terminals are up; the seconds that took in
        the child (its interpreter's start not counted)."""
        spec = {**self._spec, **terminal_access(self._mqtt_url)}
        # The terminals' passwords are in it: readable by this user alone.
        write_private(self.spec, json.dumps(spec))
        nice = ["nice", "-n", str(self._niceness)] if self._niceness > 0 else []
        with self.log_path.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *nice,
                sys.executable,
                str(self.script),
                "--sim-child",
                str(self.spec),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                cwd=ROOT,
                start_new_session=True,
            )
        CHILDREN.add(self.proc.pid)
        self._reader = asyncio.create_task(self._read(self.proc))
        ready = await self.wait_event(lambda e: e["event"] == "ready", 0, timeout)
        return float(ready["seconds"])

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        try:
            async for raw in proc.stdout:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue  # not an event
                if not isinstance(event, dict) or "event" not in event:
                    continue
                self.events.append(event)
                self.up = int(event.get("up", self.up))
                self._wake()
        finally:
            self.exited = True
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_event(
        self, match: Callable[[dict[str, Any]], bool], start: int, timeout: float
    ) -> dict[str, Any]:
        """The first event from index ``start`` on that ``match`` accepts."""
        index = start
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events[index:]:
                    if match(event):
                        return event
                index = len(self.events)
                if self.exited:
                    raise RuntimeError(f"the simulator exited; see {self.log_path}")
                await self._changed.wait()

    async def wait_all_up(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.up < self.n:
                if self.exited:
                    raise RuntimeError(f"the simulator exited; see {self.log_path}")
                await self._changed.wait()

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(30):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if self._reader is not None:
            # wait(), not await: at an interrupt asyncio has cancelled the reader already.
            await asyncio.wait([self._reader])
        CHILDREN.discard(proc.pid)
