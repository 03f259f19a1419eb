"""What a preview reads: the terminals below a cover with their last state, and the SMS
recipients posted below it. Read-only, in pipelined batches: a province's cover is 17,498
terminals, and a preview must answer while the composer waits."""

from __future__ import annotations

from collections.abc import Sequence

from dispatcher.core.preview import TerminalSeen
from dispatcher.store.base import StoreBase
from dispatcher.store.keys import (
    SMS_RECIPS,
    TERMS_REGION,
    TERMS_STATE,
    region_terms_key,
    sms_region_recips_key,
)

# Fields read per HMGET: large enough to keep round trips few, small enough not to hold Redis.
BATCH = 5000


class PreviewStore(StoreBase):
    """On the engine store's client: ``PreviewStore(store.redis)``."""

    async def terminals_below(self, cover: Sequence[str]) -> list[TerminalSeen]:
        """Every registered terminal at or below the cover, sorted by id."""
        if not cover:
            return []
        ids = sorted(await self.call(self.redis.sunion([region_terms_key(code) for code in cover])))
        out: list[TerminalSeen] = []
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(ids), BATCH):
                chunk = ids[start : start + BATCH]
                pipe.hmget(TERMS_REGION, chunk)
                pipe.hmget(TERMS_STATE, chunk)
            replies = await self.call(pipe.execute()) if ids else []
        for index, start in enumerate(range(0, len(ids), BATCH)):
            chunk = ids[start : start + BATCH]
            regions, states = replies[2 * index], replies[2 * index + 1]
            for terminal, region, state in zip(chunk, regions, states, strict=True):
                # Unregistered meanwhile: the region sets and the registry are not one key.
                if region is not None:
                    out.append(TerminalSeen(terminal, region, state))
        return out

    async def recipients_below(self, cover: Sequence[str]) -> list[str]:
        """The stored JSON of every SMS recipient with a posting at or below the cover."""
        if not cover:
            return []
        keys = sorted(
            await self.call(self.redis.sunion([sms_region_recips_key(code) for code in cover]))
        )
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for start in range(0, len(keys), BATCH):
                pipe.hmget(SMS_RECIPS, keys[start : start + BATCH])
            replies = await self.call(pipe.execute())
        return [raw for reply in replies for raw in reply if raw is not None]
