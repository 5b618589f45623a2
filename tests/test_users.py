"""The user fronts (``bastion.users`` and ``bastion.sync.users``) on fakeredis and redis-server.

Disable, enable and delete; the marks the session-create script honours; the log-in that raced
a disable or a delete; ending everyone's sessions with one SCAN pass.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import pytest

from bastion import Bastion, Settings
from bastion.core import RequestState
from bastion.credentials import NO_CREDENTIALS
from bastion.errors import (
    InvalidCredentials,
    ServiceUnavailable,
    UserAlreadyExists,
    UserBlocked,
    UserNotFound,
)
from bastion.identity import Identity
from bastion.redisio import Compute, Script, Steps
from bastion.sessions import keys
from bastion.user_admin import AsyncUsers, SyncUsers
from bastion.users import User, UserCore

pytestmark = pytest.mark.anyio

PASSWORD = "correct horse battery staple"


@pytest.fixture(params=["async", "sync"])
def front(request: pytest.FixtureRequest) -> str:
    """Run a test through ``bastion.users`` and through ``bastion.sync.users``."""
    return str(request.param)


async def call(bastion: Bastion, front: str, method: str, *args: Any, **kw: Any) -> Any:
    """``bastion.users.<method>(*args, **kw)`` on the front under test."""
    if front == "async":
        return await getattr(bastion.users, method)(*args, **kw)
    return getattr(bastion.sync.users, method)(*args, **kw)


def _raw(bastion: Bastion) -> Any:
    return bastion.sync.redis


def _user(bastion: Bastion, email: str = "ada@example.com", **kw: Any) -> User:
    made: User = bastion._sync_runner.run(bastion._user_store.create(email, "hash-x", **kw))
    return made


def _state(bastion: Bastion) -> RequestState:
    return RequestState(bastion, Identity.guest(), NO_CREDENTIALS, peer="127.0.0.1")


def test_nothing_public_returns_a_generator() -> None:
    for front_class in (AsyncUsers, SyncUsers):
        for name, method in inspect.getmembers(front_class, inspect.isfunction):
            if not name.startswith("_"):
                assert not inspect.isgeneratorfunction(method), (front_class, name)
    for name in ("get", "get_by_email", "update", "disable", "enable", "delete"):
        assert inspect.iscoroutinefunction(getattr(AsyncUsers, name)), name
        assert not inspect.iscoroutinefunction(getattr(SyncUsers, name)), name


async def test_get_get_by_email_and_update(bastion: Bastion, front: str) -> None:
    user = _user(bastion, name="Ada")
    found = await call(bastion, front, "get", user.id)
    assert found is not None and found.email == "ada@example.com" and not found.disabled
    assert (await call(bastion, front, "get_by_email", " ADA@example.com")) == found
    assert await call(bastion, front, "get", "nobody") is None
    assert await call(bastion, front, "get_by_email", "nobody@example.com") is None
    session = bastion.sync.sessions.create(user.id)
    await call(bastion, front, "update", user.id, verified=True, labels=("admin",))
    updated = await call(bastion, front, "get", user.id)
    assert updated.verified and updated.labels == ("admin",)
    active = bastion.sync.sessions.authenticate(session.token)
    assert active is not None and active.verified == b"1"  # the live session has it at once


async def test_disable_ends_every_session_and_refuses_new_ones(
    bastion: Bastion, front: str
) -> None:
    user, other = _user(bastion), _user(bastion, "bob@example.com")
    made = [bastion.sync.sessions.create(user.id) for _ in range(3)]
    kept = bastion.sync.sessions.create(other.id)

    ended = await call(bastion, front, "disable", user.id)
    assert sorted(ended) == sorted(m.session.id for m in made)
    for m in made:
        assert bastion.sync.sessions.authenticate(m.token) is None
        assert bastion.sync.sessions.alive(user.id, m.session.id) is None  # JWTs check this
    assert bastion.sync.sessions.authenticate(kept.token) is not None  # others untouched
    with pytest.raises(UserBlocked) as refused:
        bastion.sync.sessions.create(user.id)
    assert refused.value.status == 401 and refused.value.type == "user_blocked"
    with pytest.raises(UserBlocked):
        await bastion.sessions.create(user.id)
    assert bastion.sync.sessions.list(user.id) == []
    disabled = await call(bastion, front, "get", user.id)
    assert disabled.disabled
    assert await call(bastion, front, "disable", user.id) == []  # again: nothing left to end

    assert await call(bastion, front, "enable", user.id) is True
    assert await call(bastion, front, "enable", user.id) is False
    assert not (await call(bastion, front, "get", user.id)).disabled
    again = bastion.sync.sessions.create(user.id)
    assert bastion.sync.sessions.authenticate(again.token) is not None


async def test_delete_ends_sessions_drops_the_record_and_frees_the_email(
    bastion: Bastion, front: str
) -> None:
    user = _user(bastion, name="Ada")
    assert len(user.id) == 20 and int(user.id, 16) >= 0  # random ids: 80 bits
    made = [bastion.sync.sessions.create(user.id) for _ in range(2)]
    raw = _raw(bastion)
    email_keys = [k for k in raw.scan_iter(match="bastion:email:*")]
    assert len(email_keys) == 1

    ended = await call(bastion, front, "delete", user.id)
    assert sorted(ended) == sorted(m.session.id for m in made)
    for m in made:
        assert bastion.sync.sessions.authenticate(m.token) is None
    assert await call(bastion, front, "get", user.id) is None
    assert await call(bastion, front, "get_by_email", "ada@example.com") is None
    # Only the tombstone stays: no email, name, password hash or history.
    assert raw.hgetall(keys.user("bastion", user.id)).keys() == {b"deleted"}
    assert raw.exists(*email_keys) == 0
    with pytest.raises(InvalidCredentials):
        bastion.sync.sessions.create(user.id)
    # The id never comes back; the email is free for a new account with a new id.
    with pytest.raises(UserAlreadyExists, match="same id"):
        bastion._sync_runner.run(bastion._user_store.create("x@example.com", "h", user_id=user.id))
    assert await call(bastion, front, "get_by_email", "x@example.com") is None  # claim released
    again = _user(bastion)
    assert again.id != user.id
    assert (await call(bastion, front, "get_by_email", "ada@example.com")).id == again.id
    with pytest.raises(UserNotFound):
        await call(bastion, front, "delete", user.id)


async def test_unknown_or_deleted_users_are_not_found(bastion: Bastion, front: str) -> None:
    gone = _user(bastion)
    await call(bastion, front, "delete", gone.id)
    for user_id in ("nobody", gone.id, "not an id"):
        for method in ("disable", "enable", "delete"):
            with pytest.raises(UserNotFound) as missing:
                await call(bastion, front, method, user_id)
            assert missing.value.status == 404 and missing.value.type == "user_not_found"
        with pytest.raises(UserNotFound):
            await call(bastion, front, "update", user_id, verified=True)
    # Neither the disable nor the update wrote anything onto the tombstone.
    assert _raw(bastion).hgetall(keys.user("bastion", gone.id)).keys() == {b"deleted"}


async def test_delete_frees_the_email_only_if_it_still_names_the_user(bastion: Bastion) -> None:
    user = _user(bastion)
    raw = _raw(bastion)
    (email_key,) = list(raw.scan_iter(match="bastion:email:*"))
    raw.set(email_key, "someone-else")  # a claim that is not this user's any more
    await bastion.users.delete(user.id)
    assert raw.get(email_key) == b"someone-else"


async def test_no_password_hash_lands_on_a_tombstone(bastion: Bastion) -> None:
    # A log-in's rehash or a password change that raced the delete writes nothing.
    user = _user(bastion)
    await bastion.users.delete(user.id)
    bastion._sync_runner.run(bastion._user_store.set_password(user.id, "hash-y", ("hash-x",)))
    assert _raw(bastion).hgetall(keys.user("bastion", user.id)).keys() == {b"deleted"}
    bastion._sync_runner.run(bastion._user_store.set_password("nobody", "hash-y", ()))
    assert not _raw(bastion).exists(keys.user("bastion", "nobody"))


async def test_a_delete_cut_short_is_finished_by_the_next_one(bastion: Bastion) -> None:
    user = _user(bastion)
    bastion.sync.sessions.create(user.id)
    # The first half only: tombstone and sessions (as if the process died before the rest).
    assert bastion._sync_runner.run(bastion._sessions_core.retire(user.id)) is not None
    assert await bastion.users.get(user.id) is None
    assert b"hash" in _raw(bastion).hgetall(keys.user("bastion", user.id))
    assert await bastion.users.delete(user.id) == []
    assert _raw(bastion).hgetall(keys.user("bastion", user.id)).keys() == {b"deleted"}
    assert _user(bastion).id != user.id  # the email is free


async def test_sign_up_takes_over_an_email_claim_a_cut_short_delete_left(bastion: Bastion) -> None:
    user = _user(bastion)
    bastion._sync_runner.run(bastion._sessions_core.retire(user.id))  # the claim still names it
    again = _user(bastion)
    assert again.id != user.id
    assert (await bastion.users.get_by_email("ada@example.com")).id == again.id


async def test_a_taken_id_is_refused_and_the_email_stays_free(bastion: Bastion) -> None:
    user = _user(bastion)
    with pytest.raises(UserAlreadyExists, match="same id"):
        bastion._sync_runner.run(bastion._user_store.create("x@example.com", "h", user_id=user.id))
    assert (await bastion.users.get(user.id)).email == "ada@example.com"  # not overwritten
    assert _user(bastion, "x@example.com").id != user.id


def _disable_before_the_session_script(
    bastion: Bastion, steps: Steps[Any], user_id: str, action: str, seen: list[str]
) -> Steps[Any]:
    """Pass ``steps`` through, running ``action`` on the user just before the session script."""
    op = next(steps)
    while True:
        if isinstance(op, Compute) and op.fn == bastion._account.hasher.verify:
            seen.append("password checked")
        if isinstance(op, Script) and op.name == "create":
            getattr(bastion.sync.users, action)(user_id)
            seen.append(action)
        try:
            reply = yield op
        except Exception as exc:  # a failure goes back into the steps, as the runner does
            op = steps.throw(exc)
            continue
        try:
            op = steps.send(reply)
        except StopIteration as done:
            return done.value


@pytest.mark.parametrize(
    ("action", "error"), [("disable", UserBlocked), ("delete", InvalidCredentials)]
)
def test_a_log_in_that_checked_the_password_before_the_mark_gets_no_session(
    bastion: Bastion, action: str, error: type[Exception]
) -> None:
    state = _state(bastion)
    user = bastion._sync_runner.run(bastion._account.sign_up(state, "ada@example.com", PASSWORD))
    seen: list[str] = []
    racing = _disable_before_the_session_script(
        bastion, bastion._account.log_in(state, "ada@example.com", PASSWORD), user.id, action, seen
    )
    with pytest.raises(error):
        bastion._sync_runner.run(racing)
    assert seen == ["password checked", action]
    assert bastion.sync.sessions.list(user.id) == []
    assert not _raw(bastion).exists(keys.sessions("bastion", user.id))
    assert state.identity.kind == "guest"


async def test_revoke_everyone_ends_every_users_sessions(
    bastion: Bastion, front: str, backend: str
) -> None:
    # On a cluster the users' keys spread over the three primaries: each is walked.
    tokens = [bastion.sync.sessions.create(f"user{i}").token for i in range(7) for _ in range(2)]
    key = bastion.sync.api_keys.create("ci", ["documents.read"]).key
    user = _user(bastion)
    raw = _raw(bastion)

    def others() -> set[bytes]:
        # Not the session hashes, nor the session cache's canaries (when the cache is on).
        return {k for k in raw.scan_iter() if not k.startswith(b"bastion:cc:")}

    before = {k for k in others() if not k.endswith(b"}:s")}
    if front == "async":
        ended = await bastion.sessions.revoke_everyone(batch=3)  # several SCAN calls
    else:
        ended = bastion.sync.sessions.revoke_everyone(batch=3)
    assert ended == 14
    assert all(bastion.sync.sessions.authenticate(t) is None for t in tokens)
    assert not [k for k in raw.scan_iter() if k.endswith(b"}:s")]
    # Nothing else is touched: accounts, email claims, API keys.
    assert others() == before
    assert bastion.sync.api_keys.list() and (await bastion.users.get(user.id)) is not None
    assert key
    assert bastion.sync.sessions.revoke_everyone() == 0


def test_revoke_everyone_refuses_a_bad_batch(bastion: Bastion) -> None:
    with pytest.raises(ValueError, match="batch"):
        bastion.sync.sessions.revoke_everyone(batch=0)


def test_revoke_everyone_on_10000_users(
    real_redis: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's cost figure: one SCAN pass over 10,000 users' sessions plus other keys."""
    bastion = Bastion(Settings(redis_url=real_redis))
    client = bastion.sync.redis
    pipe = client.pipeline(transaction=False)
    for i in range(10_000):
        user_id = f"u{i}"
        far = int(time.time() * 1000) + 3_600_000
        pipe.hset(
            keys.sessions("bastion", user_id),
            mapping={"s1": f"1 {far} 1", "s1:h": "x", "s1:m": "- "},
        )
        pipe.hset(keys.user("bastion", user_id), mapping={"email": f"{user_id}@example.com"})
    pipe.execute()
    started = time.perf_counter()
    ended = bastion.sync.sessions.revoke_everyone()
    took = time.perf_counter() - started
    assert ended == 10_000
    assert client.dbsize() == 10_000  # the accounts stay
    with capsys.disabled():
        print(f"\nrevoke_everyone: 10,000 users, 20,000 keys: {took:.2f} s")


