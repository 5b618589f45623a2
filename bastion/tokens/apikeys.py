"""Scoped API keys: ``bst_<key id>_<secret>``, shown once, stored as a SHA-256 digest in Redis.

Each key's hash is tagged by its id (``{<key id>}``), so a cluster spreads keys and their
requests over its slots; the index of ids (one set) is written beside it, not in its script:
an id the index names without a hash is dropped when listed. An API key is not a user: it has
scopes and no session, and resource permissions do not apply to it (the route's scope does).
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bastion.errors import APIKeyExpired, APIKeyInvalid
from bastion.fronts import AsyncFront, OldStoreNames, SyncFront, step
from bastion.identity import RESERVED_SCOPES
from bastion.redisio import Batch, Call, Script, Steps
from bastion.settings import Settings

PREFIX = "bst"
MAX_KEY_LENGTH = 128
LAST_USED_INTERVAL_MS = 60_000
# Expired keys are kept a while so their callers hear "expired" rather than "invalid".
KEEP_EXPIRED_MS = 30 * 24 * 3600 * 1000
_KEY = re.compile(r"bst_([0-9a-f]{16})_([A-Za-z0-9_-]{43})")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
SCOPE = re.compile(r"[a-z][a-z0-9_-]{0,31}(?:\.[a-z][a-z0-9_-]{0,31}){0,3}")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
SCRIPTS = {
    # KEYS: key hash.
    # ARGV: digest, name, scopes, expires ms (0 = never), when to forget the key (0 = never).
    "key_create": _NOW
    + """
redis.call('HSET', KEYS[1], 'h', ARGV[1], 'n', ARGV[2], 's', ARGV[3], 'c', now,
           'x', ARGV[4], 'u', 0)
if ARGV[5] ~= '0' then redis.call('PEXPIREAT', KEYS[1], ARGV[5]) end
return now
""",
    # KEYS: key hash. Records use without recreating a key revoked meanwhile.
    "key_touch": _NOW
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'u', now) end
return now
""",
}


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _time(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat() if ms else None


@dataclass(frozen=True, slots=True)
class APIKeyInfo:
    """What is known of an API key; never its secret."""

    id: str
    name: str
    scopes: frozenset[str]
    created_ms: int
    expires_ms: int | None
    last_used_ms: int | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "id": self.id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "created": _time(self.created_ms),
            "expires": _time(self.expires_ms),
            "lastUsed": _time(self.last_used_ms),
        }


@dataclass(frozen=True, slots=True)
class NewAPIKey:
    """A key just created: the full key string (shown once) and its record."""

    key: str
    info: APIKeyInfo


def validate_scopes(scopes: list[str] | tuple[str, ...] | frozenset[str]) -> frozenset[str]:
    """The scopes as a set, or ValueError naming the first malformed one."""
    if not 1 <= len(scopes) <= 100:
        raise ValueError("an API key needs 1..100 scopes")
    for scope in scopes:
        if not isinstance(scope, str) or not SCOPE.fullmatch(scope):
            raise ValueError(
                f"invalid scope {scope!r}: lower-case words separated by dots, like documents.read"
            )
        if scope in RESERVED_SCOPES:
            raise ValueError(
                f"scope {scope!r} is reserved: Bastion sets {', '.join(sorted(RESERVED_SCOPES))}"
                " in request.auth.scopes itself; name the permission, like documents.read"
            )
    return frozenset(scopes)


