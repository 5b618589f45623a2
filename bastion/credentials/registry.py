"""The registered kinds, and which credential a request carries (sans-IO, from raw headers).

The rules, in this one place:

* Each kind reads its transports; the first of them carrying a token gives it. Two of them
  carrying different tokens make it malformed, except a ``fallback`` transport (the session
  header), which is read only when the kind's others carry nothing: the session cookie wins
  over the session header (Appwrite's order).
* A request carries one kind at most: a second kind is refused, never resolved by a silent
  preference (as Appwrite does), with the ``conflict`` error of the kind registered last
  (a JWT beside a session: ``JWTAndSession``; an API key beside either: ``APIKeyAndSession``;
  a kind of the app's own beside any: ``CredentialsConflict`` unless it names its own).
* A malformed token (empty, over 4096 bytes, not ASCII, or two different ones in one place)
  is refused with its kind's ``invalid`` error before any look-up.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Literal, NamedTuple

from bastion.credentials.backend import CredentialBackend, check_backend
from bastion.credentials.transports import Authorization, Cookie, Transport
from bastion.errors import BastionError

__all__ = ["MAX_CREDENTIAL_LENGTH", "NO_CREDENTIALS", "CredentialRegistry", "Credentials"]

Problem = Literal["malformed", "conflict"]

# Anything longer is not one of our credentials; refusing it early keeps huge headers cheap.
MAX_CREDENTIAL_LENGTH = 4096


class Credentials(NamedTuple):
    """The credential a request sent (its backend, token and transport), or why it is unusable.

    ``problem`` is ``malformed`` (refused with the backend's ``invalid`` error) or ``conflict``
    (with its ``conflict`` error); the token is then None.
    """

    backend: CredentialBackend | None = None
    token: str | None = None
    transport: Transport | None = None
    problem: Problem | None = None

    @property
    def kind(self) -> str | None:
        """The name of the credential's kind; None without one."""
        return None if self.backend is None else self.backend.name

    def refusal(self) -> BastionError:
        """The error a request with this unusable credential gets."""
        assert self.backend is not None and self.problem is not None
        if self.problem == "conflict":
            return self.backend.conflict()
        return self.backend.invalid()


NO_CREDENTIALS = Credentials()

# Stands for two different values in one place: the credential there is malformed (a NUL
# byte cannot reach us in a header value, so no real credential equals it).
_CONFLICT = b"\x00conflict"

# What a header name leads to: the Cookie header, a header of one or more kinds (told apart by
# their prefixes), or Authorization (by scheme, then prefix).
_COOKIE, _HEADER, _AUTHORIZATION = 0, 1, 2

Routes = list[tuple[bytes, int]]
"""(token prefix, slot), longest prefix first: the first the token starts with takes it."""


class CredentialRegistry:
    """The credential kinds of one Bastion, in order: built-in ones first, then the app's own.

    ``registry["session"]`` is a kind's backend; iterating gives the backends in order.
    """

    def __init__(self, backends: Iterable[object]) -> None:
        checked: list[CredentialBackend] = []
        for backend in backends:
            checked.append(check_backend(backend, {b.name for b in checked}))
        self._backends = tuple(checked)
        self._by_kind = {b.name: b for b in checked}
        # Every (backend, transport) pair is a slot; a request's tokens are collected by slot.
        self._slots: list[tuple[CredentialBackend, Transport]] = []
        # Per kind, in order: its slots (other transports, then fallbacks).
        self._kinds: list[tuple[CredentialBackend, list[int], list[int]]] = []
        self._by_name: dict[bytes, tuple[int, Any]] = {}
        seen: dict[tuple[str, str, str], str] = {}
        for backend in checked:
            primary: list[int] = []
            fallback: list[int] = []
            for transport in backend.transports:
                where = (transport.place, transport.name.lower(), transport.prefix)
                if where in seen:
                    raise ValueError(
                        f"credentials: {seen[where]!r} and {backend.name!r} both read "
                        f"{_describe(transport)}; give one a distinct prefix"
                    )
                seen[where] = backend.name
                slot = len(self._slots)
                self._slots.append((backend, transport))
                (fallback if transport.fallback else primary).append(slot)
                self._route(transport, slot)
            self._kinds.append((backend, primary, fallback))
        for place, routes in self._by_name.values():
            for table in routes.values() if place == _AUTHORIZATION else [routes]:
                if place != _COOKIE:
                    table.sort(key=lambda route: -len(route[0]))
        self._schemes = self._openapi_schemes()

    def _route(self, transport: Transport, slot: int) -> None:
        name = transport.name.lower().encode("ascii")
        prefix = transport.prefix.encode("ascii")
        if isinstance(transport, Cookie):
            _, cookies = self._by_name.setdefault(b"cookie", (_COOKIE, []))
            cookies.append((transport.name.encode("ascii"), slot))
        elif isinstance(transport, Authorization):
            _, schemes = self._by_name.setdefault(b"authorization", (_AUTHORIZATION, {}))
            schemes.setdefault(name, []).append((prefix, slot))
        else:
            if name in (b"cookie", b"authorization"):
                raise ValueError(
                    f"credentials: Header({transport.name!r}): use Cookie or Authorization"
                )
            _, routes = self._by_name.setdefault(name, (_HEADER, []))
            routes.append((prefix, slot))

    # -- the registered kinds ---------------------------------------------------------------

    def __getitem__(self, kind: str) -> CredentialBackend:
        return self._by_kind[kind]

    def __contains__(self, kind: object) -> bool:
        return kind in self._by_kind

    def __iter__(self) -> Iterator[CredentialBackend]:
        return iter(self._backends)

    def __len__(self) -> int:
        return len(self._backends)

    def __repr__(self) -> str:
        return f"<CredentialRegistry {[b.name for b in self._backends]}>"

    def get(self, kind: str) -> CredentialBackend | None:
        """The backend of ``kind``, or None."""
        return self._by_kind.get(kind)

    # -- reading a request ------------------------------------------------------------------

    def read(self, headers: Iterable[tuple[bytes, bytes]]) -> Credentials:
        """The request's credential, from its raw headers (names lower-case, as ASGI sends them).

        One pass over the headers, comparing bytes; nothing is decoded but the token found.
        """
        # The usual request carries one token: it is kept in two locals; a second one (of any
        # kind, or the same place again) moves them all into ``more`` for the rules.
        slot, raw = -1, b""
        more: dict[int, bytes] | None = None
        by_name = self._by_name
        for name, value in headers:
            handler = by_name.get(name)
            if handler is None:
                continue
            place, routes = handler
            if place == _COOKIE:
                for cookie_name, at in routes:
                    if cookie_name in value:
                        for pair in value.split(b";"):
                            # RFC 6265 §5.4 pairs: "a=b; c=d". A pair without "=" is a value with
                            # an empty name (as browsers treat it), never our cookie.
                            pair_name, sep, found = pair.partition(b"=")
                            if sep and pair_name.strip() == cookie_name:
                                if slot < 0:
                                    slot, raw = at, found.strip()
                                else:
                                    more = _put(more, slot, raw, at, found.strip())
                continue
            if place == _AUTHORIZATION:
                scheme, _, value = value.strip().partition(b" ")
                # Schemes no kind reads belong to the app (Basic, ...), not to us.
                routes = routes.get(scheme.lower())
                if routes is None:
                    continue
            value = value.strip()
            for prefix, at in routes:
                if not prefix or value.startswith(prefix):  # most have none: no call then
                    if slot < 0:
                        slot, raw = at, value
                    else:
                        more = _put(more, slot, raw, at, value)
                    break
        if more is not None:
            return self._resolve(more)
        if slot < 0:
            return NO_CREDENTIALS
        backend, transport = self._slots[slot]
        # _credential, written out: every request with a credential ends here.
        if raw and len(raw) <= MAX_CREDENTIAL_LENGTH and raw.isascii() and raw != _CONFLICT:
            return Credentials(backend, raw.decode("ascii"), transport)
        return Credentials(backend, None, transport, "malformed")

    def _resolve(self, values: dict[int, bytes]) -> Credentials:
        """Tokens in several places: the kinds' transport order, then one kind at most."""
        found: list[tuple[CredentialBackend, Transport, bytes]] = []
        for backend, primary, fallback in self._kinds:
            raw: bytes | None = None
            where: Transport | None = None
            for slot in primary:
                value = values.get(slot)
                if value is None:
                    continue
                if raw is None:
                    raw, where = value, self._slots[slot][1]
                elif value != raw:
                    raw = _CONFLICT
            if raw is None:
                for slot in fallback:
                    value = values.get(slot)
                    if value is not None:
                        raw, where = value, self._slots[slot][1]
                        break
            if raw is not None and where is not None:
                found.append((backend, where, raw))
        if len(found) == 1:
            return _credential(*found[0])
        backend, transport, _ = found[-1]
        return Credentials(backend, None, transport, "conflict")

    # -- OpenAPI ----------------------------------------------------------------------------

    def _openapi_schemes(self) -> dict[str, tuple[CredentialBackend, Transport]]:
        schemes: dict[str, tuple[CredentialBackend, Transport]] = {}
        for backend in self._backends:
            documented = [t for t in backend.transports if t.documented]
            for index, transport in enumerate(documented):
                name = transport.scheme_name or (
                    backend.name if len(documented) == 1 else f"{backend.name}_{index + 1}"
                )
                if name in schemes:
                    raise ValueError(f"credentials: two transports are named {name!r} in OpenAPI")
                schemes[name] = (backend, transport)
        return schemes

    def openapi_schemes(self) -> dict[str, dict[str, Any]]:
        """Every documented transport as an OpenAPI security scheme, by scheme name."""
        return {name: transport.openapi() for name, (_, transport) in self._schemes.items()}

    def scheme_names(self, *, scoped: bool) -> list[str]:
        """The scheme names of the scoped kinds (``scoped``) or of the user kinds."""
        return [name for name, (b, _) in self._schemes.items() if b.scoped == scoped]


def _put(
    more: dict[int, bytes] | None, first: int, first_raw: bytes, slot: int, value: bytes
) -> dict[int, bytes]:
    """Every token found so far, by slot, with ``value`` added; two different in one slot
    make that slot's token malformed."""
    if more is None:
        more = {first: first_raw}
    held = more.get(slot)
    more[slot] = value if held is None or held == value else _CONFLICT
    return more


def _credential(backend: CredentialBackend, transport: Transport, raw: bytes) -> Credentials:
    if not raw or len(raw) > MAX_CREDENTIAL_LENGTH or not raw.isascii() or raw == _CONFLICT:
        return Credentials(backend, None, transport, "malformed")
    return Credentials(backend, raw.decode("ascii"), transport)


def _describe(transport: Transport) -> str:
    prefix = f" (tokens starting {transport.prefix!r})" if transport.prefix else ""
    return f"{type(transport).__name__}({transport.name!r}){prefix}"
