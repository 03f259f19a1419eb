-- A batch of acks of one alert: counts each terminal once, moves its state only forward,
-- keeps the per-region counters and the ingestion stats in step (in the same atomic step, so a
-- crash cannot leave them apart) and appends every ack to the ack log. ARGV: now_ms, log
-- maxlen, alert id, then (terminal, state, at, detail) per ack. Returns one code per ack:
-- 1 changed, 2 changed a terminal the sweeper had marked no_ack (its escalation is answered),
-- 0 duplicate or backwards, -1 registered terminal not expected for this alert, -2 unknown
-- alert, -3 unknown terminal.
local now_ms, maxlen, alert_id = ARGV[1], ARGV[2], ARGV[3]
local results = {}
local known = redis.call('EXISTS', KEYS[4]) == 1
-- no_ack (set by the sweeper after the last resend) gives way to a late final ack.
local rank = {received=1, playing=2, no_ack=2.5, played=3, failed=3, cancelled=3}
local names = {[2]='acks_counted', [1]='acks_counted', [0]='acks_duplicate',
               [-1]='acks_unexpected', [-2]='acks_unknown_alert', [-3]='acks_unknown_terminal'}
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
-- A terminal's acks mostly come in pairs (received, played) within one batch: what it is
-- expected as and its state are read once a batch and its new state written once at the end,
-- which takes a third of the script's Redis calls away.
local seen, dirty = {}, {}
local field = '([^\t\n]*)\t'
for term, new, at, k in string.gmatch(ARGV[4], field .. field .. field .. '([0-9]+)\n') do
  local detail = ''
  if k ~= '0' then detail = ARGV[tonumber(k)] end
  local rc = -2
  local region = ''
  if known then
    -- A terminal that stopped because a cancel or an update replaced the alert did its job.
    if new == 'failed' and (detail == 'cancelled' or detail == 'superseded') then
      new = 'cancelled'
    end
    local t = seen[term]
    if t == nil then
      local where = redis.call('HGET', KEYS[1], term)
      if not where then
        t = {region = '', miss = -1}
        if redis.call('HEXISTS', KEYS[7], term) == 0 then t.miss = -3 end
      else
        t = {region = where, old = redis.call('HGET', KEYS[2], term), codes = {}}
        for _, n in ipairs({2, 4, 6, 9}) do
          if n <= #where then t.codes[#t.codes + 1] = string.sub(where, 1, n) end
        end
      end
      seen[term] = t
    end
    region = t.region
    if t.miss then
      rc = t.miss
    else
      local old = t.old
      if old and (rank[old] >= 3 or rank[new] <= rank[old]) then
        rc = 0
      else
        rc = 1
        if old == 'no_ack' then rc = 2 end
        counted = counted + 1
        if not t.dirty then t.dirty = true; dirty[#dirty + 1] = term end
        t.old = new
        for _, code in ipairs(t.codes) do
          if old then bump(code .. '|' .. old, -1) end
          bump(code .. '|' .. new, 1)
        end
      end
    end
    logged[#logged + 1] = term .. '\t' .. new .. '\t' .. at .. '\t' .. region .. '\t' .. rc
    -- What the terminal said of a failure is for the review, as it said it.
    if detail ~= '' then details[tostring(#logged)] = detail; has_details = true end
  end
  -- The sweeper's no_ack marks are not acks: counted apart.
  local name = names[rc]
  if new == 'no_ack' then name = 'no_ack_marked' end
  tally[name] = (tally[name] or 0) + 1
  results[#results + 1] = rc
end
-- In slices: Lua's stack takes a few thousand arguments to one call, and a sweep can mark
-- more terminals than that at once.
for first = 1, #dirty, 500 do
  local pairs_ = {}
  for i = first, math.min(first + 499, #dirty) do
    local term = dirty[i]
    pairs_[#pairs_ + 1] = term
    pairs_[#pairs_ + 1] = seen[term].old
  end
  redis.call('HSET', KEYS[2], unpack(pairs_))
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
      'recorded_ms', now_ms, 'acks', table.concat(logged, '\n'), 'details', cjson.encode(details))
  else
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', maxlen, '*', 'alert_id', alert_id,
      'recorded_ms', now_ms, 'acks', table.concat(logged, '\n'))
  end
end
return results
