#!lua flags=no-writes
-- Reads a cached record written by this server's life; a record from another life (a restart from a snapshot, a
-- promoted replica) may be stale, so it reads as missing and the caller asks the store of record.
-- KEYS[1] the record hash. Returns its fields and values, or an empty array.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if redis.call('HGET', KEYS[1], 'e') ~= run_id then
  return {}
end
return redis.call('HGETALL', KEYS[1])
