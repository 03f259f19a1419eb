"""The configs of the embedded ``mosquitto`` and ``redis-server``, tuned for this workload.

Both are ``str.format()`` templates. ``config/mosquitto/mosquitto.conf`` and
``config/redis/redis.conf`` are the same templates rendered for docker-compose
(:func:`render_docker_configs`), and a test keeps the shipped files equal to that rendering, so
the embedded default and a compose deployment run with the same settings.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from dispatcher.core.errors import ServiceError

# Both templates are str.format() templates: {host}, {port}, {data_dir} and the like are
# substituted; neither server's config syntax uses braces.
MOSQUITTO_CONF = """\
# Mosquitto broker for the emergency-broadcast dispatch engine.
# Template: MOSQUITTO_CONF in dispatcher/embedded/configs.py, which renders it for the embedded
# broker (loopback, free ports, a private data folder). config/mosquitto/mosquitto.conf is the
# same template rendered for docker-compose; a test keeps the two equal, so edit the template.

# Who may connect, and what each may do, is decided per listener: the engine's accounts exist
# on its listener alone, the terminals' on theirs alone, so a terminal's password opens nothing
# on the engine's side. (Must come before every other security setting.)
per_listener_settings true

# The engine's listener: MQTT 5 from the engine's own accounts, on loopback (embedded) or the
# compose network (never published). The engine publishes alerts and commands here and takes
# the acks; it uses several client ids (one per link and instance), so they are not pinned.
listener {port} {host}
# Thousands of terminals hold a connection each; the only ceiling should be the open-files
# limit of the process (20,000 on our machines), not a broker setting.
max_connections -1
# Anonymous clients are refused on every listener: an anonymous publish on an alert topic
# would sound every loudspeaker below it.
allow_anonymous false
password_file {engine_passwd}
acl_file {engine_acl}

# The terminals' listener: TLS only, each terminal with its own account (issued when it is
# registered; the engine rewrites the password file and the broker rereads it on SIGHUP, which
# also disconnects a terminal whose account was revoked or whose password was rotated).
listener {terminal_port} {terminal_host}
max_connections -1
allow_anonymous false
# A terminal's client id is its user name, whatever it asks for: it cannot take over another
# terminal's session (or the engine's) by connecting with that id.
use_username_as_clientid true
password_file {terminals_passwd}
# A terminal may publish only its own ack and state, read only the alert topics and its own
# cmd (the patterns stand for its user name, which is its terminal id).
acl_file {terminals_acl}
cafile {ca_file}
certfile {cert_file}
keyfile {key_file}
tls_version tlsv1.2

# Started as root, mosquitto switches to this user. The embedded broker stays the user that
# started the engine so it can write its own state folder; the docker image has `mosquitto`.
user {user}

# Terminals use persistent sessions: what an offline terminal missed, and the QoS 1 messages
# queued for it, must survive a broker restart.
persistence true
persistence_location {data_dir}
persistence_file mosquitto.db
# The default saves every 30 minutes, so a crash would lose up to half an hour of queued
# alerts and acks. Every 5 s bounds that loss; what is lost anyway is resent by the engine's
# deadline sweeper. Timed rather than on changes: one province fan-out makes ~20,000 changes,
# and every save writes the whole database.
autosave_interval 5
autosave_on_changes false

# Never drop a queued message. The default queue of 1,000 per client silently lost 18,880 of
# 19,900 acks on the way to the engine's ack subscription. What bounds a queue instead is how
# long its session may live (the terminal's session expiry, persistent_client_expiration).
max_queued_messages 0
max_queued_bytes 0
# Outgoing QoS 1 messages in flight per client. The default of 20 makes the ack stream to the
# engine wait on a round trip every 20 messages. The engine confirms a batch of acks once it
# is in Redis: at 1,000 the broker still waited on it (25,000 acks/s); 10,000 lets it run.
max_inflight_messages 10000

