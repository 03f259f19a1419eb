"""Redis Sentinel on loopback for the tests: a password-protected primary, one replica and
three sentinels, each a real ``redis-server`` (a sentinel is ``redis-server CONF --sentinel``)
on a free port in the test's folder.

The failover is made fast (``down-after-milliseconds`` 1000, ``failover-timeout`` 3000) so that
a killed primary is replaced within a few seconds. ``SentinelCluster.start`` returns once the
replica is in sync and every sentinel knows the replica and the two other sentinels: a kill
right after it is a failover the sentinels can carry out, not a race with their discovery.

``sentinel_engine`` is an ``EngineProcess`` configured through the sentinels (``[redis]
sentinels``, ``sentinel_service``, the password files), never given the primary's address.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any, Self, cast

import redis
from redis.sentinel import Sentinel

from dispatcher.embedded.configs import REDIS_USER
from dispatcher.embedded.processes import ManagedProcess, RedisServer, redis_auth_ping
from dispatcher.embedded.secrets import ensure_secret, write_private
from tests.support.engine_process import EngineProcess

SERVICE = "ebd-primary"
# Fast failover: a primary silent for 1 s is down; a failover not done in 3 s is tried again.
DOWN_AFTER_MS = 1000
FAILOVER_TIMEOUT_MS = 3000
QUORUM = 2


class SentinelServer(ManagedProcess):
    """One sentinel watching ``SERVICE``, its own password ``password`` (requirepass)."""

    binary = "redis-server"
    url_template = "redis://{netloc}"

    def __init__(
        self, state_dir: Path, *, primary: tuple[str, int], redis_password: str, password: str
    ) -> None:
        super().__init__(state_dir)
        self._primary = primary
        self._redis_password = redis_password
        self.password = password

    def _render_config(self) -> str:
        host, port = self._primary
        # The sentinel rewrites this file as it learns (replicas, epochs); the test never
        # restarts one, so rendering it anew on start loses nothing.
        return "\n".join(
            [
                f"bind {self.host}",
                f"port {self.port}",
                "daemonize no",
                'logfile ""',
                f'dir "{self.data_dir}"',
                f"requirepass {self.password}",
                f"sentinel sentinel-pass {self.password}",
                f"sentinel monitor {SERVICE} {host} {port} {QUORUM}",
                f"sentinel auth-user {SERVICE} {REDIS_USER}",
                f"sentinel auth-pass {SERVICE} {self._redis_password}",
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {SERVICE} 1",
                "",
            ]
        )

    def _arguments(self, config_path: Path) -> list[str]:
        return [str(config_path), "--sentinel"]

    def _probe(self, sock: socket.socket) -> bool:
        return redis_auth_ping(sock, self.password)


class SentinelCluster:
    """A primary, a replica and three sentinels in ``folder``; a context manager."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # One password for both (the one made for the primary): each reads it from its own
        # secret file, there before it first starts, and logs in to the other with it.
        password = ensure_secret(folder / "primary" / "secrets" / "redis-password")
        write_private(folder / "replica" / "secrets" / "redis-password", password + "\n")
        self.primary = RedisServer(folder / "primary", extra_config=_replication_config(password))
        self.replica = RedisServer(
            folder / "replica",
            extra_config=_replication_config(password, self.primary.host, self.primary.port),
        )
        self.sentinel_password = ensure_secret(folder / "secrets" / "sentinel-password")
        self.sentinels = [
            SentinelServer(
                folder / f"sentinel-{n}",
                primary=(self.primary.host, self.primary.port),
                redis_password=password,
                password=self.sentinel_password,
            )
            for n in range(3)
        ]
        self.password_file = folder / "secrets" / "redis-password"
        write_private(self.password_file, password + "\n")
        self.sentinel_password_file = folder / "secrets" / "sentinel-password"

    @property
    def addresses(self) -> list[str]:
        """The sentinels as the engine's settings take them, HOST:PORT."""
        return [f"{s.host}:{s.port}" for s in self.sentinels]

    def start(self, timeout: float = 20.0) -> None:
        started: list[ManagedProcess] = []
        try:
            for server in (self.primary, self.replica):
                server.start()
                started.append(server)
            _until(self._replica_in_sync, timeout, "the replica did not sync with the primary")
            for sentinel in self.sentinels:
                sentinel.start()
                started.append(sentinel)
            _until(self._sentinels_ready, timeout, "the sentinels did not find each other")
        except BaseException:
            for process in reversed(started):
                process.kill()
            raise

    def stop(self) -> None:
        servers: list[ManagedProcess] = [*self.sentinels, self.replica, self.primary]
        for server in servers:
            server.kill()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what the tests ask of it -------------------------------------------------------------

    def sentinel_client(self) -> Sentinel:
        return Sentinel(
            [(s.host, s.port) for s in self.sentinels],
            sentinel_kwargs={"password": self.sentinel_password, "socket_timeout": 1.0},
            username=REDIS_USER,
            password=self.primary.password,
            decode_responses=True,
            socket_timeout=2.0,
        )

    def primary_address(self) -> tuple[str, int]:
        """Where the sentinels say the primary is now."""
        host, port = self.sentinel_client().discover_master(SERVICE)
        return str(host), int(port)

    def client(self) -> redis.Redis:
        """A client of the primary the sentinels name (on every new connection)."""
        return cast(redis.Redis, self.sentinel_client().master_for(SERVICE))

    def node_client(self, server: RedisServer) -> redis.Redis:
        return redis.Redis(
            host=server.host,
            port=server.port,
            username=REDIS_USER,
            password=server.password,
            decode_responses=True,
            socket_timeout=2.0,
        )

    def _replica_in_sync(self) -> bool:
        with self.node_client(self.replica) as replica:
            info = cast(dict[str, Any], replica.info("replication"))
        return info.get("master_link_status") == "up"

    def _sentinels_ready(self) -> bool:
        for sentinel in self.sentinels:
            with redis.Redis(
                host=sentinel.host,
                port=sentinel.port,
                password=self.sentinel_password,
                decode_responses=True,
                socket_timeout=1.0,
            ) as client:
                state = cast(dict[str, Any], client.sentinel_master(SERVICE))
                replicas = cast(list[dict[str, Any]], client.sentinel_slaves(SERVICE))
            if int(state["num-other-sentinels"]) != len(self.sentinels) - 1:
                return False
            if not any(r["is_slave"] and not r["is_sdown"] for r in replicas):
                return False
        return True


