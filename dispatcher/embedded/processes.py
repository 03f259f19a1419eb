"""Run private ``mosquitto`` and ``redis-server`` child processes for the embedded default.

``ebd serve`` without an MQTT or Redis URL, ``ebd demo``, the test fixtures and the benchmarks
all start their brokers here: on a free loopback port, with config, data and log in a state
folder, stopped in order when the caller is done. The API is synchronous; async callers wrap it
in ``asyncio.to_thread``.

The configs they run with are rendered by ``dispatcher.embedded.configs``.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from dispatcher.core.broker_auth import ENGINE_ACL, ENGINE_USER, TERMINALS_ACL, password_line
from dispatcher.core.errors import ServiceError
from dispatcher.embedded.configs import (
    REDIS_USER,
    BrokerFiles,
    redis_users,
    render_mosquitto_conf,
    render_redis_conf,
)
from dispatcher.embedded.secrets import ensure_secret, write_private
from dispatcher.embedded.tls import ensure_tls

__all__ = [
    "EmbeddedServices",
    "ManagedProcess",
    "MosquittoServer",
    "RedisServer",
    "find_binary",
    "free_port",
]

# Debian and Ubuntu install both servers outside an ordinary user's PATH (/usr/sbin).
_SBIN_DIRS: tuple[str, ...] = ("/usr/sbin", "/usr/local/sbin")
_APT_PACKAGES = {"mosquitto": "mosquitto", "redis-server": "redis-server"}

_LOG_TAIL_LINES = 30
# How many ports start() tries when an automatically chosen one is taken before the server binds.
_PORT_ATTEMPTS = 5
_PROBE_INTERVAL = 0.02
# A ready local server answers a probe in milliseconds; this only bounds a silent listener.
_PROBE_TIMEOUT = 0.5
_ADDRESS_IN_USE = "Address already in use"
# CONNECT: protocol "MQTT" level 4, clean session, keepalive 10 s, empty client id.
_MQTT_PROBE_CONNECT = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x0a\x00\x00"
_MQTT_CONNACK = b"\x20"
_MQTT_DISCONNECT = b"\xe0\x00"
_PORTS_FILE = "ports.json"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the kernel's choice)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_binary(name: str) -> str:
    """The path of the executable ``name``: on PATH, or in the sbin folders packages use."""
    found = shutil.which(name)
    if found is not None:
        return found
    for folder in _SBIN_DIRS:
        candidate = Path(folder) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    package = _APT_PACKAGES.get(name, name)
    raise ServiceError(
        f"{name} not found: install it with `sudo apt-get install {package}` (Debian/Ubuntu)",
        details={"binary": name, "package": package},
    )


class _Service:
    """Something that is started and stopped: ``with`` starts it, and stops it on the way out."""

    def start(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class ManagedProcess(_Service):
    """One server child process on a fixed host and port, with its state in ``state_dir``.

    The port is chosen when the object is made (so its URL is known before it starts) and kept
    for its lifetime: :meth:`restart` comes back on the same port with the same data, which is
    what kill-and-restart tests rely on. Thread-safe: callers may start, stop and kill from
    ``asyncio.to_thread`` workers.
    """

    #: Executable name, also the stem of the config and log files in the state folder.
    binary: ClassVar[str]
    #: The URL clients connect to, with ``{netloc}`` standing for the host and port.
    url_template: ClassVar[str]

    def __init__(
        self,
        state_dir: Path,
        port: int | None = None,
        host: str = "127.0.0.1",
        extra_config: str = "",
    ) -> None:
        self._state_dir = Path(state_dir)
        self._host = host
        self._auto_port = port is None
        self._port = free_port(host) if port is None else port
        self._extra_config = extra_config
        self._proc: subprocess.Popen[bytes] | None = None
        self._has_run = False
        # Re-entrant because restart() holds it across stop() and start().
        self._lock = threading.RLock()

    # -- what a subclass supplies -------------------------------------------------------------

    def _render_config(self) -> str:
        raise NotImplementedError

    def _arguments(self, config_path: Path) -> list[str]:
        raise NotImplementedError

    def _probe(self, sock: socket.socket) -> bool:
        """Whether the server behind an accepted connection is ready; accepting is enough."""
        return True

    def _started(self, pid: int) -> None:
        """Called once the server with ``pid`` answers."""

    # -- public API ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return self.url_template.format(netloc=self._netloc())

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def state_dir(self) -> Path:
        return self._state_dir

    @property
    def data_dir(self) -> Path:
        """Where the server keeps what it persists; kept across restarts."""
        return self._state_dir / "data"

    @property
    def config_path(self) -> Path:
        return self._state_dir / f"{self.binary}.conf"

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr, appended to across restarts."""
        return self._state_dir / f"{self.binary}.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """The pid of the running server, or None when it is not running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def start(self, timeout: float = 10.0) -> None:
        """Spawn the server and return once it answers on its port.

        Raises ServiceError if the port is taken, the server exits, or it does not answer
        within ``timeout`` seconds; the message carries the end of its log.
        """
        with self._lock:
            if self.running:
                raise ServiceError(
                    f"{self.binary} is already running on {self._netloc()} (pid {self.pid})"
                )
            # An automatically chosen port may be taken between free_port() and the server's
            # bind; pick another one then, but never once the server has run: restart() must
            # come back where clients expect it.
            attempts = _PORT_ATTEMPTS if self._auto_port and not self._has_run else 1
            for attempt in range(1, attempts + 1):
                try:
                    self._launch(timeout)
                except ServiceError as exc:
                    if attempt == attempts or _ADDRESS_IN_USE not in exc.message:
                        raise
                    self._new_ports()
                else:
                    self._has_run = True
                    return

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, so the server saves its state, then SIGKILL after ``timeout`` seconds."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            self._proc = None
            _live.discard(self)

    def kill(self) -> None:
        """SIGKILL and reap, as a crash would: whatever the server had not persisted is lost."""
        with self._lock:
            proc = self._proc
            if proc is None:
                return
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            self._proc = None
            _live.discard(self)

    def restart(self, timeout: float = 10.0) -> None:
        """Stop the server if it runs, and start it again on the same port with the same data."""
        with self._lock:
            self.stop(timeout)
            self.start(timeout)

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<{type(self).__name__} {self._netloc()} {state}>"

    # -- internals ----------------------------------------------------------------------------

    def _netloc(self, port: int | None = None) -> str:
        port = self._port if port is None else port
        return f"[{self._host}]:{port}" if ":" in self._host else f"{self._host}:{port}"

    def _ports(self) -> list[tuple[str, int]]:
        """Every address and port the server listens on."""
        return [(self._host, self._port)]

    def _new_ports(self) -> None:
        """Other free ports, after a chosen one was taken before the server could bind it."""
        self._port = free_port(self._host)

    def _launch(self, timeout: float) -> None:
        # Checked up front: another server of the same kind on this port would answer our
        # readiness probe while ours dies on its bind.
        for host, port in self._ports():
            if not _can_bind(host, port):
                raise ServiceError(
                    f"cannot start {self.binary}: port {port} on {host} is already in use"
                    f" ({_ADDRESS_IN_USE}); pick another port or stop what listens there",
                    details={"binary": self.binary, "host": host, "port": port},
                )
        executable = find_binary(self.binary)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self._render_config(), encoding="utf-8")
        argv = _with_open_files_limit([executable, *self._arguments(self.config_path)])
        with self.log_path.open("ab") as log:
            log_offset = log.tell()
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            log.write(f"--- {stamp} starting {self.binary} on {self._netloc()}\n".encode())
            log.flush()
            # Our copy of the log file closes when this block ends; the child keeps its own.
            # A new session, so a Ctrl-C in the terminal reaches only the engine, which then
            # stops its servers in order instead of having them die under it.
            self._proc = subprocess.Popen(  # noqa: S603  argv is our own binary and config path
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._state_dir,
                start_new_session=True,
            )
        _live.add(self)
        try:
            self._wait_until_ready(self._proc, timeout, log_offset)
        except BaseException:
            self.kill()
            raise
        self._started(self._proc.pid)

    def _wait_until_ready(
        self, proc: subprocess.Popen[bytes], timeout: float, log_offset: int
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise self._failure(f"exited with status {proc.returncode}", log_offset)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._failure(f"did not answer within {timeout:g} s", log_offset)
            if self._answers(min(remaining, _PROBE_TIMEOUT)) and proc.poll() is None:
                return
            time.sleep(_PROBE_INTERVAL)

    def _answers(self, timeout: float) -> bool:
        try:
            with socket.create_connection((self._host, self._port), timeout=timeout) as sock:
                return self._probe(sock)
        except OSError:
            return False

    def _failure(self, what: str, log_offset: int) -> ServiceError:
        tail = _log_tail(self.log_path, log_offset)
        return ServiceError(
            f"{self.binary} on {self._netloc()} {what}; end of {self.log_path}:\n{tail}",
            details={
                "binary": self.binary,
                "host": self._host,
                "port": self._port,
                "log_path": str(self.log_path),
            },
        )


class MosquittoServer(ManagedProcess):
    """A private mosquitto broker configured as the project ships it: the engine's listener
    on ``port``, the terminals' TLS listener on ``terminal_port``, accounts and a CA of its
    own made on the first start (in ``secrets/`` and ``auth/`` of its state folder)."""

    binary = "mosquitto"
    url_template = "mqtt://{netloc}"

    def __init__(
        self,
        state_dir: Path,
        port: int | None = None,
        *,
        terminal_port: int | None = None,
        terminal_host: str | None = None,
        terminal_names: Sequence[str] = (),
        host: str = "127.0.0.1",
        extra_config: str = "",
    ) -> None:
        """As ``ManagedProcess``, and the terminals' listener: its address (``terminal_host``,
        the engine listener's by default; ``0.0.0.0`` for every interface), its port, and
        the names or addresses terminals reach it by (``terminal_names``: the first is the
        one terminals are given, all go into the server certificate).

        A port left out is chosen once and remembered in ``ports.json`` of the state folder,
        so a restarted broker (or engine) comes back where its terminals were told to connect.
        """
        remembered = _remembered_ports(Path(state_dir))
        port = remembered.get("port") if port is None else port
        if terminal_port is None:
            terminal_port = remembered.get("terminal_port")
        super().__init__(state_dir, port, host, extra_config)
        self._terminal_host = terminal_host or self._host
        if _is_wildcard(self._terminal_host) and not terminal_names:
            raise ServiceError(
                f"the terminals' listener is on every address ({self._terminal_host}): give the "
                "name or address terminals reach it by (mqtt.terminal_url)"
            )
        self._terminal_names = [_unbracketed(name) for name in terminal_names]
        self._auto_terminal_port = terminal_port is None
        self._terminal_port = (
            free_port(self._terminal_host) if terminal_port is None else terminal_port
        )

    @functools.cached_property
    def engine_password(self) -> str:
        # Read (or made) once: every URL and every restart use the same one.
        return ensure_secret(self._state_dir / "secrets" / "engine-password")

    @property
    def url(self) -> str:
        """The engine listener's URL with the engine account in it (a secret: logs mask it)."""
        return f"mqtt://{ENGINE_USER}:{self.engine_password}@{self._netloc()}"

    @property
    def bare_url(self) -> str:
        """The engine listener without credentials: what an anonymous client would try."""
        return f"mqtt://{self._netloc()}"

    @property
    def terminal_port(self) -> int:
        return self._terminal_port

    @property
    def terminal_host(self) -> str:
        """The address the terminals' listener binds."""
        return self._terminal_host

    @property
    def terminal_url(self) -> str:
        """Where terminals connect: TLS, each with its own account; the first of
        ``terminal_names`` if given, else the listener's own address."""
        host = self._terminal_names[0] if self._terminal_names else self._terminal_host
        netloc = f"[{host}]" if ":" in host else host
        return f"mqtts://{netloc}:{self._terminal_port}"

    @property
    def ports_path(self) -> Path:
        """The ports chosen on the first start (not secret): kept across restarts."""
        return self._state_dir / _PORTS_FILE

    @property
    def files(self) -> BrokerFiles:
        return BrokerFiles.in_folder(self._state_dir / "auth", self._state_dir / "secrets" / "tls")

    @property
    def ca_file(self) -> Path:
        """The CA terminals verify the broker against."""
        return Path(self.files.ca_file)

    @property
    def accounts_file(self) -> Path:
        """The terminals' password file: the engine writes it, ``reload`` makes it count."""
        return Path(self.files.terminals_passwd)

    @property
    def pid_path(self) -> Path:
        """The running broker's pid, for an engine in another process to SIGHUP it."""
        return self._state_dir / "mosquitto.pid"

    def engine_settings(self) -> dict[str, str]:
        """``[mqtt]`` settings of an engine (another process, or one not started by us) that
        uses this broker as a deployment's broker: its account, the terminals' address and
        CA, their password file and how to make the broker reread it."""
        return {
            "url": self.url,
            "terminal_url": self.terminal_url,
            "terminal_ca_file": str(self.ca_file),
            "accounts_file": str(self.accounts_file),
            "broker_pid_file": str(self.pid_path),
        }

    def reload(self) -> None:
        """SIGHUP: the broker rereads its password and ACL files and disconnects every client
        whose account is gone or whose password changed."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                raise ServiceError(f"{self.binary} on {self._netloc()} is not running")
            self._proc.send_signal(signal.SIGHUP)

    def _render_config(self) -> str:
        files = self.files
        # Every name the certificate must carry: what terminals are told, the listener's own
        # address (unless it is every address), and the loopback names local tools use.
        listener = [] if _is_wildcard(self._terminal_host) else [self._terminal_host]
        hosts = list(
            dict.fromkeys([*self._terminal_names, *listener, self._host, "localhost", "127.0.0.1"])
        )
        ensure_tls(self._state_dir / "secrets" / "tls", hosts)
        write_private(
            Path(files.engine_passwd), password_line(ENGINE_USER, self.engine_password) + "\n"
        )
        write_private(Path(files.engine_acl), ENGINE_ACL)
        write_private(Path(files.terminals_acl), TERMINALS_ACL)
        if not self.accounts_file.exists():
            # No terminal has an account yet; the engine writes them as it registers terminals.
            write_private(self.accounts_file, "")
        return render_mosquitto_conf(
            host=self._host,
            port=self._port,
            terminal_host=self._terminal_host,
            terminal_port=self._terminal_port,
            data_dir=self.data_dir,
            user=_mosquitto_user(),
            files=files,
            extra_config=self._extra_config,
        )

    def _arguments(self, config_path: Path) -> list[str]:
        return ["-c", str(config_path)]

    def _ports(self) -> list[tuple[str, int]]:
        return [(self._host, self._port), (self._terminal_host, self._terminal_port)]

    def _started(self, pid: int) -> None:
        # The shell that raised the open-files limit exec'd the broker: same pid.
        self.pid_path.write_text(f"{pid}\n", encoding="ascii")
        ports = {"port": self._port, "terminal_port": self._terminal_port}
        if _remembered_ports(self._state_dir) != ports:
            self.ports_path.write_text(json.dumps(ports) + "\n", encoding="ascii")

    def _new_ports(self) -> None:
        super()._new_ports()
        if self._auto_terminal_port:
            self._terminal_port = free_port(self._terminal_host)

    def _probe(self, sock: socket.socket) -> bool:
        # A CONNACK, not just an accepted connection: proof that a broker, and not whatever
        # else may hold the port, answers. MQTT 3.1.1 with an empty client id, so the broker
        # assigns one and no real client's session is touched.
        sock.sendall(_MQTT_PROBE_CONNECT)
        reply = sock.recv(4)
        if reply[:1] != _MQTT_CONNACK:
            return False
        sock.sendall(_MQTT_DISCONNECT)
        return True


class RedisServer(ManagedProcess):
    """A private redis-server configured as the project ships it, with a password of its own
    made on the first start (``secrets/redis-password`` in its state folder)."""

    binary = "redis-server"
    url_template = "redis://{netloc}/0"

    @functools.cached_property
    def password(self) -> str:
        # Read (or made) once: the readiness probe asks for it many times a start.
        return ensure_secret(self._state_dir / "secrets" / "redis-password")

    @property
    def url(self) -> str:
        """The URL the engine connects with, its password in the userinfo: a secret itself,
        which the engine's logs mask."""
        return f"redis://{REDIS_USER}:{self.password}@{self._netloc()}/0"

    @property
    def bare_url(self) -> str:
        """Where it listens, without credentials (for what an attacker would try)."""
        return f"redis://{self._netloc()}/0"

    def _render_config(self) -> str:
        users_file = self._state_dir / "secrets" / "redis-users.conf"
        write_private(users_file, redis_users(self.password))
        return render_redis_conf(
            host=self._host,
            port=self._port,
            data_dir=self.data_dir,
            users_file=users_file,
            extra_config=self._extra_config,
        )

    def _arguments(self, config_path: Path) -> list[str]:
        return [str(config_path)]

    def _probe(self, sock: socket.socket) -> bool:
        # Redis accepts connections while it still loads its AOF and answers -LOADING until
        # the data is back; a caller must not see an empty database after a restart.
        # As the engine's user: Redis answers NOAUTH to anyone else even while it loads, and
        # PING answers -LOADING until the data is back.
        return redis_auth_ping(sock, f"{REDIS_USER} {self.password}")


def redis_auth_ping(sock: socket.socket, credentials: str) -> bool:
    """AUTH then PING on a fresh connection to a Redis server (or sentinel): True once it
    takes the credentials and answers PONG."""
    sock.sendall(f"AUTH {credentials}\r\nPING\r\n".encode())
    reply = b""
    while reply.count(b"\r\n") < 2:
        chunk = sock.recv(256)
        if not chunk:
            return False
        reply += chunk
    return reply.startswith(b"+OK") and b"+PONG" in reply


class EmbeddedServices(_Service):
    """The engine's own broker and Redis, in ``state_dir/mosquitto`` and ``state_dir/redis``."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.mqtt = MosquittoServer(self.state_dir / "mosquitto")
        self.redis = RedisServer(self.state_dir / "redis")

    def start(self, timeout: float = 10.0) -> None:
        self.mqtt.start(timeout)
        try:
            self.redis.start(timeout)
        except BaseException:
            self.mqtt.stop(timeout)
            raise

    def stop(self, timeout: float = 10.0) -> None:
        try:
            self.redis.stop(timeout)
        finally:
            self.mqtt.stop(timeout)


# Servers that were started and not yet stopped. A server is never daemonized and the engine
# stops it on the way out; this is the net for a caller that forgot, so no broker outlives the
# interpreter holding its port.
_live: set[ManagedProcess] = set()


@atexit.register
def _stop_forgotten() -> None:
    for server in list(_live):
        server.stop(timeout=5.0)


def _with_open_files_limit(argv: list[str]) -> list[str]:
    # Each terminal is an open socket, so the broker needs the hard limit, not the usual soft
    # 1,024. Raised by a shell that then execs the server (same pid, so our signals reach the
    # server itself) rather than by preexec_fn, which can deadlock the child when other
    # threads run, as they do under asyncio.to_thread.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft >= hard:
        return argv
    return ["/bin/sh", "-c", 'ulimit -S -n "$1" && shift && exec "$@"', "sh", str(hard), *argv]


def _can_bind(host: str, port: int) -> bool:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # Like the servers themselves, so connections of an earlier run in TIME_WAIT do not
        # count as "in use" when a server restarts on its port.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _log_tail(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as log:
            log.seek(offset)
            text = log.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(log unreadable: {exc})"
    lines = text.splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(lines) if lines else "(log is empty)"


def _mosquitto_user() -> str:
    # Only consulted when started as root: stay root so the broker can write the state folder
    # that root made. Any other user runs the broker as itself and the setting is ignored.
    return "root" if os.geteuid() == 0 else "mosquitto"


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _is_wildcard(host: str) -> bool:
    return host in ("0.0.0.0", "::", "")  # noqa: S104  naming the wildcard, not binding it


def _unbracketed(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _remembered_ports(state_dir: Path) -> dict[str, int]:
    """The ports an earlier start chose (``ports.json``); empty if none or unreadable."""
    try:
        saved = json.loads((state_dir / _PORTS_FILE).read_text(encoding="ascii"))
    except (OSError, ValueError):
        return {}
    if not isinstance(saved, dict):
        return {}
    return {
        name: value
        for name, value in saved.items()
        if name in ("port", "terminal_port") and type(value) is int and 0 < value < 65536
    }
