-- The pace of one gateway, shared by every instance and run on Redis's clock: a log of what was
-- taken (a sorted set: "seq:n" at the time taken) holds no window of ARGV[3] ms above ARGV[2]
-- messages, and a pacing time spreads the takes evenly (a quarter batch of credit for a taker
-- that woke a little late). Urgent takers (actual red and orange warnings) go first on every
-- instance: while one waits, or took a moment ago, routine takers are held back.
-- KEYS: pace hash (next, urgent, seq), log. ARGV: n, limit, window ms, spacing ms per message,
-- urgent (1/0), hold ms. Takes n or says how many milliseconds to wait before asking again.
local n, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local spacing, urgent, hold = tonumber(ARGV[4]), ARGV[5] == '1', tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - window))
local p = redis.call('HMGET', KEYS[1], 'next', 'urgent')
local next_at = tonumber(p[1]) or 0
local urgent_until = tonumber(p[2]) or 0
local wait = 0
if not urgent and urgent_until > now then wait = urgent_until - now end
if next_at > now then wait = math.max(wait, next_at - now) end
-- The window: what is in the log now, and when enough of it will have left for n more.
local log = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local sum = 0
for i = 1, #log, 2 do
  sum = sum + tonumber(string.match(log[i], ':(%d+)$'))
end
if sum + n > limit then
  local over = sum + n - limit
  for i = 1, #log, 2 do
    over = over - tonumber(string.match(log[i], ':(%d+)$'))
    if over <= 0 then
      wait = math.max(wait, tonumber(log[i + 1]) + window - now)
      break
    end
  end
  if over > 0 then wait = math.max(wait, window) end
end
if wait <= 0 then
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  redis.call('ZADD', KEYS[2], now, seq .. ':' .. n)
  -- A quarter batch of credit: a taker that woke a few ms late loses nothing, and requests
  -- are never sent back to back (which would leave the gateway no room for jitter).
  next_at = math.max(next_at, now - n * spacing / 4) + n * spacing
  redis.call('HSET', KEYS[1], 'next', tostring(next_at))
  wait = 0
end
if urgent then
  -- Routine takers on every instance step aside until a little after this one is served.
  redis.call('HSET', KEYS[1], 'urgent', tostring(math.max(urgent_until, now + wait + hold)))
end
redis.call('PEXPIRE', KEYS[1], 60000)
redis.call('PEXPIRE', KEYS[2], math.ceil(window) + 1000)
return math.ceil(wait)
