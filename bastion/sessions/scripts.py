"""The Lua scripts behind every multi-key session operation, so each one is atomic.

Every key a script touches is one of its KEYS, and they all carry the user's ``{hash tag}``:
the user's session hash (see :mod:`bastion.sessions.keys`), their account hash and, while
sessions of the old layout remain, its sorted set and per-session hashes. So each script runs
in one cluster slot, and while that slot migrates Redis either runs it whole on one node or
refuses it (ASK / TRYAGAIN, which the cluster client follows or retries) — never half.
Time comes from the server's ``TIME`` so that every worker orders sessions by one clock.

The user's account hash carries two markers the administrator sets: ``disabled`` and
``deleted`` (a tombstone, never removed). CREATE refuses a session to a marked user, and BLOCK /
RETIRE set a marker and end every session in the same script, so no log-in can slip a session
in between; requests themselves never read the markers.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Reading and tidying one user's session hash. ``idle`` is the idle timeout in ms (0 = off).
_HASH = """
local function times(v)
  local o, e, l = string.match(v, '^(%d+) (%d+) (%d+)$')
  return tonumber(o), tonumber(e), tonumber(l)
end
local function is_dead(e, l, idle)
  return e <= now or (idle > 0 and l + idle <= now)
end
local function drop(key, sid)
  return redis.call('HDEL', key, sid, sid .. ':h', sid .. ':m')
