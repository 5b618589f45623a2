"""The default user store, on Redis: records, unique emails, and the copy of roles requests read.

A user's hash shares the ``{user id}`` hash tag with their sessions, so the middleware reads the
fields that make roles (verified, labels, teams) in the same round trip as the session. Emails
are claimed through a key named by the email's digest, so sign-up is unique under concurrency;
a claim expires unless its sign-up completes (:class:`UserCore`).

The same hash carries Bastion's own marks, whatever store keeps the records: ``disabled``, and
``deleted``, the tombstone a deleted id keeps for good (see :mod:`bastion.sessions.scripts`);
with a store of the app's own it carries the copy of the role fields too
(:mod:`bastion.users.external`). :class:`UserCore` is the steps Bastion runs;
:class:`RedisUserStore` and :class:`SyncRedisUserStore` are the same store as a
:class:`~bastion.users.UserStore` and a :class:`~bastion.users.SyncUserStore`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import time

from bastion.emails import normalize_email
from bastion.errors import UserAlreadyExists
from bastion.fronts import AsyncFront, SyncFront, step
from bastion.identity import is_valid_id, user_roles
from bastion.redisio import Call, Script, Steps
from bastion.sessions import keys
from bastion.users.record import User, new_id

_LABEL = re.compile(r"[A-Za-z0-9]{1,36}")


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else value


@functools.lru_cache(maxsize=4096)
def roles_from_fields(
    user_id: str, verified: bytes | None, labels: bytes | None, teams: bytes | None
) -> frozenset[str]:
    """Roles from the raw ``verified``/``labels``/``teams`` fields (cached: they rarely change)."""
    team_map: dict[str, list[str]] = {}
    if teams:
        try:
            loaded = json.loads(teams)
            if isinstance(loaded, dict):
                team_map = {str(k): [str(r) for r in v] for k, v in loaded.items()}
        except (ValueError, TypeError):
            team_map = {}
    return user_roles(
        user_id,
        verified=verified == b"1",
        teams=team_map,
        labels=_text(labels).split(),
    )


def role_fields(
    verified: bool | None = None,
    labels: tuple[str, ...] | None = None,
    teams: dict[str, tuple[str, ...]] | None = None,
) -> dict[str, str]:
    """The Redis fields of the roles given (None: left out); ``ValueError`` for a bad label/team."""
    mapping: dict[str, str] = {}
    if verified is not None:
        mapping["verified"] = "1" if verified else "0"
    if labels is not None:
        for label in labels:
            if not _LABEL.fullmatch(label):
                raise ValueError(f"invalid label {label!r}: 1-36 letters and digits")
        mapping["labels"] = " ".join(labels)
    if teams is not None:
        for team, team_roles in teams.items():
            if not is_valid_id(team) or not all(is_valid_id(r) for r in team_roles):
                raise ValueError(f"invalid team {team!r} or team roles {team_roles!r}")
        mapping["teams"] = json.dumps({k: list(v) for k, v in teams.items()})
    return mapping


def copy_roles(prefix: str, user_id: str, mapping: dict[str, str]) -> Steps[None]:
    """Write role fields to the user's hash and to every live session of theirs (one script).

    A deleted user's tombstone is left as it is.
    """
    if mapping:
        pairs = [item for pair in mapping.items() for item in pair]
        yield Script(
            "roles",
            [
                keys.user(prefix, user_id),
                keys.sessions(prefix, user_id),
                keys.old_user_sessions(prefix, user_id),
            ],
            pairs,
        )


def make_user(
    email: str,
    password_hash: str,
    *,
    name: str = "",
    phone: str = "",
    history: tuple[str, ...] = (),
    user_id: str | None = None,
) -> User:
    """A new user's record: a fresh id unless given, the email normalised, created now."""
    user_id = user_id or new_id()
    if not is_valid_id(user_id):
        raise ValueError(f"invalid user id {user_id!r}")
    return User(
        user_id,
        normalize_email(email),
        name,
        phone,
        password_hash=password_hash,
        password_history=history,
        created_ms=int(time.time() * 1000),
    )


# KEYS: an email claim. ARGV: the user id, the claim's lifetime in ms. Claims a free email for a
# sign-up under way; the claim expires unless the sign-up completes (see UserCore.create).
# Returns 1 if claimed.
_CLAIM_EMAIL = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS: an email claim. ARGV: the user id whose record is now written. Makes the claim
# permanent; one that expired meanwhile is made again if the email is still free. Returns 0 if
# another sign-up has the email now (this one was too slow), else 1.
_CONFIRM_EMAIL = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('PERSIST', KEYS[1])
  return 1
end
if not owner then
  redis.call('SET', KEYS[1], ARGV[1])
  return 1
