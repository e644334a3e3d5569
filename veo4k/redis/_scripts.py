"""The atomic steps, run inside Redis as Lua scripts (one round trip each).

Time is always Redis ``TIME`` (milliseconds), never a client clock: processes on machines
whose clocks disagree still share one schedule. Numbers cross the Lua boundary as strings
(Redis truncates Lua numbers to integers). Every key written gets a TTL.
"""

from __future__ import annotations

__all__ = [
    "CLAIM",
    "PUBLISH_CALLBACK",
    "PUBLISH_RESULT",
    "RATE_LIMITED",
    "RELEASE",
    "RENEW",
    "SLOT",
]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
"""

SLOT = (
    _NOW
    + """
-- GCRA, reserve the next slot. KEYS: tat, rate.
-- ARGV: interval at full rate (ms), key TTL (ms), period (ms), increase per period.
local interval, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local period, increase = tonumber(ARGV[3]), tonumber(ARGV[4])
local r = redis.call('HMGET', KEYS[2], 'f', 'inc')
local factor = tonumber(r[1]) or 1
local last_inc = tonumber(r[2]) or now
if factor < 1 and now - last_inc >= period then
  local steps = math.floor((now - last_inc) / period)
  factor = math.min(1, factor + steps * increase)
  redis.call('HSET', KEYS[2], 'f', tostring(factor), 'inc', tostring(last_inc + steps * period))
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
redis.call('SET', KEYS[1], tostring(tat + interval / factor), 'PX', ttl)
return {tostring(tat - now), tostring(tat)}
"""
)

RATE_LIMITED = (
    _NOW
    + """
-- A 429 for a request granted at ARGV[1]: cut the shared rate once per window, pause.
-- KEYS: tat, rate. ARGV: granted (ms), pause (ms), decrease, min fraction, cut gap (ms),
-- key TTL (ms).
local granted, pause = tonumber(ARGV[1]), tonumber(ARGV[2])
local ttl = tonumber(ARGV[6])
local r = redis.call('HMGET', KEYS[2], 'f', 'dec')
local factor = tonumber(r[1]) or 1
local last_dec = tonumber(r[2]) or -1e18
local cut = 0
if granted > last_dec and now - last_dec >= tonumber(ARGV[5]) then
  factor = math.max(factor * tonumber(ARGV[3]), tonumber(ARGV[4]))
  redis.call('HSET', KEYS[2], 'f', tostring(factor), 'dec', tostring(now), 'inc', tostring(now))
  redis.call('PEXPIRE', KEYS[2], ttl)
  cut = 1
end
if pause > 0 then
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  if tat < now + pause then redis.call('SET', KEYS[1], tostring(now + pause), 'PX', ttl) end
end
return {cut, tostring(factor)}
"""
)

CLAIM = """
-- May ARGV[1] poll this task? KEYS: result, lease, early callback. ARGV: owner, lease TTL (ms).
local res = redis.call('GET', KEYS[1])
if res then return {'result', res} end
local early = redis.call('GET', KEYS[3]) or ''
local holder = redis.call('GET', KEYS[2])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  return {'granted', early}
end
return {'held', early}
"""

RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

RENEW = """
-- Extend the leases still held. KEYS: leases. ARGV: lease TTL (ms), then one owner per key.
-- Returns the 1-based positions of the leases lost (expired or taken over).
local lost = {}
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[i + 1] then
    redis.call('PEXPIRE', key, ARGV[1])
  else
    table.insert(lost, i)
  end
end
return lost
"""

PUBLISH_RESULT = """
-- KEYS: result, lease. ARGV: message, result TTL (ms), channel, result value.
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
redis.call('DEL', KEYS[2])
return redis.call('PUBLISH', ARGV[3], ARGV[1])
"""

PUBLISH_CALLBACK = """
-- KEYS: early callback. ARGV: message, TTL (ms), channel, value ('' = too large to keep).
if ARGV[4] ~= '' then redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2]) end
return redis.call('PUBLISH', ARGV[3], ARGV[1])
"""
