-- Apply one batch of updates to one entity hash (KEYS[1]) atomically and idempotently.
--
-- ARGV[1] is one payload: tokens each terminated by the byte 0x1F. It holds groups, one
-- per source partition whose events touched this entity, then an optional trim:
--   G p first last             : a group of events from partition p, offsets first..last
--     R ts p o n name1 val1 ... : row features, applied only if (ts,p,o) is newer than the stored (_ts,_p,_o)
--     C field n                 : add to a tile count
--     S field x                 : add to a tile sum (float64, written with 17 significant digits)
--     m field x / M field x     : keep the minimum / maximum
--     L field ts p o val        : keep the value of the newest event (order (ts,p,o)); its order goes in field..'o'
--   T limit k prefix1 min1 ...  : if the hash has more than `limit` fields, delete tile fields
--                                 "prefix|idx|stat" with idx < min
--
-- Field `_a:<p>` holds the highest offset of partition p already applied to this entity.
-- A group whose `last` is at or below it is skipped (a replay, or a zombie writer); a group
-- entirely above it is applied and moves it to `last`. A group straddling it is not
-- applied: the script changes nothing and returns {'partial', p, mark, ...} so the caller
-- resends only the events above each mark. Otherwise it returns {'ok', groups applied}.
local key = KEYS[1]
local args = {}
for tok in string.gmatch(ARGV[1], '([^\31]*)\31') do
  args[#args + 1] = tok
end
local n = #args

local function newer(ts, p, o, ots, op, oo)
  if ots == nil or ots == false then return true end
  ts, p, o, ots, op, oo = tonumber(ts), tonumber(p), tonumber(o), tonumber(ots), tonumber(op), tonumber(oo)
  if ts ~= ots then return ts > ots end
  if p ~= op then return p > op end
  return o > oo
end

local function fmt(x)
  if x == math.floor(x) and math.abs(x) < 1e15 then return string.format('%d', x) end
  return string.format('%.17g', x)
end

local function width(op, i)
  if op == 'R' then return 5 + 2 * tonumber(args[i+4]) end
  if op == 'L' then return 6 end
  if op == 'G' or op == 'C' or op == 'S' or op == 'm' or op == 'M' then return 3 + (op == 'G' and 1 or 0) end
  if op == 'T' then return 3 + 2 * tonumber(args[i+2]) end
  return nil
end

-- pass 1: which fields are read
local want, slot = {}, {}
local function need(f)
  if slot[f] == nil then want[#want + 1] = f; slot[f] = #want end
end
local i = 1
local trim = nil
while i <= n do
  local op = args[i]
  local w = width(op, i)
  if w == nil then return redis.error_reply('unknown op ' .. tostring(op)) end
  if op == 'G' then
    need('_a:' .. args[i+1])
  elseif op == 'R' then
    need('_ts'); need('_p'); need('_o')
  elseif op == 'L' then
    need(args[i+1] .. 'o')
  elseif op == 'T' then
    trim = i
  else
    need(args[i+1])
  end
  i = i + w
end
local cur = {}
if #want > 0 then
  local got = redis.call('HMGET', key, unpack(want))
  for j, f in ipairs(want) do cur[f] = got[j] end
end

-- pass 2: decide each group
local partial = {}
i = 1
while i <= n do
  if args[i] == 'G' then
    local mark = cur['_a:' .. args[i+1]]
    if mark ~= false and mark ~= nil then
      mark = tonumber(mark)
      if mark >= tonumber(args[i+2]) and mark < tonumber(args[i+3]) then
        partial[#partial + 1] = args[i+1]
        partial[#partial + 1] = tostring(mark)
      end
    end
  end
  i = i + width(args[i], i)
end
if #partial > 0 then
  table.insert(partial, 1, 'partial')
  return partial
end

-- pass 3: new values of the groups to apply
local out, touched = {}, {}
local function put(f, v)
  if touched[f] == nil then touched[f] = true; out[#out + 1] = f end
  cur[f] = v
end
local applied = 0
local active = false
i = 1
while i <= n do
  local op = args[i]
  if op == 'G' then
    local mark = cur['_a:' .. args[i+1]]
    active = mark == false or mark == nil or tonumber(mark) < tonumber(args[i+2])
    if active then
      put('_a:' .. args[i+1], args[i+3])
      applied = applied + 1
    end
  elseif op == 'T' then
    active = false
  elseif active then
    if op == 'R' then
      local ts, p, o, cnt = args[i+1], args[i+2], args[i+3], tonumber(args[i+4])
      if newer(ts, p, o, cur['_ts'], cur['_p'], cur['_o']) then
        put('_ts', ts); put('_p', p); put('_o', o)
        for j = 0, cnt - 1 do put(args[i+5+2*j], args[i+6+2*j]) end
      end
    elseif op == 'C' or op == 'S' then
      local f = args[i+1]
      local base = cur[f]
      local x = tonumber(args[i+2])
      if base ~= nil and base ~= false then x = x + tonumber(base) end
      put(f, op == 'C' and string.format('%d', x) or fmt(x))
    elseif op == 'm' or op == 'M' then
      local f, x = args[i+1], tonumber(args[i+2])
      local base = cur[f]
      if base == nil or base == false or (op == 'm' and x < tonumber(base)) or (op == 'M' and x > tonumber(base)) then
        put(f, args[i+2])
      end
    elseif op == 'L' then
      local f = args[i+1]
      local ts, p, o = args[i+2], args[i+3], args[i+4]
      local prev = cur[f .. 'o']
      local ok = prev == nil or prev == false
      if not ok then
        local ots, op2, oo = string.match(prev, '^(%-?%d+) (%d+) (%d+)$')
        ok = newer(ts, p, o, ots, op2, oo)
      end
      if ok then
        put(f, args[i+5]); put(f .. 'o', ts .. ' ' .. p .. ' ' .. o)
      end
    end
  end
  i = i + width(op, i)
end
if #out > 0 then
  local hset = {}
  for _, f in ipairs(out) do hset[#hset + 1] = f; hset[#hset + 1] = cur[f] end
  redis.call('HSET', key, unpack(hset))
end

if trim ~= nil then
  local limit, k = tonumber(args[trim+1]), tonumber(args[trim+2])
  if redis.call('HLEN', key) > limit then
    local mins = {}
    for j = 0, k - 1 do mins[args[trim+3+2*j]] = tonumber(args[trim+4+2*j]) end
    local dead = {}
    for _, f in ipairs(redis.call('HKEYS', key)) do
      local prefix, idx = string.match(f, '^(.+|%d+)|(%-?%d+)|')
      if prefix ~= nil and mins[prefix] ~= nil and tonumber(idx) < mins[prefix] then
        dead[#dead + 1] = f
      end
    end
    for j = 1, #dead, 1000 do
      redis.call('HDEL', key, unpack(dead, j, math.min(j + 999, #dead)))
    end
  end
end
return {'ok', tostring(applied)}
