-- Queues the recipients not queued before (idempotent: planning again after a crash adds
-- nothing) and adds the new ones to the outbox in chunks, in the same atomic step.
-- KEYS: state, info, counts, outbox. ARGV: job, chunk size, JSON [[r, info], …] (one
-- argument: decoding it here is cheaper than building thousands of arguments in Python).
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
