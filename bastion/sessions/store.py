"""The session store: one sans-IO core, behind an async front and its sync twin.

Each operation of :class:`SessionCore` is a generator that yields Redis operations and receives
their results, so the logic exists once; :class:`AsyncSessionStore` (redis.asyncio) and
:class:`SyncSessionStore` (redis) are derived from it (:mod:`bastion.fronts`) and only carry the
operations to Redis and back.
"""

from __future__ import annotations

import builtins
import hmac
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from bastion.cleantext import clean_text
from bastion.clientip import normal_ip
from bastion.errors import InvalidCredentials, UserBlocked
from bastion.fronts import AsyncFront, OldStoreNames, SyncFront, step
from bastion.identity import is_valid_id
from bastion.redisio import Batch, Call, Scan, Script, Steps, scan_done
from bastion.sessions import agents, keys
from bastion.sessions.token import (
    format_token,
    hash_secret,
    is_session_id,
    new_secret,
    new_session_id,
    parse_token,
)
from bastion.settings import Settings
from bastion.telemetry import telemetry

if TYPE_CHECKING:  # audit reads session ids through this package: no import at run time
    from bastion.audit import AuditLog

logger = logging.getLogger("bastion.sessions")


# Read on every request, after the session's own two fields: the user's role fields.
_ROLE_FIELDS = ("r:v", "r:lb", "r:tm")
MAX_USER_AGENT = 256
"""User agents are cut to this many characters (a browser's is about 110-150)."""
MAX_IP = 64
TOUCH_INTERVAL_MS = 60_000
# Keys per SCAN call when ending everyone's sessions: large enough to keep round trips few,
# small enough that each call (and each pipelined batch of revocations) stays short for Redis.
SCAN_BATCH = 1000
REVOKE_BATCH = 100
"""Revoke-all scripts sent together by ``revoke_everyone`` (on a cluster, run side by side)."""


def _ms_to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """What is known of one session; never its secret."""

    id: str
    user_id: str
    created_ms: int
    expires_ms: int
    last_seen_ms: int
    ip: str
    user_agent: str

    @property
    def created(self) -> datetime:
        """When the session was created (UTC)."""
        return _ms_to_datetime(self.created_ms)

    @property
    def expires(self) -> datetime:
        """When the session ends at the latest (UTC)."""
        return _ms_to_datetime(self.expires_ms)

    @property
    def last_seen(self) -> datetime:
        """Last recorded activity (UTC; recorded at most once a minute)."""
        return _ms_to_datetime(self.last_seen_ms)

    def to_dict(self, *, current_id: str | None = None) -> dict[str, Any]:
        """JSON-ready view, with ``current`` marking the caller's own session."""
        return {
            "id": self.id,
            "userId": self.user_id,
            "created": self.created.isoformat(),
            "expires": self.expires.isoformat(),
            "lastSeen": self.last_seen.isoformat(),
            "ip": self.ip,
            "userAgent": self.user_agent,
            "current": self.id == current_id,
        }


@dataclass(frozen=True, slots=True)
class NewSession:
    """A session just created: the token (shown once), its record and the sessions it evicted."""

    token: str
    session: SessionInfo
    evicted: tuple[str, ...]
    order: int
    """Creation rank among the user's sessions: strictly increasing in the order Redis ran them."""


class ActiveSession(NamedTuple):
    """The result of a successful token check: whose session it is, and its role fields."""

    user_id: str
    session_id: str
    verified: bytes | None = None
    labels: bytes | None = None
    teams: bytes | None = None