def _replication_config(
    password: str, primary_host: str | None = None, primary_port: int | None = None
) -> str:
    lines = [
        # A replica (or a primary brought back as one) logs in to its primary as the engine's
        # user, the only one there is.
        f"masteruser {REDIS_USER}",
        f"masterauth {password}",
        # The replica's first sync at once, not after the 5 s Redis 7 waits by default.
        "repl-diskless-sync-delay 0",
    ]
    if primary_host is not None:
        lines.append(f"replicaof {primary_host} {primary_port}")
    return "\n".join(lines) + "\n"


def _until(predicate: Any, timeout: float, what: str) -> None:
    """Poll a condition of the servers' own making (replication, sentinel discovery), which
    no event of ours can signal; ``AssertionError(what)`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:g} s")
        time.sleep(0.05)


def sentinel_engine(
    tmp_path: Path,
    cluster: SentinelCluster,
    mqtt_url: str,
    *,
    replicas_ack: int = 1,
    replicas_ack_timeout_ms: int = 500,
    **options: Any,
) -> EngineProcess:
    """An engine process that finds Redis through ``cluster``'s sentinels alone."""
    engine = EngineProcess(tmp_path, redis_url="", mqtt_url=mqtt_url, **options)
    text = engine.config_path.read_text(encoding="utf-8")
    placeholder = '[redis]\nurl = ""\n'
    assert text.count(placeholder) == 1, "EngineProcess wrote its [redis] section differently"
    section = "\n".join(
        [
            "[redis]",
            "sentinels = [" + ", ".join(f'"{a}"' for a in cluster.addresses) + "]",
            f'sentinel_service = "{SERVICE}"',
            f'username = "{REDIS_USER}"',
            f'password_file = "{cluster.password_file}"',
            f'sentinel_password_file = "{cluster.sentinel_password_file}"',
            f"replicas_ack = {replicas_ack}",
            f"replicas_ack_timeout_ms = {replicas_ack_timeout_ms}",
            "",
        ]
    )
    engine.config_path.write_text(text.replace(placeholder, section), encoding="utf-8")
    return engine
