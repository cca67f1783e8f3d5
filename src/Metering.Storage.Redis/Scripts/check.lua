#!lua flags=no-writes
-- Reads a subject's cached counters. Read-only: it runs on a Redis that is out of memory, too.
--
-- KEYS[1..n]  counter hashes {t = ledger total, h = held by live holds, v = version, e = the run id of the
--             Redis server that wrote them}
--
-- A counter written by another server's life (a restart, a failover to a replica, a restore from a snapshot) may
-- have missed writes, so it counts as missing, like an evicted or flushed one: the service rebuilds it from the
-- ledger. Returns {-1, i, j, ...} naming the missing counters, or {0, t_1, h_1, t_2, h_2, ...}.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local missing = {-1}
local result = {0}
for i = 1, #KEYS do
  local counter = redis.call('HMGET', KEYS[i], 't', 'h', 'e')
  if not counter[1] or counter[3] ~= run_id then
    missing[#missing + 1] = i
  else
    result[#result + 1] = tonumber(counter[1])
    result[#result + 1] = tonumber(counter[2] or '0')
  end
end
if #missing > 1 then
  return missing
end
return result