# --- the email claim of a sign-up (issue 11) -------------------------------------------------


def _run_until(bastion: Bastion, steps: Steps[Any], script: str, action: Any) -> Any:
    """Run ``steps``; just before the Script named ``script`` goes out, call ``action()``."""

    def wrapped() -> Steps[Any]:
        op = next(steps)
        while True:
            if isinstance(op, Script) and op.name == script:
                action()
            try:
                op = steps.send((yield op))
            except StopIteration as done:
                return done.value

    return bastion._sync_runner.run(wrapped())


def _claim(bastion: Bastion) -> bytes:
    (claim,) = list(_raw(bastion).scan_iter(match="bastion:email:*"))
    return bytes(claim)


def test_a_sign_up_cut_short_after_the_claim_frees_the_email(bastion: Bastion) -> None:
    store = UserCore("bastion", claim_ttl_ms=300)
    steps = store.create("ada@example.com", "hash-x")
    claimed = bastion._sync_runner.run(_first_op_only(steps))  # the claim, then the process dies
    assert claimed == 1
    raw = _raw(bastion)
    claim = _claim(bastion)
    assert 0 < raw.pttl(claim) <= 300
    with pytest.raises(UserAlreadyExists):  # a sign-up under way, as far as anyone can tell
        bastion._sync_runner.run(store.create("ada@example.com", "hash-y"))
    time.sleep(0.4)
    user = bastion._sync_runner.run(store.create("ADA@example.com", "hash-y"))
    assert raw.pttl(claim) == -1
    assert bastion.sync.users.get_by_email("ada@example.com") == bastion.sync.users.get(user.id)


