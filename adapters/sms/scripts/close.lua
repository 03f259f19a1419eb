-- Ends what is left of a job (its alert expired, was cancelled or superseded): those of the
-- given recipients still queued become `to_state`; what is in flight goes on. Called with a
-- chunk or a page at a time, so Redis is never held for a whole province at once.
-- KEYS: state, info, counts. ARGV: to state, reason, then r*.
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
