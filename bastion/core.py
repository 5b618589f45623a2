"""``Bastion``: the one object an app builds, and the per-request state the middleware keeps.

Authentication, log-in and log-out are written once as sans-IO steps (:mod:`bastion.redisio`);
the ASGI middleware runs them with the async runner, the WSGI middleware with the sync one, and
``bastion.login`` / ``bastion.sync.login`` are their fronts (:mod:`bastion.fronts`). ``Bastion``
also owns the lifecycle of what it opens: Redis connections and the policy watcher.

The middlewares import this module; it imports them only inside :meth:`Bastion.asgi` and
:meth:`Bastion.wsgi`, when called: the one import allowed to point back up the import graph
(``tests/test_import_graph.py``). Nothing here needs Starlette: the ASGI middleware sets
Starlette's ``scope["auth"]`` itself (``publish``).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, MutableMapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from bastion import ratelimit
from bastion.account import AccountService
from bastion.audit import AuditHook, AuditLog
from bastion.cleantext import clean_text
from bastion.clientip import UNKNOWN, asgi_peer, client_ip, normal_ip, parse_networks
from bastion.cookies import clear_cookie, session_cookie
from bastion.credentials import NO_CREDENTIALS, CredentialBackend, CredentialRegistry, Credentials
from bastion.credentials.builtin import APIKeyBackend, JWTBackend, SessionBackend
from bastion.csrf import is_cross_site
from bastion.errors import (
    BastionError,
    CrossSiteRequest,
    Forbidden,
    JWTCreationDenied,
    MissingScope,
    Unauthorized,
)
from bastion.fronts import AsyncFront, SyncFront, step
from bastion.identity import Identity
from bastion.passwords.checks import PasswordCheck, validate_checks
from bastion.policies import grants
from bastion.policies.authorizer import Authorizer
from bastion.policies.watch import PolicyWatcher, load_holder
from bastion.redis_clients import make_clients
from bastion.redisio import CLOSED, AsyncRunner, OutageLog, Steps, SyncRunner, together
from bastion.renamed import RenamedNames
from bastion.requestpath import canonical_path
from bastion.responses import OWN_HEADERS_RAW
from bastion.security import AsyncSecurity, SecurityCore, SyncSecurity
from bastion.sessions import AsyncSessionStore, NewSession, SessionCore, SyncSessionStore
from bastion.sessions import scripts as session_scripts
from bastion.sessions.cache import SessionCache, SessionCacheStats
from bastion.sessions.store import MAX_USER_AGENT
from bastion.settings import Settings
from bastion.telemetry import telemetry
from bastion.tokens import apikeys
from bastion.tokens.jwt import JWTService
from bastion.user_admin import AsyncUsers, SyncUsers, UserAdmin
from bastion.users.external import StoreSteps
from bastion.users.protocol import (
    StoreTwins,
    SyncUserStore,
    UserSteps,
    UserStore,
    UserStoreMismatch,
    user_stores,
)
from bastion.users.redis import SCRIPTS as USER_SCRIPTS
from bastion.users.redis import UserCore

logger = logging.getLogger("bastion.middleware")

Scope = MutableMapping[str, Any]
Rows = list[tuple[str, str]]
Publish = Callable[[Scope, Identity], None]
"""Puts an identity where the framework looks for it, in the scope or environ (the middleware's)."""

# A client that cannot keep cookies sends this header on its log-in request to get the token back.
FALLBACK_REQUEST_HEADER = b"x-bastion-fallback"


class RequestState:
    """What Bastion knows about one request; kept at ``scope["bastion"]`` (``environ`` in WSGI).

    The client's address, user agent and token request are read from the headers only when a
    log-in asks for them, so ordinary requests do not pay for it. ``peer`` is the socket's
    address as the server reported it; given ``receive``, the ASGI server's callable, the socket
    is asked directly (:func:`bastion.clientip.asgi_peer`). ``publish`` is the middleware's way
    of showing the identity to the app in ``into`` (Starlette's ``scope["user"]`` and
    ``scope["auth"]``, or ``environ["bastion.identity"]``).
    """

    __slots__ = (
        "_asgi",
        "_facts",
        "_into",
        "_publish",
        "_receive",
        "bastion",
        "credentials",
        "headers",
        "identity",
        "peer",
        "response_headers",
    )

    def __init__(
        self,
        bastion: Bastion,
        identity: Identity,
        credentials: Credentials,
        headers: list[tuple[bytes, bytes]] | None = None,
        peer: str = "",
        into: MutableMapping[str, Any] | None = None,
        asgi: bool = True,
        receive: object = None,
        publish: Publish | None = None,
    ) -> None:
        self.bastion = bastion
        self.credentials = credentials
        self.headers = headers or []
        self.peer = peer
        # The ASGI server's receive callable: the socket's address is read through it, since
        # the server may have replaced ``peer`` (scope["client"]) with a forwarded one.
        self._receive = receive
        self.response_headers: list[tuple[bytes, bytes]] = []
        self._facts: tuple[str, str, bool] | None = None
        self._into = into
        self._asgi = asgi
        self._publish = publish
        # set_identity's work, written out: every request builds one.
        self.identity = identity
        if into is not None and publish is not None:
            publish(into, identity)

    def _read_facts(self) -> tuple[str, str, bool]:
        if self._facts is None:
            forwarded_for = forwarded = agent = None
            wants = False
            for name, value in self.headers:
                if name == b"x-forwarded-for":
                    forwarded_for = value if forwarded_for is None else forwarded_for + b"," + value
                elif name == b"forwarded":
                    forwarded = value if forwarded is None else forwarded + b"," + value
                elif name == b"user-agent":
                    agent = value
                elif name == FALLBACK_REQUEST_HEADER:
                    wants = value.strip().lower() in (b"1", b"true")
            peer = self.peer
            if self._receive is not None:
                peer = asgi_peer(peer, self._receive, forwarded_for, forwarded)
                if peer == UNKNOWN:
                    self.bastion._hidden_peer()
            # Both end up in session lists, audit events and logs: a valid address or "", and
            # the agent as UTF-8 (as browsers send it), printable characters only.
            self._facts = (
                normal_ip(self.bastion.client_ip(peer, forwarded_for)),
                clean_text(agent, MAX_USER_AGENT) if agent else "",
                wants,
            )
        return self._facts

    @property
    def client_ip(self) -> str:
        """The client's address (``trusted_proxies`` honoured); "" if it is no IP address."""
        return self._read_facts()[0]

    @property
    def user_agent(self) -> str:
        """The client's User-Agent header, cleaned (see :func:`bastion.cleantext.clean_text`)."""
        return self._read_facts()[1]

    @property
    def scheme(self) -> str:
        """``http`` or ``https``, as the server saw it (``https`` when unknown: the stricter)."""
        into = self._into
        if into is None:
            return "https"
        return str(into.get("scheme" if self._asgi else "wsgi.url_scheme", "http"))

    @property
    def wants_token(self) -> bool:
        """Whether the client sent ``X-Bastion-Fallback: true`` (it cannot keep cookies)."""
        return self._read_facts()[2]

    def set_identity(self, identity: Identity) -> None:
        """Change who the request is (after a log-in or log-out) everywhere it is visible."""
        self.identity = identity
        if self._into is not None and self._publish is not None:
            self._publish(self._into, identity)


def _is_preflight(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether an OPTIONS request is a CORS preflight (it names the method it asks about)."""
    return any(name == b"access-control-request-method" for name, _ in headers)


def state_of(conn: Any) -> RequestState:
    """The request state of a Starlette request, an ASGI scope or a WSGI environ."""
    if isinstance(conn, RequestState):
        return conn
    scope = getattr(conn, "scope", None) or getattr(conn, "environ", None) or conn
    state = scope.get("bastion") if isinstance(scope, MutableMapping) else None
    if not isinstance(state, RequestState):
        raise RuntimeError(
            "Bastion is not installed on this app: wrap it with bastion.asgi(app) / "
            "bastion.wsgi(app) (or Flask's init_app) before calling login/logout."
        )
    return state


class LoginCore:
    """Log-in and log-out on a request as sans-IO steps, for ``bastion`` and ``bastion.sync``."""

    def __init__(
        self,
        settings: Settings,
        sessions: SessionCore,
        security: SecurityCore,
        audit: AuditLog,
        session_backend: SessionBackend,
    ) -> None:
        self.settings = settings
        self.audit = audit
        self._sessions = sessions
        self._security = security
        self._session_backend = session_backend

    def login(self, conn: Any, user_id: str) -> Steps[NewSession]:
        """Start a new session for ``user_id`` and set its cookie on the response.

        ``conn`` is the request: a Starlette or Flask request, an ASGI scope or a WSGI environ.
        Any session the request came with is revoked first, so a log-in always yields a fresh
        session id (no fixation). A client that sent ``X-Bastion-Fallback: true`` or that
        authenticates by header also gets the token in the session header of the response.
        The per-user session cap in force (``bastion security set session_limit``) applies.
        Recorded as a ``log_in`` audit event, plus ``session_evicted`` when the cap evicted any.
        """
        state = state_of(conn)
        current, replaced = state.identity, False
        try:
            # Whatever credential the request came with, its session ends (a JWT's too).
            if current.user_id and current.session_id:
                replaced = yield from self._sessions.revoke(current.user_id, current.session_id)
            limits = yield from self._security.current()
            new = yield from self._sessions.create(
                user_id,
                ip=state.client_ip,
                user_agent=state.user_agent,
                limit=limits.session_limit,
            )
        except BastionError as exc:
            self.audit.failed("log_in", state, exc, user_id=user_id)
            raise
        details: dict[str, str] = {}
        if replaced and current.session_id:
            details["replaced_session_id"] = current.session_id
        self.audit.record(
            "log_in", state, user_id=user_id, session_id=new.session.id, details=details
        )
        if new.evicted:
            self.audit.record(
                "session_evicted",
                state,
                user_id=user_id,
                session_id=new.session.id,
                details={"session_ids": new.evicted, "count": len(new.evicted)},
            )
        state.set_identity(self._session_backend.identity(new.session.user_id, new.session.id))
        state.response_headers = [
            (b"set-cookie", session_cookie(self.settings, new.token).encode()),
            # The response carries a secret: no shared or browser cache may keep it.
            (b"cache-control", b"no-store"),
        ]
        if state.wants_token or state.credentials.transport is self._session_backend.header:
            state.response_headers.append(
                (self.settings.session_header.lower().encode(), new.token.encode())
            )
        return new

    def logout(self, conn: Any) -> Steps[bool]:
        """Revoke the request's session and clear its cookie (``log_out`` event); False if none."""
        state = state_of(conn)
        identity, revoked = state.identity, False
        if identity.user_id and identity.session_id:
            try:
                revoked = yield from self._sessions.revoke(identity.user_id, identity.session_id)
            except BastionError as exc:
                self.audit.failed(
                    "log_out", state, exc, user_id=identity.user_id, session_id=identity.session_id
                )
                raise
        state.set_identity(Identity.guest())
        state.response_headers = [(b"set-cookie", clear_cookie(self.settings).encode())]
        # Only a session that this call ended is a log-out: a guest's call ends nothing, and
        # after "log out everywhere" the account service has already recorded the revocation.
        if revoked:
            self.audit.record(
                "log_out", state, user_id=identity.user_id, session_id=identity.session_id
            )
        return revoked


class _RequestSteps:
    """The request helpers that talk to Redis: ``bastion.login`` and ``bastion.sync.login``."""

    login = step(LoginCore.login)
    logout = step(LoginCore.logout)


class Bastion(_RequestSteps, RenamedNames, AsyncFront[LoginCore]):
    """Settings, stores, policy and the log-in helpers of one app.

    Everything that talks to Redis is async here and has a sync twin of the same name on
    :attr:`sync`: ``await bastion.sessions.create(...)`` / ``bastion.sync.sessions.create(...)``,
    ``await bastion.login(request, user_id)`` / ``bastion.sync.login(request, user_id)``.

    Building one does no Redis I/O: connections open on first use and the policy watcher starts
    with the first request. ``close()`` / ``await aclose()``, ``with`` / ``async with``, or
    ``lifespan`` (Starlette, FastAPI) stop them; :meth:`wsgi` registers ``close`` at exit.

    ``users`` is a store of the app's own for the user records (a :class:`~bastion.users.UserStore`,
    a :class:`~bastion.users.SyncUserStore`, or an async one carrying its sync twin as ``.sync``;
    checked here, with a message naming what is missing); without one they live in Redis.
    ``password_checks`` are the app's own password rules (functions cannot live in TOML, so
    they are given here); see :mod:`bastion.passwords.checks` for their protocol.
    ``credentials`` are the app's own credential kinds (:class:`CredentialBackend`), read after
    the built-in session, JWT and API-key kinds; :attr:`credentials` lists them all. ``redis`` and
    ``sync_redis`` are clients of your own (else made from the settings); Bastion closes only
    the clients it made.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        redis: Any = None,
        sync_redis: Any = None,
        users: UserStore | SyncUserStore | None = None,
        password_checks: Iterable[PasswordCheck] = (),
        audit_hook: AuditHook | None = None,
        credentials: Iterable[CredentialBackend] = (),
    ) -> None:
        self.settings = settings if settings is not None else Settings.load()
        self.password_checks = validate_checks(password_checks)
        # Account actions are recorded on the bastion.audit logger, and given to audit_hook.
        self.audit = AuditLog(audit_hook)
        # Made clients connect on first use (redis-py pools are lazy): nothing is sent yet.
        # Bastion closes the clients it made; clients passed in are the app's.
        self._owns_async, self._owns_sync = redis is None, sync_redis is None
        if redis is None or sync_redis is None:
            made_async, made_sync = make_clients(self.settings)
            redis = redis if redis is not None else made_async
            sync_redis = sync_redis if sync_redis is not None else made_sync
        scripts = {
            **session_scripts.ALL,
            **USER_SCRIPTS,
            **apikeys.SCRIPTS,
            **grants.SCRIPTS,
            **ratelimit.SCRIPTS,
        }
        # One budget per run of steps (redis_timeout), one outage log for both runners.
        budget, outages = self.settings.redis_timeout, OutageLog()
        lean = self.settings.redis_lean_reads
        self._runner = AsyncRunner(redis, scripts, lean_reads=lean, budget=budget, outages=outages)
        self._sync_runner = SyncRunner(
            sync_redis, scripts, lean_reads=lean, budget=budget, outages=outages
        )
        self.redis: Any = redis
        """The ``redis.asyncio`` client Bastion uses (``bastion.sync.redis``: the blocking one)."""
        self._session_cache: SessionCache | None = None
        if self.settings.session_cache == "tracking":
            self._session_cache = SessionCache(
                redis,
                key_prefix=self.settings.key_prefix,
                max_entries=self.settings.session_cache_max_entries,
                lease=self.settings.session_cache_lease,
                max_age=self.settings.session_cache_max_age,
                timeout=self.settings.redis_timeout,
            )
            self._runner.cache = self._sync_runner.cache = self._session_cache

        # The steps: written once, private; the fronts below and the account service run them.
        self._sessions_core = SessionCore(self.settings, self.audit)
        self._api_keys_core = apikeys.APIKeyCore(self.settings)
        # Roles are read from the sessions' copy of the Redis user record, so requests never
        # call the store; with a store of the app's own, Bastion keeps that copy (sign-up,
        # log-in, users.update / refresh). The disabled and deleted marks live in that Redis
        # hash too, whatever the store.
        self._user_roles = UserCore(self.settings.key_prefix)
        self._app_users: StoreTwins | None = None
        self._user_store: UserSteps = self._user_roles
        if users is not None:
            self._app_users = user_stores(users)
            self._user_store = StoreSteps(self._app_users, self.settings.key_prefix)
        self._users_core = UserAdmin(self._user_store, self._sessions_core, self.audit)
        self._security_core = SecurityCore(self.settings)
        self.jwt = JWTService(self.settings, embedded=self.settings.redis_url is None)
        # Where credentials travel and how each kind is checked; the app's kinds come last.
        self._session_backend = SessionBackend(
            self.settings, self._sessions_core, self._runner, self._sync_runner
        )
        self.credentials = CredentialRegistry(
            [
                self._session_backend,
                JWTBackend(self.jwt, self._sessions_core, self._runner, self._sync_runner),
                APIKeyBackend(self._api_keys_core, self._runner, self._sync_runner),
                *credentials,
            ]
        )
        """The credential kinds this Bastion reads, built-in and the app's own, in order."""
        self._login_core = LoginCore(
            self.settings,
            self._sessions_core,
            self._security_core,
            self.audit,
            self._session_backend,
        )
        # Files only: a broken policy stops start-up here; Redis is first read by the watcher.
        self.policy = load_holder(self.settings)
        self.authorizer = Authorizer(self.settings, lambda: self.policy.engine)
        self._permissions_core = grants.GrantCore(
            self.settings.key_prefix,
            lambda: self.policy.engine,
            admin_roles=self.settings.admin_roles,
            child_security=[r.path for r in self.settings.resources if r.child_security],
        )

        # The fronts: async here, their sync twins on self.sync (bastion.fronts).
        super().__init__(self._login_core, self._runner)
        self.sessions = AsyncSessionStore(self._sessions_core, self._runner)
        self.users = AsyncUsers(self._users_core, self._runner)
        self.api_keys = apikeys.AsyncAPIKeyStore(self._api_keys_core, self._runner)
        self.permissions = grants.AsyncGrantStore(self._permissions_core, self._runner)
        self.security = AsyncSecurity(self._security_core, self._runner)
        self.sync = SyncBastion(self)

        self.policy_watcher = PolicyWatcher(self.policy, self.settings, sync_redis, outages)
        self.trusted_proxies = parse_networks(self.settings.trusted_proxies)
        self._hidden_peer_seen = False
        self._closed = False
        self._exit_hook: Callable[[], None] | None = None
        self._account = AccountService(self)

    def asgi(self, app: Any) -> Any:
        """Wrap an ASGI app so every request is authenticated (and authorized).

        A Starlette or FastAPI app also renders Bastion's errors raised inside it as their JSON
        (see :func:`bastion.adapters.starlette.install`).
        """
        # Imported here: the middleware imports this module (the allowed way back, see above).
        from bastion.middleware.asgi import BastionMiddleware

        return BastionMiddleware(app, bastion=self)

    def wsgi(self, app: Any) -> Any:
        """Wrap a WSGI app (Flask, ...) so every request is authenticated (and authorized).

        WSGI has no shutdown event, so this also registers :meth:`close` to run at exit. A
        credential kind with no ``authenticate_sync`` is a ``ConfigError`` here.
        """
        # Imported here: the middleware imports this module (the allowed way back, see above).
        from bastion.middleware.wsgi import BastionWSGIMiddleware

        if self._app_users is not None and self._app_users.sync_store is None:
            # Start-up, not the first sign-up: the account routes would run it on sync code.
            raise UserStoreMismatch(self._app_users.needs_sync())
        middleware = BastionWSGIMiddleware(app, bastion=self)
        self._close_at_exit()
        return middleware

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def is_closed(self) -> bool:
        """Whether :meth:`close` or :meth:`aclose` ran; a closed Bastion refuses Redis work."""
        return self._closed

    def close(self) -> None:
        """Stop the policy watcher and close the Redis clients Bastion made (sync code).

        The asyncio client's connections belong to an event loop and cannot be closed from
        here: async code calls :meth:`aclose`, which closes both. Idempotent.
        """
        if not self._shut():
            return
        self.policy_watcher.stop()
        if self._session_cache is not None:
            self._session_cache.stop()
        if self._owns_sync:
            self._sync_runner.client.close()
        if self._owns_async and self.settings.redis_url is not None and _connections(self.redis):
            logger.warning(
                "Bastion.close() cannot close the asyncio client's connections (they belong to "
                "an event loop): use 'await bastion.aclose()' or 'async with' in async code."
            )

    async def aclose(self) -> None:
        """Stop the policy watcher and close the Redis clients Bastion made. Idempotent."""
        if not self._shut():
            return
        if self.policy_watcher.running:
            # Joining the thread may wait for a check in progress: not on the event loop.
            await asyncio.to_thread(self.policy_watcher.stop)
        else:
            self.policy_watcher.stop()
        if self._session_cache is not None:
            await self._session_cache.aclose()
        if self._owns_async:
            await _aclose(self.redis)
        if self._owns_sync:
            self._sync_runner.client.close()

    def lifespan(self, app: Any) -> AbstractAsyncContextManager[None]:
        """A Starlette / FastAPI lifespan that closes Bastion at shutdown (``lifespan=``)."""
        return _closed_after(self)

    def __enter__(self) -> Bastion:
        self._refuse_if_closed()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Bastion:
        self._refuse_if_closed()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise RuntimeError(CLOSED)

    def _shut(self) -> bool:
        """Mark closed (runners refuse from now on); False if it already was."""
        if self._closed:
            return False
        self._closed = True
        self._runner.closed = self._sync_runner.closed = True
        if self._exit_hook is not None:
            atexit.unregister(self._exit_hook)
            self._exit_hook = None
        return True

    def _close_at_exit(self) -> None:
        """Run :meth:`close` at interpreter exit, without keeping this Bastion alive until then."""
        if self._exit_hook is not None or self._closed:
            return
        alive = weakref.ref(self)

        def close_if_alive() -> None:
            bastion = alive()
            if bastion is not None:
                bastion.close()

        self._exit_hook = close_if_alive
        atexit.register(close_if_alive)

    def session_cache_stats(self) -> SessionCacheStats:
        """This process's session-cache counters (``state="off"`` when the cache is off)."""
        if self._session_cache is None:
            return SessionCacheStats("off", 0, 0, 0, 0, 0, 0, 0, 0, 0)
        return self._session_cache.stats()

    # -- per request ------------------------------------------------------------------------

    def client_ip(self, peer: str, forwarded_for: bytes | None) -> str:
        """The client's address, honouring ``trusted_proxies``."""
        return client_ip(peer, forwarded_for, self.trusted_proxies)

    def _hidden_peer(self) -> None:
        """Say once that the server hid a request's socket address (its proxy headers are on)."""
        if self._hidden_peer_seen:
            return
        self._hidden_peer_seen = True
        logger.warning(
            "The server replaced a client's address with a forwarded one and Bastion cannot read "
            "the socket: such requests count as client %r (one rate-limit bucket). Turn the "
            "server's proxy headers off (uvicorn --no-proxy-headers) and name your proxies in "
            "trusted_proxies.",
            UNKNOWN,
        )

    def _authenticate(
        self,
        credentials: Credentials,
        rows_for: str | None,
        method: str = "GET",
        scheme: str = "https",
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> Steps[tuple[Identity, Rows]]:
        """Who is calling, plus the resource's own permission rows when they count.

        The credential's backend checks it: a session's hash (for a JWT, its session's) also
        carries the user's role fields, and it and the rows are sent together and read in one
        round trip. Scoped callers (API keys) skip resource permissions and read no rows.
        ``rows_for`` is a resource the route map built (already checked).
        """
        backend, token = credentials.backend, credentials.token
        if backend is None:
            rows: Rows = []
            if rows_for:
                rows = yield from self._permissions_core.rows_valid(rows_for)
            return Identity.guest(), rows
        if token is None:
            raise credentials.refusal()
        check = backend._check(token, method, scheme, headers)
        if rows_for and not backend.scoped:
            identity, rows = yield from together(check, self._permissions_core.rows_valid(rows_for))
        else:
            identity, rows = (yield from check), []
        if identity is None:
            raise backend.invalid()
        return identity, rows

    def _admit(
        self,
        method: str,
        scheme: str,
        path: str,
        headers: list[tuple[bytes, bytes]],
        websocket: bool = False,
    ) -> Steps[tuple[Identity, Credentials]]:
        """Steps 1-4 of a request: credentials, identity, cross-site check, decision.

        ``path`` is the decoded path the app routes (ASGI ``scope["path"]``); with the route map
        in force it is made canonical first (a dot segment is a 400 before anything else).
        Raises the ``BastionError`` the client must get instead of the app's answer.
        """
        authorizer = self.authorizer
        target = rows_for = None
        guarded = False
        # A CORS preflight: browsers send it without credentials (Fetch spec), so no route map
        # could admit it and the app's CORS middleware could never answer it. It goes on
        # unjudged, as a guest whatever it claims, so no app route sees it authenticated.
        preflight = method == "OPTIONS" and _is_preflight(headers)
        if authorizer.active:
            path = canonical_path(path)
            guarded = not preflight and authorizer.guards(method, path)
            if guarded:
                target = authorizer.target(method, path)
                if target is not None and authorizer.needs_rows(target):
                    rows_for = target.resource
        if preflight:
            return Identity.guest(), NO_CREDENTIALS
        credentials = self.credentials.read(headers)
        backend, token = credentials.backend, credentials.token
        rows: Sequence[tuple[str, str]] = ()
        # The usual requests (no resource rows to read beside the check) are what _authenticate
        # does, done here: one generator less for each reply to pass through.
        if backend is None and rows_for is None:
            identity = Identity.guest()
        elif backend is not None and token is not None and rows_for is None:
            checked = yield from backend._check(token, method, scheme, headers)
            if checked is None:
                raise backend.invalid()
            identity = checked
        else:  # rows to read, or an unusable credential
            identity, rows = yield from self._authenticate(
                credentials, rows_for, method, scheme, headers
            )
        transport = credentials.transport
        if (
            transport is not None
            and transport.ambient
            and is_cross_site(
                method, scheme, headers, self.settings.allowed_origins, websocket=websocket
            )
        ):
            raise CrossSiteRequest()
        if guarded:
            authorizer.authorize(identity, target, rows)
        return identity, credentials

    def refusal(
        self, exc: BastionError, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and JSON body of an error response."""
        body = exc.body()
        out = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *OWN_HEADERS_RAW,
            *((k.lower().encode(), v.encode()) for k, v in exc.headers.items()),
        ]
        # A stale cookie is cleared with the 401 so the browser's next request is a guest's.
        if (
            isinstance(exc, Unauthorized)
            and self.credentials.read(headers).transport is self._session_backend.cookie
        ):
            out.append((b"set-cookie", clear_cookie(self.settings).encode()))
        logger.info("refused: %s (%d)", exc.type, exc.status)
        telemetry.refused(exc.type, exc.status)
        return exc.status, out, body

    def _sent_credential(self, headers: list[tuple[bytes, bytes]]) -> str:
        """What a request sent (``guest`` for nothing): for the span of a refused one."""
        return self.credentials.read(headers).kind or "guest"

    @staticmethod
    def identity(conn: Any) -> Identity:
        """The identity of the request (a Starlette/Flask request, an ASGI scope or environ)."""
        return state_of(conn).identity

    def require(
        self, identity: Identity, action: str, resource: str, *, scope: str | None = None
    ) -> None:
        """Raise the refusal the caller should get unless they may ``action`` on ``resource``.

        For checks inside views (per-document rows are not read here: pass them through the
        route map for that). API keys need ``scope``; users and guests the policy.
        """
        if telemetry.current() is None:  # no SDK: the decision alone
            _require(self.policy.engine, identity, action, resource, scope)
            return
        telemetry.decide(
            lambda: _require(self.policy.engine, identity, action, resource, scope),
            identity.kind,
            action,
            resource,
        )

    def create_jwt(self, conn: Any) -> str:
        """A JWT for the request's session; only a session can mint one (not a JWT, not a key).

        Without a JWT key (``jwt_secret`` / ``jwt_keys``) it raises ``JWTDisabled`` (501).
        """
        state = state_of(conn)
        identity = state.identity
        if self._session_backend.issued(identity) and identity.user_id and identity.session_id:
            try:
                token = self.jwt.mint(identity.user_id, identity.session_id)
            except BastionError as exc:  # JWTDisabled: no key is configured
                self.audit.failed(
                    "jwt_create",
                    state,
                    exc,
                    user_id=identity.user_id,
                    session_id=identity.session_id,
                )
                raise
            self.audit.record(
                "jwt_create",
                state,
                user_id=identity.user_id,
                session_id=identity.session_id,
                details={"lifetime": self.settings.jwt_lifetime},
            )
            return token
        refusal: BastionError
        if not identity.is_guest:
            refusal = JWTCreationDenied()
        else:
            refusal = Unauthorized("Log in first: a JWT is minted from a session.")
        self.audit.failed(
            "jwt_create", state, refusal, user_id=identity.user_id, session_id=identity.session_id
        )
        raise refusal


class SyncBastion(_RequestSteps, SyncFront[LoginCore]):
    """``bastion.sync``: Bastion's Redis work for threaded code (WSGI, Flask, CLI, scripts).

    The names of ``bastion`` itself: ``bastion.sync.sessions.create(...)`` where async code
    awaits ``bastion.sessions.create(...)``, ``bastion.sync.login(request, user_id)`` for
    ``await bastion.login(request, user_id)``. The helpers that do no I/O (``identity``,
    ``require``, ``create_jwt``) are on ``bastion`` only, for both.
    """

    def __init__(self, bastion: Bastion) -> None:
        runner = bastion._sync_runner
        super().__init__(bastion._login_core, runner)
        self.redis: Any = runner.client
        """The blocking ``redis`` client Bastion uses."""
        self.sessions = SyncSessionStore(bastion._sessions_core, runner)
        self.users = SyncUsers(bastion._users_core, runner)
        self.api_keys = apikeys.SyncAPIKeyStore(bastion._api_keys_core, runner)
        self.permissions = grants.SyncGrantStore(bastion._permissions_core, runner)
        self.security = SyncSecurity(bastion._security_core, runner)


def _require(
    engine: Any, identity: Identity, action: str, resource: str, scope: str | None
) -> bool:
    """The decision of :meth:`Bastion.require`: True, or the refusal raised."""
    if identity.is_scoped:
        if scope is None:
            raise MissingScope("(none: this route accepts no API key)")
        identity.require_scope(scope)
        return True
    if not engine.decide(identity.roles, action, resource).allowed:
        raise Forbidden() if identity.is_authenticated else Unauthorized()
    return True


@contextlib.asynccontextmanager
async def _closed_after(bastion: Bastion) -> AsyncIterator[None]:
    """The body of :meth:`Bastion.lifespan`: nothing to start (all is lazy), close at the end."""
    try:
        yield
    finally:
        await bastion.aclose()


def _connections(client: Any) -> int:
    """How many open connections a redis-py client's pool holds (0 if it cannot tell).

    A pool keeps the connection objects it made even after they disconnect (a failed connect,
    a server that went away): only those still connected need closing.
    """
    pool = getattr(client, "connection_pool", None)
    free = getattr(pool, "_available_connections", ())
    used = getattr(pool, "_in_use_connections", ())
    return sum(1 for conn in (*free, *used) if getattr(conn, "is_connected", True))


async def _aclose(client: Any) -> None:
    """Close a ``redis.asyncio`` client (``aclose`` since redis-py 5.0.1, ``close`` before)."""
    closing = getattr(client, "aclose", None) or client.close
    await closing()
