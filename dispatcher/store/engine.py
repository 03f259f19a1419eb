"""All Redis access of the engine. Every key the engine writes is named here, at the top.

Key schema (``{id}`` an alert id, ``{t}`` a terminal id, ``{code}`` a region code):

    ebd:alert:{id}              string  the alert's JSON (models.Alert)
    ebd:alerts                  zset    alert ids scored by sent time (ms)
    ebd:alert:{id}:dispatch     hash    dispatch state: state, queued_at, dispatched_at, expected,
                                        topics, cancelled_by, last_ack_ms, acks …
    ebd:alert:{id}:expected     hash    {t} → region code of every terminal expected to ack
    ebd:alert:{id}:tstate       hash    {t} → received | playing | played | failed | cancelled
                                        | no_ack (cancelled: stopped by a cancel or update;
                                        no_ack: silent after the last resend, escalated)
    ebd:alert:{id}:counts       hash    "{code}|{state}" → n for the province, cities, counties,
                                        townships above each expected terminal; "{code}|expected"
    ebd:alert:{id}:offline      set     expected terminals whose last state was offline at dispatch
    ebd:alert:{id}:resends      hash    {t} → resends sent to that terminal
    ebd:alert:{id}:escalations  list    escalation records (JSON) of this alert
    ebd:sweeps                  zset    alert ids scored by when their acks are next checked (ms)
    ebd:escalations             stream  every escalation: terminal failed after its resends
    ebd:idem:{office}:{key}     string  {"alert_id", "body"} of the first request with that key
    ebd:outbox                  stream  alert ids to dispatch; consumer group "dispatch"
    ebd:acklog                  stream  every ack of a known alert, as received (drill reviews):
                                        one entry a recorded batch, see acklog_rows
    ebd:terms:region            hash    {t} → region code (the terminal registry)
    ebd:terms:meta              hash    {t} → {"kind", "registered_at"}
    ebd:terms:state             hash    {t} → last state message {"state", "at", "firmware", …}
    ebd:rterms:{code}           set     terminals at or below {code}, for each level of their path
    ebd:stats                   hash    ingestion counters (acks_malformed, acks_unknown_alert …)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError, WatchError
from redis.exceptions import TimeoutError as RedisTimeoutError

from dispatcher.core.ack_parse import AckRecord
from dispatcher.core.errors import Conflict, IdempotencyKeyReused, StoreUnavailable
from dispatcher.core.models import Alert, TerminalIn, utcnow
from dispatcher.core.regions import code_path
from dispatcher.store.ordered_script import OrderedScript

PREFIX = "ebd:"
ALERTS = PREFIX + "alerts"
OUTBOX = PREFIX + "outbox"
OUTBOX_GROUP = "dispatch"
ACKLOG = PREFIX + "acklog"
TERMS_REGION = PREFIX + "terms:region"
TERMS_META = PREFIX + "terms:meta"
TERMS_STATE = PREFIX + "terms:state"
STATS = PREFIX + "stats"
SWEEPS = PREFIX + "sweeps"
ESCALATIONS = PREFIX + "escalations"
IDEMPOTENCY_TTL = 24 * 3600
# Per-region counters stop at townships: village detail is in the tstate hash, and a counter
# per village would multiply the work of every ack by five.
COUNTED_PREFIXES = (2, 4, 6, 9)


def alert_key(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}"


def dispatch_key(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}:dispatch"


def expected_key(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}:expected"


def tstate_key(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}:tstate"


def counts_key(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}:counts"


def offline_key(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}:offline"


def resends_key(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}:resends"


def alert_escalations_key(alert_id: str) -> str:
    return f"{PREFIX}alert:{alert_id}:escalations"


def idempotency_key(office_id: str, key: str) -> str:
    return f"{PREFIX}idem:{office_id}:{key}"


def region_terms_key(code: str) -> str:
    return f"{PREFIX}rterms:{code}"


# Stores the alert, its dispatch record, its outbox entry and the idempotency record in one
# atomic step, so a 201 means all of them exist (and, with appendfsync always, are on disk).
_CREATE_ALERT = """
if ARGV[6] == '1' then
  local prev = redis.call('GET', KEYS[5])
  if prev then return {'replay', prev} end
