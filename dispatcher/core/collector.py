"""Pausing the garbage collector while an import builds its rows.

An import of 100,000 rows makes a million objects in a second or two, all of them alive until
it ends. Each time the long-lived objects grow by a quarter, Python runs a full collection that
walks them all and frees nothing: six pauses of 50–120 ms in a row, during which every thread
and the event loop stand still (measured: /healthz took up to 138 ms). Reference counting
frees everything an import drops; only reference cycles wait, for the seconds the import
lasts, and the collector runs as usual once no import holds it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_holders = 0
_was_enabled = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """No automatic collection while any holder is inside; nestable, and shared by the
    imports running at once (the last one out turns the collector back on, if it was)."""
    global _holders, _was_enabled
    if _holders == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _holders += 1
    try:
        yield
    finally:
        _holders -= 1
        if _holders == 0 and _was_enabled:
            gc.enable()
