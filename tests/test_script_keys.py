"""Every Lua script Bastion registers touches only the keys it declares, all in one slot.

A key a script builds for itself is invisible to Redis Cluster: while its slot migrates, the
script runs on the node holding the declared keys and silently misses the others. Redis does not
check it (in one slot, nothing fails), so this test does: each script is run with a prelude that
shadows ``redis.call`` / ``redis.pcall`` and refuses any key argument (found by the server's own
``COMMAND`` key positions) that is not one of ``KEYS``. A workload then runs every script the
package registers at least once, so a new script must be added to it.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from typing import Any

import pytest
import redis
from redis.cluster import key_slot
from redis.exceptions import ResponseError

from bastion import Bastion, Settings
from bastion.errors import ServiceUnavailable, UserAlreadyExists
from bastion.ratelimit import RateLimitCore
from bastion.redisio import Steps
from bastion.sessions import keys
from bastion.sessions.token import hash_secret, new_session_id

UNDECLARED = "BASTION-UNDECLARED-KEY"


def key_positions(client: redis.Redis) -> str:
    """A Lua table of each fixed-key command's (first, last, step) key positions."""
    rows = []
    for name, info in client.command().items():
        if "movablekeys" in info["flags"] or info["subcommands"]:
            continue  # left out: the prelude refuses a command whose keys it cannot place
        first, last, step = info["first_key_pos"], info["last_key_pos"], info["step_count"]
        rows.append(f"['{name.lower()}']={{{first},{last},{step}}}")
    return "{" + ",".join(rows) + "}"


def prelude(positions: str) -> str:
    """Lua run before a script: ``redis.call`` that refuses keys the script did not declare."""
    return f"""
local real = redis
local positions = {positions}
local declared = {{}}
for _, k in ipairs(KEYS) do declared[k] = true end
local function check(cmd, ...)
  local args = {{...}}
  local spec = positions[string.lower(cmd)]
  if spec == nil then
    error({{err = '{UNDECLARED} command with keys the checker cannot place: ' .. cmd}})
  end
  local first, last, step = spec[1], spec[2], spec[3]
  if first == 0 then return end
  if last < 0 then last = #args + 1 + last end
  for i = first, last, step do
    if not declared[args[i]] then
      error({{err = '{UNDECLARED} ' .. cmd .. ' ' .. tostring(args[i])}})
    end
  end
end
local redis = setmetatable({{
  call = function(cmd, ...) check(cmd, ...) return real.call(cmd, ...) end,
  pcall = function(cmd, ...) check(cmd, ...) return real.pcall(cmd, ...) end,
}}, {{__index = real}})
"""


class Checked:
    """A registered script run behind the prelude; counts runs and records what it refused."""

    def __init__(self, name: str, script: Any, lua: str, seen: Counter[str], bad: list[str]):
        self.name, self.seen, self.bad = name, seen, bad
        self.inner = script.registered_client.register_script(lua + script.script)

    def _declared(self, keys: list[Any]) -> None:
        self.seen[self.name] += 1
        slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in keys}
        if len(slots) > 1:
            self.bad.append(f"{self.name}: keys in {len(slots)} slots: {keys}")

    def __call__(self, keys: list[Any], args: list[Any], client: Any = None) -> Any:
        self._declared(keys)
        try:
            return self.inner(keys=keys, args=args, client=client)
        except ResponseError as exc:
            if UNDECLARED in str(exc):
                self.bad.append(f"{self.name}: {exc}")
            raise


def checked_bastion(url: str, seen: Counter[str], bad: list[str]) -> Bastion:
    """A Bastion whose sync runner runs every script behind the prelude."""
    bastion = Bastion(Settings(redis_url=url, rate_limit_per_account=5))
    lua = prelude(key_positions(bastion.sync.redis))
    runner = bastion._sync_runner
    runner._scripts = {
        name: Checked(name, script, lua, seen, bad) for name, script in runner._scripts.items()
    }
    return bastion


def _old_layout_session(client: redis.Redis, user: str) -> None:
    sid, now = new_session_id(), int(time.time() * 1000)
    client.zadd(keys.old_user_sessions("bastion", user), {sid: now * 1000})
    client.hset(
        keys.old_session("bastion", user, sid),
        mapping={"h": hash_secret("s" * 43), "c": now, "e": now + 60_000, "l": now, "ua": "x"},
    )


