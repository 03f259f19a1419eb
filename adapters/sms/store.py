"""All Redis access of the SMS channel; every key it writes is named here.

Key schema (``{job}`` an SMS job: an alert id, or ``{alert id}.esc`` for the texts an
escalation sends; ``{r}`` a recipient key, see ``gateway.recipient_key``):

    ebd:recips                  hash    {r} → person JSON (phone, name, languages, postings)
    ebd:rrecips:{code}          set     {r} of persons with a posting at or below {code}
    ebd:smsjob:{job}            hash    the job: alert_id, kind, expires_ms, exempt, signature,
                                        and per text variant {v}: {v}.body, {v}.text,
                                        {v}.segments, {v}.encoding
    ebd:smsjob:{job}:state      hash    {r} → queued | submitting | unknown | submitted
                                        | delivered | failed | cancelled | expired
    ebd:smsjob:{job}:info       hash    {r} → JSON: phone, lang, gateway, attempts, owner,
                                        retry_at, message_id, error, parts, ok (parts delivered)
    ebd:smsjob:{job}:counts     hash    state → n, "recipients", "segments"
    ebd:sms:outbox              stream  chunks of a job's recipients to send; group "sms"
    ebd:sms:doubt               zset    "{job}|{r}" in flight, unanswered, or taken with no
                                        receipt yet → when to ask the gateway about it (ms)
    ebd:sms:bucket:{gateway}    hash    the gateway's token bucket: tokens, ts (ms, Redis clock)
    ebd:sms:rl:{r}:{hour}       string  texts that person was sent in that UTC hour
    ebd:sms:receipts            stream  every receipt as it arrived, for review
    ebd:sms:stats               hash    counters: receipts, receipts_orphan, …

A message is marked ``submitting`` (with an owner and an entry in the doubt set) in Redis
before its request leaves, and every later step is a script that moves it on only from the
state it expects. So a crash at any point leaves either a queued message (sent later, once) or
one in doubt (looked up at its gateway, never blindly sent again).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from adapters.sms.gateway import DeliveryStatus, Receipt, SubmitResult
from dispatcher.core.errors import StoreUnavailable
from dispatcher.core.regions import code_path
from dispatcher.store.engine import Store, WorkStream

PREFIX = "ebd:"
RECIPS = PREFIX + "recips"
OUTBOX = PREFIX + "sms:outbox"
OUTBOX_GROUP = "sms"
DOUBT = PREFIX + "sms:doubt"
RECEIPTS = PREFIX + "sms:receipts"
STATS = PREFIX + "sms:stats"
LIMIT_PREFIX = PREFIX + "sms:rl:"
STATES = (
    "queued",
    "submitting",
    "unknown",
    "submitted",
    "delivered",
    "failed",
    "cancelled",
    "expired",
)
# A receipt log of a few province-wide alerts' worth.
RECEIPTS_MAXLEN = 1_000_000


def region_recips_key(code: str) -> str:
    return f"{PREFIX}rrecips:{code}"


def job_key(job: str) -> str:
    return f"{PREFIX}smsjob:{job}"


def job_keys(job: str) -> list[str]:
    """state, info, counts of a job, in the order the scripts take them."""
    return [f"{job_key(job)}:state", f"{job_key(job)}:info", f"{job_key(job)}:counts"]


def bucket_key(gateway: str) -> str:
    return f"{PREFIX}sms:bucket:{gateway}"


# Shared by the scripts below: moving one recipient between states keeps the counts in step.
_MOVE = """
local function move(r, old, new)
  redis.call('HSET', KEYS[1], r, new)
  if old then redis.call('HINCRBY', KEYS[3], old, -1) end
  redis.call('HINCRBY', KEYS[3], new, 1)
