"""argon2id password hashing: hash, verify, upgrade on log-in, and equal work for unknown users."""

from __future__ import annotations

import contextlib
import secrets
import unicodedata
from typing import TYPE_CHECKING

import argon2
from argon2.exceptions import VerificationError, VerifyMismatchError

if TYPE_CHECKING:
    from bastion.settings import Settings


class PasswordHasher:
    """argon2id with fixed parameters; verifies hashes made with any earlier parameters too.

    Passwords are NFKC-normalised before hashing (NIST SP 800-63B 5.1.1.2), so the same password
    typed on two keyboards (``é`` precomposed or as ``e`` + combining accent, full-width or
    half-width forms) verifies.  Pass ``normalize=False`` only to verify hashes imported from a
    system that hashed the raw string.

    The constructor takes any values argon2 accepts; ``Settings`` is what enforces OWASP's floor.
    """

    def __init__(
        self,
        memory_kib: int = 19_456,
        time_cost: int = 2,
        parallelism: int = 1,
        *,
        normalize: bool = True,
    ) -> None:
        self._hasher = argon2.PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_kib,
            parallelism=parallelism,
            type=argon2.Type.ID,
        )
        self._normalize = normalize
        self._dummy_hash: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> PasswordHasher:
        """A hasher with the ``password_hash_*`` parameters of ``settings``."""
        return cls(
            memory_kib=settings.password_hash_memory_kib,
            time_cost=settings.password_hash_time_cost,
            parallelism=settings.password_hash_parallelism,
        )

    @property
    def memory_kib(self) -> int:
        """argon2id memory cost in KiB."""
        return self._hasher.memory_cost

    @property
    def time_cost(self) -> int:
        """argon2id passes."""
        return self._hasher.time_cost

    @property
    def parallelism(self) -> int:
        """argon2id lanes."""
        return self._hasher.parallelism

    def _secret(self, password: str) -> bytes:
        if self._normalize:
            password = unicodedata.normalize("NFKC", password)
        # A JSON body can carry a lone surrogate ("\ud800"); strict UTF-8 would raise on it and
        # turn a sign-up into a 500. surrogatepass encodes it the same way every time instead.
        return password.encode("utf-8", "surrogatepass")

    def hash(self, password: str) -> str:
        """The encoded argon2id hash of ``password`` (``$argon2id$v=19$m=...,t=...,p=...$...``)."""
        return self._hasher.hash(self._secret(password))

    def verify(self, stored_hash: str | None, password: str) -> bool:
        """Whether ``password`` matches ``stored_hash``; False for no hash or an unusable one."""
        if isinstance(stored_hash, str):
            try:
                return self._hasher.verify(stored_hash, self._secret(password))
            except VerifyMismatchError:
                return False
            except (VerificationError, ValueError):
                # A hash argon2 cannot decode (VerificationError), one that is not argon2 at all
                # (InvalidHashError) or not even ASCII (UnicodeEncodeError): a log-in must fail,
                # never crash. Fall through so it also costs as much as a wrong password.
                pass
        # None (an account without a password, e.g. one that signs in with OAuth only) or an
        # unusable hash: spend the same time, so such accounts cannot be told apart by timing.
        self.dummy_verify(password)
        return False

    def needs_rehash(self, stored_hash: str | None) -> bool:
        """Whether ``stored_hash`` was made with other parameters (rehash it after a log-in)."""
        if not isinstance(stored_hash, str):
            return True
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except ValueError:
            # Not a hash of ours at all: replacing it with a current one is the right move.
            return True

    def dummy_verify(self, password: str) -> None:
        """Do the work of a real verify, so an unknown account answers as slowly as a known one."""
        if self._dummy_hash is None:
            # A random secret nobody can type; made once, lazily, with the current parameters,
            # so its cost matches the hashes of users who signed up (or logged in) recently.
            self._dummy_hash = self.hash(secrets.token_urlsafe(32))
        # Same steps as verify(): normalise, encode, one argon2 verify that cannot match.
        with contextlib.suppress(VerificationError):
            self._hasher.verify(self._dummy_hash, self._secret(password))
