"""A user store of the app's own behind the account service; the client IP behind proxies."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from bastion import Bastion, Settings
from bastion.clientip import client_ip, parse_networks
from bastion.core import RequestState
from bastion.credentials import NO_CREDENTIALS
from bastion.errors import InvalidCredentials, UserAlreadyExists, UserBlocked
from bastion.identity import Identity
from bastion.redisio import Compute, Steps
from bastion.sessions import keys
from bastion.users import User, normalize_email


class MemoryStore:
    """A store of the app's own: blocking calls, reached through ``Compute`` steps."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.made = 0

    def new_id(self) -> str:
        # Never reused, deleted ids included (the UserStore contract).
        with self.lock:
            self.made += 1
            return f"u{self.made}"

    def _put(self, user: User) -> User:
        with self.lock:
            self.calls.append(threading.current_thread().name)
            if any(u.email == user.email for u in self.users.values()):
                raise UserAlreadyExists()
            self.users[user.id] = user
            return user

    def create(
        self,
        email: str,
        password_hash: str,
        *,
        name: str = "",
        phone: str = "",
        history: tuple[str, ...] = (),
        user_id: str | None = None,
    ) -> Steps[User]:
        user = User(user_id or self.new_id(), normalize_email(email), name, phone,
                    password_hash=password_hash, password_history=history)  # fmt: skip
        stored: User = yield Compute(self._put, (user,))
        return stored

    def get(self, user_id: str) -> Steps[User | None]:
        found: User | None = yield Compute(self.users.get, (user_id,))
        return found

    def by_email(self, email: str) -> Steps[User | None]:
        wanted = normalize_email(email)
        for user in list(self.users.values()):
            if user.email == wanted:
                return user
        if False:  # pragma: no cover - a generator, like every store method
            yield Compute(print, ())
        return None

    def set_password(
        self, user_id: str, password_hash: str, history: tuple[str, ...]
    ) -> Steps[None]:
        old = self.users[user_id]
        new = User(old.id, old.email, old.name, old.phone, password_hash=password_hash,
                   password_history=history)  # fmt: skip
        yield Compute(self.users.__setitem__, (user_id, new))

    def delete(self, user_id: str) -> Steps[bool]:
        removed: User | None = yield Compute(self.users.pop, (user_id, None))
        return removed is not None


def test_the_account_service_on_a_store_of_the_apps_own(real_redis: str) -> None:
    import asyncio

    store = MemoryStore()
    bastion = Bastion(Settings(redis_url=real_redis), users=store)
    state = RequestState(bastion, Identity.guest(), NO_CREDENTIALS, peer="127.0.0.1")
    password = "correct horse battery staple"

    async def flow() -> Any:
        user = await bastion._runner.run(
            bastion._account.sign_up(state, "ada@example.com", password)
        )
        with pytest.raises(UserAlreadyExists):
            await bastion._runner.run(bastion._account.sign_up(state, "ADA@example.com", password))
        _, new = await bastion._runner.run(
            bastion._account.log_in(state, "ada@example.com", password)
        )
        return user, new

    user, new = asyncio.run(flow())
    assert store.users[user.id].email == "ada@example.com"
    assert new.session.user_id == user.id
    assert state.identity.user_id == user.id
    # The blocking store calls ran off the event loop's thread.
    assert store.calls and all(name != "MainThread" for name in store.calls)


def test_disable_and_delete_with_a_store_of_the_apps_own(real_redis: str) -> None:
    store = MemoryStore()
    bastion = Bastion(Settings(redis_url=real_redis), users=store)
    run = bastion._sync_runner.run
    state = RequestState(bastion, Identity.guest(), NO_CREDENTIALS, peer="127.0.0.1")
    password = "correct horse battery staple"
    user = run(bastion._account.sign_up(state, "ada@example.com", password))
    _, first = run(bastion._account.log_in(state, "ada@example.com", password))
    raw = bastion.sync.redis

    # The mark lives in Bastion's own key on the user's slot, beside the sessions.
    assert bastion.sync.users.disable(user.id) == [first.session.id]
    assert raw.hgetall(keys.user("bastion", user.id)) == {b"disabled": b"1"}
    found = bastion.sync.users.get(user.id)
    assert found is not None and found.disabled and not store.users[user.id].disabled
    assert bastion.sync.sessions.authenticate(first.token) is None
    with pytest.raises(UserBlocked):
        run(bastion._account.log_in(state, "ada@example.com", password))
    assert bastion.sync.users.enable(user.id)
    _, second = run(bastion._account.log_in(state, "ada@example.com", password))

    assert bastion.sync.users.delete(user.id) == [second.session.id]
    assert user.id not in store.users  # the store dropped the record
    assert bastion.sync.users.get(user.id) is None
    assert raw.hgetall(keys.user("bastion", user.id)).keys() == {b"deleted"}
    with pytest.raises(InvalidCredentials):
        run(bastion._account.log_in(state, "ada@example.com", password))
    again = run(bastion._account.sign_up(state, "ada@example.com", password))
    assert again.id != user.id
    run(bastion._account.log_in(state, "ada@example.com", password))


def test_a_reused_id_of_a_store_of_the_apps_own_gets_no_session(real_redis: str) -> None:
    # A store that broke the contract and handed out a deleted id again: the tombstone holds,
    # so the newcomer cannot inherit what was granted to user:ID.
    store = MemoryStore()
    bastion = Bastion(Settings(redis_url=real_redis), users=store)
    user = bastion._sync_runner.run(store.create("ada@example.com", "h"))
    bastion.sync.users.delete(user.id)
    bastion._sync_runner.run(store.create("eve@example.com", "h", user_id=user.id))
    assert bastion.sync.users.get(user.id) is None
    with pytest.raises(InvalidCredentials):
        bastion.sync.sessions.create(user.id)


TRUSTED = parse_networks(["10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("203.0.113.9", None, "203.0.113.9"),
        ("203.0.113.9", b"198.51.100.7", "203.0.113.9"),  # not a trusted proxy: header ignored
        ("10.1.2.3", b"198.51.100.7", "198.51.100.7"),
        ("10.1.2.3", b"6.6.6.6, 198.51.100.7, 10.9.9.9", "198.51.100.7"),  # right-most untrusted
        ("10.1.2.3", b"10.4.4.4", "10.1.2.3"),  # only proxies: the socket's address
        ("10.1.2.3", b"not-an-ip", "10.1.2.3"),
        ("::1", b"2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_ip(peer: str, forwarded: bytes | None, expected: str) -> None:
    assert client_ip(peer, forwarded, TRUSTED) == expected


def test_client_ip_without_trusted_proxies() -> None:
    assert client_ip("10.1.2.3", b"198.51.100.7", ()) == "10.1.2.3"
