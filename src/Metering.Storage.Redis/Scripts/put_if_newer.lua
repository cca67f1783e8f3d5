-- Replaces a cached record only with a higher version, so that concurrent writers converge on the newest; stamps it
-- with this server's run id (get_current.lua ignores records from another server's life, which may be stale).
-- KEYS[1] the record hash (field v = version, e = run id); ARGV[1] version; ARGV[2] time to live (ms);
-- ARGV[3..] field, value pairs. Returns 1 when stored, 0 when the cache already had this version or newer.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local cached = redis.call('HMGET', KEYS[1], 'v', 'e')
if cached[1] and cached[2] == run_id and tonumber(cached[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'e', run_id, unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