# Duplicate tracking costs time that grows with the square of the subscribers (fan-out to
# 19,900 terminals: 1.5 s with it, 0.47 s without). It is safe to turn off because a terminal
# subscribes to exact topics that never overlap. (Deprecated in 2.x; the log says so.)
allow_duplicate_messages true

# A client that has not come back within two weeks is taken as gone: its session, and what was
# queued for it, is dropped instead of being kept forever.
persistent_client_expiration 14d

# Alerts are small and urgent: send them now, not when Nagle's algorithm has enough to fill a
# packet.
set_tcp_nodelay true
# No heap cap: a cap makes the broker drop messages and disconnect clients when it is reached.
memory_limit 0
# MQTT 5 clients asking for a longer keepalive are told to use this one, so a dead rural link
# is noticed (and the terminal's Last Will published) within about three minutes.
max_keepalive 120

# Log to stdout: the embedded default sends it to a log file in the state folder, docker to
# `docker logs`. ISO timestamps line up with the engine's own logs.
log_dest stdout
log_timestamp_format %Y-%m-%dT%H:%M:%S
"""

REDIS_CONF = """\
# Redis for the emergency-broadcast dispatch engine: alerts, the outbox, delivery state, acks.
# Template: REDIS_CONF in dispatcher/embedded/configs.py, which renders it for the embedded
# server (loopback, a free port, a private data folder). config/redis/redis.conf is the same
# template rendered for docker-compose; a test keeps the two equal, so edit the template.

bind {host}
port {port}
# Only the engine's user may do anything; the default user, which needs no password, is off.
# The included file holds the user with the SHA-256 of its password, never the password: the
# embedded default writes it beside this config, a compose deployment on its first start
# (docker-compose.yml's `secrets` service). A client that reaches the port without the
# password gets NOAUTH for every command.
include {users_file}
# Protected mode refuses clients that are not on loopback while the default user has no
# password. The embedded server only listens on loopback and keeps it on; the docker rendering
# listens inside the compose network for an engine in another container, where the password
# is what keeps others out (and the port is published to nothing).
protected-mode {protected_mode}

# Run in the foreground as a child of the engine or as the container's main process, logging
# to stdout: the embedded default sends it to a log file in the state folder, docker to
# `docker logs`.
daemonize no
supervised no
logfile ""

dir {data_dir}

# An alert answered with 201 must survive kill -9 of Redis and a power cut: append every write
# and fsync it before the reply. `everysec` can lose the last second.
appendonly yes
appendfsync always
appenddirname "appendonlydir"
appendfilename "appendonly.aof"
# `yes` would skip the fsync while the AOF is being rewritten, giving up the guarantee above.
no-appendfsync-on-rewrite no
# An RDB preamble in the rewritten AOF makes a restart load fast.
aof-use-rdb-preamble yes

# Snapshots as well, as a compact second copy for backups; the AOF is what durability rests on.
save 3600 1 300 100 60 10000
dbfilename "dump.rdb"

# Delivery state must never be evicted: with no memory cap and noeviction, a full Redis refuses
# writes (which the engine reports) instead of silently dropping keys.
maxmemory 0
maxmemory-policy noeviction

# Engine instances, the CLI and the console each hold a small pool; 10,000 leaves room and stays
# under the 20,000 open files a process may have here.
maxclients 10000
"""


@dataclass(frozen=True, slots=True)
class BrokerFiles:
    """Where the broker's security files are: accounts, ACLs and TLS."""

    engine_passwd: Path | str
    engine_acl: Path | str
    terminals_passwd: Path | str
    terminals_acl: Path | str
    ca_file: Path | str
    cert_file: Path | str
    key_file: Path | str

    @classmethod
    def in_folder(cls, folder: Path | str, tls: Path | str) -> BrokerFiles:
        return cls(
            engine_passwd=f"{folder}/engine.passwd",
            engine_acl=f"{folder}/engine.acl",
            terminals_passwd=f"{folder}/terminals.passwd",
            terminals_acl=f"{folder}/terminals.acl",
            ca_file=f"{tls}/ca.crt",
            cert_file=f"{tls}/server.crt",
            key_file=f"{tls}/server.key",
        )


