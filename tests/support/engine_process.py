"""The real engine as a separate process, ``python -m dispatcher serve``: the one runner of the
tests that kill it and of the benchmarks (``bench/harness.py``).

``EngineProcess`` writes a TOML config (the test offices of ``tests.integration.engine`` unless
``offices`` names others, the repo's Fujian regions, an API port of its own), starts the engine
with it, waits for ``/readyz`` and can SIGKILL, stop and restart it on the same port, instance
name and MQTT client id, so a restarted engine resumes its outbox consumer and its broker
session. The engine logs JSON lines to ``engine.log`` in the test's folder; failures quote its
tail. With ``sms=`` the config gets an ``[sms]`` section, receipts posted to the engine's own API
unless it names another ``callback_base``; with ``drills=`` a ``[drills]`` section. Its CPU time
and memory are read from /proc (``cpu_seconds``, ``memory_kb``).

``EngineApi`` is the HTTP side: register terminals, issue an alert, read its delivery.
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
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Self

import aiohttp
import redis

from dispatcher.core.auth import hash_token
from dispatcher.embedded.processes import free_port
from dispatcher.settings import PROJECT_ROOT
from receiver.simulator import SimTerminal
from tests.integration.engine import OFFICES, REGIONS_FILE, alert_body
from tests.support.broker import Provisioning, mqtt_settings, provision, signing_settings

PROVINCE_TOKEN = "tok-province"
_LOG_TAIL_LINES = 40
_POLL = 0.1

# Engines started and not yet reaped: killed when the interpreter exits, so a failed test
# never leaves an engine holding its port (and its broker session) behind.
_live: set[EngineProcess] = set()


@atexit.register
def _kill_forgotten() -> None:
    for engine in list(_live):
        engine.kill()


def _toml(value: Any) -> str:
    """A TOML value for a str, bool, int, float or a list of them (JSON's string escapes are
    TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def _table(header: str, values: Mapping[str, Any]) -> list[str]:
    """A TOML table; None values are left out (TOML has no null), so the engine's defaults
    apply."""
    return ["", header, *(f"{key} = {_toml(v)}" for key, v in values.items() if v is not None)]


def _sms_section(sms: Mapping[str, Any], callback_base: str) -> list[str]:
    """``[sms]`` and its ``[[sms.gateways]]``; ``callback_base`` unless ``sms`` names another.

    A gateway is a mapping or a pydantic model (``GatewayServer.settings()``).
    """
    fields = dict(sms)
    if fields.get("callback_base") is None:
        fields["callback_base"] = callback_base
    gateways = fields.pop("gateways", [])
    lines = _table("[sms]", fields)
    for gateway in gateways:
        values = gateway.model_dump() if hasattr(gateway, "model_dump") else dict(gateway)
        lines += _table("[[sms.gateways]]", values)
    return lines


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far; 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    # utime and stime are fields 14 and 15 of stat(5); fields[0] is field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in kB; (0, 0) once it is gone."""
    values = {"VmRSS": 0, "VmHWM": 0}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, rest = line.partition(":")
            if name in values:
                values[name] = int(rest.split()[0])
    return values["VmRSS"], values["VmHWM"]


class EngineError(AssertionError):
    """The engine process did not come up (or died); the message ends with its log tail."""


class EngineProcess:
    """One engine process with its own config and log in ``tmp_dir``."""

    def __init__(
        self,
        tmp_dir: Path,
        *,
        redis_url: str,
        mqtt_url: str,
        instance: str = "ebd-1",
        shared_subscription: bool = False,
        resend: Mapping[str, float] | None = None,
        claim_idle_seconds: float = 60.0,
        client_id: str | None = None,
        sms: Mapping[str, Any] | None = None,
        drills: Mapping[str, Any] | None = None,
        offices: Mapping[str, tuple[str, str, str]] | None = None,
        port: int | None = None,
        log_level: str | None = None,
        start_timeout: float = 30.0,
        dispatch: Mapping[str, Any] | None = None,
    ) -> None:
        """``sms``: the ``[sms]`` section (its ``gateways`` as mappings or ``GatewaySettings``);
        ``callback_base`` defaults to this engine's own API, where gateways post receipts.
        ``drills``: the ``[drills]`` section (``DrillSettings`` fields: str, number, bool or a
        list of them; None values are left out). ``offices``: token → (office id, name,
        region). ``port``: the API's, when the caller had to know it first. ``start_timeout``:
        what ``start`` waits for ``/readyz`` unless told otherwise. ``dispatch``: more of the
        ``[dispatch]`` section (the environment's ``EBD_`` variables never reach the engine)."""
        self.dir = Path(tmp_dir) / f"engine-{instance}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.instance = instance
        self.port = port or free_port()
        self.config_path = self.dir / "ebd.toml"
        self.log_path = self.dir / "engine.log"
        self.start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        lines = [
            f"instance = {_toml(instance)}",
            f"state_dir = {_toml(self.dir / 'state')}",
            *_table("[api]", {"listen": f"127.0.0.1:{self.port}"}),
            *_table(
                "[mqtt]",
                {
                    **mqtt_settings(mqtt_url),
                    "shared_subscription": shared_subscription,
                    # Short, so a forgotten session does not sit in a long-lived broker for days.
                    "session_expiry": 600,
                    "client_id": client_id,
                },
            ),
            *_table("[redis]", {"url": redis_url}),
            *_table("[signing]", signing_settings()),
            *_table("[regions]", {"file": REGIONS_FILE}),
            *_table(
                "[dispatch]", {"claim_idle_seconds": float(claim_idle_seconds), **(dispatch or {})}
            ),
            *_table("[resend]", resend or {}),
            *_table("[log]", {"format": "json", "level": log_level}),
        ]
        if sms is not None:
            lines += _sms_section(sms, f"http://127.0.0.1:{self.port}")
        if drills is not None:
            lines += _table("[drills]", drills)
        for token, (office_id, name, region) in (OFFICES if offices is None else offices).items():
            # A machine whose warnings were approved upstream: the tests and benches send
            # actual red ones directly.
            office = {"id": office_id, "name": name, "region": region, "machine_approved": True}
            lines += _table("[[offices]]", {**office, "token_sha256": hash_token(token)})
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def cpu_seconds(self) -> float:
        """The process's CPU time so far (since its latest start); 0 when there is none."""
        return 0.0 if self.pid is None else cpu_seconds(self.pid)

    def memory_kb(self) -> tuple[int, int]:
        """(VmRSS, VmHWM) in kB; (0, 0) when there is no process."""
        return (0, 0) if self.pid is None else memory_kb(self.pid)

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, timeout: float | None = None) -> None:
        """Start the engine and wait until ``/readyz`` answers 200 (Redis and broker up)."""
        if self.running:
            raise EngineError(f"engine {self.instance} is already running (pid {self.pid})")
        self._proc = self._spawn()
        _live.add(self)
        self.starts += 1
        try:
            await self.wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def _spawn(self) -> subprocess.Popen[bytes]:
        # The developer's EBD_ variables would override the config (environment wins).
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("EBD_")}
        env["EBD_LOG__FORMAT"] = "json"
        with self.log_path.open("ab") as log:
            log.write(f"--- start {self.starts + 1} of {self.instance}\n".encode())
            log.flush()
            # A session of its own: a Ctrl-C of pytest reaches only pytest, which kills it.
            return subprocess.Popen(
                [sys.executable, "-m", "dispatcher", "serve", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=PROJECT_ROOT,
                env=env,
                start_new_session=True,
            )

    async def wait_ready(self, timeout: float | None = None) -> None:
        """Until ``/readyz`` is 200; EngineError with the log tail if the process exits or
        the deadline passes first."""
        timeout = self.start_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last = "no answer"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
            while True:
                proc = self._proc
                if proc is None or proc.poll() is not None:
                    code = None if proc is None else proc.returncode
                    raise EngineError(f"engine {self.instance} exited ({code}){self._tail()}")
                try:
                    async with http.get(f"{self.base_url}/readyz") as response:
                        if response.status == 200:
                            return
                        last = f"{response.status} {await response.text()}"
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last = repr(exc)
                if time.monotonic() > deadline:
                    raise EngineError(
                        f"engine {self.instance} not ready within {timeout:g} s "
                        f"(last /readyz: {last}){self._tail()}"
                    )
                await asyncio.sleep(_POLL)

    def kill(self) -> None:
        """SIGKILL and reap, as a crash would."""
        proc, self._proc = self._proc, None
        _live.discard(self)
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()

    async def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM (the engine shuts down in order), SIGKILL after ``timeout``; the exit code."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, timeout)
        code = proc.poll()
        self.kill()
        return code

    async def restart(self, timeout: float | None = None) -> None:
        """Stop (SIGTERM) if running, then start again: same port, instance and client id."""
        await self.stop()
        await self.start(timeout)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- its log ------------------------------------------------------------------------------

    def log_events(self, event: str | None = None) -> list[dict[str, Any]]:
        """The engine's JSON log lines (all starts), those named ``event`` if given."""
        out = []
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if event is None or record.get("event") == event:
                out.append(record)
        return out

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"

    def _tail(self) -> str:
        return f"; end of {self.log_path}:\n{self.log_tail()}"

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<EngineProcess {self.instance} {self.base_url} {state}>"


def _terminal_row(terminal: SimTerminal | Mapping[str, str]) -> dict[str, str]:
    if isinstance(terminal, SimTerminal):
        return {"id": terminal.id, "region": terminal.region}
    return {"id": terminal["id"], "region": terminal["region"]}


class EngineApi:
    """A small HTTP client of one or more engines (``base_url`` per call or the default); its
    session carries the office's token, and ``timeout`` bounds each request."""

    def __init__(
        self, base_url: str, token: str = PROVINCE_TOKEN, *, timeout: float = 30.0
    ) -> None:
        self.base_url = base_url
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout
        self._http: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._http = aiohttp.ClientSession(
            headers=self._headers, timeout=aiohttp.ClientTimeout(total=self._timeout)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("use `async with EngineApi(...)`")
        return self._http

    async def register(
        self,
        terminals: Iterable[SimTerminal | Mapping[str, str]],
        base_url: str | None = None,
        *,
        part: int | None = None,
    ) -> Provisioning | None:
        """Register terminals (``SimTerminal`` or ``{"id": …, "region": …}``), ``part`` of them
        per request (all in one by default): the API caps a request's size. The ``SimTerminal``
        get their passwords; what the engine handed out for them (None from an engine that
        issues no broker accounts)."""
        terminals = list(terminals)
        body = [_terminal_row(t) for t in terminals]
        url = f"{base_url or self.base_url}/api/v1/terminals"
        step = part or max(1, len(body))
        answers = []
        for start in range(0, max(1, len(body)), step):
            async with self.http.post(url, json=body[start : start + step]) as response:
                assert response.status == 200, await response.text()
                answers.append(await response.json())
        if not answers[-1].get("broker"):
            return None
        return provision([t for t in terminals if isinstance(t, SimTerminal)], answers)

    async def issue(
        self,
        base_url: str | None = None,
        *,
        expires: datetime | None = None,
        **fields: Any,
    ) -> str:
        """Issue an alert (``alert_body`` defaults, red, ``expires_in`` 3600 unless
        ``expires`` is given; a None field is left out); its id once the engine answered 201."""
        if expires is not None:
            fields.update(expires=expires.isoformat(), expires_in=None)
        url = f"{base_url or self.base_url}/api/v1/alerts"
        async with self.http.post(url, json=alert_body(**fields)) as response:
            assert response.status == 201, await response.text()
            return str((await response.json())["id"])

    async def delivery(self, alert_id: str, base_url: str | None = None) -> dict[str, Any]:
        """The alert's delivery: expected, received, played, failed, cancelled, pending,
        resends, escalated, state, …"""
        url = f"{base_url or self.base_url}/api/v1/alerts/{alert_id}"
        async with self.http.get(url) as response:
            assert response.status == 200, await response.text()
            return dict((await response.json())["delivery"])

    async def try_delivery(
        self,
        alert_id: str,
        base_url: str | None = None,
        *,
        timeout: float = 5.0,
        detail: str = "county",
    ) -> dict[str, Any] | None:
        """The delivery (its breakdown down to ``detail``), or None while the engine (or its
        Redis) cannot answer within ``timeout`` seconds."""
        url = f"{base_url or self.base_url}/api/v1/alerts/{alert_id}?detail={detail}"
        try:
            async with self.http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                if response.status != 200:
                    return None
                return dict((await response.json())["delivery"])
        except (aiohttp.ClientError, TimeoutError):
            return None


def local_ports(pid: int) -> set[int]:
    """The local TCP ports of the process's sockets (from /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target.removeprefix("socket:[").removesuffix("]"))
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def outbox_reading(rdb: redis.Redis, engine: EngineProcess) -> bool:
    """The engine waits in a blocking read of a stream (its outbox worker: no SMS here), so
    a new outbox entry would go to it. Redis 7.0 lists a consumer only once it was given an
    entry, so its connections are found by their ports."""
    assert engine.pid is not None
    ports = local_ports(engine.pid)
    return any(
        c["cmd"] == "xreadgroup"
        and "b" in c["flags"]
        and int(c["addr"].rpartition(":")[2]) in ports
        for c in rdb.client_list()
    )
