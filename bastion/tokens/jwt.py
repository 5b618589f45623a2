"""Session-bound JWTs: minted from a live session, verified against a pinned key set.

Verification follows RFC 8725: the algorithm is pinned per key and never read from the token to
pick a key type; ``kid`` is looked up only in the configured key set; ``jku``/``x5u``/``jwk``/
``x5c`` headers are refused, never fetched; ``typ``, ``iss``, ``aud``, ``exp``, ``nbf``, ``iat``,
``sub``, ``sid`` and ``jti`` are all required. The token's session is checked by the caller.

A token is parsed once: its header, the signature through pyjwt's algorithm object for the pinned
key (the key prepared by pyjwt once, at start-up, not on every token as ``jwt.decode`` does), then
its claims, checked here as ``jwt.decode`` checks them and more strictly.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import re
import secrets
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import jwt
from jwt.algorithms import Algorithm

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
_REFUSED_HEADERS = ("jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256", "crit", "b64")
"""Refused, never acted on. ``crit`` and ``b64`` too: Bastion mints neither, and a critical
extension it does not implement must be refused (RFC 7515, 4.1.11)."""
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
"""One segment of a compact JWS: base64url without padding (RFC 7515, 2 and 7.1)."""
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
    """The public key or secret as pyjwt's ``prepare_key`` returned it, once at start-up."""
    algorithm: Algorithm
    """pyjwt's algorithm object for ``alg``: the only one that verifies this key's tokens."""


def _decode_segment(segment: str) -> bytes:
    """The bytes of one base64url segment; raises ``ValueError`` unless it is canonical.

    A segment's last character can carry unused bits: base64 decoders ignore them, so one
    signature would have several spellings. The canonical one only (pyjwt refuses the others too).
    """
    padded = segment + "=" * (-len(segment) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded)
    except binascii.Error:
        raise ValueError("not base64url") from None
    if base64.urlsafe_b64encode(raw) != padded.encode():
        raise ValueError("not canonical base64url")
    return raw


