"""The shared token bucket against a real Redis: several takers at once never get more than
the gateway's rate in any one-second window, and get most of it."""

from __future__ import annotations

import asyncio
import time

import pytest

from adapters.sms.pool import Pace
from adapters.sms.settings import GatewaySettings
from adapters.sms.store import SmsStore
from dispatcher.store.store import Store
from tests.support.sms_sandbox import peak_in_window


def pace(rate: float, batch: int) -> Pace:
    return Pace.of(
        GatewaySettings(
            name="gw",
            protocol="generic",
            url="http://127.0.0.1:9/",
            rate=rate,
            batch_size=batch,
            callback_secret="0123456789abcdef",
        )
    )


@pytest.mark.parametrize(("rate", "batch", "takers"), [(200, 10, 4), (50, 100, 3), (5, 10, 2)])
async def test_takers_sharing_a_bucket_never_exceed_the_rate(
    store: Store, rate: float, batch: int, takers: int
) -> None:
    p = pace(rate, batch)
    sms = SmsStore(store)
    stamps: list[float] = []
    deadline = time.monotonic() + 2.5

    async def taker() -> None:
        while time.monotonic() < deadline:
            wait_ms = await sms.take_tokens("gw", p.batch, rate=p.refill, capacity=p.capacity)
            if wait_ms:
                await asyncio.sleep(wait_ms / 1000)
            else:
                stamps.extend([time.monotonic()] * p.batch)

    await asyncio.gather(*(taker() for _ in range(takers)))
    assert peak_in_window(stamps) <= rate
    # Over 2.5 s the takers got at least the first second's worth (nothing starves).
    assert len(stamps) >= min(rate, p.capacity + p.refill)
