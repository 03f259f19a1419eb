"""Publishing to terminals one by one, on their own command topics: the deadline sweeper's
resends and the catch-up of a terminal back online both do it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from dispatcher.core.errors import PublishFailed
from dispatcher.core.wire import cmd_topic
from dispatcher.pipeline.ports import Publisher

# Publishes in flight at once: a province's silent terminals are thousands.
PUBLISH_CONCURRENCY = 200


async def publish_each(link: Publisher, items: Sequence[tuple[str, bytes, int]]) -> list[bool]:
    """Publish each (terminal, payload, expiry seconds) on the terminal's command topic; for
    each, whether it went out. Nothing is sent with no time left. One ``PublishFailed`` means
    the link is down: the rest are not tried (each would wait its timeout out)."""
    gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)
    gave_up = asyncio.Event()

    async def one(terminal: str, payload: bytes, expiry: int) -> bool:
        async with gate:
            if gave_up.is_set() or expiry <= 0:
                return False
            try:
                await link.publish(cmd_topic(terminal), payload, expiry=expiry, timeout=10)
            except PublishFailed:
                gave_up.set()
                return False
            return True

    return list(await asyncio.gather(*(one(*item) for item in items)))
