"""The session store on fakeredis and on a real redis-server, through both fronts."""

from __future__ import annotations

import time

import pytest

from bastion import Bastion
from bastion.errors import ServiceUnavailable
from bastion.sessions import keys
from bastion.sessions import token as token_module
from bastion.sessions.token import hash_secret, new_session_id, parse_token
from tests.conftest import caught_up, make_bastion

pytestmark = pytest.mark.anyio


def _raw(bastion: Bastion):  # type: ignore[no-untyped-def]
    return bastion.sync.redis


def _times(bastion: Bastion, sid: str, user: str = "alice") -> list[int]:
    """A session's [order, expires, last seen] as stored in its user's hash."""
    return [int(t) for t in _raw(bastion).hget(keys.sessions("bastion", user), sid).split()]


def _set_times(bastion: Bastion, sid: str, user: str = "alice", **changes: int) -> None:
    """Overwrite a session's expires (``e``) or last seen (``l``) in its user's hash."""
    order, expires, last_seen = _times(bastion, sid, user)
    expires, last_seen = changes.get("e", expires), changes.get("l", last_seen)
    _raw(bastion).hset(keys.sessions("bastion", user), sid, f"{order} {expires} {last_seen}")


async def test_create_then_authenticate(bastion: Bastion) -> None:
    new = await bastion.sessions.create("alice", ip="10.0.0.1", user_agent="pytest")
    active = await bastion.sessions.authenticate(new.token)
    assert active is not None
    assert (active.user_id, active.session_id) == ("alice", new.session.id)
    assert new.session.ip == "10.0.0.1" and new.session.user_agent == "pytest"
    assert new.session.expires_ms - new.session.created_ms == 365 * 24 * 3600 * 1000
    assert new.evicted == ()


async def test_ip_and_user_agent_from_python_are_stored_clean(bastion: Bastion) -> None:
    new = await bastion.sessions.create(
        "alice", ip="10.0.0.1\x1b[2J", user_agent="agent\x00\x1b[31m\u202e" + "x" * 600
    )
    assert (new.session.ip, new.session.user_agent) == ("", "agent[31m" + "x" * 247)
    # A session written raw (before values were cleaned) is shown clean.
    raw = _raw(bastion)
    raw.hset(
        keys.sessions("bastion", "alice"),
        mapping={f"{new.session.id}:m": "0 <b>", "a:0:0": b"old\x1b\xff"},
    )
    raw.hdel(keys.sessions("bastion", "alice"), "a:0:1", "a:0:2", "a:0:3")
    (listed,) = await bastion.sessions.list("alice")
    assert (listed.ip, listed.user_agent) == ("", "old\ufffd")


async def test_secret_is_stored_only_as_its_hash(bastion: Bastion) -> None:
    new = await bastion.sessions.create("alice")
    parsed = parse_token(new.token)
    assert parsed is not None
    raw = _raw(bastion)
    stored = raw.hgetall(keys.sessions("bastion", "alice"))
    assert stored[f"{new.session.id}:h".encode()] == hash_secret(parsed.secret)
    dump = b"".join(k + v for k, v in stored.items())
    assert parsed.secret.encode() not in dump
    for key in raw.keys("*"):
        assert parsed.secret.encode() not in key


async def test_keys_of_a_user_share_one_hash_tag(bastion: Bastion) -> None:
    await bastion.sessions.create("alice")
    await bastion.sessions.create("bob")
    # The session cache's canary keys (bastion:cc:..., when it is on) are no user's.
    names = sorted(k.decode() for k in _raw(bastion).keys("*") if not k.startswith(b"bastion:cc:"))
    assert names and all(("{alice}" in n) != ("{bob}" in n) for n in names)


async def test_wrong_secret_and_other_users_id_are_refused(bastion: Bastion) -> None:
    alice = await bastion.sessions.create("alice")
    bob = await bastion.sessions.create("bob")
    a, b = parse_token(alice.token), parse_token(bob.token)
    assert a is not None and b is not None
    # bob's valid secret presented under alice's id and session id, and vice versa
    assert await bastion.sessions.authenticate(f"alice.{a.session_id}.{b.secret}") is None
    assert await bastion.sessions.authenticate(f"bob.{a.session_id}.{a.secret}") is None
    assert await bastion.sessions.authenticate(f"alice.{b.session_id}.{a.secret}") is None
    flipped = a.secret[:-1] + ("A" if a.secret[-1] != "A" else "B")
    assert await bastion.sessions.authenticate(f"alice.{a.session_id}.{flipped}") is None


