"""All Redis access of the drills; every key they write is named here.

ebd:drills                  hash    drill id → Drill JSON (drills.models.Drill)
ebd:drills:by_time          zset    drill ids scored by their scheduled time (ms)
ebd:drills:township:{code}  set     drill ids of that township, every year
ebd:drill:{id}:history      list    Edit JSON: planned, added, moved, cancelled, fired, …
ebd:drill:{id}:report       string  DrillReport JSON, written once the window closed
ebd:drill:{id}:acks         list    the drill alert's ack log entries (JSON), copied at the
                                    report so a review months later does not depend on the
                                    engine-wide ack log's trimming
ebd:drills:version          string  bumped on every change: the scheduler re-reads the plan
ebd:drills:leader           string  the instance holding the drill-scheduler lease (PX)
ebd:drills:heartbeat        string  ms when the lease was last renewed, by whom
ebd:drills:aps:jobs         hash    APScheduler's RedisJobStore: the scheduled jobs
ebd:drills:aps:run_times    zset    APScheduler's RedisJobStore: their next run times
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from dispatcher.store.engine import Store
from drills.models import Drill, DrillStatus, Edit

PREFIX = "ebd:"
DRILLS = PREFIX + "drills"
BY_TIME = PREFIX + "drills:by_time"
VERSION = PREFIX + "drills:version"
LEADER = PREFIX + "drills:leader"
HEARTBEAT = PREFIX + "drills:heartbeat"
APS_JOBS = PREFIX + "drills:aps:jobs"
APS_RUN_TIMES = PREFIX + "drills:aps:run_times"


def township_key(code: str) -> str:
    return f"{PREFIX}drills:township:{code}"


def history_key(drill_id: str) -> str:
    return f"{PREFIX}drill:{drill_id}:history"


def report_key(drill_id: str) -> str:
    return f"{PREFIX}drill:{drill_id}:report"


def acks_key(drill_id: str) -> str:
    return f"{PREFIX}drill:{drill_id}:acks"


# Writes a drill only if its stored status is one of those expected (or it is new): two
# instances that fire, report or edit the same drill at once cannot both apply. KEYS: drills,
# by_time, township set, history, version. ARGV: id, expected statuses (comma list, '' = must
# be new), drill JSON, score, edit JSON.
_PUT = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if raw then return 0 end
else
  if not raw then return 0 end
  local status = cjson.decode(raw).status
  local ok = false
  for s in string.gmatch(ARGV[2], '[^,]+') do if s == status then ok = true end end
  if not ok then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[5] ~= '' then redis.call('RPUSH', KEYS[4], ARGV[5]) end
redis.call('INCR', KEYS[5])
return 1
"""

# Holds the scheduler lease: renews it when this instance has it, takes it when free.
# Returns {1, previous heartbeat} when held (the heartbeat says until when the last holder
# was alive), {0, holder} when another instance has it. KEYS: leader, heartbeat.
# ARGV: instance, ttl ms, now ms.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  return {0, holder}
end
local previous = redis.call('GET', KEYS[2]) or ''
redis.call('SET', KEYS[2], ARGV[3] .. ' ' .. ARGV[1])
return {1, previous}
"""

# Gives the lease up if this instance still holds it. KEYS: leader. ARGV: instance.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class DrillStore:
    """The drills' view of Redis, on the engine store's connection pool."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.redis = store.redis
        self._put = self.redis.register_script(_PUT)
        self._lease = self.redis.register_script(_LEASE)
        self._release = self.redis.register_script(_RELEASE)

    async def _call(self, awaitable: Any) -> Any:
        return await self._store._call(awaitable)

    async def put(
        self, drill: Drill, edit: Edit | None, *, expect: Sequence[DrillStatus] | None = None
    ) -> bool:
        """Write ``drill`` (new when ``expect`` is None, else only from those statuses),
        recording ``edit`` in its history (None: a detail, not a change of plan)."""
        result = await self._call(
            self._put(
                keys=[
                    DRILLS,
                    BY_TIME,
                    township_key(drill.township),
                    history_key(drill.id),
                    VERSION,
                ],
                args=[
                    drill.id,
                    "" if expect is None else ",".join(s.value for s in expect),
                    drill.model_dump_json(),
                    int(drill.scheduled_at.timestamp() * 1000),
                    edit.model_dump_json() if edit is not None else "",
                ],
            )
        )
        return bool(result)

    async def get(self, drill_id: str) -> Drill | None:
        raw = await self._call(self.redis.hget(DRILLS, drill_id))
        return Drill.model_validate_json(raw) if raw else None

    async def between(self, start_ms: int | str, end_ms: int | str) -> list[Drill]:
        """Drills scheduled in [start, end] (ms, or '-inf'/'+inf'), by time."""
        ids = await self._call(self.redis.zrangebyscore(BY_TIME, start_ms, end_ms))
        return await self.many(ids)

    async def many(self, ids: Sequence[str]) -> list[Drill]:
        out: list[Drill] = []
        for start in range(0, len(ids), 2000):
            raws = await self._call(self.redis.hmget(DRILLS, list(ids[start : start + 2000])))
            out.extend(Drill.model_validate_json(raw) for raw in raws if raw)
        return out

    async def all(self) -> list[Drill]:
        return await self.between("-inf", "+inf")

    async def of_township(self, code: str) -> list[Drill]:
        ids = sorted(await self._call(self.redis.smembers(township_key(code))))
        return sorted(await self.many(ids), key=lambda d: d.scheduled_at)

    async def history(self, drill_id: str) -> list[Edit]:
        raws = await self._call(self.redis.lrange(history_key(drill_id), 0, -1))
        return [Edit.model_validate_json(raw) for raw in raws]

    async def version(self) -> int:
        return int(await self._call(self.redis.get(VERSION)) or 0)

    async def put_report(
        self, drill_id: str, report_json: str, acks: Sequence[dict[str, Any]]
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(report_key(drill_id), report_json)
            pipe.delete(acks_key(drill_id))
            for start in range(0, len(acks), 1000):
                pipe.rpush(
                    acks_key(drill_id),
                    *(json.dumps(a, ensure_ascii=False) for a in acks[start : start + 1000]),
                )
            await self._call(pipe.execute())

    async def report(self, drill_id: str) -> str | None:
        return cast(str | None, await self._call(self.redis.get(report_key(drill_id))))

    async def acks(self, drill_id: str) -> list[dict[str, Any]]:
        raws = await self._call(self.redis.lrange(acks_key(drill_id), 0, -1))
        return [json.loads(raw) for raw in raws]

    async def hold_lease(self, instance: str, *, ttl_ms: int, now_ms: int) -> tuple[bool, str]:
        """(True, previous heartbeat "ms instance") when this instance holds the lease;
        (False, holder) when another does."""
        held, info = await self._call(
            self._lease(keys=[LEADER, HEARTBEAT], args=[instance, ttl_ms, now_ms])
        )
        return bool(held), str(info)

    async def release_lease(self, instance: str) -> None:
        await self._call(self._release(keys=[LEADER], args=[instance]))
