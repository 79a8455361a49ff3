"""The queue's Lua scripts: the steps that must be atomic and take one round trip.

Each runs through redis-py's registered scripts (EVALSHA, loaded on first
use). Scripts run whole or not at all with respect to other clients, which is
what makes many worker processes safe without locks.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

# KEYS: dedupe key, stream. ARGV: ttl_s, maxlen, digest, field, value, ...
# The dedupe key holds "<entry id> <digest>" (a key written before digests
# were kept holds the entry id alone and matches any payload). Returns
# {entry id, 0} when appended, {the stored entry id, 1} for a duplicate with the
# same digest (or none), {the stored entry id, 2} when the key is known with
# another digest: a different payload under a known id, not appended.
PUBLISH_ONCE = """
local seen = redis.call('GET', KEYS[1])
if seen then
  local id, digest = string.match(seen, '^(%S+) (%S+)$')
  if id == nil then return {seen, 1} end
  if ARGV[3] ~= '' and digest ~= ARGV[3] then return {id, 2} end
  return {id, 1}
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 4))
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
else
  redis.call('SET', KEYS[1], id .. ' ' .. ARGV[3], 'EX', ARGV[1])
end
return {id, 0}
"""

# KEYS: delayed set, stream, dead stream. ARGV: now_ms, batch, maxlen.
# Members are JSON objects of the message fields, the payload in hex (cjson
# strings cannot carry arbitrary bytes). Returns {moved, undecodable}.
PROMOTE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local names = {'id', 'tenant', 'type', 'payload', 'attempt', 'last_error',
               'traceparent', 'enqueued_at_ms'}
local moved, bad = 0, 0
for _, member in ipairs(due) do
  local ok, m = pcall(cjson.decode, member)
  if ok and type(m) == 'table' then
    if type(m.payload) == 'string' then
      m.payload = (m.payload:gsub('%x%x', function(h) return string.char(tonumber(h, 16)) end))
    end
    local fields = {}
    for _, name in ipairs(names) do
      if type(m[name]) == 'string' then
        table.insert(fields, name)
        table.insert(fields, m[name])
      end
    end
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
    moved = moved + 1
  else
    -- Not ours to read: kept for a person to look at rather than retried forever.
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'error',
               'undecodable delayed retry', 'raw', member, 'attempts', '0', 'dead_at_ms', ARGV[1])
    bad = bad + 1
  end
  redis.call('ZREM', KEYS[1], member)
end
return {moved, bad}
"""

# KEYS: stream, stats hash. ARGV: group, consumer, min_idle_ms, cursor, count,
# max_deliveries. Returns {next cursor, {{entry id, {field, value, ...}, deliveries}, ...}}.
#
# Redis 6.2 answers a claimed entry that was deleted from the stream with a
# bare nil (no id) and leaves it pending; Redis 7 drops it from the pending
# list and names it in a third reply element. For 6.2 the consumer's own
# pending entries are swept for ones without data, which are acked.
RECLAIM = """
local reply = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                         'COUNT', ARGV[5])
local claimed, gone, alive = {}, 0, 0
for _, entry in ipairs(reply[2]) do
  if entry and entry[2] then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], entry[1], entry[1], 1)
    local deliveries = 0
    if p[1] then deliveries = p[1][4] end
    if deliveries <= tonumber(ARGV[6]) then alive = alive + 1 end
    table.insert(claimed, {entry[1], entry[2], deliveries})
  else
    gone = gone + 1
  end
end
if reply[3] then
  for _, id in ipairs(reply[3]) do redis.call('XACK', KEYS[1], ARGV[1], id) end
end
if gone > 0 then
  local mine = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 10000, ARGV[2])
  for _, p in ipairs(mine) do
    if #redis.call('XRANGE', KEYS[1], p[1], p[1]) == 0 then
      redis.call('XACK', KEYS[1], ARGV[1], p[1])
    end
  end
end
if alive > 0 then redis.call('HINCRBY', KEYS[2], 'reclaimed', alive) end
return {reply[1], claimed}
"""

# KEYS: dead stream, stream. ARGV: tenant, maxlen, dead id, ...
# Moves each of the tenant's dead letters back with attempt 0; returns the new
# entry id per dead id, nil where it is absent or another tenant's.
REPLAY = """
local carried = {'id', 'tenant', 'type', 'payload', 'traceparent', 'enqueued_at_ms'}
local replayed = {}
for i = 3, #ARGV do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  local new_id = false
  if #found == 1 then
    local flat, m = found[1][2], {}
    for j = 1, #flat, 2 do m[flat[j]] = flat[j + 1] end
    if m.tenant == ARGV[1] then
      local fields = {'attempt', '0', 'last_error', ''}
      for _, name in ipairs(carried) do
        if m[name] then
          table.insert(fields, name)
          table.insert(fields, m[name])
        end
      end
      new_id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(fields))
      redis.call('XDEL', KEYS[1], ARGV[i])
    end
  end
  replayed[i - 2] = new_id
end
return replayed
"""


@dataclass(frozen=True)
class Scripts:
    """The scripts registered with one client (registering only hashes the source)."""

    publish_once: AsyncScript
    promote_due: AsyncScript
    reclaim: AsyncScript
    replay: AsyncScript

    @classmethod
    def register(cls, redis: Redis) -> Scripts:
        return cls(
            publish_once=redis.register_script(PUBLISH_ONCE),
            promote_due=redis.register_script(PROMOTE_DUE),
            reclaim=redis.register_script(RECLAIM),
            replay=redis.register_script(REPLAY),
        )
