-- The gateway's answer to one request. Only the owner's `submitting` is moved back to queued
-- (a retry); an early receipt (delivered, failed) is never overwritten.
-- A text the gateway took is looked up after the receipt due time if no receipt came.
-- KEYS: state, info, counts, doubt. ARGV: now, owner, job, settle due, max attempts, hour,
-- receipt due, the per-person limit key prefix (dispatcher/store/keys.py), then
-- (r, status, message id, error, retry at)*.
local now, owner, job, settle_due = tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4]
local max_attempts, hour, receipt_due = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local limit_prefix = ARGV[8]
local out = {}
for i = 9, #ARGV, 5 do
  local r, status, mid, err, retry_at = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4]
  local state = redis.call('HGET', KEYS[1], r)
  local raw = redis.call('HGET', KEYS[2], r)
  local result = 'ignored'
  if state and raw then
    local info = cjson.decode(raw)
    local mine = state == 'submitting' and info.owner == owner
    local limit_key = limit_prefix .. r .. ':' .. hour
    if status == 'accepted' then
      if mid ~= '' then info.message_id = mid end
      info.submitted_at = now
      -- Also from queued: a late answer for a message a lookup had not found yet.
      if mine or state == 'unknown' or state == 'queued' then
        move(r, state, 'submitted')
        redis.call('ZADD', KEYS[4], receipt_due, job .. '|' .. r)
      end
      -- Counted once per text: an unknown one was counted when its answer did not come.
      if mine then
        redis.call('INCR', limit_key)
        redis.call('EXPIRE', limit_key, 7200)
      end
      result = 'submitted'
    elseif mine and status == 'rejected' then
      info.error = err
      move(r, state, 'failed')
      redis.call('ZREM', KEYS[4], job .. '|' .. r)
      result = 'failed'
    elseif mine and status == 'retry' then
      info.error = err
      redis.call('ZREM', KEYS[4], job .. '|' .. r)
      if (info.attempts or 0) >= max_attempts then
        info.error = 'gave up after ' .. info.attempts .. ' attempts: ' .. err
        move(r, state, 'failed')
        result = 'failed'
      else
        info.retry_at = tonumber(retry_at)
        move(r, state, 'queued')
        result = 'queued'
      end
    elseif mine and status == 'unknown' then
      info.error = err
      move(r, state, 'unknown')
      redis.call('ZADD', KEYS[4], settle_due, job .. '|' .. r)
      redis.call('INCR', limit_key)
      redis.call('EXPIRE', limit_key, 7200)
      result = 'unknown'
    end
    -- Another request's mark (after a lookup put it back and it was sent again) stays.
    if mine then info.owner = nil end
    redis.call('HSET', KEYS[2], r, cjson.encode(info))
  end
  out[#out + 1] = result
end
return out