end
return 0
"""

# KEYS: the user's account hash. ARGV: field/value pairs. Writes a new user unless the id has a
# hash already (a live user, or a deleted one's tombstone): ids never come back. Returns 1 / 0.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: the user's account hash. ARGV: password hash, history (JSON). Writes them to a live
# record only, so a log-in's rehash or a password change racing a delete cannot put a password
# hash back onto the tombstone. Returns 1 if written.
_REPLACE_HASHES = """
if redis.call('HEXISTS', KEYS[1], 'email') == 0 or redis.call('HEXISTS', KEYS[1], 'deleted') == 1
then return 0 end
redis.call('HSET', KEYS[1], 'hash', ARGV[1], 'history', ARGV[2])
return 1
"""

# KEYS: the user's account hash. Drops every field but the tombstone (left if missing).
# Returns the email the record had (nil if none), so its claim can be freed.
_FORGET = """
local email = redis.call('HGET', KEYS[1], 'email')
local tomb = redis.call('HGET', KEYS[1], 'deleted')
if not tomb then
  local t = redis.call('TIME')
  tomb = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'deleted', tomb)
return email
"""

# KEYS: an email claim. ARGV: the user id it must still name. Compare-and-delete: a claim that
# another user made meanwhile is left alone. Returns 1 if freed.
_RELEASE_EMAIL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: an email claim. ARGV: the deleted user id it names, the new user id, the new claim's
# lifetime in ms. Compare-and-set, for a claim a delete left behind when it was cut short; the
# new claim expires like any other until the sign-up completes. Returns 1 if taken over.
_TAKE_OVER_EMAIL = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
"""

SCRIPTS = {
    "email_claim": _CLAIM_EMAIL,
    "email_confirm": _CONFIRM_EMAIL,
    "user_create": _CREATE,
    "user_set_password": _REPLACE_HASHES,
    "user_forget": _FORGET,
    "email_release": _RELEASE_EMAIL,
    "email_take_over": _TAKE_OVER_EMAIL,
}


CLAIM_TTL_MS = 30_000
"""How long a sign-up's email claim lives unless the sign-up completes (it then stays)."""


