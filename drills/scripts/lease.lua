-- Holds the scheduler lease: renews it when this instance has it, takes it when free.
-- Returns {1, previous heartbeat} when held (the heartbeat says until when the last holder
-- was alive), {0, holder} when another instance has it. KEYS: leader, heartbeat.
-- ARGV: instance, ttl ms, now ms.
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  return {0, holder}
end
local previous = redis.call('GET', KEYS[2]) or ''
redis.call('SET', KEYS[2], ARGV[3] .. ' ' .. ARGV[1])
return {1, previous}
