-- For a subject whose enrolment was just committed (it has no events and no holds yet): creates each counter that
-- exists in no form (no value, no fence, no record of another server's life) as total 0, held 0 at version 0, stamped
-- with this server's run id. Every ledger version is above 0, so apply.lua and fence.lua replace it. Changes nothing
-- that exists: a fence, a value or a record of another life stays, and check.lua treats it as it always does.
--
-- KEYS[1..n]  counter hashes; ARGV[1] counter time to live (ms). Returns how many it created.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
local created = 0
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    redis.call('HSET', KEYS[i], 't', 0, 'h', 0, 'v', 0, 'e', run_id)
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
    created = created + 1
  end
end
return created
