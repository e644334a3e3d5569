"""The atomic steps, run inside Redis as Lua scripts (one round trip each).

Time is always Redis ``TIME`` (milliseconds), never a client clock: processes on machines
whose clocks disagree still share one schedule. Numbers cross the Lua boundary as strings
(Redis truncates Lua numbers to integers). Every key written gets a TTL.

A lease holds a token unique to one claim (its owner's name and a random part): every script
that extends, deletes or overwrites a lease checks it first, so a holder that lost its lease
(its event loop stalled past the TTL, or a cancelled claim's late reply) never frees or
extends the lease of the claim that took over.
"""

from __future__ import annotations

__all__ = [
    "CLAIM",
    "PUBLISH_CALLBACK",
    "PUBLISH_RESULT",
    "RATE_LIMITED",
    "READ_KEPT",
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
-- GCRA: reserve the next slot for a rank, or refuse it while the slots are taken (tat ahead of
-- now) and another process has fresh demand of a rank that goes first. Ranks: 0 urgent
-- follow-up, 1 poll past its hold, 2 submission, 3 poll still held (spare). A poll past its
-- hold goes before a submission but for the submissions' share ('p' counts the polls granted
-- in a row while submissions waited elsewhere).
-- KEYS: tat, rate, then the processes with demand left, per rank 0-2 (sorted sets: member
-- the process, score the time its demand stops being fresh).
-- ARGV: interval at full rate (ms), key TTL (ms), period (ms), increase per period, the
-- process, rank asked, its demand left after this grant ('0'/'1' per rank 0-2), how long
-- demand stays fresh after the process's next call is due (ms), submissions' share.
-- Returns {'ok', ms to wait, slot, factor} or {'no', ms until it asks again, tat, factor}.
local interval, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local period, increase = tonumber(ARGV[3]), tonumber(ARGV[4])
local me, rank, left = ARGV[5], tonumber(ARGV[6]), ARGV[7]
local fresh, share = tonumber(ARGV[8]), tonumber(ARGV[9])
local r = redis.call('HMGET', KEYS[2], 'f', 'inc', 'p')
local factor = tonumber(r[1]) or 1
local last_inc = tonumber(r[2]) or now
local polls = tonumber(r[3]) or 0
if factor < 1 and now - last_inc >= period then
  local steps = math.floor((now - last_inc) / period)
  factor = math.min(1, factor + steps * increase)
  redis.call('HSET', KEYS[2], 'f', tostring(factor), 'inc', tostring(last_inc + steps * period))
  redis.call('PEXPIRE', KEYS[2], ttl)
end
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local busy = tat > now
if tat < now then tat = now end
local waiting = {}
for i = 0, 2 do
  local key = KEYS[3 + i]
  redis.call('ZREMRANGEBYSCORE', key, '-inf', tostring(now))
  local n = redis.call('ZCARD', key)
  waiting[i] = n > 1 or (n == 1 and not redis.call('ZSCORE', key, me))
end
local owed = (polls + 1) * share >= 1  -- the next slot is the submissions'
local refused = false
if busy then
  if rank == 1 then refused = waiting[0] or (owed and waiting[2])
  elseif rank == 2 then refused = waiting[0] or (waiting[1] and not owed)
  elseif rank == 3 then refused = waiting[0] or waiting[1] or waiting[2]
  end
end
local next_call = tat
if refused then
  -- ask again when the slots reserved so far end (a submission waiting for its share: when
  -- the polls before its turn have theirs), at least a quarter interval from now
  local wait = tat - now
  if rank == 2 and not waiting[0] then
    wait = wait + math.max(0, math.ceil(1 / share - 1) - polls - 1) * interval / factor
  end
  next_call = now + math.max(wait, interval / factor / 4)
end
for i = 0, 2 do
  local key = KEYS[3 + i]
  if string.sub(left, i + 1, i + 1) == '1' or (refused and rank == i) then
    redis.call('ZADD', key, tostring(next_call + fresh), me)
    redis.call('PEXPIRE', key, ttl)
  else
    redis.call('ZREM', key, me)
  end
end
if refused then
  return {'no', tostring(next_call - now), tostring(tat), tostring(factor)}
end
if rank == 1 and waiting[2] then
  redis.call('HSET', KEYS[2], 'p', tostring(polls + 1))
  redis.call('PEXPIRE', KEYS[2], ttl)
elseif rank == 2 and polls > 0 then
  redis.call('HSET', KEYS[2], 'p', '0')
  redis.call('PEXPIRE', KEYS[2], ttl)
end
redis.call('SET', KEYS[1], tostring(tat + interval / factor), 'PX', ttl)
return {'ok', tostring(tat - now), tostring(tat), tostring(factor)}
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

