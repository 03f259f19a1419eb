-- Takes queued recipients whose retry time has come for one request: each becomes
-- `submitting`, owned by this request, with a doubt entry that outlives the request's timeout.
-- A person over the hourly limit is failed instead (unless the job is exempt).
-- KEYS: state, info, counts, doubt. ARGV: now, owner, gateway, doubt due, job, limit,
-- exempt, hour, the per-person limit key prefix (dispatcher/store/keys.py), then r*.
-- Returns the recipients taken.
local now, owner, gateway, due, job = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local limit, exempt, hour = tonumber(ARGV[6]), ARGV[7] == '1', ARGV[8]
local limit_prefix = ARGV[9]
local taken = {}
for i = 10, #ARGV do
  local r = ARGV[i]
  local state = redis.call('HGET', KEYS[1], r)
  if state == 'submitting' then
    -- Run again by the client after a lost reply: what this request took is still its own.
    local info = cjson.decode(redis.call('HGET', KEYS[2], r))
    if info.owner == owner then taken[#taken + 1] = r end
  elseif state == 'queued' then
    local info = cjson.decode(redis.call('HGET', KEYS[2], r))
    if (info.retry_at or 0) <= now then
      local sent = tonumber(redis.call('GET', limit_prefix .. r .. ':' .. hour) or '0')
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