def _none() -> Steps[None]:
    """A step that needs no Redis and finds nothing."""
    return None
    yield  # a generator, for the runners


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class SessionCore:
    """Session operations as sans-IO steps; the fronts run them against Redis."""

    def __init__(self, settings: Settings, audit: AuditLog | None = None) -> None:
        self.settings = settings
        self.audit = audit
        self._prefix = settings.key_prefix
        self._length_ms = settings.session_length * 1000
        self._idle_ms = (settings.session_idle_timeout or 0) * 1000
        # Last-seen writes are throttled; with an idle timeout, often enough to keep its precision.
        self._touch_ms = (
            min(TOUCH_INTERVAL_MS, self._idle_ms // 10) if self._idle_ms else TOUCH_INTERVAL_MS
        )

    def create(
        self, user_id: str, *, ip: str = "", user_agent: str = "", limit: int | None = None
    ) -> Steps[NewSession]:
        """Create a session, evicting the user's oldest ones past the cap, in one atomic script.

        Raises ``UserBlocked`` for a disabled user and ``InvalidCredentials`` for a deleted one
        (the script checks their marks, so no session outlives a disable or delete).
        """
        if not is_valid_id(user_id):
            raise ValueError(
                f"invalid user id {user_id!r}: 1-128 characters of letters, digits and . _ @ + -,"
                " starting with a letter or digit"
            )
        cap = self.settings.session_limit if limit is None else limit
        if not 1 <= cap <= 100:
            raise ValueError(f"session limit {cap} outside 1..100")
        session_id, secret = new_session_id(), new_secret()
        # Shown to the user and to admins later: only an address, only printable text.
        ip, user_agent = normal_ip(ip)[:MAX_IP], clean_text(user_agent, MAX_USER_AGENT)
        yield from self._adopt(user_id)
        reply = yield Script(
            "create",
            [keys.sessions(self._prefix, user_id), keys.user(self._prefix, user_id)],
            [
                session_id,
                hash_secret(secret),
                self._length_ms,
                self._idle_ms,
                cap,
                ip,
                agents.compact(user_agent),
            ],
        )
        if len(reply) == 1:  # the user's account carries a mark: nothing was written
            if _text(reply[0]) == "disabled":
                raise UserBlocked()
            raise InvalidCredentials()  # deleted: answered like an unknown user
        score, created, evicted = reply
        created = int(created)
        info = SessionInfo(
            session_id, user_id, created, created + self._length_ms, created, ip, user_agent
        )
        evicted_ids = tuple(_text(e) for e in evicted)
        if evicted_ids:
            telemetry.evicted(len(evicted_ids))
            logger.info(
                "session cap reached: user=%s new=%s evicted=%s",
                user_id,
                session_id,
                ",".join(evicted_ids),
            )
        return NewSession(format_token(user_id, session_id, secret), info, evicted_ids, int(score))

    # These two hand back the look-up's own step rather than wrapping it in one more generator:
    # every request runs one of them, and each level a Redis reply passes through costs time.

    def authenticate(self, token: str) -> Steps[ActiveSession | None]:
        """The session a token belongs to, or None (one look-up; constant-time secret check)."""
        parsed = parse_token(token)
        if parsed is None:
            return _none()
        return self._session(*parsed)

    def alive(self, user_id: str, session_id: str) -> Steps[ActiveSession | None]:
        """The session if it exists and has not expired, else None (no secret: how JWTs check)."""
        if not is_valid_id(user_id) or not is_session_id(session_id):
            return _none()
        return self._session(user_id, session_id, None)

    def alive_checked(self, user_id: str, session_id: str) -> Steps[ActiveSession | None]:
        """:meth:`alive` for ids already checked: a verified JWT's (its check refuses others)."""
        return self._session(user_id, session_id, None)

    def _session(
        self, user_id: str, session_id: str, secret: str | None
    ) -> Steps[ActiveSession | None]:
        """Read the session hash; the session if the secret (when given) matches and it lives."""
        key = keys.sessions(self._prefix, user_id)
        fields = yield Call("hmget", (key, session_id, f"{session_id}:h", *_ROLE_FIELDS))
        if fields[0] is None:
            # Not in the hash: maybe a session of the old layout, moved in once it is met.
            if not (yield from self._adopt_one(user_id, session_id)):
                return None
            fields = yield Call("hmget", (key, session_id, f"{session_id}:h", *_ROLE_FIELDS))
        if secret is not None and (
            fields[1] is None or not hmac.compare_digest(fields[1], hash_secret(secret))
        ):
            return None
        active, stale = self._live(user_id, session_id, fields)
        if stale and active is not None:
            active = yield from self._touch(key, session_id, active)
        return active

    def _adopt_one(self, user_id: str, session_id: str) -> Steps[bool]:
        """Move the user's old-layout sessions into the hash if ``session_id`` is one of them."""
        old = yield Call("exists", (keys.old_session(self._prefix, user_id, session_id),))
        if not old:
            return False
        return bool((yield from self._adopt(user_id)))

    def _adopt_many(self, user_ids: builtins.list[str]) -> Steps[None]:
        """:meth:`_adopt` for many users, two round trips in all."""
        sets = [keys.old_user_sessions(self._prefix, u) for u in user_ids]
        found = yield Batch([Call("zrange", (s, 0, -1)) for s in sets])
        adopt: builtins.list[Call | Script] = [
            self._adopt_script(u, s, [_text(i) for i in ids])
            for u, s, ids in zip(user_ids, sets, found, strict=True)
            if ids
        ]
        if adopt:
            yield Batch(adopt)

    def _adopt_script(self, user_id: str, old_set: str, ids: builtins.list[str]) -> Script:
        return Script(
            "adopt",
            [
                keys.sessions(self._prefix, user_id),
                old_set,
                *(keys.old_session(self._prefix, user_id, i) for i in ids),
            ],
            ids,
        )

    def _adopt(self, user_id: str) -> Steps[int]:
        """Move the user's sessions of the old layout (one hash each) into their session hash.

        Two steps, so that the script declares every key it touches: the old sorted set names
        the old hashes. Returns how many live sessions were moved (usually none: one read).
        """
        old_set = keys.old_user_sessions(self._prefix, user_id)
        ids = [_text(i) for i in (yield Call("zrange", (old_set, 0, -1)))]
        if not ids:
            return 0
        moved = yield self._adopt_script(user_id, old_set, ids)
        return int(moved)

    def _live(
        self, user_id: str, session_id: str, fields: list[bytes | None]
    ) -> tuple[ActiveSession | None, bool]:
        """The session of these hash fields unless expired, and whether last seen is stale."""
        times, digest, verified, labels, teams = fields
        if digest is None or times is None:
            return None, False
        try:
            _order, expires, last_seen = times.split()
        except ValueError:
            return None, False
        now = int(time.time() * 1000)
        if now >= int(expires):
            return None, False
        idle_for = now - int(last_seen)
        if self._idle_ms and idle_for >= self._idle_ms:
            return None, False
        return ActiveSession(
            user_id, session_id, verified, labels, teams
        ), idle_for >= self._touch_ms

    def _touch(
        self, key: str, session_id: str, active: ActiveSession
    ) -> Steps[ActiveSession | None]:
        """Record last seen (at most once a minute: a second round trip), unless revoked since."""
        alive = yield Script("touch", [key], [session_id, self._idle_ms])
        return active if alive else None

    def list(self, user_id: str) -> Steps[list[SessionInfo]]:
        """The user's live sessions, oldest first."""
        if not is_valid_id(user_id):
            return []
        yield from self._adopt(user_id)
        flat = yield Script("list", [keys.sessions(self._prefix, user_id)], [self._idle_ms])
        sessions = []
        for i in range(0, len(flat), 6):
            sid, created, expires, last_seen, ip, ua = flat[i : i + 6]
            sessions.append(
                SessionInfo(
                    _text(sid),
                    user_id,
                    int(created),
                    int(expires),
                    int(last_seen),
                    # Sessions stored before values were cleaned on the way in are cleaned here.
                    normal_ip(_text(ip)),
                    clean_text(agents.expand(_text(ua)), MAX_USER_AGENT),
                )
            )
        return sessions

    def created_ms(self, user_id: str, session_id: str) -> Steps[int | None]:
        """When a session was created (ms since the epoch), None if it does not exist."""
        if not is_valid_id(user_id) or not is_session_id(session_id):
            return None
        times = yield Call("hget", (keys.sessions(self._prefix, user_id), session_id))
        return None if times is None else int(times.split()[0]) // 1000

    def revoke(self, user_id: str, session_id: str) -> Steps[bool]:
        """Delete one session; True if it was alive."""
        if not is_valid_id(user_id) or not is_session_id(session_id):
            return False
        removed = yield Script(
            "revoke",
            [
                keys.sessions(self._prefix, user_id),
                keys.old_user_sessions(self._prefix, user_id),
                keys.old_session(self._prefix, user_id, session_id),
            ],
            [session_id],
        )
        return bool(removed)

    def revoke_all(self, user_id: str, *, keep: str | None = None) -> Steps[builtins.list[str]]:
        """Delete every session of the user (but ``keep``, if given); returns the ids removed."""
        if not is_valid_id(user_id):
            return []
        yield from self._adopt(user_id)
        removed = yield self._revoke_all_script(user_id, keep or "")
        return [_text(r) for r in removed]

    # -- the marks on a user's account that end and refuse sessions (see scripts.py) --------

    def block(self, user_id: str) -> Steps[builtins.list[str] | None]:
        """Mark the user disabled and end their sessions in one script; None if deleted."""
        yield from self._adopt(user_id)
        removed = yield Script("block", *self._marking(user_id))
        return None if removed is None else [_text(r) for r in removed]

    def unblock(self, user_id: str) -> Steps[bool]:
        """Lift the disabled mark (new sessions are allowed again); True if it was set."""
        lifted = yield Call("hdel", (keys.user(self._prefix, user_id), "disabled"))
        return bool(lifted)

    def retire(self, user_id: str) -> Steps[builtins.list[str] | None]:
        """Tombstone the id for good and end its sessions in one script; None if already."""
        yield from self._adopt(user_id)
        removed = yield Script("retire", *self._marking(user_id))
        return None if removed is None else [_text(r) for r in removed]

    def is_retired(self, user_id: str) -> Steps[bool]:
        """Whether the id carries the deleted tombstone."""
        found = yield Call("hexists", (keys.user(self._prefix, user_id), "deleted"))
        return bool(found)

    def _marking(self, user_id: str) -> tuple[builtins.list[str], builtins.list[str]]:
        return [keys.user(self._prefix, user_id), keys.sessions(self._prefix, user_id)], []

    def revoke_everyone(self, *, batch: int = SCAN_BATCH) -> Steps[int]:
        """End every session of every user (incident response); returns how many ended.

        One SCAN pass over the whole keyspace (never KEYS), ``batch`` keys a call, on every
        primary of a Redis Cluster, for the users' session hashes; each batch's users are
        revoked by the atomic revoke-all script, sent together. A session created while the walk
        runs may survive it, and so may one whose slot migrates during it; every step can be
        repeated, so running it again (after a 503 too) ends what is left.
        """
        if batch < 1:
            raise ValueError(f"batch {batch} must be at least 1")
        users = ended = 0
        # The old layout's sorted sets first: their sessions are moved into the hashes the
        # second walk ends.
        for layout in (keys.old_user_sessions_around, keys.sessions_around):
            head, tail = layout(self._prefix)
            pattern = f"{_glob_escape(head)}*{_glob_escape(tail)}"
            cursor: Any = 0
            while True:
                cursor, found = yield Scan(cursor, pattern, batch)
                user_ids = []
                for raw in found:
                    name = _text(raw)
                    user_id = name[len(head) : len(name) - len(tail)]
                    if is_valid_id(user_id):  # the * also matches names no user id makes
                        user_ids.append(user_id)
                if user_ids and layout is keys.old_user_sessions_around:
                    yield from self._adopt_many(user_ids)
                elif user_ids:
                    ended += yield from self._revoke_users(user_ids)
                    users += len(user_ids)
                if scan_done(cursor):
                    break
        logger.warning("ended every session: %d session(s) of %d user(s)", ended, users)
        if self.audit is not None:
            self.audit.record("session_revoke", None, details={"scope": "everyone", "count": ended})
        return ended

    def _revoke_users(self, user_ids: builtins.list[str]) -> Steps[int]:
        """End every session of these users, REVOKE_BATCH scripts a round; how many ended."""
        ended = 0
        # A cluster runs a batch's scripts side by side, each on a connection of its own.
        for start in range(0, len(user_ids), REVOKE_BATCH):
            chunk = user_ids[start : start + REVOKE_BATCH]
            removed = yield Batch([self._revoke_all_script(u, "") for u in chunk])
            ended += sum(len(r) for r in removed)
        return ended

    def _revoke_all_script(self, user_id: str, keep: str) -> Script:
        return Script("revoke_all", [keys.sessions(self._prefix, user_id)], [keep])


class _SessionSteps:
    """The session operations users call, on ``bastion.sessions`` and ``bastion.sync.sessions``."""

    create = step(SessionCore.create)
    authenticate = step(SessionCore.authenticate)
    alive = step(SessionCore.alive)
    list = step(SessionCore.list)
    revoke = step(SessionCore.revoke)
    revoke_all = step(SessionCore.revoke_all)
    revoke_everyone = step(SessionCore.revoke_everyone)


class AsyncSessionStore(_SessionSteps, OldStoreNames, AsyncFront[SessionCore]):
    """``bastion.sessions``: the session store for asyncio code, on ``redis.asyncio``."""


class SyncSessionStore(_SessionSteps, OldStoreNames, SyncFront[SessionCore]):
    """``bastion.sync.sessions``: the same methods for threaded code (WSGI, CLI, scripts)."""