end
if ARGV[8] == '1' then
  local by = redis.call('HGET', KEYS[6], 'cancelled_by')
  -- by == this alert: a client retry ran the script again after the first run's reply was lost.
  if by and by ~= ARGV[3] then return {'cancelled', by} end
  redis.call('HSET', KEYS[6], 'cancelled_by', ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], 'state', 'queued', 'queued_at', ARGV[7])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'alert_id', ARGV[3])
if ARGV[6] == '1' then redis.call('SET', KEYS[5], ARGV[4], 'EX', ARGV[5]) end
return {'created', ARGV[3]}
"""

# A batch of acks of one alert: counts each terminal once, moves its state only forward,
# keeps the per-region counters and the ingestion stats in step (in the same atomic step, so a
# crash cannot leave them apart) and appends every ack to the ack log. ARGV: now_ms, log
# maxlen, alert id, then (terminal, state, at, detail) per ack. Returns one code per ack:
# 1 changed, 0 duplicate or backwards, -1 registered terminal not expected for this alert,
# -2 unknown alert, -3 unknown terminal.
_RECORD_ACKS = """
local now_ms, maxlen, alert_id = ARGV[1], ARGV[2], ARGV[3]
local results = {}
local known = redis.call('EXISTS', KEYS[4]) == 1
-- no_ack (set by the sweeper after the last resend) gives way to a late final ack.
local rank = {received=1, playing=2, no_ack=2.5, played=3, failed=3, cancelled=3}
local names = {[1]='acks_counted', [0]='acks_duplicate', [-1]='acks_unexpected',
               [-2]='acks_unknown_alert', [-3]='acks_unknown_terminal'}
