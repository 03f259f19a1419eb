"""What per-terminal broker credentials cost at province scale (17,498 terminals), two ways:

- ``dynsec``: mosquitto's dynamic-security plugin, its ``dynamic-security.json`` generated
  directly (PBKDF2-SHA512, the plugin's own format), one role per terminal for its own topics
  (the plugin has no %c/%u substitution in 2.0), runtime changes over
  ``$CONTROL/dynamic-security/v1``;
- ``passwd``: ``password_file`` + ``acl_file`` with ``pattern`` rules, two listeners
  (``per_listener_settings true``: the engine's accounts on one, the terminals' on the other
  with ``use_username_as_clientid true``), changes made by rewriting the file and SIGHUP;

and ``anonymous`` as the baseline. For each: provisioning time, broker start, the reconnect
storm (every terminal connects and subscribes its 6 exact topics, clean start) and the fan-out
of one QoS 1 alert on eb/v1/alert/35 (publish to last receipt), revoke/rotate/register times
with every terminal connected, and an ACL matrix (what a terminal and the engine may do).

    .venv/bin/python -m bench.broker_auth                 # 17,498 terminals
    .venv/bin/python -m bench.broker_auth --n 1000 --only dynsec

Standalone: its own mosquitto processes in a temp folder on free ports, the terminals as
``receiver.mqtt_lite`` connections in this process. Prints JSON lines and a summary; writes
``--out`` (JSON). Plain TCP throughout (TLS costs the same for both ways and would dominate).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import getpass
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The project on sys.path (run as a script from bench/, like the other benchmarks).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dispatcher.core.broker_auth import (
    ENGINE_ACL,
    ENGINE_USER,
    TERMINALS_ACL,
    password_line,
)
from receiver.mqtt_lite import (
    ConnectRefused,
    Message,
    MqttConnection,
    MqttLiteError,
    open_connection,
)

N_DEFAULT = 17_498
ITERATIONS = 101  # mosquitto 2.0's PW_DEFAULT_ITERATIONS (src/password_mosq.h)
SALT_LEN = 12  # SALT_LEN there; dynsec refuses any other salt length
ADMIN_USER = "ebd-admin"
ALERT_TOPIC = "eb/v1/alert/35"
CONCURRENCY = 1000  # connects in flight during the storm
SOURCES = [f"127.0.0.{2 + n}" for n in range(60)]
FANOUT_RUNS = 3
CONTROL = "$CONTROL/dynamic-security/v1"

COMMON_CONF = """\
max_connections -1
max_queued_messages 0
max_queued_bytes 0
max_inflight_messages 10000
allow_duplicate_messages true
set_tcp_nodelay true
memory_limit 0
max_keepalive 120
persistence false
log_dest file {log}
log_timestamp_format %Y-%m-%dT%H:%M:%S
user {user}
"""


def now() -> float:
    return time.monotonic()


def emit(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}, ensure_ascii=False), flush=True)


# -- terminals -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Terminal:
    id: str
    village: str
    password: str = field(repr=False)

    def topics(self) -> list[str]:
        v = self.village  # 35 CC DD TTT VVV: province, city, county, town, village
        return [
            f"eb/v1/alert/{v[:2]}",
            f"eb/v1/alert/{v[:4]}",
            f"eb/v1/alert/{v[:6]}",
            f"eb/v1/alert/{v[:9]}",
            f"eb/v1/alert/{v}",
            f"eb/v1/term/{self.id}/cmd",
        ]


def make_terminals(n: int) -> list[Terminal]:
    out = []
    for i in range(n):
        city, county, town, village = 1 + i % 9, 1 + i // 9 % 12, 1 + i // 108 % 20, i // 2160
        code = f"35{city:02d}{county:02d}{town:03d}{village:03d}"
        out.append(Terminal(f"T{code}", code, secrets.token_urlsafe(18)))
    return out


# -- hashes ----------------------------------------------------------------------------------


def pbkdf2(password: str, salt: bytes, iterations: int = ITERATIONS) -> bytes:
    return hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)


def dynsec_password(password: str) -> dict[str, Any]:
    """The three fields of a dynsec client: base64 of a 12-byte salt, base64 of the 64-byte
    PBKDF2-HMAC-SHA512 of the password, and the iterations."""
    salt = os.urandom(SALT_LEN)
    return {
        "password": base64.b64encode(pbkdf2(password, salt)).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": ITERATIONS,
    }


def passwd_line(user: str, password: str) -> str:
    """A mosquitto 2.0 password file line, as the engine writes it."""
    return password_line(user, password) + "\n"


# -- dynsec config -----------------------------------------------------------------------------


def acl(kind: str, topic: str, allow: bool = True) -> dict[str, Any]:
    return {"acltype": kind, "topic": topic, "priority": 0, "allow": allow}


def terminal_role(term_id: str) -> dict[str, Any]:
    return {
        "rolename": f"term-{term_id}",
        "acls": [
            acl("publishClientSend", f"eb/v1/term/{term_id}/ack"),
            acl("publishClientSend", f"eb/v1/term/{term_id}/state"),
            acl("subscribeLiteral", f"eb/v1/term/{term_id}/cmd"),
        ],
    }


def dynsec_client(term: Terminal) -> dict[str, Any]:
    return {
        "username": term.id,
        "clientid": term.id,
        **dynsec_password(term.password),
        "roles": [{"rolename": f"term-{term.id}"}, {"rolename": "terminal"}],
    }


def dynsec_config(terms: list[Terminal], engine_pw: str, admin_pw: str) -> dict[str, Any]:
    shared_roles = [
        {
            # Every terminal: read any alert topic (exact region topics are what it uses).
            "rolename": "terminal",
            "acls": [acl("subscribePattern", "eb/v1/alert/#")],
        },
        {
            "rolename": "engine",
            "acls": [
                acl("publishClientSend", "eb/v1/alert/#"),
                acl("publishClientSend", "eb/v1/term/+/cmd"),
                acl("subscribeLiteral", "$share/ebd/eb/v1/term/+/ack"),
                acl("subscribeLiteral", "$share/ebd/eb/v1/term/+/state"),
                acl("subscribeLiteral", "eb/v1/term/+/ack"),
                acl("subscribeLiteral", "eb/v1/term/+/state"),
            ],
        },
        {
            "rolename": "admin",
            "acls": [
                acl("publishClientSend", f"{CONTROL}/#"),
                acl("subscribePattern", f"{CONTROL}/#"),
                # $CONTROL topics never fall through to defaultACLAccess: grant the replies.
                acl("publishClientReceive", f"{CONTROL}/#"),
            ],
        },
    ]
    clients = [
        {"username": ENGINE_USER, **dynsec_password(engine_pw), "roles": [{"rolename": "engine"}]},
        {"username": ADMIN_USER, **dynsec_password(admin_pw), "roles": [{"rolename": "admin"}]},
        *(dynsec_client(t) for t in terms),
    ]
    return {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": True,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": shared_roles + [terminal_role(t.id) for t in terms],
    }


# The ACLs the product ships (dispatcher.core.broker_auth): what is measured is what runs.


# -- the broker ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def replace_file(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it over: the broker never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


class Broker:
    def __init__(self, folder: Path, conf: str, ports: list[int]) -> None:
        self.folder = folder
        self.ports = ports
        self.conf_path = folder / "mosquitto.conf"
        self.conf_path.write_text(conf)
        self.log = folder / "mosquitto.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0

    def start(self, timeout: float = 120.0) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        t0 = now()
        self.proc = subprocess.Popen(  # noqa: S603  our own arguments
            [binary, "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=(self.folder / "stderr.log").open("wb"),
        )
        deadline = t0 + timeout
        for port in self.ports:
            while True:
                if self.proc.poll() is not None:
                    err = (self.folder / "stderr.log").read_text()
                    log = self.log.read_text() if self.log.exists() else ""
                    raise RuntimeError(f"mosquitto exited: {err[-2000:]} {log[-2000:]}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        break
                except OSError:
                    if now() > deadline:
                        raise
                    time.sleep(0.01)  # polling the listener, bounded by the deadline
        self.start_seconds = now() - t0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def sighup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def running(broker: Broker) -> Iterator[Broker]:
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


# -- clients ---------------------------------------------------------------------------------


class Fanout:
    """Counts receipts of one tag on the alert topic across every terminal."""

    def __init__(self) -> None:
        self.tag = b""
        self.count = 0
        self.target = 0
        self.last = 0.0
        self.done: asyncio.Future[None] | None = None

    def arm(self, tag: bytes, target: int) -> asyncio.Future[None]:
        self.tag, self.count, self.target = tag, 0, target
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def on_message(self, message: Message) -> None:
        if message.topic == ALERT_TOPIC and message.payload == self.tag:
            self.count += 1
            if self.count == self.target and self.done is not None and not self.done.done():
                self.last = now()
                self.done.set_result(None)


async def connect(
    port: int,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    *,
    source: str | None = None,
    on_message: Callable[[Message], None] | None = None,
) -> MqttConnection:
    conn, _ = await open_connection(
        "127.0.0.1",
        port,
        client_id,
        source_address=source,
        timeout=60,
        on_message=on_message,
        keepalive=120,
        clean_start=True,
        session_expiry=0,
        username=username,
        password=password,
    )
    return conn


async def storm(
    port: int, terms: list[Terminal], fanout: Fanout, *, credentials: bool
) -> tuple[float, dict[str, MqttConnection]]:
    """Every terminal connects and subscribes its 6 topics; seconds until the last SUBACK."""
    conns: dict[str, MqttConnection] = {}
    gate = asyncio.Semaphore(CONCURRENCY)
    failures: list[str] = []

    async def one(i: int, term: Terminal) -> None:
        async with gate:
            for attempt in range(5):
                try:
                    conn = await connect(
                        port,
                        term.id,
                        term.id if credentials else None,
                        term.password if credentials else None,
                        source=SOURCES[i % len(SOURCES)],
                        on_message=fanout.on_message,
                    )
                    codes = await asyncio.wait_for(conn.subscribe(term.topics()), 60)
                    if any(code >= 0x80 for code in codes):
                        failures.append(f"{term.id}: SUBACK {codes}")
                    conns[term.id] = conn
                    return
                except (OSError, TimeoutError, MqttLiteError) as exc:
                    if attempt == 4 or isinstance(exc, ConnectRefused):
                        failures.append(f"{term.id}: {exc!r}")
                        return
                    await asyncio.sleep(0.5 * (attempt + 1))

    t0 = now()
    await asyncio.gather(*(one(i, t) for i, t in enumerate(terms)))
    elapsed = now() - t0
    if failures:
        emit("storm_failures", count=len(failures), first=failures[:5])
    return elapsed, conns


async def measure_fanout(engine: MqttConnection, fanout: Fanout, target: int) -> list[float]:
    times = []
    for run in range(FANOUT_RUNS):
        tag = f"alert-{run}-{secrets.token_hex(4)}".encode()
        done = fanout.arm(tag, target)
        t0 = now()
        await engine.publish_acked(ALERT_TOPIC, tag)
        try:
            await asyncio.wait_for(done, 120)
            times.append(round(fanout.last - t0, 3))
        except TimeoutError:
            emit("fanout_incomplete", received=fanout.count, target=target)
            times.append(float("nan"))
    return times


async def close_all(conns: dict[str, MqttConnection]) -> None:
    for conn in conns.values():
        conn.abort()
    if conns:
        await asyncio.wait([c.closed for c in conns.values()], timeout=60)


async def expect_refused(port: int, client_id: str, username: str, password: str) -> str:
    """'refused 0x..' or 'ACCEPTED' (then closed)."""
    try:
        conn = await connect(port, client_id, username, password)
    except ConnectRefused as exc:
        return f"refused 0x{exc.reason_code:02x}"
    conn.disconnect()
    await conn.closed
    return "ACCEPTED"


async def wait_until(check: Callable[[], Any], timeout: float, step: float = 0.005) -> float:
    """Seconds until ``check()`` is true (polling, bounded), or NaN."""
    t0 = now()
    while now() - t0 < timeout:
        if await check() if asyncio.iscoroutinefunction(check) else check():
            return now() - t0
        await asyncio.sleep(step)
    return float("nan")


async def forbidden_publish(port: int, term: Terminal, topic: str) -> str:
    """Publish on a link of its own: the PUBACK's reason code, and whether the broker then
    dropped the link (mosquitto 2.0 does after a denied PUBLISH)."""
    conn = await connect(port, term.id, term.id, term.password)
    try:
        code: int | str = await asyncio.wait_for(conn.publish_acked(topic, b"forged"), 10)
    except MqttLiteError as exc:
        code = f"no PUBACK ({type(exc).__name__})"
    try:
        await asyncio.wait_for(asyncio.shield(conn.closed), 2)
        after = "link dropped by the broker"
    except TimeoutError:
        after = "link kept"
        conn.disconnect()
        await conn.closed
    return f"PUBACK {code if isinstance(code, str) else hex(code)}; {after}"


async def acl_matrix(
    term_port: int, engine_port: int, engine_user: tuple[str, str], a: Terminal, b: Terminal
) -> dict[str, Any]:
    """What terminal ``a`` and the engine may do (``b`` is another terminal)."""
    got: list[Message] = []
    engine = await connect(engine_port, "ebd-engine-acl", *engine_user, on_message=got.append)
    result: dict[str, Any] = {}
    try:
        result["engine subscribe $share/ebd/eb/v1/term/+/ack,+/state"] = await engine.subscribe(
            ["$share/ebd/eb/v1/term/+/ack", "$share/ebd/eb/v1/term/+/state"]
        )
        a_got: list[Message] = []
        conn_a = await connect(term_port, a.id, a.id, a.password, on_message=a_got.append)
        conn_b = await connect(term_port, b.id, b.id, b.password)
        result[
            "a subscribe [alert/35, own cmd, b's cmd, term/+/ack, alert/#]"
        ] = await conn_a.subscribe(
            [
                ALERT_TOPIC,
                f"eb/v1/term/{a.id}/cmd",
                f"eb/v1/term/{b.id}/cmd",
                "eb/v1/term/+/ack",
                "eb/v1/alert/#",
            ]
        )
        result["a publish own ack"] = await conn_a.publish_acked(f"eb/v1/term/{a.id}/ack", b"own")
        result["a publish own state"] = await conn_a.publish_acked(
            f"eb/v1/term/{a.id}/state", b"state"
        )
        result["engine publish alert"] = await engine.publish_acked(ALERT_TOPIC, b"real-alert")
        result["engine publish a's cmd"] = await engine.publish_acked(
            f"eb/v1/term/{a.id}/cmd", b"real-cmd"
        )
        result["engine publish b's cmd"] = await engine.publish_acked(
            f"eb/v1/term/{b.id}/cmd", b"b-cmd"
        )
        # Both the engine's and a's deliveries come before these round trips complete.
        await engine.publish_acked("eb/v1/alert/sync", b"")
        await conn_a.publish_acked(f"eb/v1/term/{a.id}/state", b"sync")
        await asyncio.sleep(0.2)  # deliveries to other links are not ordered with our PUBACKs
        result["engine received"] = sorted({(m.topic, m.payload.decode()) for m in got})
        result["a received"] = sorted({(m.topic, m.payload.decode()) for m in a_got})
        result["a connects as client id of b"] = await expect_refused(
            term_port, b.id, a.id, a.password
        )
        result["a connects with client id 'x'"] = await expect_refused(
            term_port, "x-" + a.id, a.id, a.password
        )
        result["a wrong password"] = await expect_refused(term_port, a.id, a.id, "nope")
        result["a still connected after the attempts"] = conn_a.is_open
        result["b still connected after the attempts"] = conn_b.is_open
        conn_b.disconnect()
        result["engine account on the terminal listener"] = await expect_refused(
            term_port, "ebd-engine-x", *engine_user
        )
        result["a on the engine listener"] = await expect_refused(
            engine_port, a.id, a.id, a.password
        )
        conn_a.disconnect()
        await conn_a.closed
        for what, topic in [
            ("a publish b's ack", f"eb/v1/term/{b.id}/ack"),
            ("a publish alert", ALERT_TOPIC),
            ("a publish b's cmd", f"eb/v1/term/{b.id}/cmd"),
        ]:
            result[what] = await forbidden_publish(term_port, a, topic)
    finally:
        engine.disconnect()
    return result


# -- the runs --------------------------------------------------------------------------------


def note_start(row: dict[str, Any], broker: Broker) -> None:
    """How long the broker took to start, and its memory then."""
    row["start_seconds"] = round(broker.start_seconds, 3)
    row["rss_after_start_mib"] = round(rss_kib(broker.pid) / 1024, 1)


async def kick(
    admin: Any, replies: asyncio.Queue[dict[str, Any]], victim: Any, commands: list[Any]
) -> tuple[float, dict[str, Any]]:
    """Send dynsec ``commands`` that should cut ``victim``'s link: (seconds until it was cut,
    the plugin's reply)."""
    t0 = now()
    admin.publish(CONTROL, json.dumps({"commands": commands}).encode(), qos=1)
    await asyncio.wait_for(asyncio.shield(victim.closed), 120)
    kicked = now() - t0
    return kicked, await asyncio.wait_for(replies.get(), 120)


