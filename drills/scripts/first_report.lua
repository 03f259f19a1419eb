-- Stores a drill's first report with the ack log entries it read, unless a report is there:
-- the first one made gives the verdict, so two instances reporting at once (or one again
-- after a crash) agree. Returns the report kept: nil when this one was stored, else the one
-- already there. KEYS: report, review log. ARGV: report JSON, then one JSON row an ack.
local stored = redis.call('GET', KEYS[1])
if stored then return stored end
redis.call('DEL', KEYS[2])
for i = 2, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('SET', KEYS[1], ARGV[1])
return nil