local tally = {}
local counted = 0
-- The ack log gets one entry for the batch, not one per ack: an XADD an ack was 40 % of the
-- script's time and most of what it wrote to the AOF.
local logged, details, has_details = {}, {}, false
-- Region counters are summed here and written once per batch: a province's acks share their
-- city and county counters, and one HINCRBY each instead of eight per ack halves the script.
local deltas, order = {}, {}
local function bump(field, by)
  local was = deltas[field]
  if was == nil then order[#order + 1] = field; was = 0 end
  deltas[field] = was + by
end
-- ARGV[4] holds the batch, one ack a line: terminal TAB state TAB time TAB k, where k > 0
-- names the ARGV that holds the ack's detail (free text). One argument instead of four an
-- ack: decoding 2,000 arguments a batch cost Redis and the engine more than the script.
local field = '([^\\t\\n]*)\\t'
for term, new, at, k in string.gmatch(ARGV[4], field .. field .. field .. '([0-9]+)\\n') do
  local detail = ''
  if k ~= '0' then detail = ARGV[tonumber(k)] end
  local rc = -2
  local region = ''
  if known then
    -- A terminal that stopped because a cancel or an update replaced the alert did its job.
    if new == 'failed' and (detail == 'cancelled' or detail == 'superseded') then
      new = 'cancelled'
    end
    region = redis.call('HGET', KEYS[1], term)
    if not region then
      region = ''
      rc = -1
      if redis.call('HEXISTS', KEYS[7], term) == 0 then rc = -3 end
    else
      local old = redis.call('HGET', KEYS[2], term)
      if old and (rank[old] >= 3 or rank[new] <= rank[old]) then
        rc = 0
      else
        rc = 1
        counted = counted + 1
        redis.call('HSET', KEYS[2], term, new)
        for _, n in ipairs({2, 4, 6, 9}) do
          if n <= #region then
            local code = string.sub(region, 1, n)
            if old then bump(code .. '|' .. old, -1) end
            bump(code .. '|' .. new, 1)
          end
        end
      end
    end
    logged[#logged + 1] = term .. '\\t' .. new .. '\\t' .. at .. '\\t' .. region .. '\\t' .. rc
    -- What the terminal said of a failure is for the review, as it said it.
    if detail ~= '' then details[tostring(#logged)] = detail; has_details = true end
  end
  -- The sweeper's no_ack marks are not acks: counted apart.
  local name = names[rc]
  if new == 'no_ack' then name = 'no_ack_marked' end
  tally[name] = (tally[name] or 0) + 1
  results[#results + 1] = rc
end
for _, field in ipairs(order) do
  if deltas[field] ~= 0 then redis.call('HINCRBY', KEYS[3], field, deltas[field]) end
end
for name, n in pairs(tally) do redis.call('HINCRBY', KEYS[6], name, n) end
if counted > 0 then
  redis.call('HSET', KEYS[4], 'last_ack_ms', now_ms)
  redis.call('HINCRBY', KEYS[4], 'acks_counted', counted)
end
if #logged > 0 then
  if has_details then
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', 'alert_id', alert_id,
      'recorded_ms', now_ms, 'acks', table.concat(logged, '\\n'), 'details', cjson.encode(details))
  else
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', 'alert_id', alert_id,
      'recorded_ms', now_ms, 'acks', table.concat(logged, '\\n'))
  end
end
return results
"""


# Hands the due sweeps to exactly one caller: their score moves a lease ahead, so another
# instance polling at the same moment does not get them (and does not resend twice).
# Who must ack an alert: every terminal registered below its cover, with its region (for the
# counters), and which of them were offline when it went out. Done in Redis: a province is
# 17,498 terminals, and carrying their ids to the engine and back took a quarter of a second
# before the alert could be published. Atomic, and idempotent: a worker that died half-way
# and is replaced writes the same set again.
_RECORD_EXPECTED = """
local expected_key, offline_key, counts_key, dispatch_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local regions_key, states_key = KEYS[5], KEYS[6]
redis.call('DEL', expected_key, offline_key)
local seen, counts, order = {}, {}, {}
local expected, offline = 0, 0
local function record(ids)
  if #ids == 0 then return end
  local regions = redis.call('HMGET', regions_key, unpack(ids))
  local states = redis.call('HMGET', states_key, unpack(ids))
  local pairs_out, offline_out = {}, {}
  for i, id in ipairs(ids) do
    local region = regions[i]
    if region then
      expected = expected + 1
      pairs_out[#pairs_out + 1] = id
      pairs_out[#pairs_out + 1] = region
      for _, n in ipairs({2, 4, 6, 9}) do
        if n <= #region then
          local field = string.sub(region, 1, n) .. '|expected'
          local was = counts[field]
          if was == nil then was = 0; order[#order + 1] = field end
          counts[field] = was + 1
        end
      end
      local raw = states[i]
      -- The cheap test first: most terminals are online, and decoding each costs.
      if raw and string.find(raw, 'offline', 1, true) then
        local ok, state = pcall(cjson.decode, raw)
        if ok and type(state) == 'table' and state['state'] == 'offline' then
          offline = offline + 1
          offline_out[#offline_out + 1] = id
        end
      end
    end
  end
  if #pairs_out > 0 then redis.call('HSET', expected_key, unpack(pairs_out)) end
  if #offline_out > 0 then redis.call('SADD', offline_key, unpack(offline_out)) end
end
-- In chunks: unpack() of a whole province would overflow Lua's stack.
local chunk = {}
for k = 7, #KEYS do
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[k])) do
    if not seen[id] then
      seen[id] = true
      chunk[#chunk + 1] = id
      if #chunk >= 1000 then record(chunk); chunk = {} end
    end
  end
end
record(chunk)
local out = {}
for _, field in ipairs(order) do
  out[#out + 1] = field
  out[#out + 1] = counts[field]
  if #out >= 2000 then redis.call('HSET', counts_key, unpack(out)); out = {} end
end
if #out > 0 then redis.call('HSET', counts_key, unpack(out)) end
redis.call('HSET', dispatch_key, 'expected', expected, 'offline_at_dispatch', offline)
return {expected, offline}
"""


_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
for _, id in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], id) end
return due
"""


@dataclass(slots=True)
class DeliveryCounts:
    """Terminal counts of one alert, for a region (the province when ``code`` is the root)."""

    expected: int = 0
    received: int = 0
    playing: int = 0
    played: int = 0
    failed: int = 0
    cancelled: int = 0
    no_ack: int = 0

    @property
    def acknowledged(self) -> int:
        """Terminals that confirmed receipt and have not failed (received, playing or played)."""
        return self.received + self.playing + self.played

    @property
    def pending(self) -> int:
        finished = self.failed + self.no_ack + self.cancelled
        return max(0, self.expected - self.acknowledged - finished)

    def as_dict(self) -> dict[str, int]:
        return {
            "expected": self.expected,
            "received": self.acknowledged,
            "played": self.played,
            "failed": self.failed + self.no_ack,
            "no_ack": self.no_ack,
            "cancelled": self.cancelled,
            "pending": self.pending,
        }


DELIVERY_STATES = tuple(f.name for f in fields(DeliveryCounts))


@dataclass(slots=True)
class DeliveryReport:
    dispatch: dict[str, str]
    by_region: dict[str, DeliveryCounts] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    created: int
    updated: int
    unchanged: int


class Store:
    """The engine's view of Redis. Nothing outside this module speaks to Redis."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.redis = client
        self._create_alert = client.register_script(_CREATE_ALERT)
        self._record_acks = client.register_script(_RECORD_ACKS)
        self._claim_due = client.register_script(_CLAIM_DUE)
        self._record_expected = client.register_script(_RECORD_EXPECTED)
        # The ingester's way to the ack script: in order, many batches in flight.
        self.ack_script = OrderedScript(client.connection_pool, _RECORD_ACKS, name="record_acks")
        self.outbox = WorkStream(self, OUTBOX, OUTBOX_GROUP)

    @classmethod
    def from_url(cls, url: str) -> Store:
        # After a Redis restart the pool holds dead connections; retrying on a fresh one is
        # safe for every command here (the Lua scripts only move state forward).
        return cls(
            aioredis.Redis.from_url(
                url,
                decode_responses=True,
                health_check_interval=10,
                retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
        )

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except (RedisError, OSError):
            return False

    # Alerts -------------------------------------------------------------------------------

    async def create_alert(
        self,
        alert: Alert,
        *,
        office_id: str,
        idempotency: tuple[str, str] | None = None,
        cancels: str | None = None,
    ) -> tuple[Alert, bool]:
        """Store ``alert`` and queue it; returns the stored alert and whether it is new.

        ``idempotency`` is (key, canonical body): a replay with the same body returns the first
        alert, with another body it is a ``Conflict``. ``cancels`` names the alert a cancel
        replaces; a second cancel of it is a ``Conflict``.
        """
        idem_key = idempotency_key(office_id, idempotency[0]) if idempotency else f"{PREFIX}-"
        idem_value = (
            json.dumps({"alert_id": alert.id, "body": idempotency[1]}) if idempotency else ""
        )
        try:
            result = await self._create_alert(
                keys=[
                    alert_key(alert.id),
                    ALERTS,
                    dispatch_key(alert.id),
                    OUTBOX,
                    idem_key,
                    dispatch_key(cancels) if cancels else f"{PREFIX}-",
                ],
                args=[
                    alert.model_dump_json(),
                    int(alert.sent.timestamp() * 1000),
                    alert.id,
                    idem_value,
                    IDEMPOTENCY_TTL,
                    "1" if idempotency else "0",
                    utcnow().isoformat(),
                    "1" if cancels else "0",
                ],
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"could not store the alert: {exc}") from exc
        outcome, value = cast(list[str], result)
        if outcome == "created":
            return alert, True
        if outcome == "cancelled":
            raise Conflict(
                f"alert {cancels} is already cancelled by {value}", details={"cancelled_by": value}
            )
        first = json.loads(value)
        if idempotency is None or first["body"] != idempotency[1]:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request body; "
                "use a new key for a new alert",
                details={"alert_id": first["alert_id"]},
            )
        stored = await self.get_alert(first["alert_id"])
        if stored is None:  # pragma: no cover - the key and the alert are written together
            raise Conflict("the alert of this Idempotency-Key is gone")
        return stored, False

    async def replay(self, office_id: str, key: str, body: str) -> Alert | None:
        """The alert first stored under this Idempotency-Key, or None if the key is new."""
        raw = await self._call(self.redis.get(idempotency_key(office_id, key)))
        if raw is None:
            return None
        first = json.loads(raw)
        if first["body"] != body:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was already used with a different request body; "
                "use a new key for a new alert",
                details={"alert_id": first["alert_id"]},
            )
        return await self.get_alert(first["alert_id"])

    async def get_alert(self, alert_id: str) -> Alert | None:
        raw = await self._call(self.redis.get(alert_key(alert_id)))
        return Alert.model_validate_json(raw) if raw else None

    async def list_alerts(self, *, limit: int, before_ms: int | None = None) -> list[Alert]:
        high: int | str = f"({before_ms}" if before_ms is not None else "+inf"
        ids = await self._call(
            self.redis.zrevrangebyscore(ALERTS, high, "-inf", start=0, num=limit)
        )
        if not ids:
            return []
        raws = await self._call(self.redis.mget([alert_key(i) for i in ids]))
        return [Alert.model_validate_json(raw) for raw in raws if raw]

    async def dispatch_state(self, alert_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self._call(self.redis.hgetall(dispatch_key(alert_id))))

    async def set_dispatch(self, alert_id: str, **fields: str | int) -> None:
        await self._call(self.redis.hset(dispatch_key(alert_id), mapping=_fields(fields)))

    async def finish_dispatch(
        self,
        alert_id: str,
        *,
        dispatched_at: str,
        sweep_due_ms: int | None,
        references: Mapping[str, Mapping[str, str]],
    ) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                dispatch_key(alert_id),
                mapping={"state": "dispatched", "dispatched_at": dispatched_at},
            )
            if sweep_due_ms is not None:
                pipe.zadd(SWEEPS, {alert_id: sweep_due_ms})
            for ref, fields in references.items():
                pipe.hset(dispatch_key(ref), mapping=_fields(fields))
            await self._call(pipe.execute())

    async def delivery(self, alert_id: str, codes: Collection[str] | None = None) -> DeliveryReport:
        """The alert's dispatch record and its counters, for ``codes`` only when given.

        A province-wide alert has counters for every village (~90,000 fields): an office
        polling its progress asks for the regions it shows, not for all of them.
        """
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(dispatch_key(alert_id))
            if codes is None:
                pipe.hgetall(counts_key(alert_id))
            else:
                wanted = [f"{code}|{state}" for code in codes for state in DELIVERY_STATES]
                pipe.hmget(counts_key(alert_id), wanted)
            dispatch, counts = await self._call(pipe.execute())
        if codes is not None:
            counts = {f: v for f, v in zip(wanted, counts, strict=True) if v is not None}
        report = DeliveryReport(dispatch=dispatch)
        for name, value in counts.items():
            code, _, state = name.partition("|")
            setattr(report.by_region.setdefault(code, DeliveryCounts()), state, int(value))
        return report

    # Expected set -------------------------------------------------------------------------

    async def record_expected(self, alert_id: str, cover: Sequence[str]) -> tuple[int, int]:
        """Record the terminals below the cover as expected; returns (expected, offline now).

        Idempotent: a worker that died half-way and is replaced rewrites the same set.
        """
        expected, offline = await self._call(
            self._record_expected(
                keys=[
                    expected_key(alert_id),
                    offline_key(alert_id),
                    counts_key(alert_id),
                    dispatch_key(alert_id),
                    TERMS_REGION,
                    TERMS_STATE,
                    *(region_terms_key(code) for code in cover),
                ]
            )
        )
        return int(expected), int(offline)

    # Acks ---------------------------------------------------------------------------------

    def queue_acks(self, acks: Sequence[AckRecord], *, acklog_maxlen: int) -> Awaitable[list[int]]:
        """Record a batch of acks; each ack's result code once Redis has run the batch.

        Through the ordered script link (``ack_script``, whose task the ingester runs): the
        batch is queued before this returns, so batches queued one after the other are
        recorded in that order, and it is retried until Redis has run it.
        """
        by_alert: dict[str, list[int]] = {}
        for index, ack in enumerate(acks):
            by_alert.setdefault(ack.alert_id, []).append(index)
        replies = asyncio.gather(
            *(
                self.ack_script.call(
                    *self._ack_call(
                        alert_id,
                        [(acks[i].terminal, acks[i].state, acks[i].at, acks[i].detail)
                         for i in indexes],
                        acklog_maxlen=acklog_maxlen,
                    )
                )
                for alert_id, indexes in by_alert.items()
            )
        )  # fmt: skip

        async def results() -> list[int]:
            out = [0] * len(acks)
            for indexes, codes in zip(by_alert.values(), await replies, strict=True):
                for i, code in zip(indexes, codes, strict=True):
                    out[i] = int(code)
            return out

        return results()

    def _ack_call(
        self, alert_id: str, acks: Sequence[tuple[str, str, str, str]], *, acklog_maxlen: int
    ) -> tuple[list[str], list[str | int]]:
        """The ack script's keys and arguments for a batch of one alert's acks."""
        args: list[str | int] = [int(utcnow().timestamp() * 1000), acklog_maxlen, alert_id, ""]
        lines = []
        for terminal, state, at, detail in acks:
            k = 0
            if detail:
                args.append(detail)
                k = len(args)  # Lua counts ARGV from 1
            line = f"{terminal}\t{state}\t{at}\t{k}\n"
            if line.count("\t") != 3 or line.count("\n") != 1:
                # Tabs and newlines frame the batch; the ingester and the sweeper never pass
                # them here (terminal ids and times are checked first): a bug, not bad input.
                raise ValueError(f"ack field with a tab or newline: {terminal!r} {at!r}")
            lines.append(line)
        args[3] = "".join(lines)
        keys = [
            expected_key(alert_id),
            tstate_key(alert_id),
            counts_key(alert_id),
            dispatch_key(alert_id),
            ACKLOG,
            STATS,
            TERMS_REGION,
        ]
        return keys, args

    async def bump_stats(self, counts: dict[str, int]) -> None:
        if not counts:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, n in counts.items():
                pipe.hincrby(STATS, name, n)
            await self._call(pipe.execute())

    async def stats(self) -> dict[str, int]:
        raw = await self._call(self.redis.hgetall(STATS))
        return {k: int(v) for k, v in raw.items()}

    async def ack_log(
        self, *, count: int = 100, start: str = "-", alert_id: str | None = None
    ) -> list[dict[str, str]]:
        """The acks of the log's first ``count`` entries from ``start`` (a stream id), one dict
        an ack, each with the id of the entry that holds it; only ``alert_id``'s if given."""
        entries = await self._call(self.redis.xrange(ACKLOG, min=start, count=count))
        return [
            row
            for entry_id, fields in entries
            if alert_id is None or fields.get("alert_id") == alert_id
            for row in acklog_rows(entry_id, fields)
        ]

    # Deadlines, resends, escalations ---------------------------------------------------------

    async def schedule_sweep(self, alert_id: str, due_ms: int) -> None:
        await self._call(self.redis.zadd(SWEEPS, {alert_id: due_ms}))

    async def claim_due_sweeps(self, now_ms: int, *, lease_ms: int, count: int) -> list[str]:
        result = await self._call(
            self._claim_due(keys=[SWEEPS], args=[now_ms, now_ms + lease_ms, count])
        )
        return list(result or [])

    async def finish_sweep(self, alert_id: str) -> None:
        await self._call(self.redis.zrem(SWEEPS, alert_id))

    async def unfinished(self, alert_id: str) -> dict[str, tuple[str, str | None]]:
        """Expected terminals with no final ack (played, failed, cancelled):
        id → (region, last state or None)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(expected_key(alert_id))
            pipe.hgetall(tstate_key(alert_id))
            expected, states = await self._call(pipe.execute())
        return {
            terminal: (region, states.get(terminal))
            for terminal, region in expected.items()
            if states.get(terminal) in (None, "received", "playing")
        }

    async def record_resends(self, alert_id: str, terminals: Sequence[str], attempt: int) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for terminal in terminals:
                pipe.hincrby(resends_key(alert_id), terminal, 1)
            pipe.hincrby(dispatch_key(alert_id), "resends", len(terminals))
            pipe.hset(dispatch_key(alert_id), "sweep_attempt", attempt)
            await self._call(pipe.execute())

    async def escalate(
        self, alert_id: str, records: Sequence[dict[str, str]], *, acklog_maxlen: int
    ) -> list[dict[str, str]]:
        """Mark each terminal ``no_ack`` and record why; returns the records that applied.

        The state change is the ack script's, so it is atomic with acks: a terminal whose
        final ack arrived meanwhile is left alone and not escalated.
        """
        keys, args = self._ack_call(
            alert_id,
            [(r["terminal_id"], "no_ack", r["at"], "") for r in records],
            acklog_maxlen=acklog_maxlen,
        )
        codes = await self._call(self._record_acks(keys=keys, args=args))
        applied = [r for r, code in zip(records, codes, strict=True) if int(code) == 1]
        if not applied:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for record in applied:
                fields = dict(_fields(record))
                pipe.xadd(ESCALATIONS, fields, maxlen=acklog_maxlen, approximate=True)
                pipe.rpush(alert_escalations_key(alert_id), json.dumps(record, ensure_ascii=False))
            pipe.hincrby(dispatch_key(alert_id), "escalated", len(applied))
            await self._call(pipe.execute())
        return applied

    async def escalations(
        self, *, alert_id: str | None = None, limit: int = 100
    ) -> list[dict[str, str]]:
        if alert_id is not None:
            key = alert_escalations_key(alert_id)
            raws = await self._call(self.redis.lrange(key, 0, limit - 1))
            return [json.loads(raw) for raw in raws]
        entries = await self._call(self.redis.xrevrange(ESCALATIONS, count=limit))
        return [{"id": entry_id, **fields} for entry_id, fields in entries]

    async def expected_of(self, alert_id: str) -> tuple[dict[str, str], set[str]]:
        """An alert's expected terminals (id → village) and those offline at its dispatch."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(expected_key(alert_id))
            pipe.smembers(offline_key(alert_id))
            expected, offline = await self._call(pipe.execute())
        return dict(expected), set(offline)

    async def alert_terminals(self, alert_id: str) -> list[dict[str, Any]]:
        """Every expected terminal of an alert with its state, resends and offline flag."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(expected_key(alert_id))
            pipe.hgetall(tstate_key(alert_id))
            pipe.hgetall(resends_key(alert_id))
            pipe.smembers(offline_key(alert_id))
            expected, states, resends, offline = await self._call(pipe.execute())
        return [
            {
                "id": terminal,
                "region": region,
                "state": states.get(terminal, "pending"),
                "resends": int(resends.get(terminal, 0)),
                "offline_at_dispatch": terminal in offline,
            }
            for terminal, region in sorted(expected.items())
        ]

    # Terminals ----------------------------------------------------------------------------

    async def register_terminals(self, terminals: Sequence[TerminalIn]) -> RegistrationResult:
        """Register or move terminals, all in one transaction: none or all are written.

        The registry is WATCHed between reading the old regions and writing: two concurrent
        moves of one terminal must not leave it in two regions' sets.
        """
        ids = [t.id for t in terminals]
        now = utcnow().isoformat()
        for _attempt in range(10):
            async with self.redis.pipeline(transaction=True) as pipe:
                try:
                    await self._call(pipe.watch(TERMS_REGION))
                    old = await self._call(pipe.hmget(TERMS_REGION, ids))
                    pipe.multi()  # type: ignore[no-untyped-call]  # redis-py lacks the hint
                    result = self._queue_registration(pipe, terminals, old, now)
                    await self._call(pipe.execute())
                    return result
                except StoreUnavailable as exc:
                    if not isinstance(exc.__cause__, WatchError):
                        raise
        raise StoreUnavailable("the terminal registry kept changing; try again")

    @staticmethod
    def _queue_registration(
        pipe: Any, terminals: Sequence[TerminalIn], old: Sequence[str | None], now: str
    ) -> RegistrationResult:
        created = updated = unchanged = 0
        for terminal, previous in zip(terminals, old, strict=True):
            if previous == terminal.region:
                unchanged += 1
            elif previous is None:
                created += 1
            else:
                updated += 1
                for code in code_path(previous):
                    pipe.srem(region_terms_key(code), terminal.id)
            for code in code_path(terminal.region):
                pipe.sadd(region_terms_key(code), terminal.id)
            pipe.hset(TERMS_REGION, terminal.id, terminal.region)
            pipe.hset(
                TERMS_META,
                terminal.id,
                json.dumps({"kind": terminal.kind.value, "registered_at": now}),
            )
        return RegistrationResult(created=created, updated=updated, unchanged=unchanged)

    async def count_terminals(self, code: str) -> int:
        return int(await self._call(self.redis.scard(region_terms_key(code))))

    async def list_terminals(
        self, code: str, *, limit: int, offset: int
    ) -> tuple[int, list[dict[str, Any]]]:
        members = sorted(await self._call(self.redis.smembers(region_terms_key(code))))
        page = members[offset : offset + limit]
        if not page:
            return len(members), []
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(TERMS_REGION, page)
            pipe.hmget(TERMS_META, page)
            pipe.hmget(TERMS_STATE, page)
            regions, metas, states = await self._call(pipe.execute())
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
            await self._call(self.redis.hset(TERMS_STATE, mapping=_fields(states)))

    # Outbox -------------------------------------------------------------------------------

    async def ensure_outbox(self) -> None:
        await self.outbox.ensure()

    async def outbox_read(
        self, consumer: str, *, count: int, block_ms: int, pending: bool = False
    ) -> list[tuple[str, str]]:
        """(entry id, alert id) pairs: new entries, or this consumer's own pending ones."""
        entries = await self.outbox.read(consumer, count=count, block_ms=block_ms, pending=pending)
        return [(eid, fields.get("alert_id", "")) for eid, fields in entries]

    async def outbox_claim(self, consumer: str, *, min_idle_ms: int) -> list[tuple[str, str]]:
        """Take over entries another worker left pending longer than ``min_idle_ms``."""
        entries = await self.outbox.claim(consumer, min_idle_ms=min_idle_ms)
        return [(eid, fields.get("alert_id", "")) for eid, fields in entries]

    async def outbox_done(self, entry_id: str) -> None:
        await self.outbox.done(entry_id)

    # --------------------------------------------------------------------------------------

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        task = asyncio.current_task()
        try:
            result = await awaitable
        except (RedisError, OSError) as exc:
            if task is not None and task.cancelling():
                # redis-py can turn a cancelled read into a connection error; a retry loop
                # above would then spin forever instead of shutting down.
                raise asyncio.CancelledError from exc
            raise StoreUnavailable(f"Redis did not answer: {exc}") from exc
        if task is not None and task.cancelling():
            # Its retry-on-reconnect can also swallow a cancellation whole and succeed.
            raise asyncio.CancelledError
        return result


class WorkStream:
    """A Redis stream of work read through a consumer group: the outbox pattern of dispatch
    and of the SMS channel. An entry stays pending until ``done``; a consumer re-reads its own
    pending entries after a restart, and entries idle too long are claimed by another."""

    def __init__(self, store: Store, stream: str, group: str) -> None:
        self._store = store
        self._redis = store.redis
        self.stream = stream
        self.group = group

    async def ensure(self) -> None:
        try:
            await self._redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise StoreUnavailable(f"cannot create the group of {self.stream}: {exc}") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"cannot create the group of {self.stream}: {exc}") from exc

    async def read(
        self, consumer: str, *, count: int, block_ms: int, pending: bool = False
    ) -> list[tuple[str, dict[str, str]]]:
        """New entries, or (``pending``) this consumer's own unfinished ones."""
        try:
            result = await self._store._call(
                self._redis.xreadgroup(
                    self.group,
                    consumer,
                    {self.stream: "0" if pending else ">"},
                    count=count,
                    block=None if pending else block_ms,
                )
            )
        except StoreUnavailable as exc:
            if "NOGROUP" not in exc.message:
                raise
            # Redis lost the stream (a restart without persistence, a FLUSHALL): make it
            # again rather than stop working for good.
            await self.ensure()
            return []
        return [(eid, fields) for _, entries in result or [] for eid, fields in entries]

    async def claim(
        self, consumer: str, *, min_idle_ms: int, count: int = 100
    ) -> list[tuple[str, dict[str, str]]]:
        """Take over entries another consumer left pending longer than ``min_idle_ms``."""
        try:
            result = await self._store._call(
                self._redis.xautoclaim(self.stream, self.group, consumer, min_idle_ms, count=count)
            )
        except StoreUnavailable as exc:
            if "NOGROUP" not in exc.message:
                raise
            await self.ensure()
            return []
        return [(eid, fields) for eid, fields in result[1] if fields]

    async def touch(self, consumer: str, entry_ids: Sequence[str]) -> None:
        """Reset the idle time of entries still being worked on, so no one else claims them."""
        if entry_ids:
            await self._store._call(
                self._redis.xclaim(
                    self.stream, self.group, consumer, 0, list(entry_ids), justid=True
                )
            )

    async def done(self, entry_id: str) -> None:
        await self._store._call(self._redis.xack(self.stream, self.group, entry_id))


def acklog_rows(entry_id: str, fields: Mapping[str, str]) -> list[dict[str, str]]:
    """The acks one ``ebd:acklog`` entry holds, one dict each: alert_id, terminal_id, state,
    at, recorded_ms, region, result (and detail when the terminal gave one).

    An entry is a batch (``acks``: one line per ack, tab-separated). Entries written before
    batches were logged whole hold one ack in their own fields, and read the same.
    """
    if "acks" not in fields:
        return [{"id": entry_id, **fields}]
    details = json.loads(fields["details"]) if "details" in fields else {}
    rows = []
    for n, line in enumerate(fields["acks"].split("\n"), start=1):
        terminal, state, at, region, result = line.split("\t")
        row = {
            "id": entry_id,
            "alert_id": fields["alert_id"],
            "terminal_id": terminal,
            "state": state,
            "at": at,
            "recorded_ms": fields["recorded_ms"],
            "region": region,
            "result": result,
        }
        if str(n) in details:
            row["detail"] = details[str(n)]
        rows.append(row)
    return rows


def _fields(mapping: Mapping[str, Any]) -> Mapping[Any, Any]:
    """redis-py's hset wants an invariant key type; ours are always str."""
    return mapping
