-- Shared by the scripts below: moving one recipient between states keeps the counts in step.
local function move(r, old, new)
  redis.call('HSET', KEYS[1], r, new)
  if old then redis.call('HINCRBY', KEYS[3], old, -1) end
  redis.call('HINCRBY', KEYS[3], new, 1)
end
