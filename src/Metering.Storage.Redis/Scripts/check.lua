-- Reads a subject's counters and live holds and, when asked and every line fits, holds them all.
-- Atomic: no other command runs between the read and the hold, so parallel calls cannot overspend.
--
-- KEYS[1]      holds hash of the subject: field = reservation id,
--              value = "<expires_ms>\n<usage_type> <period> <amount>\n..."
-- KEYS[2..n+1] counter hashes {t = ledger total, v = ledger version}, one per line
-- ARGV[1]      now (ms since the epoch, the service's clock)
-- ARGV[2]      reservation id to hold under, or '' to only read (a hold already stored under it
--              is a retry of this call and does not count against it)
-- ARGV[3]      hold expiry (ms since the epoch)
-- ARGV[4]      reservation id whose holds do not count (an enforced settle of its own hold), or ''
-- ARGV[5]      n, the number of lines; then 4 values per line: usage_type, period, amount, limit;
--              then the ceiling of a period total (RequestValidator.MaxPeriodTotal, 10^15, below 2^53 so
--              that every sum here is exact in Lua's doubles)
--
-- Returns {-1, i, j, ...} naming the lines whose counter is missing (nothing held), or
-- {held, used_1, reserved_1, used_2, reserved_2, ...} with held = 1 when the hold was placed, and
-- held = 2 when a hold was asked but a line's used + reserved + amount is above the ceiling (nothing held).
local now = tonumber(ARGV[1])
local hold_id = ARGV[2]
local hold_expires = tonumber(ARGV[3])
local exclude = ARGV[4]
local n = tonumber(ARGV[5])
local ceiling = tonumber(ARGV[6 + 4 * n])

local used = {}
local missing = {-1}
for i = 1, n do
  local total = redis.call('HGET', KEYS[1 + i], 't')
  if total then
    used[i] = tonumber(total)
  else
    missing[#missing + 1] = i
  end
end
if #missing > 1 then
  return missing
end

-- Sum the live holds per (usage type, period); drop the expired ones while passing.
local reserved_by = {}
local holds = redis.call('HGETALL', KEYS[1])
for h = 1, #holds, 2 do
  local id, value = holds[h], holds[h + 1]
  local expires = tonumber(string.match(value, '^(%d+)'))
  if expires <= now then
    redis.call('HDEL', KEYS[1], id)
  elseif id ~= exclude and id ~= hold_id then
    for usage_type, period, amount in string.gmatch(value, '\n(%S+) (%S+) (%d+)') do
      local key = usage_type .. ' ' .. period
      reserved_by[key] = (reserved_by[key] or 0) + tonumber(amount)
    end
  end
end

local result = {0}
local fits = true
local over = false
local lines = {}
for i = 1, n do
  local base = 5 + (i - 1) * 4
  local usage_type, period = ARGV[base + 1], ARGV[base + 2]
  local amount, limit = tonumber(ARGV[base + 3]), tonumber(ARGV[base + 4])
  local reserved = reserved_by[usage_type .. ' ' .. period] or 0
  -- The same rule as LimitRules.Fits: unlimited, or included and within what is left.
  if not (limit < 0 or (limit > 0 and used[i] + reserved + amount <= limit)) then
    fits = false
  end
  if used[i] + reserved + amount > ceiling then
    over = true
  end
  result[#result + 1] = used[i]
  result[#result + 1] = reserved
  lines[#lines + 1] = usage_type .. ' ' .. period .. ' ' .. ARGV[base + 3]
end

if hold_id ~= '' and over then
  result[1] = 2
elseif hold_id ~= '' and fits then
  redis.call('HSET', KEYS[1], hold_id, hold_expires .. '\n' .. table.concat(lines, '\n'))
  -- The key lives at least as long as its longest hold (the service's clock may differ from Redis's).
  local ttl = hold_expires - now + 60000
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
  result[1] = 1
end
return result
