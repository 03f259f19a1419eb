"""Fixtures for the whole suite: real mosquitto and redis-server on free loopback ports.

``mosquitto`` and ``redis_server`` run once per session; a test that kills or restarts a
server takes ``fresh_mosquitto`` / ``fresh_redis`` instead and gets its own. ``redis_url``
empties the session Redis before each test; the session broker is shared, so tests use a topic
and client identifier of their own.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest
import redis
import structlog

from dispatcher.core.regions import RegionTree
from dispatcher.embedded.processes import MosquittoServer, RedisServer
from tests.helpers import fujian
from tests.support.broker import known


def route_engine_logs() -> None:
    """Engine logs go to the process's own stderr: pytest keeps them per test and shows them
    on failure, and they never mix with what a CLI command printed (``capsys``)."""
    structlog.reset_defaults()
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=sys.__stderr__))


@pytest.fixture(autouse=True)
def _no_ebd_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """EBD_ variables of the developer's shell (EBD_TOKEN, EBD_OFFICES …) must not change
    what a test sees; a test that wants one sets it itself."""
    for name in list(os.environ):
        if name.upper().startswith("EBD_"):
            monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _collector_left_as_found() -> Iterator[None]:
    """An import pauses the garbage collector while it runs (``dispatcher.core.collector``):
    a test that ends with it still paused has an import that never finished, and would leave
    every later test without a collector (memory, and resources closed tests later)."""
    enabled = gc.isenabled()
    yield
    assert gc.isenabled() == enabled, "the garbage collector was left paused by this test"


@pytest.fixture(autouse=True)
def _engine_logs() -> Iterator[None]:
    route_engine_logs()
    yield
    # A command under test may have configured logging for its own (captured) stream.
    route_engine_logs()


@pytest.fixture(scope="session")
def tree() -> RegionTree:
    """The Fujian region tree the project ships, loaded once (tests only read it)."""
    return fujian()


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoServer]:
    """A broker for the whole session, configured as the project ships it."""
    with MosquittoServer(tmp_path_factory.mktemp("mosquitto")) as server:
        yield known(server)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A redis-server for the whole session, configured as the project ships it."""
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def fresh_mosquitto(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A broker of this test's own, to kill or restart; stopped afterwards."""
    with MosquittoServer(tmp_path / "mosquitto") as server:
        yield known(server)


@pytest.fixture
def fresh_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, to kill or restart; stopped afterwards."""
    with RedisServer(tmp_path / "redis") as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session Redis's URL (db 0), emptied (FLUSHALL) for this test."""
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def mqtt_url(mosquitto: MosquittoServer) -> str:
    """The session broker's engine URL, ``mqtt://ebd-engine:PASSWORD@127.0.0.1:PORT``."""
    return mosquitto.url


# The servers run in sessions of their own (so a Ctrl-C reaches only pytest, which then stops
# them in teardown), so when pytest dies they live on. A Ctrl-C runs teardown; SIGTERM, as sent
# by `timeout` and CI runners, would not, so it is turned into the same interrupt. A SIGKILL
# still leaves them behind.
_previous_sigterm: Any = None


def _interrupt_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}: stopping, with teardown")


def pytest_configure(config: pytest.Config) -> None:
    global _previous_sigterm
    _previous_sigterm = signal.signal(signal.SIGTERM, _interrupt_on_sigterm)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _previous_sigterm is not None:
        signal.signal(signal.SIGTERM, _previous_sigterm)