def _first_op_only(steps: Steps[Any]) -> Steps[Any]:
    """Send the first operation of ``steps`` and stop there, returning its reply."""
    reply = yield next(steps)
    steps.close()
    return reply


def test_a_sign_up_whose_record_write_fails_frees_the_email(bastion: Bastion) -> None:
    store = UserCore("bastion", claim_ttl_ms=300)

    def fail() -> None:
        raise ServiceUnavailable()

    with pytest.raises(ServiceUnavailable):
        _run_until(bastion, store.create("ada@example.com", "hash-x"), "user_create", fail)
    assert _raw(bastion).pttl(_claim(bastion)) > 0
    time.sleep(0.4)
    assert bastion._sync_runner.run(store.create("ada@example.com", "hash-y")).email


def test_every_completed_sign_up_leaves_a_permanent_claim(bastion: Bastion) -> None:
    user = _user(bastion)
    raw = _raw(bastion)
    assert raw.pttl(_claim(bastion)) == -1
    # A sign-up that takes over a claim a cut-short delete left: permanent too.
    bastion._sync_runner.run(bastion._sessions_core.retire(user.id))
    again = _user(bastion)
    assert again.id != user.id and raw.pttl(_claim(bastion)) == -1


def test_a_claim_that_expired_while_the_record_was_written_is_made_again(
    bastion: Bastion,
) -> None:
    raw = _raw(bastion)
    steps = bastion._user_store.create("ada@example.com", "hash-x")
    user = _run_until(bastion, steps, "email_confirm", lambda: raw.delete(_claim(bastion)))
    assert raw.get(_claim(bastion)) == user.id.encode()
    assert raw.pttl(_claim(bastion)) == -1


