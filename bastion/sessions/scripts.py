"""The Lua scripts behind every multi-key session operation, so each one is atomic.

Conventions: KEYS[1] is the user's sorted set and the scripts build each session key from ARGV's
session-key prefix. Those derived keys share the user's ``{hash tag}``, so they live in the
same cluster slot as KEYS[1]; Redis runs that fine on a standalone server and on a cluster,
though it is not a declared-key access (the ids to touch are only known inside the script).
Time comes from the server's ``TIME`` so that every worker orders sessions by one clock.

The user's account hash (same hash tag) carries two markers the administrator sets: ``disabled``
and ``deleted`` (a tombstone, never removed). CREATE refuses a session to a marked user, and
BLOCK / RETIRE set a marker and end every session in the same script, so no log-in can slip a
session in between; requests themselves never read the markers.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Ends every session in the sorted set (but ``keep``); returns the ids of the live ones removed.
_END_SESSIONS = """
local function end_sessions(zkey, prefix, keep)
  local removed = {}
  for _, sid in ipairs(redis.call('ZRANGE', zkey, 0, -1)) do
    if sid ~= keep then
      if redis.call('DEL', prefix .. sid) == 1 then removed[#removed + 1] = sid end
      redis.call('ZREM', zkey, sid)
    end
  end
  return removed
end
"""

# KEYS: sorted set, new session hash, the user's account hash (may not exist).
# ARGV: session id, secret digest, length ms, idle ms (0 = off), cap, ip, user agent, key prefix.
# Returns {score, created ms, {evicted ids...}}, or {'disabled'} / {'deleted'} when the user's
# account hash carries that marker (then nothing is written).
CREATE = (
    _NOW
    + """
local zkey, prefix = KEYS[1], ARGV[8]
-- Checked here, in the script that writes the session, so a log-in whose password check ran
-- before a disable or delete cannot create a live session after it.
local r = redis.call('HMGET', KEYS[3], 'verified', 'labels', 'teams', 'disabled', 'deleted')
if r[5] then return {'deleted'} end
if r[4] then return {'disabled'} end
local length, idle, cap = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
-- Drop members whose hash has expired, so they neither count towards the cap nor linger.
for _, sid in ipairs(redis.call('ZRANGE', zkey, 0, -1)) do
  if redis.call('EXISTS', prefix .. sid) == 0 then redis.call('ZREM', zkey, sid) end
end
-- Scores are creation order: microsecond-scale time, bumped past the newest so that creations in
-- the same millisecond still sort in the order this script ran them.
local score = now * 1000
local top = redis.call('ZRANGE', zkey, -1, -1, 'WITHSCORES')
if top[2] and tonumber(top[2]) >= score then score = tonumber(top[2]) + 1 end
local score_s = string.format('%d', score)
redis.call('ZADD', zkey, score_s, ARGV[1])
redis.call('HSET', KEYS[2], 'h', ARGV[2], 'c', now, 'e', now + length, 'l', now,
           'ip', ARGV[6], 'ua', ARGV[7])
-- The fields roles are made of travel with the session, so a request reads one hash only.
if r[1] then redis.call('HSET', KEYS[2], 'v', r[1], 'lb', r[2] or '', 'tm', r[3] or '') end
local ttl = length
if idle > 0 and idle < ttl then ttl = idle end
redis.call('PEXPIRE', KEYS[2], ttl)
-- The index lives as long as its newest session can.
redis.call('PEXPIRE', zkey, length)
local evicted = {}
local excess = redis.call('ZCARD', zkey) - cap
if excess > 0 then
  local popped = redis.call('ZPOPMIN', zkey, excess)
  for i = 1, #popped, 2 do
    redis.call('DEL', prefix .. popped[i])
    evicted[#evicted + 1] = popped[i]
  end
end
return {score_s, now, evicted}
"""
)

# KEYS: session hash. ARGV: idle ms (0 = off).
# Records activity; with an idle timeout also pushes the expiry out, never past the absolute end.
# Never recreates a session that was revoked meanwhile. Returns 1 if the session is still alive.
TOUCH = (
    _NOW
    + """
local e = redis.call('HGET', KEYS[1], 'e')
if not e then return 0 end
local idle = tonumber(ARGV[1])
local remaining = tonumber(e) - now
if remaining <= 0 then redis.call('DEL', KEYS[1]) return 0 end
redis.call('HSET', KEYS[1], 'l', now)
if idle > 0 then
  if idle < remaining then remaining = idle end
  redis.call('PEXPIRE', KEYS[1], remaining)
end
return 1
"""
)

# KEYS: sorted set. ARGV: key prefix.
# Returns {sid, created, expires, last seen, ip, ua, ...} flattened, oldest first; drops dead ids.
LIST = """
local zkey, prefix = KEYS[1], ARGV[1]
local out = {}
for _, sid in ipairs(redis.call('ZRANGE', zkey, 0, -1)) do
  local f = redis.call('HMGET', prefix .. sid, 'c', 'e', 'l', 'ip', 'ua')
  if f[1] then
    out[#out + 1] = sid
    for i = 1, 5 do out[#out + 1] = f[i] or '' end
  else
    redis.call('ZREM', zkey, sid)
  end
end
return out
"""

# KEYS: sorted set, session hash. ARGV: session id. Returns 1 if a live session was removed.
REVOKE = """
redis.call('ZREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
"""

# KEYS: sorted set. ARGV: key prefix, session id to keep ('' keeps none).
# Returns the ids of the live sessions removed.
REVOKE_ALL = (
    _END_SESSIONS
    + """
return end_sessions(KEYS[1], ARGV[1], ARGV[2])
"""
)

# KEYS: the user's account hash, their sorted set. ARGV: session-key prefix.
# Marks the user disabled and ends every session at once. Returns the ids of the live sessions
# ended, or nil for a deleted user (nothing written).
BLOCK = (
    _END_SESSIONS
    + """
if redis.call('HEXISTS', KEYS[1], 'deleted') == 1 then return false end
redis.call('HSET', KEYS[1], 'disabled', '1')
return end_sessions(KEYS[2], ARGV[1], '')
"""
)

# KEYS: the user's account hash, their sorted set. ARGV: session-key prefix.
# Leaves the tombstone (``deleted``: when, from the server's clock) that refuses the id any new
# session for good, and ends every session at once. Returns the ids of the live sessions ended,
# or nil if the id was deleted already.
RETIRE = (
    _NOW
    + _END_SESSIONS
    + """
if redis.call('HEXISTS', KEYS[1], 'deleted') == 1 then return false end
redis.call('HSET', KEYS[1], 'deleted', now)
return end_sessions(KEYS[2], ARGV[1], '')
"""
)

# KEYS: the user's account hash, their sorted set of sessions. ARGV: session-key prefix, then
# field/value pairs among verified, labels, teams. Writes them to the account and to every live
# session at once, so a changed role applies from each session's next request. A deleted
# user's tombstone stays bare: returns 0 and writes nothing.
ROLES = """
if redis.call('HEXISTS', KEYS[1], 'deleted') == 1 then return 0 end
local prefix = ARGV[1]
local short = {verified = 'v', labels = 'lb', teams = 'tm'}
local account, session = {}, {}
for i = 2, #ARGV, 2 do
  account[#account + 1] = ARGV[i]
  account[#account + 1] = ARGV[i + 1]
  session[#session + 1] = short[ARGV[i]]
  session[#session + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(account))
for _, sid in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  if redis.call('EXISTS', prefix .. sid) == 1 then
    redis.call('HSET', prefix .. sid, unpack(session))
  end
end
return 1
"""

ALL = {
    "create": CREATE,
    "touch": TOUCH,
    "list": LIST,
    "revoke": REVOKE,
    "revoke_all": REVOKE_ALL,
    "roles": ROLES,
    "block": BLOCK,
    "retire": RETIRE,
}