def _read_pem(path: str, name: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(name, path, f"a readable PEM file ({exc.strerror})") from None


def _load(key: JWTKey) -> _LoadedKey:
    if key.secret is not None:
        secret = reveal(key.secret).encode()
        return _prepared(key, secret, secret)
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
    return _prepared(key, private, public)


def _prepared(key: JWTKey, signing: Any, verifying: Any) -> _LoadedKey:
    """The key as pyjwt prepares it for its algorithm, once."""
    # A key of the wrong type for its algorithm fails here, at start-up, rather than per request.
    try:
        algorithm = jwt.get_algorithm_by_name(key.alg)
        prepared = algorithm.prepare_key(verifying)
    except (jwt.InvalidKeyError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"jwt_keys[{key.kid}]", key.alg, f"a key suitable for {key.alg} ({exc})"
        ) from None
    # jwt.decode would warn of a short key on every token; once is enough.
    check_length = getattr(algorithm, "check_key_length", None)
    short = check_length(prepared) if check_length is not None else None
    if short:
        warnings.warn(f"jwt_keys[{key.kid}]: {short}", jwt.InsecureKeyLengthWarning, stacklevel=4)
    return _LoadedKey(key.kid, key.alg, signing, prepared, algorithm)


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
        head, body, signature_b64 = token.split(".")
        if not all(_SEGMENT.fullmatch(part) for part in (head, body, signature_b64)):
            raise JWTInvalid("Failed to verify JWT: malformed token.")
        key = self._key(head)
        try:
            signature = _decode_segment(signature_b64)
        except ValueError:
            raise JWTInvalid("Failed to verify JWT: invalid signature.") from None
        # The signing input is the two segments as sent; pyjwt's algorithm for the pinned key
        # checks it. The payload is not decoded before the signature holds.
        try:
            valid = key.algorithm.verify(
                token[: -len(signature_b64) - 1].encode(), key.verifying, signature
            )
        except (ValueError, TypeError):
            valid = False
        if not valid:
            raise JWTInvalid("Failed to verify JWT: invalid signature.")
        try:
            # UTF-8 (RFC 7519, 7.2): json.loads would guess UTF-16 or UTF-32 from bytes.
            claims = json.loads(_decode_segment(body).decode())
        except (ValueError, RecursionError):
            raise JWTInvalid("Failed to verify JWT: invalid token.") from None
        if type(claims) is not dict:
            raise JWTInvalid("Failed to verify JWT: invalid token.")
        return self._claims(claims)

    def _key(self, head: str) -> _LoadedKey:
        """The configured key the header names, once its every field is acceptable."""
        try:
            header = json.loads(_decode_segment(head).decode())
        except (ValueError, RecursionError):
            raise JWTInvalid("Failed to verify JWT: malformed header.") from None
        if type(header) is not dict:
            raise JWTInvalid("Failed to verify JWT: malformed header.")
        for name in _REFUSED_HEADERS:
            if name in header:
                raise JWTInvalid(f"Failed to verify JWT: header {name!r} is not accepted.")
        if header.get("typ") != TYP:
            raise JWTInvalid("Failed to verify JWT: wrong token type.")
        kid = header.get("kid")
        key = self._keys.get(kid) if type(kid) is str else None
        if key is None:
            raise JWTInvalid("Failed to verify JWT: unknown key id.")
        # The algorithm is the key's own: the header must name it, and never chooses another.
        if header.get("alg") != key.alg:
            raise JWTInvalid("Failed to verify JWT: algorithm not allowed for this key.")
        return key

    def _claims(self, claims: dict[str, Any]) -> tuple[JWTSubject, int, int]:
        """The subject of verified claims, checked as ``jwt.decode`` checks them, and more.

        ``jwt.decode(..., options={"require": REQUIRED_CLAIMS, "strict_aud": True})`` in the same
        order: every claim present and not null; ``iat`` and ``nbf`` not in the future and ``exp``
        not past; ``iss`` and ``aud`` strings equal
        to the settings'; ``sub`` and ``jti`` strings. Beyond it: the times are JSON numbers
        within ``jwt_lifetime`` of each other, ``sub`` a valid user id and ``sid`` a session id.
        """
        for name in REQUIRED_CLAIMS:
            if claims.get(name) is None:
                raise JWTInvalid(f"Failed to verify JWT: missing claim {name!r}.")
        issued, not_before, expires = self._times(claims)
        now = time.time()
        # PyJWT compares int() of each: the claim itself refuses a little more for iat and nbf,
        # int() a little more for exp.
        if issued > now + LEEWAY or not_before > now + LEEWAY:
            raise JWTInvalid("Failed to verify JWT: the token is not valid yet.")
        # The cache in verify() judges the time window by these same whole seconds.
        if int(expires) <= now - LEEWAY:
            raise JWTInvalid("Failed to verify JWT: the token has expired.")
        if type(claims["iss"]) is not str or claims["iss"] != self.settings.jwt_issuer:
            raise JWTInvalid("Failed to verify JWT: wrong issuer.")
        aud = claims["aud"]
        if not aud:
            raise JWTInvalid("Failed to verify JWT: missing claim 'aud'.")
        # strict_aud: one audience, as a string; a list, even holding ours, is refused.
        if type(aud) is not str or aud != self.settings.jwt_audience:
            raise JWTInvalid("Failed to verify JWT: wrong audience.")
        sub, sid, jti = claims["sub"], claims["sid"], claims["jti"]
        if not (type(sub) is str and is_valid_id(sub)):
            raise JWTInvalid("Failed to verify JWT: invalid subject.")
        if type(jti) is not str:
            raise JWTInvalid("Failed to verify JWT: invalid token id.")
        if not (type(sid) is str and is_session_id(sid)):
            raise JWTInvalid("Failed to verify JWT: invalid session id.")
        return JWTSubject(sub, sid, jti), int(not_before), int(expires)

    def _times(self, claims: dict[str, Any]) -> tuple[float, float, float]:
        """``iat``, ``nbf`` and ``exp``, refused unless numbers and within ``jwt_lifetime``.

        PyJWT turns each with ``int()``, so ``"9999999999"`` or ``true`` would pass; and a token
        signed with a leaked or misused key could name any expiry. Only what this server would
        mint is accepted: JSON numbers, and no more than ``jwt_lifetime`` (plus the leeway)
        between issue and expiry. With an ``iat`` in the future refused too, no accepted token
        outlives now + ``jwt_lifetime``.
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