end
-- {sid, order, expires, last seen, meta} of every session in the hash, dead ones included.
local function read_all(key)
  local all = redis.call('HGETALL', key)
  local fields, found = {}, {}
  for i = 1, #all, 2 do fields[all[i]] = all[i + 1] end
  for f, v in pairs(fields) do
    if not string.find(f, ':', 1, true) then
      local o, e, l = times(v)
      if o then found[#found + 1] = {f, o, e, l, fields[f .. ':m'] or '- '} end
    end
  end
  table.sort(found, function(a, b) return a[2] < b[2] end)
  return found, fields
end
-- After sessions were removed: forget user agents no session names, delete the hash when no
-- session is left and, when the idle timeout is known, let it live exactly as long as its
-- longest-lived session can (else its expiry stays: an upper bound already).
local function tidy(key, idle)
  local found, fields = read_all(key)
  if #found == 0 then redis.call('DEL', key) return end
  local used, last = {}, 0
  for _, s in ipairs(found) do
    used[string.match(s[5], '^(%S+)')] = true
    local ends = s[3]
    if idle and idle > 0 and s[4] + idle < ends then ends = s[4] + idle end
    if ends > last then last = ends end
  end
  for f, _ in pairs(fields) do
    local ref = string.match(f, '^a:([^:]+):')
    if ref and not used[ref] then redis.call('HDEL', key, f) end
  end
  if idle and last > now then redis.call('PEXPIRE', key, last - now) end
end
local function agent(fields, ref)
  local parts, i = {}, 0
  while fields['a:' .. ref .. ':' .. i] do
    parts[#parts + 1] = fields['a:' .. ref .. ':' .. i]
    i = i + 1
  end
  return table.concat(parts)
end
-- The reference of ``ua`` among the user's agents, stored now if it is new: the smallest
-- unused number (the user's own few browsers; no hashing, the strings are compared).
local function agent_ref(key, ua)
  if ua == '' then return '-' end
  local all = redis.call('HGETALL', key)
  local fields, taken = {}, {}
  for i = 1, #all, 2 do
    fields[all[i]] = all[i + 1]
    local ref = string.match(all[i], '^a:(%d+):0$')
    if ref then taken[ref] = true end
  end
  for ref, _ in pairs(taken) do
    if agent(fields, ref) == ua then return ref end
  end
  local n = 0
  while taken[tostring(n)] do n = n + 1 end
  local ref = tostring(n)
  for i = 0, math.floor((#ua - 1) / 64) do
    redis.call('HSET', key, 'a:' .. ref .. ':' .. i, string.sub(ua, i * 64 + 1, i * 64 + 64))
  end
  return ref
end
-- Ends every session but ``keep``; returns the ids of the live ones ended.
local function end_sessions(key, keep)
  local removed = {}
  for _, s in ipairs((read_all(key))) do
    if s[1] ~= keep then
      if s[3] > now then removed[#removed + 1] = s[1] end
      drop(key, s[1])
    end
  end
  tidy(key, nil)
  return removed
end
"""

_HEAD = _NOW + _HASH

# KEYS: session hash, the user's account hash (may not exist).
# ARGV: session id, secret digest, length ms, idle ms (0 = off), cap, ip, user agent.
# Returns {order, created ms, {evicted ids...}}, or {'disabled'} / {'deleted'} when the user's
# account hash carries that marker (then nothing is written).
CREATE = (
    _HEAD
    + """
local key = KEYS[1]
-- Checked here, in the script that writes the session, so a log-in whose password check ran
-- before a disable or delete cannot create a live session after it.
local r = redis.call('HMGET', KEYS[2], 'verified', 'labels', 'teams', 'disabled', 'deleted')
if r[5] then return {'deleted'} end
if r[4] then return {'disabled'} end
local length, idle, cap = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
-- Dead sessions neither count towards the cap nor linger.
local live, top = {}, 0
for _, s in ipairs((read_all(key))) do
  if is_dead(s[3], s[4], idle) then drop(key, s[1]) else live[#live + 1] = s end
  if s[2] > top then top = s[2] end
end
-- Orders are creation order: microsecond-scale time, bumped past the newest so that creations
-- in the same millisecond still sort in the order this script ran them.
local order = now * 1000
if top >= order then order = top + 1 end
local order_s = string.format('%d', order)
local ref = agent_ref(key, ARGV[7])
redis.call('HSET', key, ARGV[1], order_s .. ' ' .. string.format('%d', now + length) .. ' '
           .. string.format('%d', now), ARGV[1] .. ':h', ARGV[2], ARGV[1] .. ':m',
           ref .. ' ' .. ARGV[6])
-- The fields roles are made of travel with the sessions, so a request reads one hash only.
if r[1] then redis.call('HSET', key, 'r:v', r[1], 'r:lb', r[2] or '', 'r:tm', r[3] or '') end
local evicted = {}
for i = 1, #live + 1 - cap do
  drop(key, live[i][1])
  evicted[#evicted + 1] = live[i][1]
end
tidy(key, idle)
return {order_s, now, evicted}
"""
)

# KEYS: session hash. ARGV: session id, idle ms (0 = off).
# Records activity (the last-seen time); never recreates a session that was revoked meanwhile.
# Returns 1 if the session is still alive.
TOUCH = (
    _HEAD
    + """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local o, e, l = times(v)
if is_dead(e, l, tonumber(ARGV[2])) then drop(KEYS[1], ARGV[1]) return 0 end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%d %d %d', o, e, now))
local idle = tonumber(ARGV[2])
if idle > 0 then
  local ends = math.min(e, now + idle) - now
  if redis.call('PTTL', KEYS[1]) < ends then redis.call('PEXPIRE', KEYS[1], ends) end
end
return 1
"""
)

# KEYS: session hash. ARGV: idle ms (0 = off).
# Returns {sid, created, expires, last seen, ip, ua, ...} flattened, oldest first; drops dead ones.
LIST = (
    _HEAD
    + """
local key, idle = KEYS[1], tonumber(ARGV[1])
local found, fields = read_all(key)
local out, dropped = {}, false
for _, s in ipairs(found) do
  if is_dead(s[3], s[4], idle) then
    drop(key, s[1])
    dropped = true
  else
    local ref, ip = string.match(s[5], '^(%S+) ?(.*)$')
    out[#out + 1] = s[1]
    out[#out + 1] = string.format('%d', math.floor(s[2] / 1000))
    out[#out + 1] = string.format('%d', s[3])
    out[#out + 1] = string.format('%d', s[4])
    out[#out + 1] = ip
    out[#out + 1] = ref == '-' and '' or agent(fields, ref)
  end
end
if dropped then tidy(key, idle) end
return out
"""
)

# KEYS: session hash, old-layout sorted set, old-layout session hash. ARGV: session id.
# Returns 1 if a live session was removed.
REVOKE = (
    _HEAD
    + """
local v = redis.call('HGET', KEYS[1], ARGV[1])
local removed = 0
if v then
  local _, e = times(v)
  if e > now then removed = 1 end
  drop(KEYS[1], ARGV[1])
  tidy(KEYS[1], nil)
end
redis.call('ZREM', KEYS[2], ARGV[1])
return math.max(removed, redis.call('DEL', KEYS[3]))
"""
)

# KEYS: session hash. ARGV: session id to keep ('' keeps none).
# Returns the ids of the live sessions removed. One key: it ends them all or none, and running
# it again ends what is left, so a "log out everywhere" that failed can be retried to the end.
REVOKE_ALL = (
    _HEAD
    + """
return end_sessions(KEYS[1], ARGV[1])
"""
)

# KEYS: the user's account hash, their session hash.
# Marks the user disabled and ends every session at once. Returns the ids of the live sessions
# ended, or nil for a deleted user (nothing written).
BLOCK = (
    _HEAD
    + """
if redis.call('HEXISTS', KEYS[1], 'deleted') == 1 then return false end
redis.call('HSET', KEYS[1], 'disabled', '1')
return end_sessions(KEYS[2], '')
"""
)

# KEYS: the user's account hash, their session hash.
# Leaves the tombstone (``deleted``: when, from the server's clock) that refuses the id any new
# session for good, and ends every session at once. Returns the ids of the live sessions ended,
# or nil if the id was deleted already.
RETIRE = (
    _HEAD
    + """
if redis.call('HEXISTS', KEYS[1], 'deleted') == 1 then return false end
redis.call('HSET', KEYS[1], 'deleted', now)
return end_sessions(KEYS[2], '')
"""
)

# KEYS: the user's account hash, their session hash, the old layout's sorted set.
# ARGV: field/value pairs among verified, labels, teams. Writes them to the account and to the
# sessions' copy at once, so a changed role applies from each session's next request. A deleted
# user's tombstone stays bare: returns 0 and writes nothing.
ROLES = """
if redis.call('HEXISTS', KEYS[1], 'deleted') == 1 then return 0 end
local short = {verified = 'r:v', labels = 'r:lb', teams = 'r:tm'}
local account, session = {}, {}
for i = 1, #ARGV, 2 do
  account[#account + 1] = ARGV[i]
  account[#account + 1] = ARGV[i + 1]
  session[#session + 1] = short[ARGV[i]]
  session[#session + 1] = ARGV[i + 1]
end
redis.call('HSET', KEYS[1], unpack(account))
local ttl = redis.call('PTTL', KEYS[2])
-- Sessions of the old layout take these fields when they are moved into the hash.
if ttl < 0 then ttl = redis.call('PTTL', KEYS[3]) end
if ttl > 0 then
  redis.call('HSET', KEYS[2], unpack(session))
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
"""

# KEYS: session hash, the old layout's sorted set, then its session hashes.
# ARGV: the session ids of those hashes, in the same order.
# Moves sessions of the layout before the session hash into it (the role fields the hash has
# already win: they are newer). Returns how many live sessions were moved.
ADOPT = (
    _HEAD
    + """
local key, moved = KEYS[1], 0
local has_roles = redis.call('HEXISTS', key, 'r:v') == 1
for i = 3, #KEYS do
  local sid = ARGV[i - 2]
  local f = redis.call('HMGET', KEYS[i], 'h', 'c', 'e', 'l', 'ip', 'ua', 'v', 'lb', 'tm')
  if f[1] and f[3] and tonumber(f[3]) > now and redis.call('HEXISTS', key, sid) == 0 then
    local ua = string.sub(f[6] or '', 1, 256)
    local order = redis.call('ZSCORE', KEYS[2], sid) or string.format('%d', tonumber(f[2]) * 1000)
    redis.call('HSET', key, sid, order .. ' ' .. f[3] .. ' ' .. (f[4] or f[2]),
               sid .. ':h', f[1], sid .. ':m', agent_ref(key, ua) .. ' ' .. (f[5] or ''))
    if f[7] and not has_roles then
      redis.call('HSET', key, 'r:v', f[7], 'r:lb', f[8] or '', 'r:tm', f[9] or '')
      has_roles = true
    end
    moved = moved + 1
  end
  redis.call('DEL', KEYS[i])
  redis.call('ZREM', KEYS[2], sid)
end
if redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[2]) end
-- The hash may be new: it lives as long as its longest session (idle timeouts are unknown here).
tidy(key, 0)
return moved
"""
)

ALL = {
    "create": CREATE,
    "touch": TOUCH,
    "list": LIST,
    "revoke": REVOKE,
    "revoke_all": REVOKE_ALL,
    "roles": ROLES,
    "block": BLOCK,
    "retire": RETIRE,
    "adopt": ADOPT,
}
