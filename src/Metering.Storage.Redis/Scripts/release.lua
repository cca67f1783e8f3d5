-- Releases one hold. Returns 1 when it was live, 0 when unknown, expired or already settled.
-- KEYS[1] holds hash of the subject; ARGV[1] reservation id; ARGV[2] now (ms since the epoch)
local value = redis.call('HGET', KEYS[1], ARGV[1])
if not value then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
if tonumber(string.match(value, '^(%d+)')) <= tonumber(ARGV[2]) then
  return 0
end
return 1
