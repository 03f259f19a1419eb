-- Append one audit record if the chain's head is still the one the record was built on.
-- KEYS: head (hash: seq, hash), records (hash: seq -> JSON), by_time (zset: seq by ms)
-- ARGV: expected seq, expected hash, the record's seq, its hash, its JSON, its time (ms)
-- Returns 1 when appended; {0, seq, hash} (the current head) when another append came first.
-- The hash is computed in Python: Redis's Lua has SHA-1 only.
local head = redis.call('HMGET', KEYS[1], 'seq', 'hash')
local seq = head[1] or '0'
local hash = head[2] or string.rep('0', 64)
if seq ~= ARGV[1] or hash ~= ARGV[2] then
  return {0, seq, hash}
end
redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[3])
redis.call('HSET', KEYS[1], 'seq', ARGV[3], 'hash', ARGV[4])
return 1
