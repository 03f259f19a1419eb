-- Appends acks that came after a drill's first report to its review log, with the report made
-- again from them, only if the log is as long as when they were read: two collectors that
-- read the same log cannot both append, so every ack is in it once. Returns 1 when applied.
-- KEYS: report, review log. ARGV: length read, report JSON, then one JSON row an ack.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('LLEN', KEYS[2]) ~= tonumber(ARGV[1]) then return 0 end
for i = 3, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('SET', KEYS[1], ARGV[2])
return 1
