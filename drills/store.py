"""All Redis access of the drills (their keys: ``dispatcher.store.keys``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from dispatcher.store.base import StoreBase
from dispatcher.store.keys import (
    DRILLS,
    DRILLS_BY_TIME,
    DRILLS_BY_YEAR,
    DRILLS_HEARTBEAT,
    DRILLS_LEADER,
    DRILLS_VERSION,
    INSTANCES,
    drill_acks_key,
    drill_history_key,
    drill_report_key,
    drill_township_key,
    lease_key,
    region_terms_key,
)
from dispatcher.store.store import Store
from drills.models import Drill, DrillStatus, Edit


class DrillStore(StoreBase):
    """The drills' view of Redis, on the engine store's client."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.redis)
        self._put = self.script("drills", "put")
        self._lease = self.script("drills", "lease")
        self._release = self.script("drills", "release")
        self._first_report = self.script("drills", "first_report")
        self._append_review = self.script("drills", "append_review")

    async def put(
        self, drill: Drill, edit: Edit | None, *, expect: Sequence[DrillStatus] | None = None
    ) -> bool:
        """Write ``drill`` (new when ``expect`` is None, else only from those statuses),
        recording ``edit`` in its history (None: a detail, not a change of plan)."""
        result = await self.call(
            self._put(
                keys=[
                    DRILLS,
                    DRILLS_BY_TIME,
                    drill_township_key(drill.township),
                    drill_history_key(drill.id),
                    DRILLS_VERSION,
                    DRILLS_BY_YEAR,
                ],
                args=[
                    drill.id,
                    "" if expect is None else ",".join(s.value for s in expect),
                    drill.model_dump_json(),
                    int(drill.scheduled_at.timestamp() * 1000),
                    edit.model_dump_json() if edit is not None else "",
                    drill.year,
                ],
            )
        )
        return bool(result)

    async def get(self, drill_id: str) -> Drill | None:
        raw = await self.call(self.redis.hget(DRILLS, drill_id))
        return Drill.model_validate_json(raw) if raw else None

    async def between(self, start_ms: int | str, end_ms: int | str) -> list[Drill]:
        """Drills scheduled in [start, end] (ms, or '-inf'/'+inf'), by time."""
        ids = await self.call(self.redis.zrangebyscore(DRILLS_BY_TIME, start_ms, end_ms))
        return await self.many(ids)

    async def many(self, ids: Sequence[str]) -> list[Drill]:
        out: list[Drill] = []
        for start in range(0, len(ids), 2000):
            raws = await self.call(self.redis.hmget(DRILLS, list(ids[start : start + 2000])))
            out.extend(Drill.model_validate_json(raw) for raw in raws if raw)
        return out

    async def all(self) -> list[Drill]:
        return await self.between("-inf", "+inf")

    async def of_year(self, year: int) -> list[Drill]:
        """The drills of ``year`` (``Drill.year``: a re-drill settles its failed drill's year
        wherever it falls), by id."""
        await self._index_years()
        ids = await self.call(self.redis.zrangebyscore(DRILLS_BY_YEAR, year, year))
        return await self.many(sorted(ids))

    async def _index_years(self) -> None:
        """Index by year the drills stored before the year index existed (once: afterwards
        every write keeps it, and both indexes hold every drill)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(DRILLS_BY_YEAR)
            pipe.zcard(DRILLS_BY_TIME)
            indexed, stored = await self.call(pipe.execute())
        if indexed >= stored:
            return
        drills = await self.all()
        for start in range(0, len(drills), 2000):
            chunk = {d.id: d.year for d in drills[start : start + 2000]}
            # NX: a drill written meanwhile was indexed by its write, with its newer year.
            await self.call(self.redis.zadd(DRILLS_BY_YEAR, chunk, nx=True))

    async def with_terminals(self, codes: Sequence[str]) -> set[str]:
        """Those of the region ``codes`` with at least one registered terminal (at or below)."""
        found: set[str] = set()
        for start in range(0, len(codes), 5000):
            chunk = codes[start : start + 5000]
            async with self.redis.pipeline(transaction=False) as pipe:
                for code in chunk:
                    pipe.scard(region_terms_key(code))
                counts = await self.call(pipe.execute())
            found.update(code for code, n in zip(chunk, counts, strict=True) if n)
        return found

    async def taken(self, ids: Sequence[str]) -> set[str]:
        """Those of ``ids`` that some stored drill has."""
        if not ids:
            return set()
        async with self.redis.pipeline(transaction=False) as pipe:
            for drill_id in ids:
                pipe.hexists(DRILLS, drill_id)
            found = await self.call(pipe.execute())
        return {drill_id for drill_id, hit in zip(ids, found, strict=True) if hit}

    async def of_township(self, code: str) -> list[Drill]:
        ids = sorted(await self.call(self.redis.smembers(drill_township_key(code))))
        return sorted(await self.many(ids), key=lambda d: d.scheduled_at)

    async def history(self, drill_id: str) -> list[Edit]:
        raws = await self.call(self.redis.lrange(drill_history_key(drill_id), 0, -1))
        return [Edit.model_validate_json(raw) for raw in raws]

    async def version(self) -> int:
        return int(await self.call(self.redis.get(DRILLS_VERSION)) or 0)

    async def first_report(
        self, drill_id: str, report_json: str, acks: Sequence[dict[str, Any]]
    ) -> str | None:
        """Store a drill's first report and the ack log entries it read (its review log);
        None when stored, else the report already there, which stays."""
        kept = await self.call(
            self._first_report(
                keys=[drill_report_key(drill_id), drill_acks_key(drill_id)],
                args=[report_json, *(json.dumps(a, ensure_ascii=False) for a in acks)],
            )
        )
        return cast(str | None, kept)

    async def acks(self, drill_id: str) -> list[dict[str, Any]]:
        """A drill's review log alone (without its report, which may be large)."""
        raws = await self.call(self.redis.lrange(drill_acks_key(drill_id), 0, -1))
        return [json.loads(raw) for raw in raws]

    async def report(self, drill_id: str) -> str | None:
        return cast(str | None, await self.call(self.redis.get(drill_report_key(drill_id))))

    async def review(self, drill_id: str) -> tuple[str | None, list[dict[str, Any]]]:
        """A drill's report and review log, read together (one transaction)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.get(drill_report_key(drill_id))
            pipe.lrange(drill_acks_key(drill_id), 0, -1)
            raw, rows = await self.call(pipe.execute())
        return raw, [json.loads(row) for row in rows]

    async def append_review(
        self, drill_id: str, read: int, report_json: str, acks: Sequence[dict[str, Any]]
    ) -> bool:
        """Append ``acks`` to the review log and store the report made with them, if the log
        still has the ``read`` entries it had when read; False when another writer was first."""
        applied = await self.call(
            self._append_review(
                keys=[drill_report_key(drill_id), drill_acks_key(drill_id)],
                args=[read, report_json, *(json.dumps(a, ensure_ascii=False) for a in acks)],
            )
        )
        return bool(applied)

    async def hold_lease(self, instance: str, *, ttl_ms: int, now_ms: int) -> tuple[bool, str]:
        """(True, previous heartbeat "ms instance") when this instance holds the lease;
        (False, holder) when another does."""
        holder = await self.call(self.redis.get(DRILLS_LEADER)) or ""
        held, info = await self.call(
            self._lease(
                keys=[DRILLS_LEADER, DRILLS_HEARTBEAT, lease_key(holder or instance), INSTANCES],
                args=[instance, ttl_ms, now_ms, holder],
            )
        )
        return bool(held), str(info)

    async def release_lease(self, instance: str) -> None:
        await self.call(self._release(keys=[DRILLS_LEADER], args=[instance]))
