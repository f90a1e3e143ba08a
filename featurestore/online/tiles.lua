-- Apply one batch of updates to one entity hash (KEYS[1]) atomically and idempotently.
--
-- ARGV holds the tokens of the updates: groups, one per source partition whose events
-- touched this entity, then an optional trim:
--   G p first last             : a group of events from partition p, offsets first..last
--     R ts p o n name1 val1 ... : row features, applied only if (ts,p,o) is newer than the stored (_ts,_p,_o)
--     C field n                 : add to a tile count
--     S field n x1 .. xn        : add to a tile sum or sum of squares the exact value x1 + .. + xn; sums
--                                 are kept exact, as the canonical expansion "hi lo ..." of their value
--                                 (hi the correctly rounded sum), so they do not depend on batching
--     m field x / M field x     : keep the minimum / maximum
--     L field ts p o val        : keep the value of the newest event (order (ts,p,o)); its order goes in field..'o'
--     F field ts p o val        : keep the value of the oldest event
--     N field k list            : merge a JSON list of [ts,p,o,val] (newest first), keep the k newest
--     H field n v1 .. vn        : add the values to the tile's HyperLogLog (key KEYS[1]..'|'..field)
--   T limit k (prefix tile shift back mode keep)*k : if the hash has more than `limit` fields, remove
--                                 the tile fields "prefix|idx|stat" with idx < min, where
--                                 min = tile_index(newest event time - shift) - back: mode 'd'
--                                 deletes them, mode 'f' folds them into the base tile "prefix|base|stat"
--                                 (keeping the `keep` newest values of 'n')
--   B base                      : the index of the base tile (with T)
--
-- Field `_a:<p>` holds the highest offset of partition p already applied to this entity.
-- A group whose `last` is at or below it is skipped (a replay, or a zombie writer); a group
-- entirely above it is applied and moves it to `last`. A group straddling it is not
-- applied: the script changes nothing and returns {'partial', p, mark, ...} so the caller
-- resends only the events above each mark. Otherwise it returns {'ok', groups applied}.
local key = KEYS[1]
local args = ARGV
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

local WIDTH = {G = 4, C = 3, m = 3, M = 3, L = 6, F = 6, N = 4, B = 2}
local function width(op, i)
  local w = WIDTH[op]
  if w ~= nil then return w end
  if op == 'R' then return 5 + 2 * tonumber(args[i+4]) end
  if op == 'H' or op == 'S' then return 3 + tonumber(args[i+2]) end
  if op == 'T' then return 3 + 6 * tonumber(args[i+2]) end
  return nil
end