end
"""

# Queues the recipients not queued before (idempotent: planning again after a crash adds
# nothing) and adds the new ones to the outbox in chunks, in the same atomic step.
# KEYS: state, info, counts, outbox. ARGV: job, chunk size, JSON [[r, info], …] (one
# argument: decoding it here is cheaper than building thousands of arguments in Python).
_PLAN = """
local job, chunk = ARGV[1], tonumber(ARGV[2])
local items = cjson.decode(ARGV[3])
local new = {}
local segments = 0
for _, item in ipairs(items) do
  local r, info = item[1], item[2]
  if redis.call('HSETNX', KEYS[1], r, 'queued') == 1 then
    redis.call('HSET', KEYS[2], r, cjson.encode(info))
    new[#new + 1] = r
    segments = segments + (tonumber(info.segments) or 1)
  end
end
if #new > 0 then
  redis.call('HINCRBY', KEYS[3], 'queued', #new)
  redis.call('HINCRBY', KEYS[3], 'recipients', #new)
  redis.call('HINCRBY', KEYS[3], 'segments', segments)
end
for s = 1, #new, chunk do
  local part = {}
  for j = s, math.min(s + chunk - 1, #new) do part[#part + 1] = new[j] end
  redis.call('XADD', KEYS[4], '*', 'job', job, 'rkeys', table.concat(part, ','))
end
return #new
"""

# Takes queued recipients whose retry time has come for one request: each becomes
# `submitting`, owned by this request, with a doubt entry that outlives the request's timeout.
# A person over the hourly limit is failed instead (unless the job is exempt).
# KEYS: state, info, counts, doubt. ARGV: now, owner, gateway, doubt due, job, limit,
# exempt, hour, then r*. Returns the recipients taken.
_BEGIN = (
    _MOVE
    + """
local now, owner, gateway, due, job = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit, exempt, hour = tonumber(ARGV[6]), ARGV[7] == '1', ARGV[8]
local taken = {}
for i = 9, #ARGV do
  local r = ARGV[i]
  local state = redis.call('HGET', KEYS[1], r)
  if state == 'submitting' then
    -- Run again by the client after a lost reply: what this request took is still its own.
    local info = cjson.decode(redis.call('HGET', KEYS[2], r))
    if info.owner == owner then taken[#taken + 1] = r end
  elseif state == 'queued' then
    local info = cjson.decode(redis.call('HGET', KEYS[2], r))
    if (info.retry_at or 0) <= now then
      local sent = tonumber(redis.call('GET', 'ebd:sms:rl:' .. r .. ':' .. hour) or '0')
      if limit > 0 and not exempt and sent >= limit then
        info.error = 'recipient_limit: ' .. sent .. ' texts this hour'
        redis.call('HSET', KEYS[2], r, cjson.encode(info))
        move(r, 'queued', 'failed')
      else
        info.owner = owner
        info.gateway = gateway
        info.attempts = (info.attempts or 0) + 1
        info.started = now
        redis.call('HSET', KEYS[2], r, cjson.encode(info))
        move(r, 'queued', 'submitting')
        redis.call('ZADD', KEYS[4], due, job .. '|' .. r)
        taken[#taken + 1] = r
      end
    end
  end
end
return taken
"""
)

# The gateway's answer to one request. Only the owner's `submitting` is moved back to queued
# (a retry); an early receipt (delivered, failed) is never overwritten.
# A text the gateway took is looked up after the receipt due time if no receipt came.
# KEYS: state, info, counts, doubt. ARGV: now, owner, job, settle due, max attempts, hour,
# receipt due, then (r, status, message id, error, retry at)*.
_FINISH = (
    _MOVE
    + """
local now, owner, job, settle_due = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local max_attempts, hour, receipt_due = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local out = {}
for i = 8, #ARGV, 5 do
  local r, status, mid, err, retry_at = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local state = redis.call('HGET', KEYS[1], r)
  local raw = redis.call('HGET', KEYS[2], r)
  local result = 'ignored'
  if state and raw then
    local info = cjson.decode(raw)
    local mine = state == 'submitting' and info.owner == owner
    local limit_key = 'ebd:sms:rl:' .. r .. ':' .. hour
    if status == 'accepted' then
      if mid ~= '' then info.message_id = mid end
      info.submitted_at = now
      -- Also from queued: a late answer for a message a lookup had not found yet.
      if mine or state == 'unknown' or state == 'queued' then
        move(r, state, 'submitted')
        redis.call('ZADD', KEYS[4], receipt_due, job .. '|' .. r)
      end
      -- Counted once per text: an unknown one was counted when its answer did not come.
      if mine then
        redis.call('INCR', limit_key)
        redis.call('EXPIRE', limit_key, 7200)
      end
      result = 'submitted'
    elseif mine and status == 'rejected' then
      info.error = err
      move(r, state, 'failed')
      redis.call('ZREM', KEYS[4], job .. '|' .. r)
      result = 'failed'
    elseif mine and status == 'retry' then
      info.error = err
      redis.call('ZREM', KEYS[4], job .. '|' .. r)
      if (info.attempts or 0) >= max_attempts then
        info.error = 'gave up after ' .. info.attempts .. ' attempts: ' .. err
        move(r, state, 'failed')
        result = 'failed'
      else
        info.retry_at = tonumber(retry_at)
        move(r, state, 'queued')
        result = 'queued'
      end
    elseif mine and status == 'unknown' then
      info.error = err
      move(r, state, 'unknown')
      redis.call('ZADD', KEYS[4], settle_due, job .. '|' .. r)
      redis.call('INCR', limit_key)
      redis.call('EXPIRE', limit_key, 7200)
      result = 'unknown'
    end
    -- Another request's mark (after a lookup put it back and it was sent again) stays.
    if mine then info.owner = nil end
    redis.call('HSET', KEYS[2], r, cjson.encode(info))
  end
  out[#out + 1] = result
end
return out
"""
)

# Delivery receipts of one job. A receipt is the gateway's word and beats anything the engine
# guessed (a message given up on, or put back in the queue, that the gateway did deliver).
# A receipt for the whole message, or for its last part (part = parts), settles it; earlier
# parts are kept, and a text waiting for more of them stays due for a lookup. A part that
# fails fails the text, also after it was counted delivered.
# KEYS: state, info, counts, doubt. ARGV: job, receipt due, then
# (r, status, part, parts, mid, err, at)*.
_RECEIPTS = (
    _MOVE
    + """
local job, receipt_due = ARGV[1], ARGV[2]
local out = {}
for i = 3, #ARGV, 7 do
  local r, status, part, parts = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2]), tonumber(ARGV[i+3])
  local mid, err, at = ARGV[i+4], ARGV[i+5], ARGV[i+6]
  local state = redis.call('HGET', KEYS[1], r)
  local raw = redis.call('HGET', KEYS[2], r)
  local member = job .. '|' .. r
  local result = 'orphan'
  if state and raw then
    local info = cjson.decode(raw)
    if mid ~= '' and not info.message_id then info.message_id = mid end
    info.parts = parts
    local ok = info.ok or {}
    if status ~= 'failed' then
      local seen = false
      for _, p in ipairs(ok) do if p == part then seen = true end end
      if not seen then ok[#ok + 1] = part end
      info.ok = ok
    end
    local new = state
    if status == 'failed' then
      if state ~= 'failed' or info.final ~= 'receipt' then
        info.error = err ~= '' and err or 'failed'
        new = 'failed'
      end
      info.final = 'receipt'
    elseif info.final == 'receipt' then
      new = state
    elseif part >= parts or #ok >= parts then
      info.final = 'receipt'
      info.delivered_at = at
      new = 'delivered'
    elseif state ~= 'submitted' then
      new = 'submitted'
      redis.call('ZADD', KEYS[4], receipt_due, member)
    end
    if new ~= state then
      move(r, state, new)
      result = new
    else
      result = 'duplicate'
    end
    if info.final == 'receipt' then redis.call('ZREM', KEYS[4], member) end
    redis.call('HSET', KEYS[2], r, cjson.encode(info))
  end
  out[#out + 1] = result
end
return out
"""
)


# What a gateway said when asked about a message in doubt. Not found means it never took the
# message: back to the queue (and the outbox) to be sent once. A text it took and that has
# no receipt yet is asked about again at the recheck time.
# KEYS: state, info, counts, doubt, outbox. ARGV: now, job, recheck due, then (r, status)*.
_SETTLE = (
    _MOVE
    + """
local now, job, recheck = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local requeued = {}
local out = {}
for i = 4, #ARGV, 2 do
  local r, status = ARGV[i], ARGV[i + 1]
  local state = redis.call('HGET', KEYS[1], r)
  local member = job .. '|' .. r
  local result = 'ignored'
  if state == 'submitting' or state == 'unknown' or state == 'submitted' then
    local info = cjson.decode(redis.call('HGET', KEYS[2], r))
    info.owner = nil
    result = status
    if status == 'delivered' or status == 'failed' then
      info.final = 'query'
      move(r, state, status)
      redis.call('ZREM', KEYS[4], member)
    elseif status == 'accepted' then
      if state ~= 'submitted' then move(r, state, 'submitted') end
      redis.call('ZADD', KEYS[4], recheck, member)
    elseif state == 'submitted' then
      -- It answered "taken" before: never send it again on the word of a lookup.
      info.error = 'the gateway took it but its lookup does not find it'
      redis.call('ZADD', KEYS[4], recheck, member)
      result = 'kept'
    else
      info.retry_at = now
      info.error = 'the gateway never took it; sending again'
      move(r, state, 'queued')
      redis.call('ZREM', KEYS[4], member)
      requeued[#requeued + 1] = r
    end
    redis.call('HSET', KEYS[2], r, cjson.encode(info))
  else
    redis.call('ZREM', KEYS[4], member)
  end
  out[#out + 1] = result
end
if #requeued > 0 then
  redis.call('XADD', KEYS[5], '*', 'job', job, 'rkeys', table.concat(requeued, ','))
end
return out
"""
)


# Ends what is left of a job (its alert expired, was cancelled or superseded): those of the
# given recipients still queued become `to_state`; what is in flight goes on. Called with a
# chunk or a page at a time, so Redis is never held for a whole province at once.
# KEYS: state, info, counts. ARGV: to state, reason, then r*.
_CLOSE = (
    _MOVE
    + """
local to_state, reason = ARGV[1], ARGV[2]
local n = 0
for i = 3, #ARGV do
  local r = ARGV[i]
  if redis.call('HGET', KEYS[1], r) == 'queued' then
    local info = cjson.decode(redis.call('HGET', KEYS[2], r))
    info.error = reason
    redis.call('HSET', KEYS[2], r, cjson.encode(info))
    move(r, 'queued', to_state)
    n = n + 1
  end
end
return n
"""
)

# A token bucket shared by every instance, on Redis's clock. Takes n tokens or says how many
# milliseconds until they are there. KEYS: bucket. ARGV: n, refill per second, capacity.
_TAKE = """
local n, rate, cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(b[1]) or cap
local ts = tonumber(b[2]) or now
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate / 1000)
local wait = 0
if tokens >= n then
  tokens = tokens - n
else
  wait = math.ceil((n - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], 60000)
return wait
"""

# Hands due doubt entries to one instance (their score moves a lease ahead).
_CLAIM = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, m in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], m) end
return due
"""


@dataclass(frozen=True, slots=True)
class Pending:
    """One recipient's send record as the worker needs it."""

    key: str
    state: str
    info: dict[str, Any]


class SmsStore:
    """The SMS channel's view of Redis, on the engine store's connection pool."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.redis = store.redis
        self._plan = self.redis.register_script(_PLAN)
        self._begin = self.redis.register_script(_BEGIN)
        self._finish = self.redis.register_script(_FINISH)
        self._receipts = self.redis.register_script(_RECEIPTS)
        self._settle = self.redis.register_script(_SETTLE)
        self._close = self.redis.register_script(_CLOSE)
        self._take = self.redis.register_script(_TAKE)
        self._claim = self.redis.register_script(_CLAIM)
        self.outbox = WorkStream(store, OUTBOX, OUTBOX_GROUP)

    async def _call(self, awaitable: Any) -> Any:
        return await self._store._call(awaitable)

    # Recipients ---------------------------------------------------------------------------

    async def register_persons(
        self, persons: Sequence[tuple[str, dict[str, Any]]], keep: Callable[[str], bool]
    ) -> dict[str, int]:
        """Write persons (key, person dict); all or none.

        An import speaks for the office that sends it: a person's postings in regions for
        which ``keep`` is true (outside that office's jurisdiction) stay, the rest are replaced
        by the new ones. The registry is WATCHed while the old records are read, as for
        terminals, so two imports at once cannot leave stale index entries.
        """
        from redis.exceptions import WatchError

        keys = [p[0] for p in persons]
        for _attempt in range(10):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await self._call(pipe.watch(RECIPS))
                    old = await self._call(pipe.hmget(RECIPS, keys))
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py lacks the hint
                    tally = {"created": 0, "updated": 0, "unchanged": 0}
                    for (key, person), previous in zip(persons, old, strict=True):
                        raw = _merged(person, previous, keep)
                        if previous == raw:
                            tally["unchanged"] += 1
                            continue
                        tally["updated" if previous else "created"] += 1
                        _queue_index(pipe, key, previous, raw)
                        pipe.hset(RECIPS, key, raw)
                    await self._call(pipe.execute())
                    return tally
                except StoreUnavailable as exc:
                    if not isinstance(exc.__cause__, WatchError):
                        raise
        raise StoreUnavailable("the recipient registry kept changing; try again")

    async def remove_postings(self, key: str, keep: Callable[[str], bool]) -> int | None:
        """Remove a person's postings for which ``keep`` is false (the person too when none
        is left); None if there is no such person, else how many postings were removed."""
        raw = await self._call(self.redis.hget(RECIPS, key))
        if raw is None:
            return None
        person = json.loads(raw)
        kept = [p for p in person.get("postings", []) if keep(p[0])]
        removed = len(person.get("postings", [])) - len(kept)
        async with self.redis.pipeline(transaction=True) as pipe:
            if kept:
                new = json.dumps(
                    {**person, "postings": kept}, ensure_ascii=False, separators=(",", ":")
                )
                _queue_index(pipe, key, raw, new)
                pipe.hset(RECIPS, key, new)
            else:
                _queue_index(pipe, key, raw, None)
                pipe.hdel(RECIPS, key)
            await self._call(pipe.execute())
        return removed

    async def person_keys_below(self, codes: Sequence[str]) -> list[str]:
        """Keys of every person with a posting at or below one of ``codes``, sorted."""
        if not codes:
            return []
        return sorted(await self._call(self.redis.sunion([region_recips_key(c) for c in codes])))

    async def persons(self, keys: Sequence[str]) -> list[tuple[str, str]]:
        """(key, JSON) of these persons; those removed meanwhile are left out."""
        if not keys:
            return []
        raws = await self._call(self.redis.hmget(RECIPS, list(keys)))
        return [(k, raw) for k, raw in zip(keys, raws, strict=True) if raw is not None]

    async def persons_below(self, codes: Sequence[str]) -> list[str]:
        """JSON of every person with a posting at or below one of ``codes``."""
        keys = await self.person_keys_below(codes)
        out: list[str] = []
        for start in range(0, len(keys), 5000):
            out.extend(raw for _, raw in await self.persons(keys[start : start + 5000]))
        return out

    async def job(self, job: str) -> dict[str, str]:
        return cast(dict[str, str], await self._call(self.redis.hgetall(job_key(job))))

    async def set_job(self, job: str, **fields: str | int) -> None:
        await self._call(self.redis.hset(job_key(job), mapping=_mapping(fields)))

    async def plan(
        self, job: str, recipients: Sequence[tuple[str, dict[str, Any]]], *, chunk: int = 500
    ) -> int:
        """Queue recipients (key, info with its "segments") of a job; returns how many were new."""
        added = 0
        keys = [*job_keys(job), OUTBOX]
        for start in range(0, len(recipients), 2000):
            payload = json.dumps(recipients[start : start + 2000], ensure_ascii=False)
            added += int(await self._call(self._plan(keys=keys, args=[job, chunk, payload])))
        return added

    async def counts(self, job: str) -> dict[str, int]:
        raw = await self._call(self.redis.hgetall(job_keys(job)[2]))
        return {k: int(v) for k, v in raw.items()}

    async def pending(self, job: str, keys: Sequence[str]) -> list[Pending]:
        state_key, info_key, _ = job_keys(job)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(state_key, list(keys))
            pipe.hmget(info_key, list(keys))
            states, infos = await self._call(pipe.execute())
        return [
            Pending(key, state, json.loads(info))
            for key, state, info in zip(keys, states, infos, strict=True)
            if state is not None and info is not None
        ]

    async def all_recipients(self, job: str) -> list[Pending]:
        state_key, info_key, _ = job_keys(job)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(state_key)
            pipe.hgetall(info_key)
            states, infos = await self._call(pipe.execute())
        return [
            Pending(key, state, json.loads(infos[key]))
            for key, state in sorted(states.items())
            if key in infos
        ]

    async def begin_submit(
        self,
        job: str,
        keys: Sequence[str],
        *,
        now_ms: int,
        owner: str,
        gateway: str,
        doubt_due_ms: int,
        limit: int,
        exempt: bool,
        hour: str,
    ) -> list[str]:
        args: list[str | int] = [
            now_ms, owner, gateway, doubt_due_ms, job, limit, "1" if exempt else "0", hour, *keys
        ]  # fmt: skip
        taken = await self._call(self._begin(keys=[*job_keys(job), DOUBT], args=args))
        return list(taken or [])

    async def finish_submit(
        self,
        job: str,
        results: Sequence[tuple[str, SubmitResult, int]],
        *,
        now_ms: int,
        owner: str,
        settle_due_ms: int,
        receipt_due_ms: int,
        max_attempts: int,
        hour: str,
    ) -> list[str]:
        """Record a request's results: (recipient key, result, retry-at ms) each."""
        args: list[str | int] = [
            now_ms, owner, job, settle_due_ms, max_attempts, hour, receipt_due_ms
        ]  # fmt: skip
        for key, result, retry_at in results:
            args.extend(
                (key, result.status.value, result.message_id or "", result.error or "", retry_at)
            )
        out = await self._call(self._finish(keys=[*job_keys(job), DOUBT], args=args))
        return list(out or [])

    async def apply_receipts(
        self, job: str, receipts: Sequence[tuple[str, Receipt]], *, receipt_due_ms: int
    ) -> list[str]:
        """Apply receipts (recipient key, receipt) of one job; returns each one's outcome."""
        args: list[str | int] = [job, receipt_due_ms]
        for key, receipt in receipts:
            args.extend(
                (
                    key,
                    receipt.status.value,
                    receipt.part,
                    receipt.parts,
                    receipt.message_id or "",
                    receipt.error or "",
                    receipt.at.isoformat() if receipt.at else "",
                )
            )
        out = list(await self._call(self._receipts(keys=[*job_keys(job), DOUBT], args=args)) or [])
        async with self.redis.pipeline(transaction=False) as pipe:
            for (key, receipt), outcome in zip(receipts, out, strict=True):
                pipe.xadd(
                    RECEIPTS,
                    {
                        "job": job,
                        "recipient": key,
                        "status": receipt.status.value,
                        "part": receipt.part,
                        "parts": receipt.parts,
                        "error": receipt.error or "",
                        "outcome": outcome,
                    },
                    maxlen=RECEIPTS_MAXLEN,
                    approximate=True,
                )
            pipe.hincrby(STATS, "receipts", len(receipts))
            orphans = sum(1 for o in out if o == "orphan")
            if orphans:
                pipe.hincrby(STATS, "receipts_orphan", orphans)
            await self._call(pipe.execute())
        return out

    async def settle(
        self,
        job: str,
        answers: Sequence[tuple[str, DeliveryStatus]],
        *,
        now_ms: int,
        recheck_ms: int,
    ) -> list[str]:
        args: list[str | int] = [now_ms, job, recheck_ms]
        for key, status in answers:
            args.extend((key, status.value))
        out = await self._call(self._settle(keys=[*job_keys(job), DOUBT, OUTBOX], args=args))
        return list(out or [])

    async def close_job(
        self, job: str, *, to_state: str, reason: str, keys: Sequence[str] | None = None
    ) -> int:
        """Queued recipients of a job (those of ``keys``, or all) become ``to_state``."""
        state_key = job_keys(job)[0]
        closed = 0
        if keys is not None:
            for start in range(0, len(keys), 1000):
                closed += await self._close_some(job, to_state, reason, keys[start : start + 1000])
            return closed
        cursor = 0
        while True:
            cursor, page = await self._call(self.redis.hscan(state_key, cursor, count=1000))
            queued = [k for k, state in page.items() if state == "queued"]
            if queued:
                closed += await self._close_some(job, to_state, reason, queued)
            if cursor == 0:
                return closed

    async def _close_some(self, job: str, to_state: str, reason: str, keys: Sequence[str]) -> int:
        return int(
            await self._call(self._close(keys=job_keys(job), args=[to_state, reason, *keys]))
        )

    # Doubt --------------------------------------------------------------------------------

    async def claim_doubts(self, now_ms: int, *, lease_ms: int, count: int) -> list[str]:
        out = await self._call(self._claim(keys=[DOUBT], args=[now_ms, now_ms + lease_ms, count]))
        return list(out or [])

    async def reschedule_doubt(self, members: Sequence[str], due_ms: int) -> None:
        if members:
            await self._call(self.redis.zadd(DOUBT, dict.fromkeys(members, due_ms)))

    async def drop_doubt(self, members: Sequence[str]) -> None:
        if members:
            await self._call(self.redis.zrem(DOUBT, *members))

    async def stats(self) -> dict[str, int]:
        """Counters of the receipts taken (``receipts``, ``receipts_orphan`` …)."""
        raw = await self._call(self.redis.hgetall(STATS))
        return {k: int(v) for k, v in raw.items()}

    async def doubt_count(self) -> int:
        return int(await self._call(self.redis.zcard(DOUBT)))

    # Throttle -----------------------------------------------------------------------------

    async def take_tokens(self, gateway: str, n: int, *, rate: float, capacity: float) -> int:
        """0 when ``n`` tokens were taken; otherwise milliseconds until they will be there."""
        return int(
            await self._call(self._take(keys=[bucket_key(gateway)], args=[n, rate, capacity]))
        )

    # Outbox -------------------------------------------------------------------------------

    async def ensure_outbox(self) -> None:
        await self.outbox.ensure()

    async def outbox_read(
        self, consumer: str, *, count: int, block_ms: int, pending: bool = False
    ) -> list[tuple[str, str, list[str]]]:
        """(entry id, job, recipient keys) of new chunks, or this consumer's pending ones."""
        entries = await self.outbox.read(consumer, count=count, block_ms=block_ms, pending=pending)
        return [_chunk(eid, fields) for eid, fields in entries]

    async def outbox_claim(
        self, consumer: str, *, min_idle_ms: int
    ) -> list[tuple[str, str, list[str]]]:
        entries = await self.outbox.claim(consumer, min_idle_ms=min_idle_ms, count=50)
        return [_chunk(eid, fields) for eid, fields in entries]

    async def outbox_touch(self, consumer: str, entry_ids: Sequence[str]) -> None:
        await self.outbox.touch(consumer, entry_ids)

    async def outbox_done(self, entry_id: str) -> None:
        await self.outbox.done(entry_id)


def _mapping(fields: Mapping[str, str | int]) -> Mapping[Any, Any]:
    """redis-py's hset wants an invariant key type; ours are always str."""
    return fields


def _chunk(entry_id: str, fields: Mapping[str, str]) -> tuple[str, str, list[str]]:
    keys = fields.get("rkeys", "")
    return entry_id, fields.get("job", ""), [k for k in keys.split(",") if k]


def _regions_of(raw: str | None) -> set[str]:
    """Posting regions of a stored person (postings are [region, role] pairs)."""
    return {p[0] for p in json.loads(raw).get("postings", [])} if raw else set()


def _merged(person: dict[str, Any], previous: str | None, keep: Callable[[str], bool]) -> str:
    postings = {(p[0], p[1]) for p in person["postings"]}
    if previous:
        postings |= {(p[0], p[1]) for p in json.loads(previous)["postings"] if keep(p[0])}
    merged = {**person, "postings": [list(p) for p in sorted(postings)]}
    return json.dumps(merged, ensure_ascii=False, separators=(",", ":"))


def _queue_index(pipe: Any, key: str, old: str | None, new: str | None) -> None:
    """Move a person's entries in the region sets from the old postings to the new."""
    before = {code for region in _regions_of(old) for code in code_path(region)}
    after = {code for region in _regions_of(new) for code in code_path(region)}
    for code in before - after:
        pipe.srem(region_recips_key(code), key)
    for code in after - before:
        pipe.sadd(region_recips_key(code), key)
