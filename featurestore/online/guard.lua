-- Store entity states (storage layout 6) unless the entity's value already holds a newer one.
--
-- KEYS: entity keys. ARGV: per key, three arguments: the source partition p, the offset up
-- to which the state applied p's events, and the value of an entity holding that state
-- alone (what the key becomes when p is its only partition: the common case). A key holds
-- the entity's states as one string (featurestore/online/entity_value.py): 'FSe6', their
-- count (u32), per state its partition (i32) and length (u32), then the states in
-- partition order; bytes 17-24 of a state are the offset it applied (i64,
-- featurestore/online/state.py). A state is stored
-- only if the value holds none of a higher or equal offset for p: a replay or a former
-- owner of the partition writes nothing. The other partitions' states are kept as they are.
-- No aggregation happens here: states are computed by the processor that owns the
-- partition. A key of another layout is not touched: the error 'FSLAYOUT <its layout>
-- <key>' for a hash (layouts up to 5), 'FSVALUE <key>' for anything else. Returns the
-- number of states stored.
local MAGIC = 'FSe6'
local written = 0
local function store(key, value)
  redis.call('SET', key, value)
  written = written + 1
end
for i, key in ipairs(KEYS) do
  local p, offset, alone = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), ARGV[3 * i]
  -- the head, and the first state's own head: enough when the value holds one state (the common case)
  local head = redis.pcall('GETRANGE', key, 0, 39)
  if type(head) == 'table' and head.err then
    if redis.call('TYPE', key).ok == 'hash' then
      return redis.error_reply('FSLAYOUT ' .. (redis.call('HGET', key, '_v') or '1') .. ' ' .. key)
    end
    return redis.error_reply('FSVALUE ' .. key)
  end
  if head == '' then
    store(key, alone)
  elseif #head < 16 or string.sub(head, 1, 4) ~= MAGIC then
    return redis.error_reply('FSVALUE ' .. key)
  elseif struct.unpack('<I4', head, 5) == 1 and struct.unpack('<i4', head, 9) == p then
    if #head < 40 then
      return redis.error_reply('FSVALUE ' .. key)
    end
    if struct.unpack('<i8', head, 33) < offset then
      store(key, alone)
    end
  else
    local held = redis.call('GET', key)
    local n = struct.unpack('<I4', held, 5)
    local parts, at, newer = {}, 9 + 8 * n, false
    for j = 0, n - 1 do
      local q, size = struct.unpack('<i4I4', held, 9 + 8 * j)
      local part = string.sub(held, at, at + size - 1)
      at = at + size
      if q == p then
        newer = struct.unpack('<i8', part, 17) >= offset
      else
        parts[#parts + 1] = {q, part}
      end
    end
    if not newer then
      local j = 1
      while j <= #parts and parts[j][1] < p do
        j = j + 1
      end
      table.insert(parts, j, {p, string.sub(alone, 17)})
      local head, body = {MAGIC, struct.pack('<I4', #parts)}, {}
      for _, part in ipairs(parts) do
        head[#head + 1] = struct.pack('<i4I4', part[1], #part[2])
        body[#body + 1] = part[2]
      end
      store(key, table.concat(head) .. table.concat(body))
    end
  end
end
return written
