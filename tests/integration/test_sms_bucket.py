"""The shared pace against a real Redis: several takers at once never get more than the
gateway's rate in any one-second window, get at least 97 % of it, and urgent takers go first
on every instance."""

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


def test_the_pace_holds_back_only_the_jitter_allowance() -> None:
    p = pace(2000, 100)
    assert (p.batch, p.limit) == (100, 2000)
    assert p.refill / 2000 == pytest.approx(1 / 1.02)
    assert p.refill / 2000 >= 0.97
    # A slow contract: one at a time, never two in a window.
    slow = pace(1.5, 100)
    assert (slow.batch, slow.limit) == (1, 1)


async def take_for(
    sms: SmsStore, p: Pace, seconds: float, stamps: list[float], *, urgent: bool = False
) -> None:
    """Take batches for ``seconds``, noting the time of each message taken."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        wait_ms = await sms.take_tokens("gw", p.batch, pace=p, urgent=urgent)
        if wait_ms:
            await asyncio.sleep(wait_ms / 1000)
        else:
            stamps.extend([time.monotonic()] * p.batch)


@pytest.mark.parametrize(("rate", "batch", "takers"), [(200, 10, 4), (50, 100, 3), (5, 10, 2)])
async def test_takers_sharing_a_pace_never_exceed_the_rate(
    store: Store, rate: float, batch: int, takers: int
) -> None:
    p = pace(rate, batch)
    stamps: list[float] = []
    # Each taker on a store of its own, as on instances of their own.
    await asyncio.gather(*(take_for(SmsStore(store), p, 2.5, stamps) for _ in range(takers)))
    assert peak_in_window(stamps) <= rate
    # Over 2.5 s the takers got at least the first second's worth (nothing starves).
    assert len(stamps) >= min(rate, p.refill)


async def test_a_busy_pace_reaches_97_percent_of_the_rate(store: Store) -> None:
    p = pace(1000, 100)
    stamps: list[float] = []
    await asyncio.gather(*(take_for(SmsStore(store), p, 4.0, stamps) for _ in range(2)))
    assert peak_in_window(stamps) <= 1000
    # From the first batch to the last: what a gateway contract's meter sees.
    span = stamps[-1] - stamps[0]
    achieved = (len(stamps) - p.batch) / span
    assert 0.97 * 1000 <= achieved <= 1000, achieved


async def test_an_urgent_taker_goes_before_routine_ones_of_other_instances(
    store: Store,
) -> None:
    p = pace(200, 10)  # a batch every 51 ms
    routine: list[float] = []
    urgent: list[float] = []

    async def urgent_later() -> None:
        await asyncio.sleep(0.5)  # routine takers busy by then; not a synchronisation
        await take_for(SmsStore(store), p, 1.0, urgent, urgent=True)

    await asyncio.gather(
        take_for(SmsStore(store), p, 2.0, routine),
        take_for(SmsStore(store), p, 2.0, routine),
        urgent_later(),
    )
    assert urgent
    assert routine
    first, last = urgent[0], urgent[-1]
    during = [t for t in routine if first <= t <= last]
    # While the urgent taker wanted batches, routine ones got none; they resume after.
    assert during == []
    assert any(t > last for t in routine)
    assert peak_in_window(sorted(routine + urgent)) <= 200