class APIKeyCore:
    """API key operations as sans-IO steps."""

    def __init__(self, settings: Settings) -> None:
        self._prefix = f"{settings.key_prefix}:apikey"

    def _key(self, key_id: str) -> str:
        return f"{self._prefix}:{{{key_id}}}"

    @property
    def _index(self) -> str:
        return f"{self._prefix}s:index"

    def create(
        self, name: str, scopes: list[str] | tuple[str, ...], *, expires_in: int | None = None
    ) -> Steps[NewAPIKey]:
        """Create a key expiring ``expires_in`` seconds from now, or never.

        The returned ``key`` is the only time its secret is seen: only its digest is stored.
        """
        name = name.strip()
        if not 1 <= len(name) <= 128 or not name.isprintable():
            raise ValueError("an API key name is 1..128 printable characters")
        checked = validate_scopes(scopes)
        if expires_in is not None and expires_in < 60:
            raise ValueError("an API key expiry must be at least 60 seconds away")
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        expires_ms = int((time.time() + expires_in) * 1000) if expires_in else 0
        # The index first: a key the index names without a hash is dropped when listed, while a
        # hash no index named would be a key nobody can list or revoke by listing.
        yield Call("sadd", (self._index, key_id))
        created = yield Script(
            "key_create",
            [self._key(key_id)],
            [
                _digest(secret),
                name,
                " ".join(sorted(checked)),
                expires_ms,
                expires_ms + KEEP_EXPIRED_MS if expires_ms else 0,
            ],
        )
        info = APIKeyInfo(key_id, name, checked, int(created), expires_ms or None, None)
        return NewAPIKey(f"{PREFIX}_{key_id}_{secret}", info)

    def authenticate(self, key: str) -> Steps[APIKeyInfo]:
        """The key's record; raises ``APIKeyInvalid`` or ``APIKeyExpired``."""
        match = _KEY.fullmatch(key) if len(key) <= MAX_KEY_LENGTH else None
        if match is None:
            raise APIKeyInvalid("The API key is malformed: expected bst_<id>_<secret>.")
        key_id, secret = match[1], match[2]
        digest, name, scopes, created, expires, used = yield Call(
            "hmget", (self._key(key_id), "h", "n", "s", "c", "x", "u")
        )
        if digest is None or not hmac.compare_digest(digest, _digest(secret)):
            raise APIKeyInvalid()
        now = int(time.time() * 1000)
        expires_ms = int(expires or 0)
        if expires_ms and now >= expires_ms:
            raise APIKeyExpired()
        used_ms = int(used or 0)
        if now - used_ms >= LAST_USED_INTERVAL_MS:
            used_ms = int((yield Script("key_touch", [self._key(key_id)], [])))
        return APIKeyInfo(
            key_id,
            _text(name or b""),
            frozenset(_text(scopes or b"").split()),
            int(created or 0),
            expires_ms or None,
            used_ms or None,
        )

    def list(self) -> Steps[builtins.list[APIKeyInfo]]:
        """Every key, oldest first, without secrets."""
        ids = sorted(_text(i) for i in (yield Call("smembers", (self._index,))))
        rows = (
            (yield Batch([Call("hmget", (self._key(i), "n", "s", "c", "x", "u")) for i in ids]))
            if ids
            else []
        )
        gone = [i for i, row in zip(ids, rows, strict=True) if row[0] is None]
        if gone:
            yield Call("srem", (self._index, *gone))
        found = []
        for key_id, row in zip(ids, rows, strict=True):
            if row[0] is None:
                continue
            name, scopes, created, expires, used = (_text(v or b"") for v in row)
            found.append(
                APIKeyInfo(
                    key_id,
                    name,
                    frozenset(scopes.split()),
                    int(created or 0),
                    int(expires or 0) or None,
                    int(used or 0) or None,
                )
            )
        return sorted(found, key=lambda k: (k.created_ms, k.id))

    def revoke(self, key_id: str) -> Steps[bool]:
        """Delete a key by id; True if it existed."""
        if not _KEY_ID.fullmatch(key_id):
            return False
        removed = yield Call("delete", (self._key(key_id),))
        yield Call("srem", (self._index, key_id))
        return bool(removed)


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


class _APIKeySteps:
    """The API-key operations users call, on ``bastion.api_keys`` and ``bastion.sync.api_keys``."""

    create = step(APIKeyCore.create)
    authenticate = step(APIKeyCore.authenticate)
    list = step(APIKeyCore.list)
    revoke = step(APIKeyCore.revoke)


class AsyncAPIKeyStore(_APIKeySteps, OldStoreNames, AsyncFront[APIKeyCore]):
    """``bastion.api_keys``: API keys for asyncio code."""


class SyncAPIKeyStore(_APIKeySteps, OldStoreNames, SyncFront[APIKeyCore]):
    """``bastion.sync.api_keys``: the same methods for threaded code and the CLI."""
