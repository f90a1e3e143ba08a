-- Apply one batch of updates to one entity hash (KEYS[1]) atomically.
-- ARGV is a flat list of operations:
--   R ts p o n name1 val1 ... : row features, applied only if (ts,p,o) is newer than the stored (_ts,_p,_o)
--   C field n                 : HINCRBY (tile count)
--   S field x                 : HINCRBYFLOAT (tile sum); x passed as a string, never through a Lua number
--   m field x / M field x     : keep the minimum / maximum
--   L field ts p o val        : keep the value of the newest event (order (ts,p,o)) in field, order in field..'o'
--   T limit k prefix1 min1 ... : if HLEN > limit, delete tile fields "prefix|idx|stat" with idx < min
local key = KEYS[1]
local i = 1
local n = #ARGV

local function newer(ts, p, o, ots, op, oo)
  if ots == nil then return true end
  ts, p, o, ots, op, oo = tonumber(ts), tonumber(p), tonumber(o), tonumber(ots), tonumber(op), tonumber(oo)
  if ts ~= ots then return ts > ots end
  if p ~= op then return p > op end
  return o > oo
end

while i <= n do
  local op = ARGV[i]
  if op == 'R' then
    local ts, p, o, cnt = ARGV[i+1], ARGV[i+2], ARGV[i+3], tonumber(ARGV[i+4])
    local cur = redis.call('HMGET', key, '_ts', '_p', '_o')
    if cur[1] == false or newer(ts, p, o, cur[1], cur[2], cur[3]) then
      local args = {'_ts', ts, '_p', p, '_o', o}
      for j = 0, cnt - 1 do
        args[#args+1] = ARGV[i+5+2*j]
        args[#args+1] = ARGV[i+6+2*j]
      end
      redis.call('HSET', key, unpack(args))
    end
    i = i + 5 + 2 * cnt
  elseif op == 'C' then
    redis.call('HINCRBY', key, ARGV[i+1], ARGV[i+2])
    i = i + 3
  elseif op == 'S' then
    redis.call('HINCRBYFLOAT', key, ARGV[i+1], ARGV[i+2])
    i = i + 3
  elseif op == 'm' or op == 'M' then
    local cur = redis.call('HGET', key, ARGV[i+1])
    local x = tonumber(ARGV[i+2])
    if cur == false or (op == 'm' and x < tonumber(cur)) or (op == 'M' and x > tonumber(cur)) then
      redis.call('HSET', key, ARGV[i+1], ARGV[i+2])
    end
    i = i + 3
  elseif op == 'L' then
    local f = ARGV[i+1]
    local cur = redis.call('HGET', key, f .. 'o')
    local ts, p, o = ARGV[i+2], ARGV[i+3], ARGV[i+4]
    local ok = cur == false
    if not ok then
      local ots, op2, oo = string.match(cur, '^(%-?%d+) (%d+) (%d+)$')
      ok = newer(ts, p, o, ots, op2, oo)
    end
    if ok then
      redis.call('HSET', key, f, ARGV[i+5], f .. 'o', ts .. ' ' .. p .. ' ' .. o)
    end
    i = i + 6
  elseif op == 'T' then
    local limit, k = tonumber(ARGV[i+1]), tonumber(ARGV[i+2])
    if redis.call('HLEN', key) > limit then
      local mins = {}
      for j = 0, k - 1 do
        mins[ARGV[i+3+2*j]] = tonumber(ARGV[i+4+2*j])
      end
      local dead = {}
      for _, f in ipairs(redis.call('HKEYS', key)) do
        local prefix, idx = string.match(f, '^(.+|%d+)|(%-?%d+)|')
        if prefix ~= nil and mins[prefix] ~= nil and tonumber(idx) < mins[prefix] then
          dead[#dead+1] = f
        end
      end
      for j = 1, #dead, 1000 do
        redis.call('HDEL', key, unpack(dead, j, math.min(j + 999, #dead)))
      end
    end
    i = i + 3 + 2 * k
  else
    return redis.error_reply('unknown op ' .. tostring(op))
  end
end
return 1
