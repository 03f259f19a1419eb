"""Fixtures of the integration tests: an engine app on the session's servers (configured per
module through ``engine_overrides``), the engine's store, a plain Redis client, and a watcher of
what terminals send."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from dispatcher.store.store import Store
from tests.integration.engine import Client, running_engine
from tests.support.broker import Watch


@pytest.fixture
def engine_overrides() -> dict[str, Any]:
    """Settings overrides (and ``notifiers``) of the ``api`` engine, as ``running_engine``
    takes them: none. A module whose tests want another engine overrides this fixture."""
    return {}


@pytest.fixture
async def api(
    redis_url: str, mqtt_url: str, tmp_path: Path, engine_overrides: dict[str, Any]
) -> AsyncIterator[Client]:
    """The engine as an aiohttp test client, on the session's Redis and broker."""
    async with running_engine(
        redis_url, mqtt_url, tmp_path / "state", **engine_overrides
    ) as client:
        yield client


@pytest.fixture
async def store(redis_url: str) -> AsyncIterator[Store]:
    """The engine's store on the session's Redis, without an engine."""
    store = Store.from_url(redis_url)
    yield store
    await store.close()


@pytest.fixture
def rdb(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the session's Redis, to look at what the engine stored."""
    with redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


@pytest.fixture
async def watch(mqtt_url: str) -> AsyncIterator[Watch]:
    """Records every ack and state message terminals publish on the session broker."""
    w = Watch()
    await w.open(mqtt_url, ["eb/v1/term/+/ack", "eb/v1/term/+/state"])
    yield w
    await w.close()