def render_mosquitto_conf(
    *,
    host: str,
    port: int,
    terminal_host: str,
    terminal_port: int,
    data_dir: Path | str,
    user: str,
    files: BrokerFiles,
    extra_config: str = "",
) -> str:
    """The broker config: the engine's listener on ``host:port``, the terminals' TLS listener
    on ``terminal_host:terminal_port``, its database in ``data_dir``."""
    # The rest of a line is the path, spaces included; mosquitto adds the separator.
    paths = {name: _one_line(str(getattr(files, name))) for name in BrokerFiles.__slots__}
    text = MOSQUITTO_CONF.format(
        host=_one_line(host),
        port=port,
        terminal_host=_one_line(terminal_host),
        terminal_port=terminal_port,
        data_dir=_one_line(str(data_dir)),
        user=_one_line(user),
        **paths,
    )
    return _append(text, extra_config)


def render_redis_conf(
    *,
    host: str,
    port: int,
    data_dir: Path | str,
    users_file: Path | str,
    extra_config: str = "",
) -> str:
    """The Redis config for ``host:port`` with its AOF and snapshots in ``data_dir`` and its
    users (``redis_users``) in ``users_file``."""
    text = REDIS_CONF.format(
        host=_one_line(host),
        port=port,
        protected_mode="yes" if is_loopback(host) else "no",
        data_dir=_redis_quote(str(data_dir)),
        users_file=_redis_quote(str(users_file)),
    )
    return _append(text, extra_config)


# Where docker-compose.yml's `secrets` service writes what it generates on the first start.
COMPOSE_SECRETS = "/run/ebd-secrets"
COMPOSE_REDIS_USERS = f"{COMPOSE_SECRETS}/redis-users.conf"
# The broker's accounts: the engine rewrites terminals.passwd there, the broker rereads it.
COMPOSE_BROKER_AUTH = "/run/ebd-broker-auth"
# The one Redis user the engine (every instance, the CLI's direct tools) connects as.
REDIS_USER = "ebd"


def redis_users(password: str) -> str:
    """The users file ``REDIS_CONF`` includes: the default user off, ``REDIS_USER`` with every
    command and key, known by the SHA-256 of ``password`` alone."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return (
        "# Generated by the engine; the password itself is kept elsewhere, readable by the "
        "engine alone.\n"
        # Off: no client can log in as it. Its permissions stay whole, because Redis replays
        # the AOF as this user after a restart (with -@all it refused every MULTI/EXEC and
        # came back empty).
        "user default off resetpass ~* &* +@all\n"
        f"user {REDIS_USER} on #{digest} ~* &* +@all\n"
    )


def render_docker_configs() -> dict[str, str]:
    """The shipped config files (paths relative to the project root) and their contents.

    Rendered for docker-compose: each server listens on every interface of its container (for
    the engine in another container) on its standard port, with data where the official images
    keep it.
    """
    every_interface = "0.0.0.0"  # noqa: S104  inside a container, for the compose network
    return {
        "config/mosquitto/mosquitto.conf": render_mosquitto_conf(
            host=every_interface,
            port=1883,
            terminal_host=every_interface,
            terminal_port=8883,
            data_dir="/mosquitto/data",
            user="mosquitto",
            files=BrokerFiles.in_folder(COMPOSE_BROKER_AUTH, f"{COMPOSE_SECRETS}/tls"),
        ),
        "config/redis/redis.conf": render_redis_conf(
            host=every_interface, port=6379, data_dir="/data", users_file=COMPOSE_REDIS_USERS
        ),
    }


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _one_line(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ServiceError(f"config value {value!r} must not contain a line break")
    return value


def _redis_quote(value: str) -> str:
    # Redis reads a double-quoted value with backslash escapes, so any path survives.
    escaped = _one_line(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _append(text: str, extra_config: str) -> str:
    if not extra_config.strip():
        return text
    return (
        f"{text}\n# Extra settings given by the caller; later lines win.\n{extra_config.rstrip()}\n"
    )
