"""How a credential is checked: the one interface of every kind, built-in or the app's own.

A backend names its kind, lists its transports and turns a token into an :class:`Identity`.
An app's backend implements ``async def authenticate(token, request)`` and/or its sync twin
``authenticate_sync`` (a check without I/O, such as a signature, implements only the sync one:
the async one calls it). Session, JWT and API-key checks are backends too
(:mod:`bastion.credentials.builtin`); they run as private sans-IO steps so that a request still
makes one Redis round trip at most.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, NamedTuple

from bastion.credentials.transports import Transport
from bastion.errors import BastionError, CredentialInvalid, CredentialsConflict
from bastion.identity import GUEST, Identity
from bastion.redisio import Hook, Steps

__all__ = ["CredentialBackend", "CredentialRequest"]


class CredentialRequest(NamedTuple):
    """What a backend may read besides the token: method, URL scheme and raw request headers
    (lower-case names, as ASGI gives them)."""

    method: str
    scheme: str
    headers: Sequence[tuple[bytes, bytes]]


class CredentialBackend:
    """One kind of credential: its ``name``, its ``transports`` and how a token is checked.

    Subclass it, set ``name`` (the ``Identity.kind`` of its callers) and ``transports``, and
    implement :meth:`authenticate` (async) and/or :meth:`authenticate_sync` (each calls the
    other's absence away: a backend without I/O writes only the sync one; a WSGI app needs the
    sync one). Return an identity built with :meth:`user` (judged by roles, like a session) or,
    with ``scoped = True``, :meth:`key` (judged by scopes, like an API key); None refuses the
    request with ``invalid`` (401). A request carrying this kind and another is refused with
    ``conflict`` (403). Register it with ``Bastion(settings, credentials=[...])``.
    """

    name: str = ""
    transports: tuple[Transport, ...] = ()
    scoped: ClassVar[bool] = False
    """True: its identities are scoped callers (:meth:`key`); False: users (:meth:`user`)."""
    invalid: type[BastionError] = CredentialInvalid
    conflict: type[BastionError] = CredentialsConflict

    async def authenticate(self, token: str, request: CredentialRequest) -> Identity | None:
        """Who ``token`` is, or None to refuse it; by default :meth:`authenticate_sync`."""
        return self.authenticate_sync(token, request)

    def authenticate_sync(self, token: str, request: CredentialRequest) -> Identity | None:
        """The sync twin of :meth:`authenticate`, for WSGI apps."""
        raise NotImplementedError(
            f"credential backend {self.name!r} implements neither authenticate nor "
            "authenticate_sync"
        )

    def user(
        self, user_id: str, roles: Iterable[str] | None = None, session_id: str | None = None
    ) -> Identity:
        """A user of this kind, with ``roles`` (default: those its id alone gives)."""
        if roles is None:
            return Identity.for_user_id(self.name, user_id, session_id)
        return Identity.for_user(self.name, user_id, session_id, frozenset(roles))

    def key(self, key_id: str, scopes: Iterable[str]) -> Identity:
        """A scoped caller of this kind (``scoped = True``), judged by ``scopes`` like a key."""
        return Identity.for_key(key_id, frozenset(scopes), kind=self.name)

    def issued(self, identity: Identity) -> bool:
        """Whether this backend vouched for ``identity``."""
        return identity.kind == self.name

    def _check(
        self, token: str, method: str, scheme: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> Steps[Identity | None]:
        """The check as a step of the request: the app's methods, awaited or called."""
        request = CredentialRequest(method, scheme, headers)
        identity = yield Hook(self.authenticate, self.authenticate_sync, (token, request))
        if identity is not None:
            self._vouch(identity)
        return identity  # type: ignore[no-any-return]

    def _vouch(self, identity: Any) -> None:
        """Refuse an identity this backend may not give (a bug of the app's backend)."""
        if not isinstance(identity, Identity):
            raise TypeError(f"credential backend {self.name!r} returned {type(identity)!r}")
        shape_ok = identity.key_id is not None if self.scoped else identity.user_id is not None
        if identity.kind != self.name or not shape_ok:
            want = "self.key(...)" if self.scoped else "self.user(...)"
            raise TypeError(
                f"credential backend {self.name!r} must return an identity built with {want}"
            )

    @property
    def _has_sync(self) -> bool:
        return type(self).authenticate_sync is not CredentialBackend.authenticate_sync

    @property
    def _has_async(self) -> bool:
        return type(self).authenticate is not CredentialBackend.authenticate

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


def check_backend(backend: object, taken: set[str]) -> CredentialBackend:
    """``backend`` if it can be registered beside the kinds named ``taken``, else a clear error."""
    if not isinstance(backend, CredentialBackend):
        raise TypeError(
            f"credentials: {backend!r} is no CredentialBackend (subclass "
            "bastion.credentials.CredentialBackend)"
        )
    name = backend.name
    if not isinstance(name, str) or not _is_kind_name(name):
        raise ValueError(
            f"credentials: backend name {name!r}: 1-32 of a-z, 0-9, '_', '-', starting with a "
            "letter"
        )
    if name in taken or name == GUEST:
        raise ValueError(f"credentials: a backend named {name!r} is registered already")
    if not backend._has_sync and not backend._has_async:
        raise TypeError(
            f"credentials: backend {name!r} implements neither authenticate nor authenticate_sync"
        )
    if not backend.transports or not all(isinstance(t, Transport) for t in backend.transports):
        raise TypeError(
            f"credentials: backend {name!r} needs transports: Cookie, Header or Authorization"
        )
    return backend


def _is_kind_name(name: str) -> bool:
    return (
        0 < len(name) <= 32
        and name.isascii()
        and name[0].isalpha()
        and name.islower()
        and all(c.isalnum() or c in "_-" for c in name)
    )