async def acl_storm_fanout(
    variant: str,
    row: dict[str, Any],
    broker: Broker,
    ports: tuple[int, int],
    terms: list[Terminal],
    engine_pw: str,
) -> tuple[Any, Any]:
    """What both variants measure once their broker runs: the ACL matrix, then the storm and
    the fan-out (into ``row``); the storm's connections and the engine's."""
    term_port, engine_port = ports
    row["acl"] = await acl_matrix(
        term_port, engine_port, (ENGINE_USER, engine_pw), terms[0], terms[1]
    )
    emit(f"{variant}_acl", **row["acl"])
    storm_row, conns, engine = await storm_and_fanout(
        broker, term_port, engine_port, terms, (ENGINE_USER, engine_pw), credentials=True
    )
    row.update(storm_row)
    return conns, engine


async def storm_and_fanout(
    broker: Broker,
    term_port: int,
    engine_port: int,
    terms: list[Terminal],
    engine_user: tuple[str, str] | None,
    *,
    credentials: bool,
) -> tuple[dict[str, Any], dict[str, MqttConnection], MqttConnection]:
    fanout = Fanout()
    cpu0 = cpu_seconds(broker.pid)
    seconds, conns = await storm(term_port, terms, fanout, credentials=credentials)
    cpu1 = cpu_seconds(broker.pid)
    row: dict[str, Any] = {
        "storm_seconds": round(seconds, 2),
        "storm_connected": len(conns),
        "storm_broker_cpu_s": round(cpu1 - cpu0, 2),
        "broker_rss_mib": round(rss_kib(broker.pid) / 1024, 1),
    }
    emit("storm", **row)
    user, password = engine_user or (None, None)
    engine = await connect(engine_port, "ebd-engine-bench", user, password)
    cpu0 = cpu_seconds(broker.pid)
    times = await measure_fanout(engine, fanout, len(conns))
    row["fanout_seconds"] = times
    row["fanout_median"] = statistics.median(times)
    row["fanout_broker_cpu_s_per_run"] = round((cpu_seconds(broker.pid) - cpu0) / len(times), 3)
    emit("fanout", seconds=times)
    return row, conns, engine


