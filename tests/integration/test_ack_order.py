"""Batches in flight at once are still recorded in the order their acks came."""

from __future__ import annotations

import asyncio
import json

from dispatcher.core.ack_parse import AckRecord
from dispatcher.core.models import TerminalIn
from dispatcher.core.tasks import cancel_until_done
from dispatcher.pipeline.ingester import AckIngester
from dispatcher.pipeline.ports import PubackHandle
from dispatcher.store.keys import dispatch_key, tstate_key
from dispatcher.store.store import Store
from tests.helpers import ZHONGSHAN, wait_for


async def test_a_terminals_received_and_played_in_two_batches_both_count(store: Store) -> None:
    terminals = [f"order-{n}" for n in range(150)]
    await store.register_terminals([TerminalIn(id=t, region=ZHONGSHAN) for t in terminals])
    await store.redis.hset(dispatch_key("ORDER"), mapping={"state": "dispatched"})
    assert await store.record_expected("ORDER", [ZHONGSHAN]) == (150, 0)
    confirmed: list[int] = []
    # One ack a batch and four batches under way: received and played of one terminal are
    # always in different batches, in Redis at nearly the same moment.
    ingester = AckIngester(
        store,
        batch_size=1,
        batch_wait=0.001,
        in_flight=4,
        acklog_maxlen=10_000,
        confirm=lambda ds: confirmed.extend(d.mid for d in ds),
    )
    task = asyncio.create_task(ingester.run())
    try:
        mid = 0
        for terminal in terminals:
            for state in ("received", "played"):
                mid += 1
                body = {"v": 1, "alert_id": "ORDER", "state": state, "at": "2026-11-27T08:00:00Z"}
                ingester.feed(
                    f"eb/v1/term/{terminal}/ack",
                    json.dumps(body).encode(),
                    PubackHandle(None, mid, 1),
                )
        await wait_for(lambda: len(confirmed) == 300, timeout=20)
    finally:
        # Cancelled until it stops: redis-py swallows one that lands as a reply comes.
        await cancel_until_done(task)
    assert confirmed == list(range(1, 301)), "PUBACKs must go out in the order acks came"
    assert ingester.totals["acks_counted"] == 300
    assert await store.redis.hget(dispatch_key("ORDER"), "acks_counted") == "300"


async def test_acks_of_one_terminal_in_one_batch_move_it_forward_once_each(store: Store) -> None:
    """The ack script reads a terminal once a batch and writes its last state at the end: the
    codes, the counters and the state must be what one ack at a time would give."""
    await store.register_terminals(
        [TerminalIn(id=t, region=ZHONGSHAN) for t in ("pair-a", "pair-b", "pair-c")]
    )
    await store.redis.hset(dispatch_key("PAIR"), mapping={"state": "dispatched"})
    assert await store.record_expected("PAIR", [ZHONGSHAN]) == (3, 0)
    at = "2026-11-27T08:00:00Z"
    batch = [
        AckRecord("pair-a", "PAIR", "received", at, ""),
        AckRecord("pair-b", "PAIR", "received", at, ""),
        AckRecord("pair-a", "PAIR", "played", at, ""),
        AckRecord("pair-a", "PAIR", "received", at, ""),  # backwards: not counted
        AckRecord("pair-b", "PAIR", "failed", at, "speaker fault"),
        AckRecord("pair-a", "PAIR", "played", at, ""),  # again: a duplicate
        AckRecord("nobody", "PAIR", "played", at, ""),  # not registered
    ]
    link = asyncio.create_task(store.ack_script.run())
    try:
        codes = await store.queue_acks(batch, acklog_maxlen=10_000)
    finally:
        # Cancelled until it stops: redis-py swallows one that lands as a reply comes.
        await cancel_until_done(link)
    assert codes == [1, 1, 1, 0, 1, 0, -3]
    states = await store.redis.hgetall(tstate_key("PAIR"))
    assert states == {"pair-a": "played", "pair-b": "failed"}
    township = ZHONGSHAN[:9]  # counters are kept down to townships
    report = await store.delivery("PAIR", [township])
    counts = report.by_region[township]
    assert (counts.expected, counts.received, counts.played, counts.failed) == (3, 0, 1, 1)
    assert await store.redis.hget(dispatch_key("PAIR"), "acks_counted") == "4"
