"""The SMS gateway's gate: one holder at a time, urgent first, and a routine holder waiting for
the pace is told when an urgent batch arrives, so that it can step back (issue 15: a red
warning waits for at most the one drill batch already on its way)."""

from __future__ import annotations

import asyncio

from adapters.sms.store import Lane
from dispatcher.core.gate import PriorityGate

TIMEOUT = 5.0


async def test_an_urgent_arrival_outranks_a_routine_holder_and_goes_next() -> None:
    gate = PriorityGate()
    order: list[str] = []
    holding = asyncio.Event()

    async def routine_holder() -> None:
        async with gate.hold(Lane.ROUTINE) as holder:
            holding.set()
            # As the worker does while it waits for the pace: until outranked.
            await asyncio.wait_for(holder.outranked, TIMEOUT)
            order.append("routine stepped back")

    async def take(name: str, lane: Lane) -> None:
        async with gate.hold(lane):
            order.append(name)

    first = asyncio.create_task(routine_holder())
    await asyncio.wait_for(holding.wait(), TIMEOUT)
    earlier_routine = asyncio.create_task(take("earlier routine", Lane.ROUTINE))
    await asyncio.sleep(0)  # let it queue before the urgent one
    assert gate.waiting == 1
    urgent = asyncio.create_task(take("urgent", Lane.URGENT))
    await asyncio.wait_for(asyncio.gather(first, earlier_routine, urgent), TIMEOUT)
    assert order == ["routine stepped back", "urgent", "earlier routine"]


async def test_waiters_of_the_same_or_a_lower_rank_do_not_outrank_the_holder() -> None:
    gate = PriorityGate()
    for held, arriving in ((Lane.ROUTINE, Lane.ROUTINE), (Lane.URGENT, Lane.ROUTINE),
                           (Lane.URGENT, Lane.URGENT)):  # fmt: skip
        async with gate.hold(held) as holder:
            waiter = asyncio.create_task(_hold_once(gate, arriving))
            await asyncio.sleep(0)
            assert gate.waiting == 1
            assert not holder.outranked.done(), (held, arriving)
        await asyncio.wait_for(waiter, TIMEOUT)
        assert gate.waiting == 0


async def test_an_outranked_holder_that_is_cancelled_passes_the_gate_on() -> None:
    gate = PriorityGate()
    holding = asyncio.Event()

    async def routine_holder() -> None:
        async with gate.hold(Lane.ROUTINE):
            holding.set()
            await asyncio.Event().wait()  # cancelled while holding

    task = asyncio.create_task(routine_holder())
    await asyncio.wait_for(holding.wait(), TIMEOUT)
    urgent = asyncio.create_task(_hold_once(gate, Lane.URGENT))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait_for(urgent, TIMEOUT)
    assert task.cancelled()


async def _hold_once(gate: PriorityGate, lane: Lane) -> None:
    async with gate.hold(lane):
        pass
