-- Apply one batch of updates to one entity hash (KEYS[1]) atomically and idempotently.
--
-- ARGV holds the tokens of the updates: groups, one per source partition whose events
-- touched this entity, then an optional trim:
--   G p first last             : a group of events from partition p, offsets first..last
--     R ts p o n name1 val1 ... : row features, applied only if (ts,p,o) is newer than the stored (_ts,_p,_o)
--     A prefix stats k rows     : append k rows (little-endian float64: a tile index, then per letter of
--                                 `stats` its columns; see featurestore/online/packed.py) to the packed
--                                 numeric statistics of tile set `prefix` (field prefix..'|P'). A tile's
--                                 statistics are the sum of its rows. Once the field holds more rows than
--                                 the set's bound (T), it is compacted: one row per tile, whose exact sums
--                                 are the canonical expansion of their value (hi = the correctly rounded
--                                 sum, lo = the rounded remainder, further terms in the overflow field
--                                 prefix..'|X'), sorted by tile index, then trimmed
--     L field ts p o val        : keep the value of the newest event (order (ts,p,o)); its order goes in field..'o'
--     F field ts p o val        : keep the value of the oldest event
--     N field k list            : merge a JSON list of [ts,p,o,val] (newest first), keep the k newest
--     H field n v1 .. vn        : add the values to the tile's HyperLogLog (key KEYS[1]..'|'..field)
--   T limit k (prefix tile shift back mode keep rows)*k : bounds of the tile sets, measured from
--                                 the entity's newest event: tiles with idx < min, where
--                                 min = tile_index(newest event time - shift) - back, are removed
--                                 (mode 'd') or folded into the base tile (mode 'f', keeping the `keep`
--                                 newest values of 'n'): from a packed field when it is compacted (more
--                                 than `rows` rows); from the per-tile fields
--                                 "prefix|idx|stat" once the hash has more than `limit` fields
--   B base                      : the index of the base tile (with T)
--
-- Field `_v` holds the storage layout version (LAYOUT below, LAYOUT_VERSION in keys.py): a hash
-- of another layout is not touched, the script returns the error 'FSLAYOUT <its version>'.
-- Layout 2 (packed rows unique and sorted) is a case of layout 3 and is taken as it.
-- Field `_a:<p>` holds the highest offset of partition p already applied to this entity.
-- A group whose `last` is at or below it is skipped (a replay, or a zombie writer); a group
-- entirely above it is applied and moves it to `last`. A group straddling it is not
-- applied: the script changes nothing and returns {'partial', p, mark, ...} so the caller
-- resends only the events above each mark. Otherwise it returns {'ok', groups applied}.
local LAYOUT = '3'
local READS = {['2'] = true, ['3'] = true}
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

local WIDTH = {G = 4, L = 6, F = 6, N = 4, B = 2, A = 5}
local STAT_WIDTH = {c = 1, s = 2, q = 2, m = 1, M = 1}
-- a packed set's statistics string, parsed once: its letters, their columns, the row width
local LAYOUTS = {}
local function layout(stats)
  local l = LAYOUTS[stats]
  if l ~= nil then return l end
  l = {chars = {}, cols = {}, exact = false}
  local w = 2
  for j = 1, #stats do
    local st = string.sub(stats, j, j)
    l.chars[j] = st
    l.cols[st] = w
    w = w + STAT_WIDTH[st]
    if st == 's' or st == 'q' then l.exact = true end
  end
  l.width = w - 1
  LAYOUTS[stats] = l
  return l
end
local function width(op, i)
  local w = WIDTH[op]
  if w ~= nil then return w end
  if op == 'R' then return 5 + 2 * tonumber(args[i+4]) end
  if op == 'H' then return 3 + tonumber(args[i+2]) end
  if op == 'T' then return 3 + 7 * tonumber(args[i+2]) end
  return nil
end

