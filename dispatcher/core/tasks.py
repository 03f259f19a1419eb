"""Stopping asyncio tasks so that they really stop."""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_until_done(*tasks: asyncio.Task[Any], patience: float = 0.5) -> None:
    """Cancel ``tasks`` and return once every one of them has finished.

    One ``cancel()`` is not always enough on Python 3.11: ``asyncio.wait_for`` (which aiomqtt
    awaits every PUBACK and SUBACK through) swallows a cancellation that lands just as the
    awaited future completes, and the task carries on to its next await, where it may wait
    forever. Cancelling again after ``patience`` seconds reaches it there.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience)