def test_a_sign_up_whose_claim_went_to_another_gives_way(bastion: Bastion) -> None:
    raw = _raw(bastion)
    others: list[User] = []

    def expire_and_let_another_in() -> None:
        raw.delete(_claim(bastion))
        others.append(_user(bastion))

    steps = bastion._user_store.create("ada@example.com", "hash-x", user_id="slowpoke")
    with pytest.raises(UserAlreadyExists):
        _run_until(bastion, steps, "email_confirm", expire_and_let_another_in)
    (other,) = others
    assert raw.get(_claim(bastion)) == other.id.encode()
    found = bastion.sync.users.get_by_email("ada@example.com")
    assert found is not None and found.id == other.id
    # The slow one's record is gone (its id with it): no second account with the same email.
    assert raw.hgetall(keys.user("bastion", "slowpoke")).keys() == {b"deleted"}
    assert bastion.sync.users.get("slowpoke") is None


def test_the_claim_lifetime_must_be_positive() -> None:
    with pytest.raises(ValueError, match="claim_ttl_ms"):
        UserCore("bastion", claim_ttl_ms=0)


def test_a_users_repr_shows_no_password_hash() -> None:
    user = User("u1", "ada@example.com", password_hash="$argon2id$secret", password_history=("h",))
    assert "argon2id" not in repr(user) and "'h'" not in repr(user)
    assert "ada@example.com" in repr(user)