-- state: current values of the fields read, and the fields changed
local cur, out, touched = {}, {}, {}
local function put(f, v)
  if touched[f] == nil then touched[f] = true; out[#out + 1] = f end
  cur[f] = v
end

-- exact float sums: a tile's sum is stored as the canonical expansion of its exact value
local function grow(p, x)
  -- add x to the non-overlapping partials p (increasing magnitude), exactly
  local out = {}
  for _, y in ipairs(p) do
    if math.abs(x) < math.abs(y) then x, y = y, x end
    local hi = x + y
    local lo = y - (hi - x)
    if lo ~= 0 then out[#out + 1] = lo end
    x = hi
  end
  if x ~= 0 then out[#out + 1] = x end
  return out
end
local function round_sum(p)
  -- the correctly rounded value of the exact sum of p (the algorithm of Python's math.fsum)
  local n = #p
  if n == 0 then return 0 end
  local hi, lo = p[n], 0
  n = n - 1
  while n > 0 do
    local x, y = hi, p[n]
    n = n - 1
    hi = x + y
    local yr = hi - x
    lo = y - yr
    if lo ~= 0 then break end
  end
  if n > 0 and ((lo < 0 and p[n] < 0) or (lo > 0 and p[n] > 0)) then
    local y = lo * 2
    local x = hi + y
    if y == x - hi then hi = x end
  end
  return hi
end
local function canonical(p)
  -- the unique expansion of the exact sum: its rounded value, the rounded remainder, ...
  local out = {}
  for _ = 1, 64 do
    if #p == 0 then break end
    local hi = round_sum(p)
    out[#out + 1] = hi
    if hi ~= hi or hi == math.huge or hi == -math.huge then break end  -- inf/nan: no exact remainder
    p = grow(p, -hi)
  end
  return out
end
local function parse_exact(raw)
  -- a stored sum ("hi lo ...", largest first) as partials of increasing magnitude
  local vals, p = {}, {}
  if raw == nil or raw == false then return p end
  for tok in string.gmatch(raw, '%S+') do vals[#vals + 1] = tonumber(tok) end
  for j = #vals, 1, -1 do p[#p + 1] = vals[j] end
  return p
end

-- merging one statistic into a field (shared by updates and lifetime folding)
local function add_exact(f, xs)
  local raw = cur[f]
  if #xs == 1 then
    -- fast path: a stored single value (or none) plus one value is the pair (hi, lo) of a two-sum
    local a = 0
    if raw ~= nil and raw ~= false then a = tonumber(raw) end
    if a ~= nil then
      local x = xs[1]
      local hi = a + x
      local bv = hi - a
      local lo = (a - (hi - bv)) + (x - bv)
      if hi ~= hi or hi == math.huge or hi == -math.huge then lo = 0 end
      if lo == 0 then put(f, fmt(hi)) else put(f, fmt(hi) .. ' ' .. fmt(lo)) end
      return
    end
  end
  local p = parse_exact(raw)
  for _, x in ipairs(xs) do p = grow(p, x) end
  local parts = {}
  for j, v in ipairs(canonical(p)) do parts[j] = fmt(v) end
  put(f, #parts > 0 and table.concat(parts, ' ') or '0')
end
local function add(f, x, integer)
  local base = cur[f]
  if base ~= nil and base ~= false then x = x + tonumber(base) end
  put(f, integer and string.format('%d', x) or fmt(x))
end
local function keep_extreme(f, raw, want_min)
  local base, x = cur[f], tonumber(raw)
  if base == nil or base == false or (want_min and x < tonumber(base)) or ((not want_min) and x > tonumber(base)) then
    put(f, raw)
  end
end
local function keep_ordered(f, order, val, want_newest)
  local ts, p, o = string.match(order, '^(%-?%d+) (%-?%d+) (%d+)$')
  local prev = cur[f .. 'o']
  local ok = prev == nil or prev == false
  if not ok then
    local ots, op2, oo = string.match(prev, '^(%-?%d+) (%-?%d+) (%d+)$')
    if want_newest then ok = newer(ts, p, o, ots, op2, oo) else ok = newer(ots, op2, oo, ts, p, o) end
  end
  if ok then put(f, val); put(f .. 'o', order) end
end
local function merge_newest(f, k, list_json)
  local items = cjson.decode(list_json)
  local prev = cur[f]
  if prev ~= nil and prev ~= false then
    for _, it in ipairs(cjson.decode(prev)) do items[#items + 1] = it end
  end
  table.sort(items, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[3] > b[3]
  end)
  local kept = {}
  for j = 1, math.min(k, #items) do kept[j] = items[j] end
  put(f, cjson.encode(kept))
end

-- pass 1: which fields are read
local want, slot = {}, {}
local function need(f)
  if slot[f] == nil then want[#want + 1] = f; slot[f] = #want end
end
local i = 1
local trim, base_index = nil, nil
need('_ts')
while i <= n do
  local op = args[i]
  local w = width(op, i)
  if w == nil then return redis.error_reply('unknown op ' .. tostring(op)) end
  if op == 'G' then
    need('_a:' .. args[i+1])
  elseif op == 'R' then
    need('_ts'); need('_p'); need('_o')
  elseif op == 'L' or op == 'F' then
    need(args[i+1] .. 'o')
  elseif op == 'T' then
    trim = i
  elseif op == 'B' then
    base_index = args[i+1]
  elseif op ~= 'H' then
    need(args[i+1])
  end
  i = i + w
end
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
  elseif op == 'T' or op == 'B' then
    active = false
  elseif active then
    if op == 'R' then
      local ts, p, o, cnt = args[i+1], args[i+2], args[i+3], tonumber(args[i+4])
      if newer(ts, p, o, cur['_ts'], cur['_p'], cur['_o']) then
        put('_ts', ts); put('_p', p); put('_o', o)
        for j = 0, cnt - 1 do put(args[i+5+2*j], args[i+6+2*j]) end
      end
    elseif op == 'C' then
      add(args[i+1], tonumber(args[i+2]), true)
    elseif op == 'S' then
      local xs = {}
      for j = 1, tonumber(args[i+2]) do xs[j] = tonumber(args[i+2+j]) end
      add_exact(args[i+1], xs)
    elseif op == 'm' or op == 'M' then
      keep_extreme(args[i+1], args[i+2], op == 'm')
    elseif op == 'L' or op == 'F' then
      keep_ordered(args[i+1], args[i+2] .. ' ' .. args[i+3] .. ' ' .. args[i+4], args[i+5], op == 'L')
    elseif op == 'N' then
      merge_newest(args[i+1], tonumber(args[i+2]), args[i+3])
    elseif op == 'H' then
      local cnt = tonumber(args[i+2])
      redis.call('PFADD', key .. '|' .. args[i+1], unpack(args, i + 3, i + 2 + cnt))
      put(args[i+1], '1')
    end
  end
  i = i + width(op, i)
end

local function flush()
  if #out > 0 then
    local hset = {}
    for _, f in ipairs(out) do hset[#hset + 1] = f; hset[#hset + 1] = cur[f] end
    redis.call('HSET', key, unpack(hset))
    out, touched = {}, {}
  end
end
flush()

if trim ~= nil and cur['_ts'] ~= nil and cur['_ts'] ~= false then
  local limit, k = tonumber(args[trim+1]), tonumber(args[trim+2])
  if redis.call('HLEN', key) > limit then
    -- bounds follow the entity's newest event time, whatever this batch held
    local newest = tonumber(cur['_ts'])
    local mins, modes, keeps = {}, {}, {}
    for j = 0, k - 1 do
      local at = trim + 3 + 6 * j
      keeps[args[at]] = tonumber(args[at+5])
      local tile, shift, back = tonumber(args[at+1]), tonumber(args[at+2]), tonumber(args[at+3])
      mins[args[at]] = math.ceil((newest - shift) / tile) - 1 - back
      modes[args[at]] = args[at+4]
    end
    local dead, folded = {}, {}
    for _, f in ipairs(redis.call('HKEYS', key)) do
      local prefix, idx, stat = string.match(f, '^(.+|L?%d+)|(%-?%d+)|(%a+)$')
      if prefix ~= nil and mins[prefix] ~= nil and tonumber(idx) < mins[prefix] and idx ~= base_index then
        dead[#dead + 1] = f
        if modes[prefix] == 'f' and stat ~= 'lo' and stat ~= 'fo' then
          folded[#folded + 1] = {f, prefix, stat}
        end
      end
    end
    -- fold lifetime tiles into their base tile
    if #folded > 0 then
      local names = {}
      for _, x in ipairs(folded) do
        names[#names + 1] = x[1]
        names[#names + 1] = x[2] .. '|' .. base_index .. '|' .. x[3]
        if x[3] == 'l' or x[3] == 'f' then
          names[#names + 1] = x[1] .. 'o'
          names[#names + 1] = x[2] .. '|' .. base_index .. '|' .. x[3] .. 'o'
        end
      end
      local got = redis.call('HMGET', key, unpack(names))
      for j, f in ipairs(names) do cur[f] = got[j] end
      for _, x in ipairs(folded) do
        local f, stat = x[1], x[3]
        local b = x[2] .. '|' .. base_index .. '|' .. stat
        local v = cur[f]
        if stat == 'c' then add(b, tonumber(v), true)
        elseif stat == 's' or stat == 'q' then add_exact(b, parse_exact(v))
        elseif stat == 'm' or stat == 'M' then keep_extreme(b, v, stat == 'm')
        elseif stat == 'l' or stat == 'f' then keep_ordered(b, cur[f .. 'o'], v, stat == 'l')
        elseif stat == 'n' then merge_newest(b, keeps[x[2]], v)
        elseif stat == 'd' then
          redis.call('PFMERGE', key .. '|' .. b, key .. '|' .. b, key .. '|' .. f)
          put(b, '1')
        end
      end
      flush()
    end
    for _, f in ipairs(dead) do
      if string.sub(f, -2) == '|d' then redis.call('DEL', key .. '|' .. f) end
    end
    for j = 1, #dead, 1000 do
      redis.call('HDEL', key, unpack(dead, j, math.min(j + 999, #dead)))
    end
  end
end
return {'ok', tostring(applied)}
