"""Session-bound JWTs: minted from a live session, verified against a pinned key set.

Verification follows RFC 8725: the algorithm is pinned per key and never read from the token to
pick a key type; ``kid`` is looked up only in the configured key set; ``jku``/``x5u``/``jwk``/
``x5c`` headers are refused, never fetched; ``typ``, ``iss``, ``aud``, ``exp``, ``nbf``, ``iat``,
``sub``, ``sid`` and ``jti`` are all required. The token's session is checked by the caller.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jwt

from bastion.errors import ConfigError, JWTDisabled, JWTInvalid
from bastion.identity import is_valid_id
from bastion.secret import reveal
from bastion.sessions.token import is_session_id
from bastion.settings import JWTKey, Settings

logger = logging.getLogger("bastion.jwt")

TYP = "bastion+jwt"
MAX_JWT_LENGTH = 4096
VERIFIED_CACHE_SIZE = 10_000
REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "iat", "nbf", "exp", "jti"]
_REFUSED_HEADERS = ("jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256")
_EMBEDDED_KID = "embedded"
LEEWAY = 0
"""Seconds of clock skew allowed on the time claims (none: no setting asks for any); the lifetime
check allows it too, so the two stay consistent if it ever becomes a setting."""


class JWTSubject(NamedTuple):
    """Whose session a verified JWT speaks for."""

    user_id: str
    session_id: str
    jti: str


@dataclass(frozen=True, slots=True)
class _LoadedKey:
    kid: str
    alg: str
    signing: Any
    verifying: Any


def _read_pem(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(name, path, f"a readable PEM file ({exc.strerror})") from None


def _load(key: JWTKey) -> _LoadedKey:
    if key.secret is not None:
        secret = reveal(key.secret).encode()
        return _LoadedKey(key.kid, key.alg, secret, secret)
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:
        raise ConfigError(
            f"jwt_keys[{key.kid}].alg",
            key.alg,
            "HS256 unless cryptography is installed (pip install 'bastion[crypto]')",
        ) from None
    private = public = None
    try:
        if key.private_key_file:
            pem = _read_pem(key.private_key_file, f"jwt_keys[{key.kid}].private_key_file")
            private = serialization.load_pem_private_key(pem, password=None)
            public = private.public_key()
        if key.public_key_file:
            pem = _read_pem(key.public_key_file, f"jwt_keys[{key.kid}].public_key_file")
            public = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"jwt_keys[{key.kid}]", key.alg, f"a valid unencrypted PEM key ({exc})"
        ) from None
    # A key of the wrong type for its algorithm fails here, at start-up, rather than per request.
    try:
        algorithm = jwt.get_algorithm_by_name(key.alg)
        algorithm.prepare_key(public)
    except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"jwt_keys[{key.kid}]", key.alg, f"a key suitable for {key.alg} ({exc})"
        ) from None
    return _LoadedKey(key.kid, key.alg, private, public)


class JWTService:
    """Mints and verifies this deployment's JWTs."""

    def __init__(self, settings: Settings, *, embedded: bool = False) -> None:
        self.settings = settings
        keyset = settings.jwt_keyset
        if not keyset and embedded:
            # Development only, like the embedded Redis: a per-process key dies with the process.
            keyset = (JWTKey(kid=_EMBEDDED_KID, secret=secrets.token_urlsafe(48)),)
        self._keys = {k.kid: _load(k) for k in keyset}
        self._signer = self._keys[keyset[0].kid] if keyset else None
        # token -> (subject, nbf, exp). A token is immutable: once its signature and claims have
        # been checked, the same string needs only its time window checked again. The session
        # behind it is still checked on every request by the caller.
        self._verified: dict[str, tuple[JWTSubject, int, int]] = {}

    @property
    def enabled(self) -> bool:
        """Whether a key is configured (``jwt_secret`` or ``jwt_keys``)."""
        return self._signer is not None

    def mint(self, user_id: str, session_id: str) -> str:
        """A JWT for the session, valid for ``jwt_lifetime`` seconds."""
        if self._signer is None:
            raise JWTDisabled()
        now = int(time.time())
        claims = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": user_id,
            "sid": session_id,
            "iat": now,
            "nbf": now,
            "exp": now + self.settings.jwt_lifetime,
            "jti": secrets.token_urlsafe(16),
        }
        headers = {"typ": TYP, "kid": self._signer.kid}
        return jwt.encode(claims, self._signer.signing, algorithm=self._signer.alg, headers=headers)

    def verify(self, token: str) -> JWTSubject:
        """The session a JWT speaks for; raises ``JWTInvalid`` with the reason."""
        hit = self._verified.get(token)
        if hit is not None:
            subject, not_before, expires = hit
            if not_before <= time.time() < expires:
                return subject
            self._verified.pop(token, None)
        subject, not_before, expires = self._verify(token)
        if len(self._verified) >= VERIFIED_CACHE_SIZE:
            self._verified.clear()
        self._verified[token] = (subject, not_before, expires)
        return subject

    def _verify(self, token: str) -> tuple[JWTSubject, int, int]:
        if not self._keys:
            raise JWTInvalid("Failed to verify JWT: JWTs are not enabled on this server.")
        if len(token) > MAX_JWT_LENGTH or token.count(".") != 2:
            raise JWTInvalid("Failed to verify JWT: malformed token.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise JWTInvalid("Failed to verify JWT: malformed header.") from None
        for name in _REFUSED_HEADERS:
            if name in header:
                raise JWTInvalid(f"Failed to verify JWT: header {name!r} is not accepted.")
        if header.get("typ") != TYP:
            raise JWTInvalid("Failed to verify JWT: wrong token type.")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise JWTInvalid("Failed to verify JWT: unknown key id.")
        try:
            claims = jwt.decode(
                token,
                key.verifying,
                algorithms=[key.alg],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=LEEWAY,
                options={"require": REQUIRED_CLAIMS, "strict_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise JWTInvalid("Failed to verify JWT: the token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise JWTInvalid("Failed to verify JWT: the token is not valid yet.") from None
        except jwt.InvalidAudienceError:
            raise JWTInvalid("Failed to verify JWT: wrong audience.") from None
        except jwt.InvalidIssuerError:
            raise JWTInvalid("Failed to verify JWT: wrong issuer.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise JWTInvalid(f"Failed to verify JWT: missing claim {exc.claim!r}.") from None
        except jwt.InvalidAlgorithmError:
            raise JWTInvalid("Failed to verify JWT: algorithm not allowed for this key.") from None
        except jwt.InvalidSignatureError:
            raise JWTInvalid("Failed to verify JWT: invalid signature.") from None
        except (jwt.PyJWTError, ValueError, TypeError):
            raise JWTInvalid("Failed to verify JWT: invalid token.") from None
        _, not_before, expires = self._times(claims)
        sub, sid, jti = claims["sub"], claims["sid"], claims["jti"]
        if not (isinstance(sub, str) and is_valid_id(sub)):
            raise JWTInvalid("Failed to verify JWT: invalid subject.")
        if not (isinstance(sid, str) and is_session_id(sid)) or not isinstance(jti, str):
            raise JWTInvalid("Failed to verify JWT: invalid session id.")
        # The cache in verify() judges the time window by this clock, so the first check does too.
        if time.time() >= expires:
            raise JWTInvalid("Failed to verify JWT: the token has expired.")
        return JWTSubject(sub, sid, jti), int(not_before), int(expires)

    def _times(self, claims: dict[str, Any]) -> tuple[float, float, float]:
        """``iat``, ``nbf`` and ``exp``, refused unless numbers and within ``jwt_lifetime``.

        PyJWT turns each with ``int()``, so ``"9999999999"`` or ``true`` would pass; and a token
        signed with a leaked or misused key could name any expiry. Only what this server would
        mint is accepted: JSON numbers, and no more than ``jwt_lifetime`` (plus the leeway)
        between issue and expiry. PyJWT has already refused an ``iat`` in the future, so no
        accepted token outlives now + ``jwt_lifetime``.
        """
        times = []
        for name in ("iat", "nbf", "exp"):
            value = claims[name]
            # type() rather than isinstance(): bool is an int subclass, and true is no time.
            if type(value) not in (int, float) or not math.isfinite(value):
                raise JWTInvalid(f"Failed to verify JWT: claim {name!r} is not a number.")
            times.append(float(value))
        issued, not_before, expires = times
        if expires - issued > self.settings.jwt_lifetime + LEEWAY:
            raise JWTInvalid(
                "Failed to verify JWT: its lifetime is longer than this server allows."
            )
        return issued, not_before, expires
