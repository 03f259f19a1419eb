-- What a gateway said when asked about a message in doubt. Not found means it never took the
-- message: back to the queue (and the outbox) to be sent once. A text it took and that has
-- no receipt yet is asked about again at the recheck time.
-- KEYS: state, info, counts, doubt, outbox. ARGV: now, job, recheck due, then (r, status)*.
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
