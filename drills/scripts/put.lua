-- Writes a drill only if its stored status is one of those expected (or it is new): two
-- instances that fire, report or edit the same drill at once cannot both apply. KEYS: drills,
-- by_time, township set, history, version, by_year. ARGV: id, expected statuses (comma list,
-- '' = must be new), drill JSON, score, edit JSON, year.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if ARGV[2] == '' then
  if raw then return 0 end
else
  if not raw then return 0 end
  local status = cjson.decode(raw).status
  local ok = false
  for s in string.gmatch(ARGV[2], '[^,]+') do if s == status then ok = true end end
  if not ok then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[6], ARGV[6], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
if ARGV[5] ~= '' then redis.call('RPUSH', KEYS[4], ARGV[5]) end
redis.call('INCR', KEYS[5])
return 1
