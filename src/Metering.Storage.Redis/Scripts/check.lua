#!lua flags=no-writes
-- Reads a subject's cached counters, after confirming the records the caller decided with. Read-only: it runs on a
-- Redis that is out of memory, too.
--
-- KEYS[1..g]    records the caller keeps a copy of (its subscription, the catalog version): hashes {v, e}
-- KEYS[g+1..]   counter hashes {t = ledger total, h = held by live holds, v = version, e = the run id of the
--               Redis server that wrote them}
-- ARGV[1]       g, the number of records (none when absent); ARGV[2..g+1] the version of the caller's copy of each
--
-- A record that is missing, of another server's life or newer than the caller's copy makes the answer {-2}: the
-- caller reloads its copies and asks again. A counter written by another server's life (a restart, a failover to a
-- replica, a restore from a snapshot) may have missed writes, so it counts as missing, like an evicted or flushed
-- one: the service rebuilds it from the ledger. Otherwise returns {-1, i, j, ...} naming the missing counters (by
-- position among the counters), or {0, t_1, h_1, t_2, h_2, ...}.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local records = tonumber(ARGV[1] or '0')
for i = 1, records do
  local record = redis.call('HMGET', KEYS[i], 'v', 'e')
  if not record[1] or record[2] ~= run_id or tonumber(record[1]) > tonumber(ARGV[1 + i]) then
    return {-2}
  end
end
local missing = {-1}
local result = {0}
for i = records + 1, #KEYS do
  local counter = redis.call('HMGET', KEYS[i], 't', 'h', 'e')
  if not counter[1] or counter[3] ~= run_id then
    missing[#missing + 1] = i - records
  else
    result[#result + 1] = tonumber(counter[1])
    result[#result + 1] = tonumber(counter[2] or '0')
  end
end
if #missing > 1 then
  return missing
end
return result
