-- Stores the alert, its dispatch record, its outbox entry and the idempotency record in one
-- atomic step, so a 201 means all of them exist (and, with appendfsync always, are on disk).
if ARGV[6] == '1' then
  local prev = redis.call('GET', KEYS[5])
  if prev then return {'replay', prev} end
end
if ARGV[8] == '1' then
  local by = redis.call('HGET', KEYS[6], 'cancelled_by')
  -- by == this alert: a client retry ran the script again after the first run's reply was lost.
  if by and by ~= ARGV[3] then return {'cancelled', by} end
  redis.call('HSET', KEYS[6], 'cancelled_by', ARGV[3])
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[3], 'state', 'queued', 'queued_at', ARGV[7])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 100000, '*', 'alert_id', ARGV[3])
if ARGV[6] == '1' then redis.call('SET', KEYS[5], ARGV[4], 'EX', ARGV[5]) end
return {'created', ARGV[3]}
