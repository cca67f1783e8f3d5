-- Stores ledger values that are newer than the cached ones, stamped with this server's run id.
--
-- KEYS[1..n]  counter hashes {t, h, v, e}
-- ARGV[1]     counter time to live (ms); then 3 values per counter: total, held, version
--
-- A counter only moves to a higher version, so rebuilds, retries and late writes converge to the ledger, in any
-- order. A counter from another server's life is replaced whatever its version (check.lua does not trust it).
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local ttl = tonumber(ARGV[1])
for i = 1, #KEYS do
  local base = 1 + 3 * (i - 1)
  local version = tonumber(ARGV[base + 3])
  local cached = redis.call('HMGET', KEYS[i], 'v', 'e')
  if not cached[1] or cached[2] ~= run_id or tonumber(cached[1]) < version then
    redis.call('HSET', KEYS[i], 't', ARGV[base + 1], 'h', ARGV[base + 2], 'v', version, 'e', run_id)
  end
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return #KEYS