def make_folder(folder: Path) -> None:
    folder.mkdir(parents=True)


def base_conf(folder: Path) -> str:
    return COMMON_CONF.format(log=folder / "mosquitto.log", user=getpass.getuser())


async def run_anonymous(folder: Path, terms: list[Terminal]) -> dict[str, Any]:
    make_folder(folder)
    port = free_port()
    conf = base_conf(folder) + f"listener {port} 127.0.0.1\nallow_anonymous true\n"
    with running(Broker(folder, conf, [port])) as broker:
        row, conns, engine = await storm_and_fanout(
            broker, port, port, terms, None, credentials=False
        )
        row["start_seconds"] = round(broker.start_seconds, 3)
        engine.disconnect()
        await close_all(conns)
    return row


def plugin_path() -> str:
    for candidate in (
        "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so",
        "/usr/lib/mosquitto_dynamic_security.so",
    ):
        if Path(candidate).exists():
            return candidate
    raise FileNotFoundError("mosquitto_dynamic_security.so")


async def control(
    admin: MqttConnection, replies: asyncio.Queue[dict[str, Any]], commands: list[dict[str, Any]]
) -> tuple[float, dict[str, Any]]:
    """Send commands in one message; seconds until the response and the response."""
    t0 = now()
    admin.publish(CONTROL, json.dumps({"commands": commands}).encode(), qos=1)
    reply = await asyncio.wait_for(replies.get(), 120)
    return now() - t0, reply


