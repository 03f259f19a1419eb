"""Import jobs: large terminal and recipient imports that run after their request answered.

A job is a hash (kind, office, state, rows done of total, the result or the error) that lives
for ``JOB_TTL``; the instance running it keeps its id in a set of its own, so that a restart of
that instance, or another instance seeing its lease lapse, marks the job ``interrupted``
instead of leaving it ``running`` forever. Every state change is a script that moves the job
on only from the state it expects: an instance woken from a long stop cannot turn an
interrupted job back into a running or a finished one.

The broker passwords a terminal import hands out are kept apart (``job_secret_key``), for at
most ``SECRET_TTL``, and taken (GETDEL) by the first read of the finished job: once, as the
synchronous answer gives them once.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dispatcher.core.models import utcnow
from dispatcher.store.base import StoreBase
from dispatcher.store.keys import instance_jobs_key, job_key, job_secret_key

# A finished job's record (its counts and errors) is kept for a week for the office to read.
JOB_TTL = 7 * 86400
# The passwords of a terminal import wait for their one reader this long at most.
SECRET_TTL = 3600
KINDS = ("terminals", "recipients")
ACTIVE = ("queued", "running")
STATES = (*ACTIVE, "done", "failed", "interrupted")

# KEYS[1] the job; ARGV: the states it may move from (comma-separated), the new state, the
# time, then field/value pairs to set. Returns 1 if it moved, 0 if the job was not in one of
# those states (or is gone).
_MOVE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
local allowed = false
for from in string.gmatch(ARGV[1], '[^,]+') do
  if from == state then allowed = true end
end
if not allowed then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'updated_at', ARGV[3])
for i = 4, #ARGV, 2 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    kind: str
    office: str
    instance: str
    state: str
    total: int
    done: int
    created_at: str
    updated_at: str
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    has_secret: bool

    def public(self) -> dict[str, Any]:
        """The job as ``GET /api/v1/jobs/{id}`` shows it (without the passwords)."""
        return {
            "id": self.id,
            "kind": self.kind,
            "state": self.state,
            "progress": {"done": self.done, "total": self.total},
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "result": self.result,
            "error": self.error,
        }


class JobStore(StoreBase):
    def __init__(self, client: Any) -> None:
        super().__init__(client)
        self._move = self.redis.register_script(_MOVE)

    async def create(self, kind: str, *, office: str, instance: str, total: int) -> Job:
        """A new ``queued`` job of ``instance``."""
        if kind not in KINDS:
            raise ValueError(f"unknown job kind {kind!r}")
        job_id = f"job-{secrets.token_hex(8)}"
        now = utcnow().isoformat()
        fields = {
            "kind": kind,
            "office": office,
            "instance": instance,
            "state": "queued",
            "total": str(total),
            "done": "0",
            "created_at": now,
            "updated_at": now,
        }
        # Not a transaction: the set is in another Redis Cluster slot than the job.
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(job_key(job_id), mapping=fields)  # type: ignore[arg-type]  # str: str
            pipe.expire(job_key(job_id), JOB_TTL)
            pipe.sadd(instance_jobs_key(instance), job_id)
            await self.call(pipe.execute())
        return _job(job_id, fields)

    async def get(self, job_id: str) -> Job | None:
        raw: Mapping[str, str] = await self.call(self.redis.hgetall(job_key(job_id)))
        if not raw or "state" not in raw:
            return None
        return _job(job_id, raw)

    async def start(self, job: Job) -> bool:
        return await self._moved(job, ("queued",), "running")

    async def progress(self, job: Job, done: int) -> bool:
        """Rows done so far; False once the job is no longer running (it was interrupted)."""
        return await self._moved(job, ("running",), "running", done=str(done))

    @staticmethod
    def queue_secret(pipe: Any, job_id: str, passwords: Mapping[str, str]) -> None:
        """Queue the passwords a job handed out into ``pipe`` (the transaction storing their
        accounts), kept apart from the job for one reader and ``SECRET_TTL`` at most."""
        pipe.set(job_secret_key(job_id), json.dumps(passwords), ex=SECRET_TTL)

    async def finish(self, job: Job, result: Mapping[str, Any], *, has_secret: bool) -> bool:
        """``done`` with its result (``has_secret``: it handed out passwords)."""
        return await self._moved(
            job,
            ("running",),
            "done",
            done=str(job.total),
            result=json.dumps(result, ensure_ascii=False),
            has_secret="1" if has_secret else "0",
        )

    async def fail(self, job: Job, error: Mapping[str, Any], *, state: str = "failed") -> bool:
        """``failed`` (or ``interrupted``) with an error saying what happened and what to do."""
        return await self._moved(job, ACTIVE, state, error=json.dumps(error, ensure_ascii=False))

    async def take_secret(self, job_id: str) -> dict[str, str] | None:
        """The passwords a terminal import handed out (terminal id: password), once: gone
        after this read."""
        raw = await self.call(self.redis.getdel(job_secret_key(job_id)))
        if raw is None:
            return None
        body: dict[str, str] = json.loads(raw)
        return body

    async def active_of(self, instance: str) -> list[str]:
        """The ids of the jobs ``instance`` had queued or running."""
        return sorted(await self.call(self.redis.smembers(instance_jobs_key(instance))))

    async def _moved(self, job: Job, from_states: tuple[str, ...], to: str, **fields: str) -> bool:
        args: list[str] = [",".join(from_states), to, utcnow().isoformat()]
        for name, value in fields.items():
            args += [name, value]
        moved = bool(await self.call(self._move(keys=[job_key(job.id)], args=args)))
        if to not in ACTIVE:
            # Apart from the script: the set is in another Redis Cluster slot, and a member
            # left behind is only looked at again (and found ended) at the next start.
            await self.call(self.redis.srem(instance_jobs_key(job.instance), job.id))
        return moved


def _job(job_id: str, raw: Mapping[str, str]) -> Job:
    return Job(
        id=job_id,
        kind=raw.get("kind", ""),
        office=raw.get("office", ""),
        instance=raw.get("instance", ""),
        state=raw["state"],
        total=int(raw.get("total", 0)),
        done=int(raw.get("done", 0)),
        created_at=raw.get("created_at", ""),
        updated_at=raw.get("updated_at", ""),
        result=json.loads(raw["result"]) if raw.get("result") else None,
        error=json.loads(raw["error"]) if raw.get("error") else None,
        has_secret=raw.get("has_secret") == "1",
    )
