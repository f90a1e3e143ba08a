-- Store entity states (storage layout 6) unless the entity's value already holds a newer one.
--
-- KEYS: entity keys. ARGV: per key, three arguments: the source partition p, the offset up
-- to which the state applied p's events, the state. A key holds the entity's states as one
-- string (featurestore/online/entity_value.py): 'FSe6', their count (u32), per state its
-- partition (i32) and length (u32), then the states in partition order; bytes 17-24 of a
-- state are the offset it applied (i64, featurestore/online/state.py). A state is stored
-- only if the value holds none of a higher or equal offset for p: a replay or a former
-- owner of the partition writes nothing. The other partitions' states are kept as they are.
-- No aggregation happens here: states are computed by the processor that owns the
-- partition. A key of another layout is not touched: the error 'FSLAYOUT <its layout>
-- <key>' for a hash (layouts up to 5), 'FSVALUE <key>' for anything else. Returns the
-- number of states stored.
local MAGIC = 'FSe6'
local written = 0
for i, key in ipairs(KEYS) do
  local p, offset, state = tonumber(ARGV[3 * i - 2]), tonumber(ARGV[3 * i - 1]), ARGV[3 * i]
  local held = redis.pcall('GET', key)
  if type(held) == 'table' and held.err then
    if redis.call('TYPE', key).ok == 'hash' then
      return redis.error_reply('FSLAYOUT ' .. (redis.call('HGET', key, '_v') or '1') .. ' ' .. key)
    end
    return redis.error_reply('FSVALUE ' .. key)
  end
  local parts = {}
  if held then
    if string.sub(held, 1, 4) ~= MAGIC then
      return redis.error_reply('FSVALUE ' .. key)
    end
    local n = struct.unpack('<I4', held, 5)
    local at = 9 + 8 * n
    for j = 0, n - 1 do
      local q, size = struct.unpack('<i4I4', held, 9 + 8 * j)
      parts[#parts + 1] = {q, string.sub(held, at, at + size - 1)}
      at = at + size
    end
  end
  local newer = false
  for _, part in ipairs(parts) do
    if part[1] == p and struct.unpack('<i8', part[2], 17) >= offset then
      newer = true
    end
  end
  if not newer then
    local out, placed = {}, false
    for _, part in ipairs(parts) do
      if not placed and part[1] >= p then
        out[#out + 1] = {p, state}
        placed = true
      end
      if part[1] ~= p then
        out[#out + 1] = part
      end
    end
    if not placed then
      out[#out + 1] = {p, state}
    end
    local head, body = {MAGIC, struct.pack('<I4', #out)}, {}
    for _, part in ipairs(out) do
      head[#head + 1] = struct.pack('<i4I4', part[1], #part[2])
      body[#body + 1] = part[2]
    end
    redis.call('SET', key, table.concat(head) .. table.concat(body))
    written = written + 1
  end
end
return written