async def run_dynsec(folder: Path, terms: list[Terminal]) -> dict[str, Any]:
    make_folder(folder)
    engine_pw, admin_pw = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    row: dict[str, Any] = {}
    t0 = now()
    config = dynsec_config(terms, engine_pw, admin_pw)
    row["generate_hash_seconds"] = round(now() - t0, 2)
    path = folder / "dynamic-security.json"
    t0 = now()
    path.write_text(json.dumps(config, indent=1))
    row["generate_write_seconds"] = round(now() - t0, 2)
    row["json_mib"] = round(path.stat().st_size / 2**20, 1)
    emit("dynsec_generated", **row)
    term_port, engine_port = free_port(), free_port()
    conf = base_conf(folder) + (
        "per_listener_settings false\n"
        f"plugin {plugin_path()}\n"
        f"plugin_opt_config_file {path}\n"
        "allow_anonymous false\n"
        f"listener {engine_port} 127.0.0.1\n"
        f"listener {term_port} 127.0.0.1\n"
    )
    with running(Broker(folder, conf, [engine_port, term_port])) as broker:
        note_start(row, broker)
        emit("dynsec_started", seconds=row["start_seconds"], rss=row["rss_after_start_mib"])
        conns, engine = await acl_storm_fanout(
            "dynsec", row, broker, (term_port, engine_port), terms, engine_pw
        )
        replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        admin = await connect(
            engine_port,
            "ebd-admin-1",
            ADMIN_USER,
            admin_pw,
            on_message=lambda m: replies.put_nowait(json.loads(m.payload)),
        )
        codes = await admin.subscribe([f"{CONTROL}/response"])
        if codes != [1]:
            raise RuntimeError(f"admin subscription refused: {codes}")
        # Register: one new terminal (client + its role), then it connects.
        new = Terminal("T-new-0001", "350102001999", secrets.token_urlsafe(18))
        pw = dynsec_password(new.password)
        del pw["iterations"]
        role = terminal_role(new.id)
        seconds, reply = await control(
            admin,
            replies,
            [
                {"command": "createRole", "rolename": role["rolename"], "acls": role["acls"]},
                {
                    "command": "createClient",
                    "username": new.id,
                    "clientid": new.id,
                    "password": new.password,
                    "roles": [{"rolename": role["rolename"]}, {"rolename": "terminal"}],
                },
            ],
        )
        t_ok = now()
        verdict = await expect_refused(term_port, new.id, new.id, new.password)
        row["register_one"] = {
            "response_seconds": round(seconds, 3),
            "then_connect": verdict,
            "connect_seconds": round(now() - t_ok, 3),
            "reply": reply,
        }
        emit("dynsec_register", **row["register_one"])
        # Register 100 in one message (each command rewrites the whole JSON file).
        batch = [
            Terminal(f"T-new-{n:04d}", "350102001999", secrets.token_urlsafe(18))
            for n in range(2, 102)
        ]
        commands: list[dict[str, Any]] = []
        for t in batch:
            r = terminal_role(t.id)
            commands.append({"command": "createRole", "rolename": r["rolename"], "acls": r["acls"]})
            commands.append(
                {
                    "command": "createClient",
                    "username": t.id,
                    "clientid": t.id,
                    "password": t.password,
                    "roles": [{"rolename": r["rolename"]}, {"rolename": "terminal"}],
                }
            )
        seconds, reply = await control(admin, replies, commands)
        errors = [r for r in reply.get("responses", []) if r.get("error")]
        row["register_100_seconds"] = round(seconds, 2)
        row["register_100_errors"] = errors[:3]
        emit("dynsec_register_100", seconds=row["register_100_seconds"], errors=len(errors))
        # Rotate: a connected terminal gets a new password; its link is kicked.
        victim = terms[2]
        new_pw = secrets.token_urlsafe(18)
        t0 = now()
        set_password = {"command": "setClientPassword", "username": victim.id, "password": new_pw}
        kicked, reply = await kick(admin, replies, conns[victim.id], [set_password])
        row["rotate"] = {
            "kicked_after_seconds": round(kicked, 3),
            "old_password": await expect_refused(term_port, victim.id, victim.id, victim.password),
            "new_password": await expect_refused(term_port, victim.id, victim.id, new_pw),
            "reply": reply,
        }
        emit("dynsec_rotate", **row["rotate"])
        # Revoke: delete a connected terminal (and its role).
        victim = terms[3]
        t0 = now()
        deletes = [
            {"command": "deleteClient", "username": victim.id},
            {"command": "deleteRole", "rolename": f"term-{victim.id}"},
        ]
        kicked, reply = await kick(admin, replies, conns[victim.id], deletes)
        row["revoke"] = {
            "kicked_after_seconds": round(kicked, 3),
            "response_seconds": round(now() - t0, 3),
            "reconnect": await expect_refused(term_port, victim.id, victim.id, victim.password),
            "reply": reply,
        }
        emit("dynsec_revoke", **row["revoke"])
        # Disable (a revoke that keeps the account): also kicks.
        victim = terms[4]
        victim_conn = conns[victim.id]
        t0 = now()
        seconds, reply = await control(
            admin, replies, [{"command": "disableClient", "username": victim.id}]
        )
        await asyncio.wait_for(asyncio.shield(victim_conn.closed), 120)
        row["disable"] = {
            "kicked_after_seconds": round(now() - t0, 3),
            "reconnect": await expect_refused(term_port, victim.id, victim.id, victim.password),
        }
        emit("dynsec_disable", **row["disable"])
        row["json_mib_after"] = round(path.stat().st_size / 2**20, 1)
        admin.disconnect()
        engine.disconnect()
        await close_all(conns)
    return row


