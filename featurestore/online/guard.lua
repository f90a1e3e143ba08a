-- Store entity states (storage layout 5) unless a hash already holds a newer one.
--
-- KEYS: entity hashes. ARGV: per key, three arguments: the source partition p, the offset
-- up to which the state applied p's events, the state. A hash holds per partition the
-- offset (field o<p>) and the state (field s<p>), and its layout in _v. A state is stored
-- only if the hash holds none of a higher or equal offset for p: a replay or a former owner
-- of the partition writes nothing. No aggregation happens here: states are computed by the
-- processor that owns the partition. A hash of another layout is not touched: the error
-- 'FSLAYOUT <its layout> <key>'. Returns the number of states stored.
local written = 0
for i, key in ipairs(KEYS) do
  local p, offset, state = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local held = redis.call('HMGET', key, '_v', 'o' .. p)
  if held[1] and held[1] ~= '5' then
    return redis.error_reply('FSLAYOUT ' .. held[1] .. ' ' .. key)
  end
  if not held[1] and redis.call('EXISTS', key) == 1 then  -- written before layouts had versions
    return redis.error_reply('FSLAYOUT 1 ' .. key)
  end
  if not held[2] or tonumber(held[2]) < tonumber(offset) then
    redis.call('HSET', key, '_v', '5', 'o' .. p, offset, 's' .. p, state)
    written = written + 1
  end
end
return written