-- state: current values of the fields read, and the fields changed
local cur, out, touched = {}, {}, {}
local function put(f, v)
  if touched[f] == nil then touched[f] = true; out[#out + 1] = f end
  cur[f] = v
end

-- exact float sums: the canonical expansion of the exact value
local function grow(p, x)
  -- add x to the non-overlapping partials p (increasing magnitude), exactly
  local res = {}
  for _, y in ipairs(p) do
    if math.abs(x) < math.abs(y) then x, y = y, x end
    local hi = x + y
    local lo = y - (hi - x)
    if lo ~= 0 then res[#res + 1] = lo end
    x = hi
  end
  if x ~= 0 then res[#res + 1] = x end
  return res
end
local function round_sum(p)
  -- the correctly rounded value of the exact sum of p (the algorithm of Python's math.fsum)
  local m = #p
  if m == 0 then return 0 end
  local hi, lo = p[m], 0
  m = m - 1
  while m > 0 do
    local x, y = hi, p[m]
    m = m - 1
    hi = x + y
    local yr = hi - x
    lo = y - yr
    if lo ~= 0 then break end
  end
  if m > 0 and ((lo < 0 and p[m] < 0) or (lo > 0 and p[m] > 0)) then
    local y = lo * 2
    local x = hi + y
    if y == x - hi then hi = x end
  end
  return hi
end
local function canonical(p)
  -- the unique expansion of the exact sum: its rounded value, the rounded remainder, ...
  local res = {}
  for _ = 1, 64 do
    if #p == 0 then break end
    local hi = round_sum(p)
    res[#res + 1] = hi
    if hi ~= hi or hi == math.huge or hi == -math.huge then break end  -- inf/nan: no exact remainder
    p = grow(p, -hi)
  end
  return res
end

-- packed numeric tile sets: prefix -> {stats, cols, width, vals (the rows, flat), at (idx -> offset
-- of its row in vals), x (stat -> idx -> further terms of its exact sum)}
local CHUNK = 3000  -- float64 values per struct.pack / struct.unpack call
local FORMATS = {}
local function doubles(m)
  local f = FORMATS[m]
  if f == nil then f = '<' .. string.rep('d', m); FORMATS[m] = f end
  return f
end
local sets = {}
local fold_values
local function open_set(prefix, stats)
  local s = sets[prefix]
  if s ~= nil then return s end
  local l = layout(stats)
  local width = l.width
  s = {chars = l.chars, cols = l.cols, width = width, vals = {}, at = {}, rows = 0, sorted = true, had_x = false,
       x = {s = {}, q = {}}, nx = 0}
  local xraw = cur[prefix .. '|X']
  if xraw ~= nil and xraw ~= false then
    s.had_x = true
    for line in string.gmatch(xraw, '[^\n]+') do
      local idx, st, rest = string.match(line, '^(%S+) (%a) (.*)$')
      local xs = {}
      for tok in string.gmatch(rest, '%S+') do xs[#xs + 1] = tonumber(tok) end
      s.x[st][tonumber(idx)] = xs
      s.nx = s.nx + 1
    end
  end
  local raw = cur[prefix .. '|P']
  if raw ~= nil and raw ~= false and #raw > 0 then
    local total, flat = #raw / 8, {}
    local per = math.floor(CHUNK / width) * width
    local pos, done = 1, 0
    while done < total do
      local m = math.min(per, total - done)
      local got = {struct.unpack(doubles(m), raw, pos)}
      pos = got[m + 1]
      for k = 1, m do flat[done + k] = got[k] end
      done = done + m
    end
    -- one row per tile: appended rows of a tile already present are folded into it
    local vals, last = s.vals, nil
    for r = 0, total / width - 1 do
      local src = r * width
      local idx = flat[src + 1]
      local off = s.at[idx]
      if off == nil then
        off = s.rows * width
        for c = 1, width do vals[off + c] = flat[src + c] end
        s.at[idx] = off
        s.rows = s.rows + 1
        if last ~= nil and idx < last then s.sorted = false end
        last = idx
      else
        fold_values(s, off, flat, src)
      end
    end
  end
  sets[prefix] = s
  return s
end
local function row_of(s, idx)
  -- offset of tile idx's row in s.vals (a new row if absent)
  local off = s.at[idx]
  if off ~= nil then return off end
  local vals = s.vals
  off = s.rows * s.width
  if s.rows > 0 and idx < vals[off - s.width + 1] then s.sorted = false end
  vals[off + 1] = idx
  for _, st in ipairs(s.chars) do
    local c = off + s.cols[st]
    if st == 'm' then vals[c] = math.huge
    elseif st == 'M' then vals[c] = -math.huge
    else
      vals[c] = 0
      if STAT_WIDTH[st] == 2 then vals[c + 1] = 0 end
    end
  end
  s.rows = s.rows + 1
  s.at[idx] = off
  return off
end
local function expansion(s, off, st)
  -- the partials (increasing magnitude) of a tile's exact sum
  local c = off + s.cols[st]
  local p, extra = {}, nil
  if s.nx > 0 then extra = s.x[st][s.vals[off + 1]] end
  if extra ~= nil then for j = #extra, 1, -1 do p[#p + 1] = extra[j] end end
  if s.vals[c + 1] ~= 0 then p[#p + 1] = s.vals[c + 1] end
  if s.vals[c] ~= 0 then p[#p + 1] = s.vals[c] end
  return p
end
local function add_exact(s, off, st, xs)
  local vals, c = s.vals, off + s.cols[st]
  local idx = vals[off + 1]
  if #xs == 1 and vals[c + 1] == 0 and (s.nx == 0 or s.x[st][idx] == nil) then
    -- fast path: one value plus one value is the pair (hi, lo) of a two-sum
    local a, x = vals[c], xs[1]
    local hi = a + x
    local bv = hi - a
    local lo = (a - (hi - bv)) + (x - bv)
    if hi ~= hi or hi == math.huge or hi == -math.huge then lo = 0 end
    vals[c], vals[c + 1] = hi, lo
    return
  end
  local p = expansion(s, off, st)
  for _, x in ipairs(xs) do p = grow(p, x) end
  local e = canonical(p)
  vals[c], vals[c + 1] = e[1] or 0, e[2] or 0
  local had = s.x[st][idx] ~= nil
  if #e > 2 then
    local rest = {}
    for j = 3, #e do rest[#rest + 1] = e[j] end
    s.x[st][idx] = rest
    if not had then s.nx = s.nx + 1 end
  elseif had then
    s.x[st][idx] = nil
    s.nx = s.nx - 1
  end
end
function fold_values(s, off, src_vals, src)
  -- add a row given as values src_vals[src + 1 ..] (its sums' terms: hi, lo) to the row at `off`
  local vals = s.vals
  for _, st in ipairs(s.chars) do
    local c = s.cols[st]
    local x = src_vals[src + c]
    if st == 'c' then vals[off + c] = vals[off + c] + x
    elseif st == 's' or st == 'q' then
      local terms = {}
      if x ~= 0 then terms[#terms + 1] = x end
      if src_vals[src + c + 1] ~= 0 then terms[#terms + 1] = src_vals[src + c + 1] end
      if #terms > 0 then add_exact(s, off, st, terms) end
    elseif st == 'm' then if x < vals[off + c] then vals[off + c] = x end
    elseif st == 'M' then if x > vals[off + c] then vals[off + c] = x end
    end
  end
end
local function fold_row(s, base, off)
  -- merge the row at `off` into the base tile's row
  local vals = s.vals
  for _, st in ipairs(s.chars) do
    local c = s.cols[st]
    if st == 'c' then vals[base + c] = vals[base + c] + vals[off + c]
    elseif st == 's' or st == 'q' then add_exact(s, base, st, expansion(s, off, st))
    elseif st == 'm' then if vals[off + c] < vals[base + c] then vals[base + c] = vals[off + c] end
    elseif st == 'M' then if vals[off + c] > vals[base + c] then vals[base + c] = vals[off + c] end
    end
  end
end
local function pack(vals)
  local parts = {}
  for j = 1, #vals, CHUNK do
    local m = math.min(CHUNK, #vals - j + 1)
    parts[#parts + 1] = struct.pack(doubles(m), unpack(vals, j, j + m - 1))
  end
  return table.concat(parts)
end
local function encode_set(prefix, s, dropped)
  -- write the rows (sorted by tile index, without `dropped`) and the further terms of sums
  local vals, width = s.vals, s.width
  if not s.sorted or next(dropped) ~= nil then
    local order = {}
    for idx in pairs(s.at) do
      if dropped[idx] == nil then order[#order + 1] = idx end
    end
    table.sort(order)
    local out_vals = {}
    for _, idx in ipairs(order) do
      local off = s.at[idx]
      for c = 1, width do out_vals[#out_vals + 1] = vals[off + c] end
    end
    vals = out_vals
  end
  if #vals == 0 then
    redis.call('HDEL', key, prefix .. '|P', prefix .. '|X')
    return
  end
  put(prefix .. '|P', pack(vals))
  if s.nx == 0 then
    if s.had_x then redis.call('HDEL', key, prefix .. '|X') end
    return
  end
  local lines = {}
  for _, st in ipairs({'s', 'q'}) do
    for idx, extra in pairs(s.x[st]) do
      if dropped[idx] == nil then
        local toks = {fmt(idx), st}
        for _, v in ipairs(extra) do toks[#toks + 1] = fmt(v) end
        lines[#lines + 1] = table.concat(toks, ' ')
      end
    end
  end
  table.sort(lines)
  if #lines > 0 then put(prefix .. '|X', table.concat(lines, '\n'))
  elseif s.had_x then redis.call('HDEL', key, prefix .. '|X') end
end

-- per-tile fields (first / last / newest values)
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
  local prev = cur[f]
  if prev == nil or prev == false then put(f, list_json); return end  -- already the k newest, newest first
  local items = cjson.decode(list_json)
  for _, it in ipairs(cjson.decode(prev)) do items[#items + 1] = it end
  table.sort(items, function(a, b)
    if a[1] ~= b[1] then return a[1] > b[1] end
    if a[2] ~= b[2] then return a[2] > b[2] end
    return a[3] > b[3]
  end)
  local kept = {}
  for j = 1, math.min(k, #items) do kept[j] = items[j] end
  put(f, cjson.encode(kept))
end

-- pass 1: the ops, and which fields are read
local ops = {}
local want, slot = {}, {}
local function need(f)
  if slot[f] == nil then want[#want + 1] = f; slot[f] = #want end
end
local i = 1
local trim, base_index = nil, nil
need('_ts'); need('_v')
while i <= n do
  local op = args[i]
  local w = width(op, i)
  if w == nil then return redis.error_reply('unknown op ' .. tostring(op)) end
  ops[#ops + 1] = i
  if op == 'G' then
    need('_a:' .. args[i+1])
  elseif op == 'R' then
    need('_ts'); need('_p'); need('_o')
  elseif op == 'A' then
    need(args[i+1] .. '|P'); need(args[i+1] .. '|X')
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

if cur['_ts'] ~= false and cur['_ts'] ~= nil and not READS[cur['_v']] then
  return redis.error_reply('FSLAYOUT ' .. (cur['_v'] or '1'))
end

-- pass 2: decide each group
local partial = {}
for _, at in ipairs(ops) do
  if args[at] == 'G' then
    local mark = cur['_a:' .. args[at+1]]
    if mark ~= false and mark ~= nil then
      mark = tonumber(mark)
      if mark >= tonumber(args[at+2]) and mark < tonumber(args[at+3]) then
        partial[#partial + 1] = args[at+1]
        partial[#partial + 1] = tostring(mark)
      end
    end
  end
end
if #partial > 0 then
  table.insert(partial, 1, 'partial')
  return partial
end

-- pass 3: new values of the groups to apply
if cur['_v'] ~= LAYOUT then put('_v', LAYOUT) end
local applied = 0
local active = false
local appended, appended_stats = {}, {}  -- packed rows to append, per tile set
for _, at in ipairs(ops) do
  local op = args[at]
  if op == 'G' then
    local mark = cur['_a:' .. args[at+1]]
    active = mark == false or mark == nil or tonumber(mark) < tonumber(args[at+2])
    if active then
      put('_a:' .. args[at+1], args[at+3])
      applied = applied + 1
    end
  elseif op == 'T' or op == 'B' then
    active = false
  elseif active then
    if op == 'R' then
      local ts, p, o, cnt = args[at+1], args[at+2], args[at+3], tonumber(args[at+4])
      if newer(ts, p, o, cur['_ts'], cur['_p'], cur['_o']) then
        put('_ts', ts); put('_p', p); put('_o', o)
        for j = 0, cnt - 1 do put(args[at+5+2*j], args[at+6+2*j]) end
      end
    elseif op == 'A' then
      local prefix = args[at+1]
      if appended[prefix] == nil then appended[prefix] = {}; appended_stats[prefix] = args[at+2] end
      local parts = appended[prefix]
      parts[#parts + 1] = args[at+4]
    elseif op == 'L' or op == 'F' then
      keep_ordered(args[at+1], args[at+2] .. ' ' .. args[at+3] .. ' ' .. args[at+4], args[at+5], op == 'L')
    elseif op == 'N' then
      merge_newest(args[at+1], tonumber(args[at+2]), args[at+3])
    elseif op == 'H' then
      local cnt = tonumber(args[at+2])
      redis.call('PFADD', key .. '|' .. args[at+1], unpack(args, at + 3, at + 2 + cnt))
      put(args[at+1], '1')
    end
  end
end

-- the bounds of the tile sets, from the entity's newest event (parsed when a set needs one)
local newest = cur['_ts']
local trimming = trim ~= nil and newest ~= nil and newest ~= false
local entry, bounds = {}, {}
if trimming then
  newest = tonumber(newest)
  for j = 0, tonumber(args[trim+2]) - 1 do entry[args[trim + 3 + 7 * j]] = trim + 3 + 7 * j end
end
local function bound(prefix)
  local b = bounds[prefix]
  if b == nil and entry[prefix] ~= nil then
    local at = entry[prefix]
    local tile, shift, back = tonumber(args[at+1]), tonumber(args[at+2]), tonumber(args[at+3])
    b = {min = math.ceil((newest - shift) / tile) - 1 - back, mode = args[at+4],
         keep = tonumber(args[at+5]), rows = tonumber(args[at+6])}
    bounds[prefix] = b
  end
  return b
end

-- packed rows: appended, or the field compacted once it holds more rows than its bound
for prefix, parts in pairs(appended) do
  local f = prefix .. '|P'
  local raw = cur[f]
  local rows = table.concat(parts)
  if raw ~= nil and raw ~= false then rows = raw .. rows end
  local b = bound(prefix)
  if b ~= nil and #rows / (8 * layout(appended_stats[prefix]).width) > b.rows then
    cur[f] = rows
    open_set(prefix, appended_stats[prefix])
  else
    put(f, rows)
  end
end

-- packed sets compacted: trim past their bound, then write
local base_num = base_index and tonumber(base_index)
for prefix, s in pairs(sets) do
  local b, dropped = bound(prefix), {}
  if b ~= nil and s.rows > b.rows then
    local old = {}
    for idx in pairs(s.at) do
      if idx < b.min and idx ~= base_num then old[#old + 1] = idx end
    end
    table.sort(old)
    local base = nil
    if b.mode == 'f' and #old > 0 then base = row_of(s, base_num) end
    for _, idx in ipairs(old) do
      if base ~= nil then fold_row(s, base, s.at[idx]) end
      dropped[idx] = true
    end
  end
  encode_set(prefix, s, dropped)
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

-- per-tile fields past their bound, once the hash holds more than `limit` fields
if trimming and redis.call('HLEN', key) > tonumber(args[trim+1]) then
  local dead, folded = {}, {}
  for _, f in ipairs(redis.call('HKEYS', key)) do
    local prefix, idx, stat = string.match(f, '^(.+|L?%d+)|(%-?%d+)|(%a+)$')
    local b = prefix ~= nil and bound(prefix) or nil
    if b ~= nil and tonumber(idx) < b.min and idx ~= base_index then
      dead[#dead + 1] = f
      if b.mode == 'f' and stat ~= 'lo' and stat ~= 'fo' then
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
      if stat == 'l' or stat == 'f' then keep_ordered(b, cur[f .. 'o'], v, stat == 'l')
      elseif stat == 'n' then merge_newest(b, bound(x[2]).keep, v)
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
return {'ok', tostring(applied)}