def provision_passwd(
    folder: Path, terms: list[Terminal], engine_pw: str
) -> tuple[dict[str, Any], list[str]]:
    """The password files (hashed here) and what the tool would take for the same."""
    folder.mkdir()
    row: dict[str, Any] = {}
    term_passwd, engine_passwd = folder / "terminals.passwd", folder / "engine.passwd"
    t0 = now()
    lines = [passwd_line(t.id, t.password) for t in terms]
    row["generate_hash_seconds"] = round(now() - t0, 2)
    t0 = now()
    replace_file(term_passwd, "".join(lines))
    row["generate_write_seconds"] = round(now() - t0, 3)
    row["passwd_mib"] = round(term_passwd.stat().st_size / 2**20, 2)
    engine_passwd.write_text(passwd_line(ENGINE_USER, engine_pw))
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    # The tool's own bulk path: a plaintext user:password file hashed in place (-U).
    plain = folder / "plain.passwd"
    plain.write_text("".join(f"{t.id}:{t.password}\n" for t in terms))
    t0 = now()
    subprocess.run([tool, "-U", str(plain)], check=True)  # noqa: S603
    row["mosquitto_passwd_U_seconds"] = round(now() - t0, 2)
    plain.unlink()
    # One account added with the tool (-b) to the full file: it rewrites the whole file.
    scratch = folder / "scratch.passwd"
    shutil.copy(term_passwd, scratch)
    t0 = now()
    for n in range(20):
        subprocess.run([tool, "-b", str(scratch), f"T-x{n}", "pw-x"], check=True)  # noqa: S603
    row["mosquitto_passwd_b_one_seconds"] = round((now() - t0) / 20, 4)
    scratch.unlink()
    (folder / "terminals.acl").write_text(TERMINALS_ACL)
    (folder / "engine.acl").write_text(ENGINE_ACL)
    return row, lines


