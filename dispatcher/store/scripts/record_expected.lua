-- Who must ack an alert: every terminal registered below its cover, with its region (for the
-- counters), and which of them were offline when it went out. Done in Redis: a province is
-- 17,498 terminals, and carrying their ids to the engine and back took a quarter of a second
-- before the alert could be published.
--
-- In slices, one call per ARGV[3] members of a cover set (SSCAN): the whole province in one
-- call held Redis for 70 ms, and every other client's commands (an office's issue request,
-- another alert's acks) waited behind it. The caller repeats the call with what it returns
-- until it says done; the alert is published only then. Idempotent: the first slice (cover
-- set 1, cursor 0) starts afresh, so a worker that died half-way and is replaced writes the
-- same set again; a terminal met twice (SSCAN may repeat one, cover sets may overlap) is
-- counted once (HSETNX).
--
-- KEYS: expected, offline, counts, dispatch, terminals' regions, terminals' states, this
-- alert's counts so far (a scratch hash), then the cover's region sets.
-- ARGV: cover set (1-based), SSCAN cursor, members per slice.
-- Returns {next cover set, next cursor, expected, offline}; next cover set 0: done.
local expected_key, offline_key, counts_key, dispatch_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local regions_key, states_key, scratch_key = KEYS[5], KEYS[6], KEYS[7]
local FIRST_SET = 8
local set, cursor, count = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3])
if set == 1 and cursor == '0' then
  redis.call('DEL', expected_key, offline_key, scratch_key)
end
local nsets = #KEYS - FIRST_SET + 1
if set <= nsets then
  local scanned = redis.call('SSCAN', KEYS[FIRST_SET + set - 1], cursor, 'COUNT', count)
  cursor = scanned[1]
  local ids = scanned[2]
  if #ids > 0 then
    local regions = redis.call('HMGET', regions_key, unpack(ids))
    local states = redis.call('HMGET', states_key, unpack(ids))
    local counts, order, offline_out = {}, {}, {}
    for i, id in ipairs(ids) do
      local region = regions[i]
      if region and redis.call('HSETNX', expected_key, id, region) == 1 then
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
            offline_out[#offline_out + 1] = id
          end
        end
      end
    end
    for _, field in ipairs(order) do
      redis.call('HINCRBY', scratch_key, field, counts[field])
    end
    if #offline_out > 0 then redis.call('SADD', offline_key, unpack(offline_out)) end
  end
  if cursor == '0' then set = set + 1 end
  if set <= nsets then
    redis.call('PEXPIRE', scratch_key, 3600000)
    return {set, cursor, 0, 0}
  end
end
-- Done: the counters as a whole, then the totals.
local totals = redis.call('HGETALL', scratch_key)
for start = 1, #totals, 2000 do
  redis.call('HSET', counts_key, unpack(totals, start, math.min(start + 1999, #totals)))
end
redis.call('DEL', scratch_key)
local expected = redis.call('HLEN', expected_key)
local offline = redis.call('SCARD', offline_key)
redis.call('HSET', dispatch_key, 'expected', expected, 'offline_at_dispatch', offline)
return {0, '0', expected, offline}