async def test_cap_evicts_oldest_first(backend: str, request: pytest.FixtureRequest) -> None:
    bastion = make_bastion(backend, request, session_limit=3)
    made = [await bastion.sessions.create("alice") for _ in range(5)]
    assert [n.evicted for n in made] == [
        (),
        (),
        (),
        (made[0].session.id,),
        (made[1].session.id,),
    ]
    live = await bastion.sessions.list("alice")
    assert [s.id for s in live] == [n.session.id for n in made[2:]]
    for gone in made[:2]:
        assert await bastion.sessions.authenticate(gone.token) is None
        assert not _raw(bastion).hexists(keys.sessions("bastion", "alice"), gone.session.id)
    for kept in made[2:]:
        assert await bastion.sessions.authenticate(kept.token) is not None


async def test_same_millisecond_creations_keep_their_order(bastion: Bastion) -> None:
    made = [bastion.sync.sessions.create("alice") for _ in range(30)]
    orders = [n.order for n in made]
    assert orders == sorted(orders) and len(set(orders)) == len(orders)
    live = await bastion.sessions.list("alice")
    assert [s.id for s in live] == [n.session.id for n in made[-10:]]


async def test_lower_limit_per_call_trims_at_next_login(bastion: Bastion) -> None:
    for _ in range(6):
        await bastion.sessions.create("alice")
    new = await bastion.sessions.create("alice", limit=2)
    assert len(new.evicted) == 5
    assert len(await bastion.sessions.list("alice")) == 2


async def test_dead_entries_are_dropped_and_do_not_count(bastion: Bastion) -> None:
    bastion_small = bastion
    made = [await bastion_small.sessions.create("alice") for _ in range(10)]
    raw = _raw(bastion)
    # Two sessions reach their end.
    for gone in made[:2]:
        _set_times(bastion, gone.session.id, e=int(time.time() * 1000) - 1)
    new = await bastion.sessions.create("alice")
    assert new.evicted == ()
    fields = {f.decode() for f in raw.hkeys(keys.sessions("bastion", "alice"))}
    members = {f for f in fields if ":" not in f}
    assert members == {n.session.id for n in made[2:]} | {new.session.id}
    assert not any(f.startswith(tuple(n.session.id for n in made[:2])) for f in fields)


async def test_ttls_follow_the_absolute_lifetime(bastion: Bastion) -> None:
    new = await bastion.sessions.create("alice")
    raw = _raw(bastion)
    ttl = raw.pttl(keys.sessions("bastion", "alice"))
    assert 365 * 24 * 3600 * 1000 - 5000 < ttl <= 365 * 24 * 3600 * 1000
    assert new.session.id


async def test_expired_session_is_refused_even_before_redis_drops_it(bastion: Bastion) -> None:
    new = await bastion.sessions.create("alice")
    _set_times(bastion, new.session.id, e=int(time.time() * 1000) - 1)
    assert await bastion.sessions.authenticate(new.token) is None


async def test_idle_timeout(backend: str, request: pytest.FixtureRequest) -> None:
    bastion = make_bastion(backend, request, session_idle_timeout=600)
    new = await bastion.sessions.create("alice")
    key = keys.sessions("bastion", "alice")
    raw = _raw(bastion)
    assert raw.pttl(key) <= 600_000
    now = int(time.time() * 1000)
    # Active a minute ago: still alive, and the check records activity and pushes expiry out.
    _set_times(bastion, new.session.id, l=now - 61_000)
    raw.pexpire(key, 100_000)
    assert await bastion.sessions.authenticate(new.token) is not None
    assert _times(bastion, new.session.id)[2] >= now
    assert raw.pttl(key) > 590_000
    # Idle for longer than the timeout: refused even if Redis has not expired the key yet.
    _set_times(bastion, new.session.id, l=now - 601_000)
    assert await bastion.sessions.authenticate(new.token) is None


async def test_last_seen_writes_are_throttled(bastion: Bastion) -> None:
    new = await bastion.sessions.create("alice")
    before = _times(bastion, new.session.id)[2]
    for _ in range(20):
        assert await bastion.sessions.authenticate(new.token) is not None
    assert _times(bastion, new.session.id)[2] == before
    _set_times(bastion, new.session.id, l=int(time.time() * 1000) - 61_000)
    await caught_up(bastion)
    assert await bastion.sessions.authenticate(new.token) is not None
    assert _times(bastion, new.session.id)[2] > before - 1


async def test_touch_never_resurrects_a_revoked_session(bastion: Bastion) -> None:
    new = await bastion.sessions.create("alice")
    key = keys.sessions("bastion", "alice")
    raw = _raw(bastion)
    assert await bastion.sessions.revoke("alice", new.session.id)
    assert (
        await bastion.sessions._run(  # the touch script itself, on a deleted session
            _touch(bastion, key, new.session.id)
        )
        == 0
    )
    assert not raw.exists(key)


def _touch(bastion: Bastion, key: str, sid: str):  # type: ignore[no-untyped-def]
    from bastion.redisio import Script

    result = yield Script("touch", [key], [sid, 0])
    return result