async def run_passwd(folder: Path, terms: list[Terminal]) -> dict[str, Any]:
    engine_pw = secrets.token_urlsafe(24)
    row, lines = provision_passwd(folder, terms, engine_pw)
    term_passwd, engine_passwd = folder / "terminals.passwd", folder / "engine.passwd"
    emit("passwd_generated", **row)
    term_port, engine_port = free_port(), free_port()
    conf = base_conf(folder) + (
        "per_listener_settings true\n"
        f"listener {engine_port} 127.0.0.1\n"
        "allow_anonymous false\n"
        f"password_file {engine_passwd}\n"
        f"acl_file {folder / 'engine.acl'}\n"
        f"listener {term_port} 127.0.0.1\n"
        "allow_anonymous false\n"
        "use_username_as_clientid true\n"
        f"password_file {term_passwd}\n"
        f"acl_file {folder / 'terminals.acl'}\n"
    )
    with running(Broker(folder, conf, [engine_port, term_port])) as broker:
        note_start(row, broker)
        conns, engine = await acl_storm_fanout(
            "passwd", row, broker, (term_port, engine_port), terms, engine_pw
        )
        # One change file: rotate terms[2], revoke terms[3], register a new terminal.
        rotated, revoked = terms[2], terms[3]
        new = Terminal("T-new-0001", "350102001999", secrets.token_urlsafe(18))
        new_pw = secrets.token_urlsafe(18)
        t0 = now()
        changed = [
            passwd_line(rotated.id, new_pw)
            if t.id == rotated.id
            else ("" if t.id == revoked.id else line)
            for t, line in zip(terms, lines, strict=True)
        ]
        changed.append(passwd_line(new.id, new.password))
        replace_file(term_passwd, "".join(changed))
        row["rewrite_one_change_seconds"] = round(now() - t0, 3)
        # The engine's link: how long is the broker unresponsive while it reloads?
        ping_engine = engine
        cpu0 = cpu_seconds(broker.pid)
        t0 = now()
        broker.sighup()
        puback_rtts: list[float] = []

        async def pinger() -> None:
            while True:
                t = now()
                await ping_engine.publish_acked("eb/v1/alert/ping", b"")
                puback_rtts.append(now() - t)
                await asyncio.sleep(0.01)

        ping_task = asyncio.create_task(pinger())
        try:
            await asyncio.wait_for(asyncio.shield(conns[rotated.id].closed), 120)
            rotated_kicked = now() - t0
            await asyncio.wait_for(asyncio.shield(conns[revoked.id].closed), 120)
            revoked_kicked = now() - t0

            async def new_can_connect() -> bool:
                return await expect_refused(term_port, new.id, new.id, new.password) == "ACCEPTED"

            new_ok = await wait_until(new_can_connect, 60, step=0.01)
            new_ok_total = now() - t0
            await asyncio.sleep(1.0)
        finally:
            ping_task.cancel()
            with suppress(asyncio.CancelledError):
                await ping_task
        row["sighup"] = {
            "rotated_kicked_after_seconds": round(rotated_kicked, 3),
            "revoked_kicked_after_seconds": round(revoked_kicked, 3),
            "new_account_connects_after_seconds": round(new_ok_total, 3),
            "new_account_poll_seconds": round(new_ok, 3),
            "max_engine_puback_rtt_seconds": round(max(puback_rtts, default=float("nan")), 3),
            "broker_cpu_seconds": round(cpu_seconds(broker.pid) - cpu0, 3),
            "old_password": await expect_refused(
                term_port, rotated.id, rotated.id, rotated.password
            ),
            "new_password": await expect_refused(term_port, rotated.id, rotated.id, new_pw),
            "revoked_reconnect": await expect_refused(
                term_port, revoked.id, revoked.id, revoked.password
            ),
            "untouched_still_connected": sum(
                c.is_open for k, c in conns.items() if k not in (rotated.id, revoked.id)
            ),
        }
        emit("passwd_sighup", **row["sighup"])
        engine.disconnect()
        await close_all(conns)
    return row


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    terms = make_terminals(args.n)
    results: dict[str, Any] = {"n": args.n, "mosquitto": "2.0.11", "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="broker-auth-") as tmp_dir:
        tmp = args.dir or tmp_dir
        for name in args.only:
            emit("start", variant=name, n=args.n)
            run = {"anonymous": run_anonymous, "dynsec": run_dynsec, "passwd": run_passwd}[name]
            results[name] = await run(Path(tmp) / name, terms)
            emit("done", variant=name)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=N_DEFAULT)
    parser.add_argument(
        "--only",
        nargs="+",
        default=["anonymous", "dynsec", "passwd"],
        choices=["anonymous", "dynsec", "passwd"],
    )
    parser.add_argument("--dir", type=Path, help="keep the brokers' folders here")
    parser.add_argument(
        "--out", type=Path, default=Path(tempfile.gettempdir()) / "broker_auth.json"
    )
    args = parser.parse_args()
    results = asyncio.run(main_async(args))
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str))
    print(json.dumps(results, indent=2, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
