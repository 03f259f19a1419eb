"""The ordered script link: calls run in order, survive a Redis restart and a SCRIPT FLUSH."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from dispatcher.core.tasks import cancel_until_done
from dispatcher.embedded.processes import RedisServer
from dispatcher.store.ordered_script import OrderedScript

APPEND = "return redis.call('RPUSH', KEYS[1], ARGV[1])"
FAIL_ON_BAD = "if ARGV[1] == 'bad' then return redis.error_reply('bad input') end return 1"


@pytest.fixture
async def client(fresh_redis: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(fresh_redis.url, decode_responses=True)
    yield client
    await client.aclose()


@contextlib.asynccontextmanager
async def running(script: OrderedScript) -> AsyncIterator[None]:
    task = asyncio.create_task(script.run())
    try:
        yield
    finally:
        # Cancelled until it stops: redis-py swallows one that lands as a reply comes.
        await cancel_until_done(task)


async def test_calls_run_in_the_order_they_were_made(client: aioredis.Redis) -> None:
    script = OrderedScript(client.connection_pool, APPEND, name="append")
    async with running(script):
        futures = [script.call(["seq"], [str(n)]) for n in range(500)]
        assert await asyncio.wait_for(asyncio.gather(*futures), 10) == list(range(1, 501))
    assert await client.lrange("seq", 0, -1) == [str(n) for n in range(500)]


async def test_calls_made_while_redis_is_down_run_once_it_is_back(
    client: aioredis.Redis, fresh_redis: RedisServer
) -> None:
    script = OrderedScript(client.connection_pool, APPEND, name="append")
    async with running(script):
        assert await asyncio.wait_for(script.call(["seq"], ["before"]), 10) == 1
        fresh_redis.kill()
        futures = [script.call(["seq"], [str(n)]) for n in range(100)]
        fresh_redis.restart()
        await asyncio.wait_for(asyncio.gather(*futures), 30)
        assert script.failures >= 1
        assert not script.down
    stored = await client.lrange("seq", 0, -1)
    # What Redis had saved before the kill may or may not hold "before"; every call after it
    # ran, in order (a call whose reply was lost may run twice, never out of order).
    after = [v for v in stored if v != "before"]
    assert list(dict.fromkeys(after)) == [str(n) for n in range(100)]


async def test_a_flushed_script_is_loaded_again(client: aioredis.Redis) -> None:
    script = OrderedScript(client.connection_pool, APPEND, name="append")
    async with running(script):
        assert await asyncio.wait_for(script.call(["seq"], ["a"]), 10) == 1
        await client.script_flush()
        assert await asyncio.wait_for(script.call(["seq"], ["b"]), 10) == 2
    assert await client.lrange("seq", 0, -1) == ["a", "b"]


async def test_an_error_of_the_script_fails_only_that_call(client: aioredis.Redis) -> None:
    script = OrderedScript(client.connection_pool, FAIL_ON_BAD, name="check")
    async with running(script):
        good, bad, after = (script.call(["k"], [v]) for v in ("good", "bad", "good"))
        assert await asyncio.wait_for(good, 10) == 1
        with pytest.raises(Exception, match="bad input"):
            await asyncio.wait_for(bad, 10)
        assert await asyncio.wait_for(after, 10) == 1