class UserCore:
    """The Redis user store as sans-IO steps (the default :class:`UserStore`).

    Sign-up claims the email, writes the user, then makes the claim permanent. The claim and the
    record are in different Redis Cluster slots, so no script can do both: the claim is made to
    expire (``claim_ttl_ms``), so a sign-up that fails between the steps frees its email by
    itself instead of locking it out for good.
    """

    def __init__(self, key_prefix: str, *, claim_ttl_ms: int = CLAIM_TTL_MS) -> None:
        if claim_ttl_ms < 1:
            raise ValueError(f"claim_ttl_ms must be positive, not {claim_ttl_ms}")
        self._prefix = key_prefix
        self.claim_ttl_ms = claim_ttl_ms
        """Lifetime of an email claim until its sign-up completes (ms)."""

    @staticmethod
    def new_id() -> str:
        """A fresh random user id."""
        return new_id()

    def user_key(self, user_id: str) -> str:
        """The hash of one user (same hash tag as their sessions)."""
        return keys.user(self._prefix, user_id)

    def _email_key(self, email: str) -> str:
        # surrogatepass: a log-in may send a lone surrogate (sign-up refuses one); it must find
        # no account, not fail to encode.
        data = normalize_email(email).encode("utf-8", "surrogatepass")
        digest = hashlib.sha256(data).hexdigest()[:40]
        return f"{self._prefix}:email:{{{digest}}}"

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
        """Store a new user; ``UserAlreadyExists`` if the email or the id is taken.

        An id is taken for good once used, deleted ids included (their tombstone stays).
        """
        user = make_user(
            email, password_hash, name=name, phone=phone, history=history, user_id=user_id
        )
        return (yield from self.add(user))

    def add(self, user: User) -> Steps[User]:
        """Store a new user and return it; ``UserAlreadyExists`` if the email or the id is taken.

        An id is taken for good once used, deleted ids included (their tombstone stays).
        """
        user_id = user.id
        if not is_valid_id(user_id):
            raise ValueError(f"invalid user id {user_id!r}")
        email_key = self._email_key(user.email)
        claimed = yield Script("email_claim", [email_key], [user_id, self.claim_ttl_ms])
        if not claimed and not (yield from self._take_over_stale(email_key, user_id)):
            raise UserAlreadyExists()
        pairs = [item for pair in self._mapping(user).items() for item in pair]
        if not (yield Script("user_create", [self.user_key(user_id)], pairs)):
            yield Script("email_release", [email_key], [user_id])
            raise UserAlreadyExists("A user with the same id already exists.")
        if not (yield Script("email_confirm", [email_key], [user_id])):
            # The claim expired before the record was written and another sign-up has the
            # email now: this record must not stay as a second account with the same email.
            yield Script("user_forget", [self.user_key(user_id)], [])
            raise UserAlreadyExists()
        # Should the process stop just before the confirm, the claim expires and the record stays
        # without an email pointing at it: an orphan no log-in reaches, rather than an email no
        # one can ever sign up with again.
        return user

    def _take_over_stale(self, email_key: str, user_id: str) -> Steps[bool]:
        """Claim an email whose claim names a deleted user (a delete cut short before its end)."""
        owner = yield Call("get", (email_key,))
        if owner is None:  # freed meanwhile (or a claim that expired)
            return bool((yield Script("email_claim", [email_key], [user_id, self.claim_ttl_ms])))
        owner_id = _text(owner)
        # Only a tombstone proves the claim stale: a claim whose user has no hash yet may be a
        # sign-up still under way (if it failed, its claim expires by itself).
        if not is_valid_id(owner_id) or not (
            yield Call("hexists", (self.user_key(owner_id), "deleted"))
        ):
            return False
        return bool(
            (yield Script("email_take_over", [email_key], [owner_id, user_id, self.claim_ttl_ms]))
        )

    @staticmethod
    def _mapping(user: User) -> dict[str, str]:
        return {
            "email": user.email,
            "name": user.name,
            "phone": user.phone,
            "verified": "1" if user.verified else "0",
            "labels": " ".join(user.labels),
            "teams": json.dumps({k: list(v) for k, v in (user.teams or {}).items()}),
            "hash": user.password_hash,
            "history": json.dumps(list(user.password_history)),
            "created": str(user.created_ms),
        }

    def get(self, user_id: str) -> Steps[User | None]:
        """The user with this id, or None."""
        if not is_valid_id(user_id):
            return None
        fields = yield Call("hgetall", (self.user_key(user_id),))
        return self._user(user_id, fields)

    def get_by_email(self, email: str) -> Steps[User | None]:
        """The user with this email, or None."""
        user_id = yield Call("get", (self._email_key(email),))
        if user_id is None:
            return None
        return (yield from self.get(_text(user_id)))

    def set_password(
        self, user_id: str, password_hash: str, history: tuple[str, ...]
    ) -> Steps[None]:
        """Replace the password hash and the history of previous hashes (of a live user only)."""
        yield Script(
            "user_set_password",
            [self.user_key(user_id)],
            [password_hash, json.dumps(list(history))],
        )

    def delete(self, user_id: str) -> Steps[bool]:
        """Drop the record (hashes, history) but its tombstone, and free the email if still ours."""
        if not is_valid_id(user_id):
            return False
        email = yield Script("user_forget", [self.user_key(user_id)], [])
        if email is None:
            return False
        yield Script("email_release", [self._email_key(_text(email))], [user_id])
        return True

    def update(
        self,
        user_id: str,
        *,
        verified: bool | None = None,
        labels: tuple[str, ...] | None = None,
        teams: dict[str, tuple[str, ...]] | None = None,
    ) -> Steps[None]:
        """Change the fields that make a user's roles (they apply from the next request).

        A deleted id's tombstone is left as it is.
        """
        mapping = role_fields(verified, labels, teams)
        # The account and every live session of the user change together (one script).
        yield from copy_roles(self._prefix, user_id, mapping)

    def update_user(
        self,
        user_id: str,
        *,
        verified: bool | None = None,
        labels: tuple[str, ...] | None = None,
        teams: dict[str, tuple[str, ...]] | None = None,
    ) -> Steps[User | None]:
        """Change the fields given (None leaves one as it is); the user after, or None if none."""
        if (yield from self.get(user_id)) is None:
            return None
        yield from self.update(user_id, verified=verified, labels=labels, teams=teams)
        return (yield from self.get(user_id))

    def mirror(self, user: User) -> Steps[None]:
        """Nothing to copy: requests read the roles from the record itself."""
        yield from ()

    def _user(self, user_id: str, fields: dict[bytes, bytes]) -> User | None:
        if not fields:
            return None
        f = {_text(k): _text(v) for k, v in fields.items()}
        if "deleted" in f:  # a tombstone, or a record a delete has yet to drop
            return None
        try:
            teams = {k: tuple(v) for k, v in json.loads(f.get("teams") or "{}").items()}
            history = tuple(json.loads(f.get("history") or "[]"))
        except (ValueError, TypeError, AttributeError):
            teams, history = {}, ()
        return User(
            user_id,
            f.get("email", ""),
            f.get("name", ""),
            f.get("phone", ""),
            f.get("verified") == "1",
            tuple(f.get("labels", "").split()),
            teams or None,  # no teams is None, as in a new User and in every store
            f.get("hash", ""),
            history,
            int(f.get("created") or 0),
            "disabled" in f,
        )


class _StoreSteps:
    """The Redis store's steps under the names of the UserStore protocol."""

    get = step(UserCore.get)
    get_by_email = step(UserCore.get_by_email)
    create = step(UserCore.add)
    update = step(UserCore.update_user)
    set_password = step(UserCore.set_password)
    delete = step(UserCore.delete)


class RedisUserStore(_StoreSteps, AsyncFront[UserCore]):
    """The default store as a :class:`~bastion.users.UserStore` (the contract's reference)."""


class SyncRedisUserStore(_StoreSteps, SyncFront[UserCore]):
    """The default store as a :class:`~bastion.users.SyncUserStore`."""
