"""A user store of the app's own behind the account service; the client IP behind proxies."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest

from bastion import Bastion, Settings
from bastion.clientip import client_ip, parse_networks
from bastion.core import RequestState
from bastion.credentials import NO_CREDENTIALS
from bastion.errors import InvalidCredentials, UserAlreadyExists, UserBlocked
from bastion.identity import Identity
from bastion.sessions import keys
from bastion.users import User


class MemoryStore:
    """A sync store of the app's own (a SyncUserStore): plain blocking methods, no steps."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}
        self.lock = threading.Lock()
        self.calls: list[str] = []

    def create(self, user: User) -> User:
        with self.lock:
            self.calls.append(threading.current_thread().name)
            if any(u.email == user.email or u.id == user.id for u in self.users.values()):
                raise UserAlreadyExists()
            self.users[user.id] = user
            return user

    def get(self, user_id: str) -> User | None:
        return self.users.get(user_id)

    def get_by_email(self, email: str) -> User | None:
        return next((u for u in self.users.values() if u.email == email), None)

    def update(
        self,
        user_id: str,
        *,
        verified: bool | None = None,
        labels: tuple[str, ...] | None = None,
        teams: dict[str, tuple[str, ...]] | None = None,
    ) -> User | None:
        old = self.users.get(user_id)
        if old is None:
            return None
        new = dataclasses.replace(
            old,
            verified=old.verified if verified is None else verified,
            labels=old.labels if labels is None else labels,
            teams=old.teams if teams is None else teams,
        )
        self.users[user_id] = new
        return new

    def set_password(self, user_id: str, password_hash: str, history: tuple[str, ...]) -> None:
        old = self.users.get(user_id)
        if old is not None:
            self.users[user_id] = dataclasses.replace(
                old, password_hash=password_hash, password_history=history
            )

    def delete(self, user_id: str) -> bool:
        return self.users.pop(user_id, None) is not None


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
    # A sync store on async code: its blocking calls ran off the event loop's thread.
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
    # Beside it, Bastion's copy of the roles that requests read (made at sign-up and log-in).
    assert raw.hgetall(keys.user("bastion", user.id)) == {
        b"disabled": b"1",
        b"verified": b"0",
        b"labels": b"",
        b"teams": b"{}",
    }
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
    user = store.create(User("u1", "ada@example.com", password_hash="h"))
    bastion.sync.users.delete(user.id)
    store.create(User(user.id, "eve@example.com", password_hash="h"))
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
