-- Empties cached counters but keeps a version, so that the next read rebuilds them from the ledger and a value
-- computed before the fence, landing after it, is refused by apply.lua.
--
-- KEYS[1..n]  counter hashes; ARGV[1] the fence version; ARGV[2] time to live (ms)
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
for i = 1, #KEYS do
  local cached = redis.call('HMGET', KEYS[i], 'v', 'e')
  if not cached[1] or cached[2] ~= run_id or tonumber(cached[1]) < tonumber(ARGV[1]) then
    redis.call('DEL', KEYS[i])
    redis.call('HSET', KEYS[i], 'v', ARGV[1], 'e', run_id)
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
end
return #KEYS