def workload(bastion: Bastion) -> None:
    """Something of every kind Bastion does with Redis, through its own steps."""
    run, sync, client = bastion._sync_runner.run, bastion.sync, bastion.sync.redis
    users = bastion._user_roles
    # Sign-ups: a claim, the record, the confirmation; a second one on the same email is refused.
    ada = run(users.create("ada@example.com", "hash"))
    with pytest.raises(UserAlreadyExists):
        run(users.create("ada@example.com", "hash"))
    run(users.set_password(ada.id, "hash2", ("hash",)))
    run(users.update(ada.id, verified=True, labels=("vip",)))
    # Sessions: old-layout adoption, create past the cap, touch, list, revoke, revoke all.
    _old_layout_session(client, ada.id)
    made = [sync.sessions.create(ada.id, user_agent="ua", limit=2) for _ in range(3)]
    key = keys.sessions("bastion", ada.id)
    order, expires, _ = client.hget(key, made[-1].session.id).split()
    client.hset(key, made[-1].session.id, b"%s %s 1" % (order, expires))  # last seen long ago
    assert sync.sessions.authenticate(made[-1].token) is not None  # touched
    assert len(sync.sessions.list(ada.id)) == 2
    assert sync.sessions.revoke(ada.id, made[-1].session.id)
    sync.sessions.revoke_all(ada.id)
    # Disable and delete: both end sessions in the script that marks the account.
    sync.sessions.create(ada.id)
    sync.users.disable(ada.id)
    sync.users.enable(ada.id)
    sync.users.delete(ada.id)
    # A claim a delete left behind (cut short before freeing it) is taken over by a new sign-up.
    bob = run(users.create("bob@example.com", "hash"))
    client.hset(users.user_key(bob.id), "deleted", "1")
    run(users.create("bob@example.com", "hash"))
    # API keys: create, use (recorded once a while), revoke.
    made_key = sync.api_keys.create("ci", ["documents.read"])
    key_id = made_key.key.split("_")[1]
    sync.api_keys.authenticate(made_key.key)
    sync.api_keys.revoke(key_id)
    # Per-resource permissions: grant, revoke, clear (which walks the rows' index keys).
    doc = "databases/main/collections/notes/documents/n1"
    for role in ("user:a", "user:b", "team:t/editor"):
        sync.permissions.grant(doc, role, "read")
    sync.permissions.grant(doc, "user:a", "write")
    sync.permissions.revoke(doc, "user:b", "read")
    assert sync.permissions.clear(doc) == 3
    # Rate limits: check and hit, per address, email and account.
    core = RateLimitCore(bastion.settings)
    run(core.check("login", email="ada@example.com", ip="127.0.0.1", per_account=True))
    run(core.hit("login", email="ada@example.com", ip="127.0.0.1", per_account=True))
    run(core.hit("signup", email=None, ip="::1"))


def test_every_script_declares_every_key_it_touches(real_redis: str) -> None:
    seen: Counter[str] = Counter()
    bad: list[str] = []
    with checked_bastion(real_redis, seen, bad) as bastion:
        # A refused key ends the workload early (a 503): reported below.
        with contextlib.suppress(ServiceUnavailable):
            workload(bastion)
        registered = set(bastion._sync_runner._scripts)
    assert bad == []
    assert registered - set(seen) == set(), "scripts the workload never ran: add them to it"


def test_the_check_catches_a_key_built_inside_lua(real_redis: str) -> None:
    """The prelude refuses what perm_clear did before: an index key made from a row."""
    seen: Counter[str] = Counter()
    bad: list[str] = []
    client = redis.Redis.from_url(real_redis)
    script = client.register_script("return redis.call('SREM', ARGV[1] .. 'x', 'id')")
    built = Checked("built", script, prelude(key_positions(client)), seen, bad)
    with pytest.raises(ResponseError, match=UNDECLARED):
        built(keys=["bastion:{c}:rows"], args=["bastion:{c}:"])
    assert bad and "SREM bastion:{c}:x" in bad[0]
    with pytest.raises(ResponseError, match=UNDECLARED):
        built(keys=["bastion:{c}:rows", "bastion:{d}:x"], args=["bastion:{c}:"])
    assert "keys in 2 slots" in bad[1]
    client.close()


def _resume(steps: Steps[Any], reply: Any) -> Steps[Any]:
    try:
        op = steps.send(reply)
        while True:
            op = steps.send((yield op))
    except StopIteration as done:
        return done.value


def test_clearing_a_resource_also_clears_rows_granted_while_it_runs(real_redis: str) -> None:
    with Bastion(Settings(redis_url=real_redis)) as bastion:
        doc = "databases/main/collections/notes/documents/n1"
        bastion.sync.permissions.grant(doc, "user:a", "read")
        steps = bastion._permissions_core.clear(doc)

        def racing() -> Steps[int]:
            rows = yield next(steps)  # the rows are read...
            bastion.sync.permissions.grant(doc, "user:late", "read")  # ...one more is granted
            return (yield from _resume(steps, rows))

        assert bastion._sync_runner.run(racing()) == 2
        assert bastion.sync.permissions.list(doc) == []
        ids = bastion.sync.permissions.ids_for(
            "databases/main/collections/notes", "documents", ["user:a", "user:late"], "read"
        )
        assert ids == set()