# The indexes of a task waited for (a set per task): every claim adds its own, every renewal
# adds it again. An index added again by a wait that had recorded it before (the set lost it: a
# flush, a restart, an outage at its claim) also adds an "unsure" mark, "!<until ms>", for one
# lease TTL: the other waits re-add theirs within a renewal period, and meanwhile the set may
# lack an index someone waits for, so no callback of unknown index is matched by it. Readers
# see the live marks (a set with one is never "one index only") and ignore the expired ones.
_INDEXES = (
    _NOW
    + """
local function record(key, index, again, ttl, unsure)
  if redis.call('SADD', key, index) == 1 and again then
    redis.call('SADD', key, '!' .. string.format('%.0f', now + unsure))
  end
  redis.call('PEXPIRE', key, ttl)
end
local function waited(key)
  local out = {}
  for _, member in ipairs(redis.call('SMEMBERS', key)) do
    if string.sub(member, 1, 1) ~= '!' or tonumber(string.sub(member, 2)) > now then
      table.insert(out, member)
    end
  end
  return out
end
"""
)

CLAIM = (
    _INDEXES
    + """
-- May this claim poll the task? KEYS: result, lease, kept callbacks, indexes waited for.
-- ARGV: lease token, lease TTL (ms), video index, TTL of the index record (ms), '1' if this
-- wait has claimed before ('' if not).
-- Returns {'result', value}, or {'granted' | 'held', indexes waited for, kept callbacks}.
local res = redis.call('GET', KEYS[1])
if res then return {'result', res} end
record(KEYS[4], ARGV[3], ARGV[5] == '1', ARGV[4], tonumber(ARGV[2]))
local kind = 'held'
local holder = redis.call('GET', KEYS[2])
if (not holder) or holder == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
  kind = 'granted'
end
return {kind, waited(KEYS[4]), redis.call('HGETALL', KEYS[3])}
"""
)

RELEASE = """
-- KEYS: lease. ARGV: lease token.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

RENEW = (
    _INDEXES
    + """
-- Extend the leases still held, and record their indexes as waited for again (a set lost in
-- a flush or a restart is rebuilt within a renewal period).
-- KEYS: n leases, then per lease its task's indexes waited for. ARGV: lease TTL (ms), TTL of
-- the index record (ms), then one token per lease, then one video index per lease.
-- Returns the 1-based positions of the leases lost (expired or taken over).
local n = #KEYS / 2
local lost = {}
for i = 1, n do
  if redis.call('GET', KEYS[i]) == ARGV[i + 2] then
    redis.call('PEXPIRE', KEYS[i], ARGV[1])
  else
    table.insert(lost, i)
  end
  record(KEYS[n + i], ARGV[n + i + 2], true, ARGV[2], tonumber(ARGV[1]))
end
return lost
"""
)

PUBLISH_RESULT = """
-- KEYS: result, lease. ARGV: message, result TTL (ms), channel, result value, lease token.
redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
if redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
return redis.call('PUBLISH', ARGV[3], ARGV[1])
"""

PUBLISH_CALLBACK = (
    _INDEXES
    + """
-- KEYS: kept callbacks (a hash per task), indexes waited for.
-- ARGV: video index ('' = unknown), field after the index, value ('' = too large to keep),
-- TTL (ms), channel, the message up to its index, most callbacks kept per task.
-- A callback of unknown index, for a task waited for at one index only (and no unsure mark),
-- is that index's. Returns the index decided ('' = unknown).
local index = ARGV[1]
if index == '' then
  local indexes = waited(KEYS[2])
  if #indexes == 1 and string.sub(indexes[1], 1, 1) ~= '!' then index = indexes[1] end
end
if ARGV[3] ~= '' then
  local field = (index ~= '' and ('i' .. index) or 'u') .. ARGV[2]
  if redis.call('HEXISTS', KEYS[1], field) == 1
     or redis.call('HLEN', KEYS[1]) < tonumber(ARGV[7]) then
    redis.call('HSET', KEYS[1], field, ARGV[3])
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
  end
end
redis.call('PUBLISH', ARGV[5], ARGV[6] .. (index ~= '' and index or 'null') .. '}')
return index
"""
)

READ_KEPT = (
    _INDEXES
    + """
-- What is kept for some waits (a catch-up after a resubscribe).
-- KEYS: per wait, its result, its task's kept callbacks and indexes waited for.
-- Returns per wait: result ('' if none), indexes waited for, kept callbacks.
local out = {}
for i = 1, #KEYS, 3 do
  table.insert(out, redis.call('GET', KEYS[i]) or '')
  table.insert(out, waited(KEYS[i + 2]))
  table.insert(out, redis.call('HGETALL', KEYS[i + 1]))
end
return out
"""
)
