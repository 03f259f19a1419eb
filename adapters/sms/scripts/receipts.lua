-- Delivery receipts of one job. A receipt is the gateway's word and beats anything the engine
-- guessed (a message given up on, or put back in the queue, that the gateway did deliver).
-- A receipt for the whole message, or for its last part (part = parts), settles it; earlier
-- parts are kept, and a text waiting for more of them stays due for a lookup. A part that
-- fails fails the text, also after it was counted delivered.
-- A receipt counts only from the gateway that holds the message (info.gateway): one posted
-- to another gateway's callback changes nothing ('wrong_gateway').
-- KEYS: state, info, counts, doubt. ARGV: job, receipt due, gateway, then
-- (r, status, part, parts, mid, err, at)*.
local job, receipt_due, gateway = ARGV[1], ARGV[2], ARGV[3]
local out = {}
for i = 4, #ARGV, 7 do
  local r, status, part, parts = ARGV[i], ARGV[i+1], tonumber(ARGV[i+2]), tonumber(ARGV[i+3])
  local mid, err, at = ARGV[i+4], ARGV[i+5], ARGV[i+6]
  local state = redis.call('HGET', KEYS[1], r)
  local raw = redis.call('HGET', KEYS[2], r)
  local member = job .. '|' .. r
  local result = 'orphan'
  local info = raw and cjson.decode(raw)
  if info and info.gateway ~= gateway then
    result = 'wrong_gateway'
  elseif state and info then
    if mid ~= '' and not info.message_id then info.message_id = mid end
    info.parts = parts
    local ok = info.ok or {}
    if status ~= 'failed' then
      local seen = false
      for _, p in ipairs(ok) do if p == part then seen = true end end
      if not seen then ok[#ok + 1] = part end
      info.ok = ok
    end
    local new = state
    if status == 'failed' then
      if state ~= 'failed' or info.final ~= 'receipt' then
        info.error = err ~= '' and err or 'failed'
        new = 'failed'
      end
      info.final = 'receipt'
    elseif info.final == 'receipt' then
      new = state
    elseif part >= parts or #ok >= parts then
      info.final = 'receipt'
      info.delivered_at = at
      new = 'delivered'
    elseif state ~= 'submitted' then
      new = 'submitted'
      redis.call('ZADD', KEYS[4], receipt_due, member)
    end
    if new ~= state then
      move(r, state, new)
      result = new
    else
      result = 'duplicate'
    end
    if info.final == 'receipt' then redis.call('ZREM', KEYS[4], member) end
    redis.call('HSET', KEYS[2], r, cjson.encode(info))
  end
  out[#out + 1] = result
end
return out
