-- Holds the scheduler lease: renews it when this instance has it, takes it when free, or when
-- its holder's own liveness lease lapsed (dead or hung: the drill lease is handed over within
-- seconds, not when its longer TTL runs out).
-- Returns {1, previous heartbeat} when held (the heartbeat says until when the last holder
-- was alive), {0, holder} when another instance has it.
-- KEYS: leader, heartbeat, the expected holder's liveness lease, the registered instances.
-- ARGV: instance, ttl ms, now ms, the holder the caller read (its lease is KEYS[3]).
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
elseif holder == ARGV[4] and redis.call('EXISTS', KEYS[3]) == 0
    and redis.call('HEXISTS', KEYS[4], holder) == 1 then
  -- Registered as announcing liveness, and its lease is gone: an instance that never held
  -- one (an engine from before leases) keeps the drill lease until its TTL.
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else
  return {0, holder}
end
local previous = redis.call('GET', KEYS[2]) or ''
redis.call('SET', KEYS[2], ARGV[3] .. ' ' .. ARGV[1])
return {1, previous}
