"""What a terminal coming back online is owed: the alerts in force, and whether it got them.

Read by ``dispatcher.pipeline.current``. An alert is in force when it was dispatched, is not
a cancel nor a link test, has not expired, and no cancel or update replaced it: the newest
version of each chain. The same rule as the CAP feed's current alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from dispatcher.core.models import Alert, MsgType, Status
from dispatcher.store.keys import caught_up_key, dispatch_key, tstate_key
from dispatcher.store.store import Store

# Alerts looked at, newest first: far more than are ever in force at once in a province.
SCAN = 1000
# One answer per online event, remembered this long (a session expiry of days).
CAUGHT_UP_TTL = 7 * 86400
# States after which a terminal is owed nothing more of that alert.
_FINAL = frozenset({"played", "failed", "cancelled"})


class CurrentStore:
    """The store's side of catching terminals up; borrows the engine's ``Store``."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def in_force(self, now: datetime) -> list[Alert]:
        """Every alert in force now, newest first."""
        store = self._store
        candidates = [
            alert
            for alert in await store.list_alerts(limit=SCAN)
            if not alert.expired(now)
            and alert.msg_type is not MsgType.CANCEL
            and alert.status is not Status.TEST
        ]
        if not candidates:
            return []
        async with store.redis.pipeline(transaction=False) as pipe:
            for alert in candidates:
                pipe.hmget(dispatch_key(alert.id), ["state", "cancelled_by", "superseded_by"])
            states = await store.call(pipe.execute())
        return [
            alert
            for alert, (state, cancelled, superseded) in zip(candidates, states, strict=True)
            if state == "dispatched" and not cancelled and not superseded
        ]

    async def claim(self, events: Sequence[tuple[str, str]]) -> list[bool]:
        """For each (terminal, ``at`` of its online state): True the first time this online
        event is seen (by any engine), False for a repeat (the retained state again)."""
        if not events:
            return []
        async with self._store.redis.pipeline(transaction=False) as pipe:
            for terminal, at in events:
                pipe.set(caught_up_key(terminal), at, ex=CAUGHT_UP_TTL, get=True)
            previous = await self._store.call(pipe.execute())
        return [old != at for (_, at), old in zip(events, previous, strict=True)]

    async def regions_of(self, terminals: Sequence[str]) -> dict[str, str | None]:
        return await self._store.regions_of(terminals)

    async def finished(
        self, alerts: Sequence[str], terminals: Sequence[str]
    ) -> set[tuple[str, str]]:
        """(alert, terminal) pairs among these where the terminal already acked an end."""
        if not alerts or not terminals:
            return set()
        async with self._store.redis.pipeline(transaction=False) as pipe:
            for alert_id in alerts:
                pipe.hmget(tstate_key(alert_id), list(terminals))
            rows = await self._store.call(pipe.execute())
        return {
            (alert_id, terminal)
            for alert_id, row in zip(alerts, rows, strict=True)
            for terminal, state in zip(terminals, row, strict=True)
            if state in _FINAL
        }
