-- The sweeps a dead instance had claimed become due again now, only while its lease is missing:
-- one that renewed meanwhile (it was only slow) goes on with them.
-- KEYS[1] the urgent sweeps, KEYS[2] the other sweeps, KEYS[3] the owners hash,
-- KEYS[4] the dead instance's lease key
-- ARGV[1] the dead instance, ARGV[2] now (ms)
if redis.call('EXISTS', KEYS[4]) == 1 then
  return 0
end
local owners = redis.call('HGETALL', KEYS[3])
local released = 0
for i = 1, #owners, 2 do
  local id, owner = owners[i], owners[i + 1]
  if owner == ARGV[1] then
    for k = 1, 2 do
      if redis.call('ZSCORE', KEYS[k], id) then
        redis.call('ZADD', KEYS[k], ARGV[2], id)
        released = released + 1
      end
    end
    redis.call('HDEL', KEYS[3], id)
  end
end
return released
