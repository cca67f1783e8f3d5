-- Replaces a cached record only with a higher version, so that concurrent writers converge on the newest.
-- KEYS[1] the record hash (field v = version); ARGV[1] version; ARGV[2] time to live (ms);
-- ARGV[3..] field, value pairs. Returns 1 when stored, 0 when the cache already had this version or newer.
local cached = redis.call('HGET', KEYS[1], 'v')
if cached and tonumber(cached) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
