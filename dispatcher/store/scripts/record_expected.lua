-- Hands the due sweeps to exactly one caller: their score moves a lease ahead, so another
-- instance polling at the same moment does not get them (and does not resend twice).
-- Who must ack an alert: every terminal registered below its cover, with its region (for the
-- counters), and which of them were offline when it went out. Done in Redis: a province is
-- 17,498 terminals, and carrying their ids to the engine and back took a quarter of a second
-- before the alert could be published. Atomic, and idempotent: a worker that died half-way
-- and is replaced writes the same set again.
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
