"""The functions APScheduler's persistent jobs name (``drills.jobs:fire``, ``drills.jobs:report``).

A job in a persistent store names its function by import path, so it cannot be a bound method
of the service that runs it. The instance that holds the drill-scheduler lease registers its
service here while it holds it; only that instance's scheduler runs jobs, so there is one
registered service whenever a job runs (also with several engines in one test process).
"""

from __future__ import annotations

from typing import Protocol

import structlog

log = structlog.get_logger(__name__)

FIRE = "drills.jobs:fire"
REPORT = "drills.jobs:report"


class Runner(Protocol):
    async def fire(self, drill_id: str, scheduled: str) -> None: ...

    async def report(self, drill_id: str) -> None: ...


_active: Runner | None = None


def activate(runner: Runner) -> None:
    global _active
    _active = runner


def deactivate(runner: Runner) -> None:
    global _active
    if _active is runner:
        _active = None


async def fire(drill_id: str, scheduled: str) -> None:
    if _active is None:
        # The scheduler of an instance that just lost its lease; the new holder runs it.
        log.warning("drill.fire_without_runner", drill_id=drill_id)
        return
    await _active.fire(drill_id, scheduled)


async def report(drill_id: str) -> None:
    if _active is None:
        log.warning("drill.report_without_runner", drill_id=drill_id)
        return
    await _active.report(drill_id)