async def test_list_revoke_revoke_all_and_keep(bastion: Bastion) -> None:
    made = [await bastion.sessions.create("alice", user_agent=f"ua{i}") for i in range(4)]
    other = await bastion.sessions.create("bob")
    listed = await bastion.sessions.list("alice")
    assert [s.user_agent for s in listed] == ["ua0", "ua1", "ua2", "ua3"]
    assert "secret" not in str(listed[0].to_dict()).lower()
    assert listed[0].to_dict(current_id=made[0].session.id)["current"] is True

    assert await bastion.sessions.revoke("alice", made[0].session.id) is True
    assert await bastion.sessions.revoke("alice", made[0].session.id) is False
    assert await bastion.sessions.revoke("bob", made[1].session.id) is False  # not bob's
    assert await bastion.sessions.authenticate(made[1].token) is not None

    removed = await bastion.sessions.revoke_all("alice", keep=made[3].session.id)
    assert sorted(removed) == sorted([made[1].session.id, made[2].session.id])
    assert [s.id for s in await bastion.sessions.list("alice")] == [made[3].session.id]
    assert await bastion.sessions.revoke_all("alice") == [made[3].session.id]
    assert await bastion.sessions.list("alice") == []
    assert await bastion.sessions.authenticate(other.token) is not None


async def test_sync_and_async_fronts_share_data(bastion: Bastion) -> None:
    new = bastion.sync.sessions.create("alice")
    assert await bastion.sessions.authenticate(new.token) is not None
    assert [s.id for s in bastion.sync.sessions.list("alice")] == [new.session.id]
    assert bastion.sync.sessions.revoke("alice", new.session.id)
    assert await bastion.sessions.authenticate(new.token) is None


@pytest.mark.parametrize("user_id", ["", "a b", "a:b", "a/b", "{a}", "é", "a" * 129, "-a"])
def test_invalid_user_ids_are_refused_at_creation(bastion: Bastion, user_id: str) -> None:
    with pytest.raises(ValueError, match="invalid user id"):
        bastion.sync.sessions.create(user_id)


@pytest.mark.parametrize("limit", [0, 101])
def test_limit_out_of_range_is_refused(bastion: Bastion, limit: int) -> None:
    with pytest.raises(ValueError, match=r"1\.\.100"):
        bastion.sync.sessions.create("alice", limit=limit)


async def test_lookups_with_junk_ids_are_harmless(bastion: Bastion) -> None:
    assert await bastion.sessions.list("not valid") == []
    assert await bastion.sessions.revoke("alice", "../../etc") is False
    assert await bastion.sessions.revoke_all("{x}") == []


def test_unreachable_redis_raises_service_unavailable() -> None:
    from bastion import Settings
    from tests.redis_server import free_port

    bastion = Bastion(Settings(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_timeout=0.2))
    with pytest.raises(ServiceUnavailable):
        bastion.sync.sessions.create("alice")


def test_session_ids_never_start_with_a_dash(monkeypatch: pytest.MonkeyPatch) -> None:
    # 0xF8 encodes to "-" in base64url: such an id would read as an option on the command line.
    draws = iter([b"\xf8" + bytes(15), bytes(16)])
    monkeypatch.setattr(token_module.secrets, "token_bytes", lambda n: next(draws))
    assert new_session_id() == "A" * 22


def _old_layout_session(bastion: Bastion, user: str, ua: str = "old browser") -> str:
    """A session written as the layout before the session hash kept them; its token."""
    sid, secret = new_session_id(), "s" * 43
    now = int(time.time() * 1000)
    raw = _raw(bastion)
    raw.zadd(keys.old_user_sessions("bastion", user), {sid: now * 1000})
    raw.hset(
        keys.old_session("bastion", user, sid),
        mapping={
            "h": hash_secret(secret),
            "c": now,
            "e": now + 3_600_000,
            "l": now,
            "ip": "",
            "ua": ua,
        },
    )
    return f"{user}.{sid}.{secret}"


async def test_sessions_of_the_old_layout_are_moved_in_when_met(bastion: Bastion) -> None:
    token = _old_layout_session(bastion, "alice")
    other = _old_layout_session(bastion, "alice", ua="other")
    active = await bastion.sessions.authenticate(token)
    assert active is not None and active.user_id == "alice"
    raw = _raw(bastion)
    assert not raw.exists(keys.old_user_sessions("bastion", "alice"))
    assert sorted(s.user_agent for s in await bastion.sessions.list("alice")) == [
        "old browser",
        "other",
    ]
    assert await bastion.sessions.authenticate(other) is not None


async def test_log_out_everywhere_ends_old_layout_sessions_never_met(bastion: Bastion) -> None:
    tokens = [_old_layout_session(bastion, "alice") for _ in range(3)]
    assert len(await bastion.sessions.revoke_all("alice")) == 3
    assert all([await bastion.sessions.authenticate(t) is None for t in tokens])
    assert [k for k in _raw(bastion).keys("*") if b"alice" in k] == []
