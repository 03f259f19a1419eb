-- Take over a dead consumer's pending entries of a stream, only while its lease is missing:
-- an instance that renewed its lease meanwhile (it was only slow or hung for a moment) keeps
-- its work, and one that checks its entries after renewing sees them gone.
-- KEYS[1] the stream, KEYS[2] the dead consumer's lease key
-- ARGV[1] the group, ARGV[2] the dead consumer, ARGV[3] the new consumer, ARGV[4] at most
if redis.call('EXISTS', KEYS[2]) == 1 then
  return {}
end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', tonumber(ARGV[4]), ARGV[2])
if #pending == 0 then
  return {}
end
local ids = {}
for i, entry in ipairs(pending) do
  ids[i] = entry[1]
end
return redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, unpack(ids))
