"""The embedded mosquitto and redis-server: start, answer, survive restarts, fail clearly."""

from __future__ import annotations

import asyncio
import resource
import socket
import uuid
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
import redis
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from dispatcher.core.broker_auth import ENGINE_USER
from dispatcher.core.errors import ServiceError
from dispatcher.embedded import processes as services
from dispatcher.embedded.configs import (
    BrokerFiles,
    render_docker_configs,
    render_mosquitto_conf,
    render_redis_conf,
)
from dispatcher.embedded.processes import (
    EmbeddedServices,
    ManagedProcess,
    MosquittoServer,
    RedisServer,
    find_binary,
)
from receiver.mqtt_lite import tls_context
from tests.helpers import ROOT, unique, wait_for
from tests.support.broker import grant

SERVER_CLASSES = [MosquittoServer, RedisServer]


class SessionClient(aiomqtt.Client):
    """An aiomqtt client that keeps the CONNACK's session-present flag, which aiomqtt drops."""

    session_present: bool | None = None

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        self.session_present = flags.session_present
        super()._on_connect(client, userdata, flags, reason_code, properties)


_PASSWORDS: dict[str, str] = {}


async def terminal(server: MosquittoServer, identifier: str) -> SessionClient:
    """A client with a persistent MQTT 5 session, as a field terminal connects: TLS, its own
    account (granted once)."""
    if identifier not in _PASSWORDS:
        _PASSWORDS.update(await grant(server, [identifier]))
    properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
    properties.SessionExpiryInterval = 3600
    return SessionClient(
        server.host,
        server.terminal_port,
        identifier=identifier,
        username=identifier,
        password=_PASSWORDS[identifier],
        tls_context=tls_context(server.ca_file.read_text(encoding="ascii")),
        protocol=aiomqtt.ProtocolVersion.V5,
        clean_start=False,
        properties=properties,
    )


def engine(server: MosquittoServer) -> aiomqtt.Client:
    return aiomqtt.Client(
        server.host,
        server.port,
        identifier=unique("engine"),
        username=ENGINE_USER,
        password=server.engine_password,
        protocol=aiomqtt.ProtocolVersion.V5,
    )


async def next_message(client: aiomqtt.Client) -> aiomqtt.Message:
    async with asyncio.timeout(5.0):
        async for message in client.messages:
            return message
    raise AssertionError("message iterator ended")  # pragma: no cover


async def queue_one_message(server: MosquittoServer, identifier: str, topic: str) -> None:
    """Subscribe a persistent session, leave, then have the engine publish to it (QoS 1)."""
    async with await terminal(server, identifier) as term:
        assert term.session_present is False
        await term.subscribe(topic, qos=1)
    async with engine(server) as eng:
        # Returns on PUBACK: from here the message is the broker's to keep.
        await eng.publish(topic, b'{"v":1,"id":"a1"}', qos=1)


# -- starting and answering --------------------------------------------------------------------


def test_session_redis_answers_ping_on_its_own_port(redis_server: RedisServer) -> None:
    assert redis_server.running
    assert redis_server.port != 6379  # never the machine's own Redis
    with redis.Redis.from_url(redis_server.url) as client:
        assert client.ping() is True


async def test_session_broker_carries_a_qos1_message(mosquitto: MosquittoServer) -> None:
    assert mosquitto.running
    assert mosquitto.port != 1883  # never the machine's own broker
    topic = f"eb/v1/alert/35/{uuid.uuid4().hex[:4]}"
    async with await terminal(mosquitto, unique("term")) as term, engine(mosquitto) as eng:
        await term.subscribe(topic, qos=1)
        await eng.publish(topic, b"hello", qos=1)
        message = await next_message(term)
    assert message.payload == b"hello"


def test_embedded_services_start_both_and_stop_both(tmp_path: Path) -> None:
    with EmbeddedServices(tmp_path) as embedded:
        assert embedded.mqtt.running
        assert embedded.redis.running
        assert embedded.mqtt.port != embedded.redis.port
        assert embedded.mqtt.bare_url == f"mqtt://127.0.0.1:{embedded.mqtt.port}"
        assert embedded.redis.bare_url == f"redis://127.0.0.1:{embedded.redis.port}/0"
        # The URLs the engine uses carry its credentials; nobody gets in without them.
        assert embedded.mqtt.url.startswith("mqtt://ebd-engine:")
        assert embedded.redis.url.startswith("redis://ebd:")
    assert not embedded.mqtt.running
    assert not embedded.redis.running
    assert embedded.mqtt.pid is None
    assert (tmp_path / "mosquitto" / "mosquitto.log").is_file()
    assert (tmp_path / "redis" / "redis-server.log").is_file()


