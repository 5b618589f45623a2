"""``Bastion``: the one object an app builds, and the per-request state the middleware keeps."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from starlette.authentication import AuthCredentials

from bastion.cookies import clear_cookie, session_cookie
from bastion.credentials import Credentials
from bastion.errors import JWTCreationDenied, Unauthorized
from bastion.identity import Identity
from bastion.policies import grants
from bastion.policies.authorizer import Authorizer
from bastion.policies.watch import PolicyWatcher, load_holder
from bastion.redis_clients import make_clients
from bastion.redisio import AsyncRunner, SyncRunner
from bastion.sessions import AsyncSessionStore, NewSession, SyncSessionStore
from bastion.sessions import scripts as session_scripts
from bastion.settings import Settings
from bastion.tokens import apikeys
from bastion.tokens.jwt import JWTService

Scope = MutableMapping[str, Any]

# A client that cannot keep cookies sends this header on its log-in request to get the token back.
FALLBACK_REQUEST_HEADER = b"x-bastion-fallback"


class RequestState:
    """What Bastion knows about one request; kept at ``scope["bastion"]``."""

    __slots__ = ("bastion", "credentials", "identity", "response_headers")

    def __init__(self, bastion: Bastion, identity: Identity, credentials: Credentials) -> None:
        self.bastion = bastion
        self.identity = identity
        self.credentials = credentials
        self.response_headers: list[tuple[bytes, bytes]] = []


def _scope_of(conn: Any) -> Scope:
    scope = getattr(conn, "scope", conn)
    if not isinstance(scope, MutableMapping) or "bastion" not in scope:
        raise RuntimeError(
            "Bastion is not installed on this app: wrap it with bastion.asgi(app) or add "
            "Middleware(BastionMiddleware, bastion=...) before calling login/logout."
        )
    return scope


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _set_identity(scope: Scope, state: RequestState, identity: Identity) -> None:
    """Publish the identity for Bastion and for Starlette's ``request.user``/``request.auth``."""
    state.identity = identity
    scope["user"] = identity
    scope["auth"] = AuthCredentials(identity.auth_scopes)


class Bastion:
    """Settings, the session stores and the log-in helpers of one app."""

    def __init__(
        self, settings: Settings | None = None, *, redis: Any = None, sync_redis: Any = None
    ) -> None:
        self.settings = settings if settings is not None else Settings.load()
        if redis is None or sync_redis is None:
            made_async, made_sync = make_clients(self.settings)
            redis = redis if redis is not None else made_async
            sync_redis = sync_redis if sync_redis is not None else made_sync
        scripts = {**session_scripts.ALL, **apikeys.SCRIPTS, **grants.SCRIPTS}
        self.runner = AsyncRunner(redis, scripts)
        self.sync_runner = SyncRunner(sync_redis, scripts)
        self.sessions = AsyncSessionStore(self.runner, self.settings)
        self.sync_sessions = SyncSessionStore(self.sync_runner, self.settings)
        self.api_keys = apikeys.AsyncAPIKeyStore(self.runner, self.settings)
        self.sync_api_keys = apikeys.SyncAPIKeyStore(self.sync_runner, self.settings)
        self.jwt = JWTService(self.settings, embedded=self.settings.redis_url is None)
        self.policy = load_holder(self.settings)
        self.authorizer = Authorizer(self.settings, lambda: self.policy.engine)
        grant_core = grants.GrantCore(
            self.settings.key_prefix,
            lambda: self.policy.engine,
            admin_roles=self.settings.admin_roles,
            child_security=[r.path for r in self.settings.resources if r.child_security],
        )
        self.permissions = grants.AsyncGrantStore(self.runner, grant_core)
        self.sync_permissions = grants.SyncGrantStore(self.sync_runner, grant_core)
        self.policy_watcher = PolicyWatcher(self.policy, self.settings, sync_redis)

    def asgi(self, app: Any) -> Any:
        """Wrap an ASGI app so every request is authenticated."""
        from bastion.middleware.asgi import BastionMiddleware

        return BastionMiddleware(app, bastion=self)

    @staticmethod
    def identity(conn: Any) -> Identity:
        """The identity of the request (a Starlette ``Request`` or an ASGI scope)."""
        state: RequestState = _scope_of(conn)["bastion"]
        return state.identity

    async def login(self, conn: Any, user_id: str) -> NewSession:
        """Start a new session for ``user_id`` and set its cookie on the response.

        Any session the request came with is revoked first, so a log-in always yields a fresh
        session id (no fixation). A client that sent ``X-Bastion-Fallback: true`` or that
        authenticates by header also gets the token in the session header of the response.
        """
        scope = _scope_of(conn)
        state: RequestState = scope["bastion"]
        current = state.identity
        if current.kind == "session" and current.user_id and current.session_id:
            await self.sessions.revoke(current.user_id, current.session_id)
        client = scope.get("client")
        user_agent = _header(scope, b"user-agent") or b""
        new = await self.sessions.create(
            user_id,
            ip=client[0] if client else "",
            user_agent=user_agent.decode("latin-1"),
        )
        self._remember_login(scope, state, new)
        return new

    def create_jwt(self, conn: Any) -> str:
        """A JWT for the request's session; only a session can mint one (not a JWT, not a key)."""
        identity = self.identity(conn)
        if identity.kind in ("jwt", "key"):
            raise JWTCreationDenied()
        if identity.kind != "session" or not identity.user_id or not identity.session_id:
            raise Unauthorized("Log in first: a JWT is minted from a session.")
        return self.jwt.mint(identity.user_id, identity.session_id)

    async def logout(self, conn: Any) -> bool:
        """Revoke the request's session and clear its cookie; False if there was none."""
        scope = _scope_of(conn)
        state: RequestState = scope["bastion"]
        revoked = False
        if state.identity.session_id is not None and state.identity.user_id is not None:
            revoked = await self.sessions.revoke(state.identity.user_id, state.identity.session_id)
        self._remember_logout(scope, state)
        return revoked

    def _remember_login(self, scope: Scope, state: RequestState, new: NewSession) -> None:
        _set_identity(scope, state, Identity.for_session(new.session.user_id, new.session.id))
        state.response_headers = [
            (b"set-cookie", session_cookie(self.settings, new.token).encode()),
            # The response carries a secret: no shared or browser cache may keep it.
            (b"cache-control", b"no-store"),
        ]
        asked = (_header(scope, FALLBACK_REQUEST_HEADER) or b"").strip().lower() in (b"1", b"true")
        if asked or state.credentials.source == "header":
            state.response_headers.append(
                (self.settings.session_header.lower().encode(), new.token.encode())
            )

    def _remember_logout(self, scope: Scope, state: RequestState) -> None:
        _set_identity(scope, state, Identity.guest())
        state.response_headers = [(b"set-cookie", clear_cookie(self.settings).encode())]
