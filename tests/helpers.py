"""Shared test helpers: the project's paths, and waiting for a condition with a deadline
instead of sleeping."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FUJIAN_FILE = ROOT / "config" / "regions" / "fujian.csv"


async def wait_for(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float = 10.0,
    interval: float = 0.02,
    *,
    message: str = "",
) -> object:
    """Poll ``predicate`` (sync or async) until it returns something truthy, and return that.

    Raises AssertionError naming the predicate and its last value if ``timeout`` seconds pass
    first, including when an async predicate itself hangs. Exceptions from the predicate are
    not swallowed: a predicate that can fail while the system settles must catch them itself.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    what = message or getattr(predicate, "__qualname__", repr(predicate))
    last: object = None
    while True:
        remaining = deadline - loop.time()
        deadline_guard = asyncio.timeout(max(remaining, 0.001))
        try:
            async with deadline_guard:
                last = predicate()
                if inspect.isawaitable(last):
                    last = await last
        except TimeoutError:
            if not deadline_guard.expired():
                raise  # the predicate's own timeout, not ours
            raise AssertionError(f"{what}: no answer within {timeout:g} s") from None
        if last:
            return last
        if loop.time() >= deadline:
            raise AssertionError(f"{what}: not true within {timeout:g} s (last value {last!r})")
        await asyncio.sleep(interval)
