-- Stores ledger totals that are newer than the cached ones and releases holds, in one step,
-- so a settled hold and the usage that settles it are never both counted, nor neither.
--
-- KEYS[1]      holds hash of the subject
-- KEYS[2..n+1] counter hashes {t, v}
-- ARGV[1]      n, the number of counters; ARGV[2] counter time to live (ms)
-- ARGV[3..]    2 values per counter: total, version; then the reservation ids to release
--
-- A counter only ever moves to a higher version: rebuilds, retries and late writes converge to the ledger.
local n = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
for i = 1, n do
  local key = KEYS[1 + i]
  local total, version = ARGV[1 + 2 * i], tonumber(ARGV[2 + 2 * i])
  local cached = redis.call('HGET', key, 'v')
  if not cached or tonumber(cached) < version then
    redis.call('HSET', key, 't', total, 'v', version)
  end
  redis.call('PEXPIRE', key, ttl)
end
for r = 3 + 2 * n, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[r])
end
return n
