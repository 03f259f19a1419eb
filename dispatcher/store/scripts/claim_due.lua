-- Hands the due sweeps to exactly one caller, actual red and orange warnings' first: their score
-- moves a lease ahead, so another instance polling at the same moment does not get them (and
-- does not resend twice), and the caller is recorded as their owner, so that its death hands
-- them over at once (release_dead_sweeps.lua) rather than when that lease runs out.
-- KEYS[1] the urgent sweeps, KEYS[2] the other sweeps, KEYS[3] the owners hash
-- ARGV[1] now (ms), ARGV[2] the lease's end (ms), ARGV[3] at most, ARGV[4] the caller
local out = {}
local left = tonumber(ARGV[3])
for k = 1, 2 do
  if left > 0 then
    local due = redis.call('ZRANGEBYSCORE', KEYS[k], '-inf', ARGV[1], 'LIMIT', 0, left)
    for _, id in ipairs(due) do
      redis.call('ZADD', KEYS[k], ARGV[2], id)
      redis.call('HSET', KEYS[3], id, ARGV[4])
      out[#out + 1] = id
    end
    left = left - #due
  end
end
return out