@pytest.mark.parametrize("server_class", SERVER_CLASSES)
def test_child_gets_the_hard_open_files_limit(
    tmp_path: Path, server_class: type[ManagedProcess]
) -> None:
    """Even when the engine runs with a low soft limit, each broker socket is a file."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))
    try:
        with server_class(tmp_path) as server:
            limits = Path(f"/proc/{server.pid}/limits").read_text()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    open_files = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    assert open_files.split()[3:5] == [str(hard), str(hard)]


def test_starting_a_running_server_is_an_error(fresh_redis: RedisServer) -> None:
    with pytest.raises(ServiceError, match="already running"):
        fresh_redis.start()


def test_stop_and_kill_are_harmless_when_not_running(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.stop()
    server.kill()
    assert not server.running
    assert server.pid is None


# -- restarts keep state -----------------------------------------------------------------------


def test_redis_keeps_an_acknowledged_write_through_sigkill(fresh_redis: RedisServer) -> None:
    """A write Redis answered survives kill -9: it is in the AOF before the reply.

    SIGKILL leaves the kernel's page cache intact, so this proves the append-only file; that
    each write is also fsynced (surviving a power cut) is pinned by the running config.
    """
    with redis.Redis.from_url(fresh_redis.url) as client:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        client.set("alert:a1", "issued")
    port = fresh_redis.port
    old_pid = fresh_redis.pid

    fresh_redis.kill()
    assert not fresh_redis.running
    fresh_redis.restart()

    assert fresh_redis.port == port
    assert fresh_redis.pid != old_pid
    with redis.Redis.from_url(fresh_redis.url) as client:
        assert client.get("alert:a1") == b"issued"


async def test_broker_restart_keeps_a_persistent_session_and_its_queued_message(
    fresh_mosquitto: MosquittoServer,
) -> None:
    """An offline terminal's session and QoS 1 message outlive a broker stop and start.

    stop() sends SIGTERM, on which mosquitto writes its database; see the SIGKILL test for
    what an autosave keeps.
    """
    identifier = unique("term")
    topic = f"eb/v1/term/{identifier}/cmd"
    await queue_one_message(fresh_mosquitto, identifier, topic)

    await asyncio.to_thread(fresh_mosquitto.restart)

    async with await terminal(fresh_mosquitto, identifier) as term:
        assert term.session_present is True
        message = await next_message(term)
    assert message.topic.matches(topic)
    assert message.payload == b'{"v":1,"id":"a1"}'


@pytest.mark.slow
async def test_broker_autosave_keeps_a_queued_message_through_sigkill(
    fresh_mosquitto: MosquittoServer,
) -> None:
    """Mosquitto writes its database only on autosave and shutdown; after kill -9 it comes
    back with the last autosave. So a message queued before an autosave survives, and one that
    arrived after it would be lost (the engine's deadline sweeper resends those).
    """
    identifier = unique("term")
    topic = f"eb/v1/term/{identifier}/cmd"
    database = fresh_mosquitto.data_dir / "mosquitto.db"
    await queue_one_message(fresh_mosquitto, identifier, topic)

    # Each save writes a new file and renames it over the old one: a new inode.
    def saved_version() -> tuple[int, int] | None:
        try:
            stat = database.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns

    after_publish = saved_version()
    await wait_for(
        lambda: saved_version() != after_publish,
        timeout=15.0,  # three autosave intervals of 5 s
        message="mosquitto autosave after the publish",
    )
    await asyncio.to_thread(fresh_mosquitto.kill)
    await asyncio.to_thread(fresh_mosquitto.restart)

    async with await terminal(fresh_mosquitto, identifier) as term:
        assert term.session_present is True
        message = await next_message(term)
    assert message.payload == b'{"v":1,"id":"a1"}'


# -- failing clearly ---------------------------------------------------------------------------


def test_find_binary_of_an_unknown_program_says_what_to_install() -> None:
    with pytest.raises(ServiceError) as caught:
        find_binary("definitely-not-here")
    assert caught.value.message == (
        "definitely-not-here not found: install it with "
        "`sudo apt-get install definitely-not-here` (Debian/Ubuntu)"
    )


@pytest.mark.parametrize("binary", ["mosquitto", "redis-server"])
def test_missing_server_binary_gives_the_install_command(
    binary: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(services, "_SBIN_DIRS", ())
    with pytest.raises(ServiceError) as caught:
        find_binary(binary)
    assert caught.value.message == (
        f"{binary} not found: install it with `sudo apt-get install {binary}` (Debian/Ubuntu)"
    )


@pytest.mark.parametrize("server_class", SERVER_CLASSES)
def test_port_already_in_use_is_a_clear_error(
    tmp_path: Path, server_class: type[ManagedProcess]
) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = server_class(tmp_path, port=port)
        with pytest.raises(ServiceError, match=rf"port {port} on 127\.0\.0\.1 is already in use"):
            server.start()
    assert not server.running


@pytest.mark.parametrize("server_class", SERVER_CLASSES)
def test_server_that_fails_to_bind_reports_the_end_of_its_log(
    tmp_path: Path, server_class: type[ManagedProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    """If the port is taken between our check and the server's bind, the server's own
    complaint reaches the caller."""
    monkeypatch.setattr(services, "_can_bind", lambda host, port: True)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        server = server_class(tmp_path, port=squatter.getsockname()[1])
        with pytest.raises(ServiceError) as caught:
            server.start()
    assert "exited with status" in caught.value.message
    assert "Address already in use" in caught.value.message
    assert str(server.log_path) in caught.value.message
    assert not server.running


@pytest.mark.parametrize(
    ("server_class", "bad_line", "complaint"),
    [
        (MosquittoServer, "no_such_option true", "Unknown configuration variable"),
        (RedisServer, "no-such-option yes", "Bad directive or wrong number of arguments"),
    ],
)
def test_server_that_rejects_its_config_reports_why(
    tmp_path: Path, server_class: type[ManagedProcess], bad_line: str, complaint: str
) -> None:
    server = server_class(tmp_path, extra_config=bad_line)
    with pytest.raises(ServiceError, match=complaint):
        server.start()
    assert not server.running


def test_an_automatic_port_taken_before_start_is_replaced(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with server:
            assert server.running
            assert server.port != taken


def test_an_explicit_port_is_never_replaced(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        server = RedisServer(tmp_path, port=port)
        with pytest.raises(ServiceError, match="already in use"):
            server.start()
    assert server.port == port


# -- config rendering (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(("relative_path", "expected"), sorted(render_docker_configs().items()))
def test_shipped_config_file_is_the_template_rendered_for_docker(
    relative_path: str, expected: str
) -> None:
    shipped = (ROOT / relative_path).read_text(encoding="utf-8")
    assert shipped == expected, (
        f"{relative_path} differs from its template in dispatcher/embedded/configs.py; "
        "edit the template "
        'and regenerate with: .venv/bin/python -c "from pathlib import Path; '
        "from dispatcher.embedded.configs import render_docker_configs; "
        '[Path(p).write_text(t) for p, t in render_docker_configs().items()]"'
    )


@pytest.mark.parametrize(
    "line",
    [
        "listener 18830 127.0.0.1",
        "max_connections -1",
        "allow_anonymous false",
        "per_listener_settings true",
        "use_username_as_clientid true",
        "password_file /a/terminals.passwd",
        "acl_file /a/terminals.acl",
        "listener 18831 0.0.0.0",
        "cafile /t/ca.crt",
        "tls_version tlsv1.2",
        "user someone",
        "persistence true",
        "persistence_location /srv/ebd state/mosquitto",
        "autosave_interval 5",
        "autosave_on_changes false",
        "max_queued_messages 0",
        "max_queued_bytes 0",
        "max_inflight_messages 10000",
        "allow_duplicate_messages true",
        "persistent_client_expiration 14d",
        "set_tcp_nodelay true",
        "memory_limit 0",
        "max_keepalive 120",
    ],
)
def test_mosquitto_config_has_the_settings_this_workload_needs(line: str) -> None:
    text = render_mosquitto_conf(
        host="127.0.0.1",
        port=18830,
        terminal_host="0.0.0.0",  # noqa: S104  a rendering, not a bind
        terminal_port=18831,
        data_dir="/srv/ebd state/mosquitto",
        user="someone",
        files=BrokerFiles.in_folder("/a", "/t"),
    )
    assert line in text.splitlines()


@pytest.mark.parametrize(
    "line",
    [
        "bind 127.0.0.1",
        "port 16379",
        "protected-mode yes",
        "daemonize no",
        'dir "/srv/ebd \\"state\\"/redis"',
        "appendonly yes",
        "appendfsync always",
        "no-appendfsync-on-rewrite no",
        "save 3600 1 300 100 60 10000",
        "maxmemory-policy noeviction",
        "maxclients 10000",
        'logfile ""',
    ],
)
def test_redis_config_has_the_settings_this_workload_needs(line: str) -> None:
    text = render_redis_conf(
        host="127.0.0.1", port=16379, data_dir='/srv/ebd "state"/redis', users_file="/u.conf"
    )
    assert line in text.splitlines()


@pytest.mark.parametrize(
    ("host", "protected_mode"),
    [("127.0.0.1", "yes"), ("::1", "yes"), ("localhost", "yes"), ("0.0.0.0", "no")],  # noqa: S104
)
def test_redis_protected_mode_is_off_only_beyond_loopback(host: str, protected_mode: str) -> None:
    text = render_redis_conf(host=host, port=6379, data_dir="/data", users_file="/u.conf")
    assert f"protected-mode {protected_mode}" in text.splitlines()


def test_extra_config_comes_last_so_it_wins() -> None:
    text = render_redis_conf(
        host="127.0.0.1",
        port=6379,
        data_dir="/data",
        users_file="/u.conf",
        extra_config="maxclients 50\n",
    )
    assert text.splitlines()[-1] == "maxclients 50"


def test_a_line_break_in_a_config_value_is_refused() -> None:
    with pytest.raises(ServiceError, match="line break"):
        render_mosquitto_conf(
            host="127.0.0.1",
            port=1,
            terminal_host="127.0.0.1",
            terminal_port=2,
            data_dir="/x\nlistener 1",
            user="u",
            files=BrokerFiles.in_folder("/a", "/t"),
        )
