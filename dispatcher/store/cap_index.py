"""The index of imported CAP messages: (sender, identifier, sent) → the alert made from it.

It does two jobs: the same CAP message imported again (a feed polled twice, a sender retrying)
is answered with the alert already made, never issued twice; and a later Update or Cancel that
names the message in its ``references`` finds our alert by that triple.

An import first claims the message's key with ``SET NX`` (a ``pending:`` value that lapses
after ``CLAIM_SECONDS``, should the importer die), so that of two imports at once only one
issues; once issued the key holds the alert id for ``TTL_AFTER_EXPIRY`` beyond the alert's
expiry, at least ``MIN_TTL``: long enough for every update, cancel or re-delivery of it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.exceptions import WatchError

from dispatcher.core.errors import StoreUnavailable
from dispatcher.store.base import StoreBase
from dispatcher.store.keys import cap_message_key

PENDING = "pending:"
# An import (parse, check, store and queue) takes milliseconds; a claim older than this is
# an importer that died, and the message may be imported again.
CLAIM_SECONDS = 120
TTL_AFTER_EXPIRY = 24 * 3600
MIN_TTL = 30 * 24 * 3600


def message_digest(sender: str, identifier: str, sent: datetime) -> str:
    """The key of a CAP message: ``sent`` as an instant (the same time written with another
    offset is the same message), sender and identifier as written."""
    instant = sent.astimezone(UTC).isoformat()
    return hashlib.sha256(f"{sender}\n{identifier}\n{instant}".encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """What ``claim`` found: ``token`` set when this import holds the message now; else the
    alert id it was imported as (``alert_id``), or ``pending`` if another import runs."""

    digest: str
    token: str | None = None
    alert_id: str | None = None

    @property
    def won(self) -> bool:
        return self.token is not None

    @property
    def pending(self) -> bool:
        return self.token is None and self.alert_id is None


class CapIndex(StoreBase):
    """On the engine store's client: ``CapIndex(store.redis)``."""

    async def claim(self, digest: str) -> Claim:
        """Take the message for this import (``SET NX``), or say who has it."""
        token = secrets.token_hex(8)
        key = cap_message_key(digest)
        for _ in range(3):
            if await self.call(self.redis.set(key, PENDING + token, nx=True, ex=CLAIM_SECONDS)):
                return Claim(digest, token=token)
            held = await self.call(self.redis.get(key))
            if held is None:
                continue  # the holder's claim lapsed or was released just now: try again
            if held.startswith(PENDING):
                return Claim(digest)
            return Claim(digest, alert_id=held)
        return Claim(digest)  # taken and released three times over: call it pending

    async def settle(self, claim: Claim, alert_id: str, expires: datetime) -> None:
        """The claimed message was issued as ``alert_id`` (or submitted for approval under
        that id); kept ``TTL_AFTER_EXPIRY`` past ``expires``, at least ``MIN_TTL``."""
        left = int((expires - datetime.now(UTC)).total_seconds())
        ttl = max(left + TTL_AFTER_EXPIRY, MIN_TTL)
        await self.call(self.redis.set(cap_message_key(claim.digest), alert_id, ex=ttl))

    async def release(self, claim: Claim) -> None:
        """The claimed import failed: the message may be imported again. Only the claim's own
        value is removed (compare and delete, under WATCH)."""
        if claim.token is None:
            return
        key = cap_message_key(claim.digest)
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await self.call(pipe.watch(key))
                if await self.call(pipe.get(key)) == PENDING + claim.token:
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py lacks the hint
                    pipe.delete(key)
                    await self.call(pipe.execute())
            except StoreUnavailable as exc:
                if not isinstance(exc.__cause__, WatchError):
                    raise
                # Changed meanwhile: no longer this claim's to remove.

    async def alert_of(self, sender: str, identifier: str, sent: datetime) -> str | None:
        """The alert the message was imported as; None if never (or only pending)."""
        held = await self.call(
            self.redis.get(cap_message_key(message_digest(sender, identifier, sent)))
        )
        return None if held is None or held.startswith(PENDING) else str(held)
