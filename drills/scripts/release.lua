-- Gives the lease up if this instance still holds it. KEYS: leader. ARGV: instance.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
