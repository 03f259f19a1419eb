"""The keeper of this instance's liveness lease: a task that does nothing but renew it.

Nothing else runs in it, so a busy instance (a province's dispatch, a slow gateway) still
renews in time and keeps its work; only an instance that died, hangs or lost Redis lets its
lease lapse, and the others take its work over (``WorkStream.claim_dead``).
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from dispatcher.core.errors import StoreUnavailable
from dispatcher.store.liveness import LivenessStore

log = structlog.get_logger(__name__)

LIVENESS = web.AppKey("liveness", LivenessStore)
# Renewals per lease time: two may fail (a Redis blip) before the lease lapses.
RENEWALS_PER_LEASE = 3


class LeaseKeeper:
    def __init__(self, liveness: LivenessStore) -> None:
        self._liveness = liveness
        self.renewals = 0

    async def run(self) -> None:
        interval = self._liveness.lease_seconds / RENEWALS_PER_LEASE
        lapsed = False
        while True:
            try:
                await self._liveness.renew()
                self.renewals += 1
                if lapsed:
                    log.info("lease.renewed")
                    lapsed = False
            except StoreUnavailable as exc:
                if not lapsed:
                    log.warning("lease.renew_failed", error=exc.message)
                lapsed = True
            await asyncio.sleep(interval)
