"""cancel_until_done stops a task even when one cancellation is swallowed."""

from __future__ import annotations

import asyncio
import sys

from dispatcher.core.tasks import cancel_until_done


async def test_a_task_that_swallowed_its_cancellation_is_stopped_all_the_same() -> None:
    confirmed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting, forever = asyncio.Event(), asyncio.Event()

    async def sender() -> None:
        waiting.set()
        # As aiomqtt awaits a PUBACK; then, as the ack sender does, wait for the next ack.
        await asyncio.wait_for(confirmed, timeout=30)
        await forever.wait()

    task = asyncio.create_task(sender())
    await waiting.wait()  # the task runs on into wait_for before this resumes
    # The PUBACK and the cancellation land in the same turn of the loop.
    confirmed.set_result(1)
    task.cancel()
    async with asyncio.timeout(5):
        await cancel_until_done(task, patience=0.05)
    assert task.cancelled()
    assert not forever.is_set()


async def test_one_cancellation_is_indeed_lost_on_this_python() -> None:
    """Why the helper exists; on 3.12 and later wait_for keeps the cancellation."""
    confirmed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    waiting, after = asyncio.Event(), asyncio.Event()

    async def sender() -> None:
        waiting.set()
        await asyncio.wait_for(confirmed, timeout=30)
        after.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(sender())
    await waiting.wait()
    confirmed.set_result(1)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=0.5)
    if sys.version_info < (3, 12):
        assert not done, "the single cancellation was swallowed"
        assert after.is_set()
    else:
        assert task in done
    await cancel_until_done(task)
    assert task.done()


async def test_finished_tasks_are_left_as_they_are() -> None:
    async def quick() -> int:
        return 7

    task = asyncio.create_task(quick())
    await task
    await cancel_until_done(task)
    assert task.result() == 7
