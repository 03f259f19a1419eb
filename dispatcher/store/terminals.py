"""The terminal registry: each terminal's region, kind, last state, and the regions' sets;
the latest reasons its acks were refused, and the answers to link tests (pings)."""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from redis.commands.core import AsyncScript

from dispatcher.core.models import utcnow
from dispatcher.core.regions import code_path
from dispatcher.store.base import StoreBase, hash_fields
from dispatcher.store.keys import (
    TERMS_META,
    TERMS_REGION,
    TERMS_STATE,
    ping_key,
    region_terms_key,
    rejections_key,
)
from dispatcher.store.set_batch import SCRIPT as SET_CHANGES
from dispatcher.store.set_batch import SetChanges

MAX_REJECTIONS = 20
REJECTIONS_TTL = 30 * 86400
PING_TTL = 120


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    created: int
    updated: int
    unchanged: int

    def __add__(self, other: RegistrationResult) -> RegistrationResult:
        return RegistrationResult(
            self.created + other.created,
            self.updated + other.updated,
            self.unchanged + other.unchanged,
        )


class TerminalRow(NamedTuple):
    """A checked terminal to register (``TerminalIn`` made plain, cheap between processes)."""

    id: str
    region: str
    kind: str


class _Terminal(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def region(self) -> str: ...
    @property
    def kind(self) -> str: ...


# Terminals per transaction: each one is a few milliseconds of the event loop to build and
# of Redis to run, so a 100,000-terminal import never holds either for long.
REGISTER_CHUNK = 2000

Progress = Callable[[int], Awaitable[None]]


class TerminalStore(StoreBase):
    @functools.cached_property
    def _set_changes(self) -> AsyncScript:
        return self.redis.register_script(SET_CHANGES)

    async def register_terminals(
        self,
        terminals: Sequence[_Terminal],
        *,
        chunk: int = REGISTER_CHUNK,
        progress: Progress | None = None,
    ) -> RegistrationResult:
        """Register or move terminals, ``chunk`` of them per transaction (up to ``chunk``:
        none or all are written); ``progress`` hears the count written after each one.

        The rows are checked whole before this is called, so a larger list stops midway only
        if Redis or the engine does: what was written stays, and registering the same list
        again finishes it (those come back unchanged). The registry is WATCHed between
        reading the old regions and writing: two concurrent moves of one terminal must not
        leave it in two regions' sets.
        """
        now = utcnow().isoformat()
        rows = [TerminalRow(t.id, t.region, str(t.kind)) for t in terminals]
        total = RegistrationResult(0, 0, 0)
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            total += await self.watched_update(
                TERMS_REGION,
                [t.id for t in part],
                functools.partial(
                    self._queue_registration, terminals=part, now=now, script=self._set_changes
                ),
                what="the terminal registry",
            )
            if progress is not None:
                await progress(start + len(part))
        return total

    @staticmethod
    def _queue_registration(
        pipe: Any,
        old: Sequence[str | None],
        *,
        terminals: Sequence[TerminalRow],
        now: str,
        script: AsyncScript,
    ) -> RegistrationResult:
        created = updated = unchanged = 0
        # The region sets' changes as one command (``SetChanges``), not one per terminal and
        # level: a chunk of 2,000 terminals is four commands instead of twelve thousand.
        changes = SetChanges()
        regions: dict[str, str] = {}
        metas: dict[str, str] = {}
        meta_of_kind: dict[str, str] = {}  # one JSON per kind, not per terminal
        for terminal, previous in zip(terminals, old, strict=True):
            if previous == terminal.region:
                unchanged += 1
            elif previous is None:
                created += 1
            else:
                updated += 1
                for code in code_path(previous):
                    changes.remove(region_terms_key(code), terminal.id)
            for code in code_path(terminal.region):
                changes.add(region_terms_key(code), terminal.id)
            regions[terminal.id] = terminal.region
            meta = meta_of_kind.get(terminal.kind)
            if meta is None:
                meta = meta_of_kind[terminal.kind] = json.dumps(
                    {"kind": terminal.kind, "registered_at": now}
                )
            metas[terminal.id] = meta
        changes.queue(pipe, script)
        pipe.hset(TERMS_REGION, mapping=hash_fields(regions))
        pipe.hset(TERMS_META, mapping=hash_fields(metas))
        return RegistrationResult(created=created, updated=updated, unchanged=unchanged)

    async def regions_of(self, ids: Sequence[str]) -> dict[str, str | None]:
        """Each terminal's registered region, None if it is not registered."""
        out: dict[str, str | None] = {}
        # In parts: one HMGET of 100,000 fields would hold Redis, and its answer the loop.
        for start in range(0, len(ids), 10_000):
            part = list(ids[start : start + 10_000])
            found = await self.call(self.redis.hmget(TERMS_REGION, part))
            out.update(zip(part, found, strict=True))
        return out

    async def delete_terminal(self, terminal_id: str) -> str | None:
        """Remove a terminal from the registry (its region sets, meta and state); its region,
        or None if it was not registered."""
        region: str | None = await self.call(self.redis.hget(TERMS_REGION, terminal_id))
        if region is None:
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            for code in code_path(region):
                pipe.srem(region_terms_key(code), terminal_id)
            pipe.hdel(TERMS_REGION, terminal_id)
            pipe.hdel(TERMS_META, terminal_id)
            pipe.hdel(TERMS_STATE, terminal_id)
            pipe.delete(rejections_key(terminal_id))
            await self.call(pipe.execute())
        return region

    async def count_terminals(self, code: str) -> int:
        return int(await self.call(self.redis.scard(region_terms_key(code))))

    async def list_terminals(
        self, code: str, *, limit: int, offset: int
    ) -> tuple[int, list[dict[str, Any]]]:
        members = sorted(await self.call(self.redis.smembers(region_terms_key(code))))
        page = members[offset : offset + limit]
        if not page:
            return len(members), []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(TERMS_REGION, page)
            pipe.hmget(TERMS_META, page)
            pipe.hmget(TERMS_STATE, page)
            regions, metas, states = await self.call(pipe.execute())
        out = []
        for terminal, region, meta, state in zip(page, regions, metas, states, strict=True):
            info = json.loads(meta) if meta else {}
            out.append(
                {
                    "id": terminal,
                    "region": region,
                    "kind": info.get("kind"),
                    "registered_at": info.get("registered_at"),
                    "state": json.loads(state) if state else None,
                }
            )
        return len(members), out

    async def record_terminal_states(self, states: dict[str, str]) -> None:
        """Store the latest state message (JSON) of each terminal."""
        if states:
            await self.call(self.redis.hset(TERMS_STATE, mapping=hash_fields(states)))

    async def terminal(self, terminal_id: str) -> dict[str, Any] | None:
        """One terminal as the registry has it, with the latest reasons its acks were
        refused (``rejections``, newest first); None if it is not registered."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(TERMS_REGION, terminal_id)
            pipe.hget(TERMS_META, terminal_id)
            pipe.hget(TERMS_STATE, terminal_id)
            pipe.lrange(rejections_key(terminal_id), 0, MAX_REJECTIONS - 1)
            region, meta, state, rejected = await self.call(pipe.execute())
        if region is None:
            return None
        info = json.loads(meta) if meta else {}
        return {
            "id": terminal_id,
            "region": region,
            "kind": info.get("kind"),
            "registered_at": info.get("registered_at"),
            "state": json.loads(state) if state else None,
            "rejections": [json.loads(entry) for entry in rejected],
        }

    async def record_rejections(self, rejections: dict[str, list[dict[str, str]]]) -> None:
        """Keep the latest reasons each terminal's acks were refused (bounded, expiring)."""
        if not rejections:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for terminal_id, entries in rejections.items():
                key = rejections_key(terminal_id)
                pipe.lpush(key, *(json.dumps(e, ensure_ascii=False) for e in entries))
                pipe.ltrim(key, 0, MAX_REJECTIONS - 1)
                pipe.expire(key, REJECTIONS_TTL)
            await self.call(pipe.execute())

    async def record_ping_acks(self, acks: dict[str, list[str]]) -> None:
        """The acks (JSON) of link tests, by ping id, for ``wait_ping_ack`` in any instance."""
        if not acks:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for ping_id, entries in acks.items():
                pipe.rpush(ping_key(ping_id), *entries)
                pipe.expire(ping_key(ping_id), PING_TTL)
            await self.call(pipe.execute())

    async def wait_ping_ack(self, ping_id: str, timeout: float) -> dict[str, Any] | None:
        """The first ack of link test ``ping_id`` once it arrives, None after ``timeout``
        seconds. A blocking pop: the ack may reach another engine instance's ingester."""
        found = await self.call(self.redis.blpop([ping_key(ping_id)], timeout=timeout))
        if found is None:
            return None
        body: dict[str, Any] = json.loads(found[1])
        return body
