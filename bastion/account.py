"""The account service: sign up, log in, log out, sessions, JWTs, password change.

Framework-neutral and written once as sans-IO steps: the Starlette and FastAPI routers run them
with the async runner (password hashing off the event loop), the Flask blueprint with the sync
one. :meth:`AccountService.handle` is the whole HTTP contract (DESIGN.md section 4); the
adapters only move bytes in and out.

Every account action is recorded as an audit event (:mod:`bastion.audit`) where its outcome is
known: a failure by the innermost step that knows whose account it was, else by ``handle`` for
the route; log-in, log-out and JWT successes by the ``Bastion`` steps the app may call itself.

The service is given its collaborators as an :class:`AccountHost` (``Bastion`` is one) and
imports neither ``bastion.core`` nor the middlewares: it sits below them in the import graph.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from bastion.audit import AuditLog, DetailValue
from bastion.csrf import from_another_site
from bastion.emails import normalize_email
from bastion.errors import (
    BadRequest,
    BastionError,
    CrossSiteRequest,
    InvalidCredentials,
    MissingScope,
    NotFound,
    RateLimited,
    ReauthenticationRequired,
    ServerError,
    Unauthorized,
)
from bastion.identity import Identity
from bastion.passwords import PasswordCheck, PasswordContext, PasswordHasher, PasswordPolicy
from bastion.ratelimit import RateLimitCore
from bastion.redact import redact
from bastion.redisio import Compute, Steps
from bastion.requestbody import decode_object, require_json
from bastion.security import SecurityCore, SecurityValues
from bastion.sessions import NewSession, SessionCore
from bastion.sessions.token import is_session_id
from bastion.settings import Settings
from bastion.users.protocol import UserSteps
from bastion.users.record import User, validate_profile

if TYPE_CHECKING:
    from bastion.policies.authorizer import Authorizer

logger = logging.getLogger("bastion.account")


class LoginSteps(Protocol):
    """Bastion's log-in and log-out of a request, as steps (``bastion.core.LoginCore``)."""

    def login(self, state: Any, user_id: str) -> Steps[NewSession]:
        """Start a session for ``user_id`` on this request."""
        ...

    def logout(self, state: Any) -> Steps[bool]:
        """End the request's session."""
        ...


class AccountHost(Protocol):
    """What the account service uses of the app's ``Bastion``: its private parts (steps).

    The service runs steps, so it is given the cores behind the public fronts, never a front.
    """

    @property
    def settings(self) -> Settings:
        """The validated settings."""
        ...

    @property
    def password_checks(self) -> tuple[PasswordCheck, ...]:
        """The app's own password rules."""
        ...

    @property
    def audit(self) -> AuditLog:
        """Where account events are recorded."""
        ...

    @property
    def _security_core(self) -> SecurityCore:
        """The run-time security settings, as steps."""
        ...

    @property
    def _user_store(self) -> UserSteps:
        """The user records, as steps (an app's store reached through a ``Hook``)."""
        ...

    @property
    def _sessions_core(self) -> SessionCore:
        """The session store, as steps."""
        ...

    @property
    def _login_core(self) -> LoginSteps:
        """Log-in and log-out of a request, as steps."""
        ...

    @property
    def authorizer(self) -> Authorizer:
        """The route map, which must leave the account routes to the service."""
        ...

    def create_jwt(self, conn: Any) -> str:
        """A JWT for the request's session."""
        ...


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, JSON body (None for 204) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


ROUTES: tuple[tuple[str, str, str], ...] = (
    ("POST", "", "sign_up"),
    ("GET", "", "get_account"),
    ("POST", "/sessions", "log_in"),
    ("GET", "/sessions", "list_sessions"),
    ("DELETE", "/sessions", "delete_sessions"),
    ("DELETE", "/sessions/{session_id}", "delete_session"),
    ("POST", "/jwts", "create_jwt"),
    ("PATCH", "/password", "change_password"),
)
"""The account routes under their prefix (``/account``): method, path, handler name."""

BODIES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sign_up": (("email", "password"), ("name", "phone")),
    "log_in": (("email", "password"), ()),
    "delete_sessions": ((), ("password",)),
    "delete_session": ((), ("password",)),
    "create_jwt": ((), ()),
    "change_password": (("password", "oldPassword"), ()),
}
"""The JSON fields of each route that takes a body: (required, optional). The GETs read none."""

# Body fields taken out of any traceback the log gets.
_SECRET_FIELDS = ("password", "oldPassword")

_CROSS_SITE = (
    "Cross-site request refused: the account routes answer only the app's own pages and "
    "allowed_origins."
)

# The audit event of each route that acts. The two reads are left out: a guest's 401 on
# GET /account is what every page load of a signed-out visitor does, not an attack to record.
_ROUTE_EVENTS = {
    "sign_up": "sign_up",
    "log_in": "log_in",
    "delete_sessions": "session_revoke",
    "delete_session": "session_revoke",  # or log_out, for the caller's own session
    "create_jwt": "jwt_create",
    "change_password": "password_change",
}


def _fields(
    data: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...]
) -> dict[str, str]:
    """A route's fields from a decoded body: the required ones there, each a string, no other."""
    expected = (*required, *optional)
    if any(key not in expected for key in data):
        # The route's own field names, not the client's key (which could be anything): an
        # unknown field is refused rather than ignored, so a misspelt one is not silently lost.
        takes = ", ".join(expected) if expected else "no fields"
        raise BadRequest(f"The request body has a field this route does not take ({takes}).")
    out: dict[str, str] = {}
    for name in expected:
        value = data.get(name)
        if value is None:
            if name in required:
                raise BadRequest(f"Missing required field {name!r}.")
            continue
        if not isinstance(value, str):
            raise BadRequest(f"Field {name!r} must be a string.")
        out[name] = value
    return out


class AccountService:
    """Account operations for one app (its ``Bastion`` is the host)."""

    def __init__(self, bastion: AccountHost) -> None:
        self.bastion = bastion
        self.settings = bastion.settings
        self.hasher = PasswordHasher.from_settings(self.settings)
        self.limits = RateLimitCore(self.settings)
        self.password_checks = bastion.password_checks
        # Built now so a broken custom dictionary fails at start-up, not at the first sign-up;
        # with the dictionary on, because `bastion security set password_dictionary true` can
        # switch it on while the app runs.
        PasswordPolicy.from_settings(self.settings, dictionary=True)

    def mount(self) -> tuple[tuple[str, str, str], ...]:
        """The account routes, for an adapter mounting them (the route map then exempts them)."""
        prefix = self.settings.account_prefix
        self.bastion.authorizer.exempt((method, prefix + path) for method, path, _ in ROUTES)
        return ROUTES

    def _policy(self, values: SecurityValues) -> PasswordPolicy:
        return PasswordPolicy.from_settings(
            self.settings,
            dictionary=values.password_dictionary,
            personal_data=values.password_personal_data,
            history=values.password_history,
            checks=self.password_checks,
        )

    @staticmethod
    def _app_checks(policy: PasswordPolicy, password: str, context: PasswordContext) -> Steps[None]:
        """The app's ``password_checks``, last and off the event loop (they may block)."""
        if policy.checks:
            yield Compute(policy.run_checks, (password, context))

    @staticmethod
    def _user_of(state: Any) -> tuple[Identity, str]:
        """The signed-in caller and their user id; API keys and guests are refused."""
        identity: Identity = state.identity
        if identity.is_scoped:
            raise MissingScope("account", "An API key")
        if identity.user_id is None:
            raise Unauthorized()
        return identity, identity.user_id

    def _limit(
        self,
        state: Any,
        endpoint: str,
        email: str | None,
        user_id: str | None = None,
        *,
        count: bool = True,
        per_account: bool = False,
    ) -> Steps[None]:
        """Refuse the attempt if a limit is reached; count it unless ``count`` is False.

        ``per_account`` adds the email's counter across every address (``rate_limit_per_account``).
        """
        ip = state.client_ip
        if count:
            decision = yield from self.limits.hit(
                endpoint, email=email, ip=ip, per_account=per_account
            )
        else:
            decision = yield from self.limits.check(
                endpoint, email=email, ip=ip, per_account=per_account
            )
        if not decision.allowed:
            # Its own event, beside the route's failure: one query finds every refusal.
            self.bastion.audit.record(
                "rate_limited",
                state,
                outcome="failure",
                reason=RateLimited.type,
                user_id=user_id,
                details={
                    "endpoint": endpoint,
                    "limit": decision.limit,
                    "retry_after": int(decision.headers()["Retry-After"]),
                },
            )
        decision.raise_if_denied()

    # -- operations -------------------------------------------------------------------------

    def sign_up(
        self, state: Any, email: str, password: str, name: str = "", phone: str = ""
    ) -> Steps[User]:
        """Create an account (it does not log in)."""
        try:
            email, name, phone = validate_profile(email, name, phone)
            # No per-account counter: sign-up guesses no password, and one would let anyone
            # who knows an address block its sign-up from everywhere.
            yield from self._limit(state, "signup", email)
            values = yield from self.bastion._security_core.current()
            policy = self._policy(values)
            user_id = self.bastion._user_store.new_id()
            policy.check(password, user_id=user_id, email=email, name=name, phone=phone)
            context = PasswordContext(user_id=user_id, email=email, name=name, phone=phone)
            yield from self._app_checks(policy, password, context)
            password_hash = yield Compute(self.hasher.hash, (password,))
            history = tuple(policy.remember(password_hash, ()))
            user = yield from self.bastion._user_store.create(
                email, password_hash, name=name, phone=phone, history=history, user_id=user_id
            )
        except BastionError as exc:
            # No user id: the account does not exist (and an existing one is not named).
            self.bastion.audit.failed("sign_up", state, exc)
            raise
        self.bastion.audit.record("sign_up", state, user_id=user.id)
        return user

    def log_in(self, state: Any, email: str, password: str) -> Steps[tuple[User, NewSession]]:
        """Check the password and start a session (new id every time; the cap applies)."""
        # The same normalisation as sign-up, but no validation: an account made before a rule
        # existed can still log in, and an address sign-up refuses simply finds no account.
        email = normalize_email(email)
        user: User | None = None
        try:
            # Only failures count (a user who logs in often is no attacker), but the limit is
            # checked first, so a locked-out client gets no argon2 verify. Per account too: a
            # password is guessed here, and addresses are cheap to rotate.
            yield from self._limit(state, "login", email, count=False, per_account=True)
            if len(password) > self.settings.password_max_length:
                yield from self._count_failed_log_in(state, email)
                raise InvalidCredentials()  # never hash what no account can have
            user = yield from self.bastion._user_store.get_by_email(email)
            if user is None or not user.password_hash:
                # The same argon2 work as a real check, so timing does not tell which emails exist.
                yield Compute(self.hasher.dummy_verify, (password,))
                yield from self._count_failed_log_in(state, email)
                raise InvalidCredentials()
            if not (yield Compute(self.hasher.verify, (user.password_hash, password))):
                yield from self._count_failed_log_in(state, email)
                raise InvalidCredentials()
            if self.hasher.needs_rehash(user.password_hash):
                upgraded = yield Compute(self.hasher.hash, (password,))
                yield from self.bastion._user_store.set_password(
                    user.id, upgraded, user.password_history
                )
            # An app's store keeps the roles: a change made in its database counts from here.
            yield from self.bastion._user_store.mirror(user)
            # It records the success (with the new session and any it evicted).
            new = yield from self.bastion._login_core.login(state, user.id)
            return user, new
        except BastionError as exc:
            # The user id when the email has an account (a wrong password), never the email.
            self.bastion.audit.failed("log_in", state, exc, user_id=user.id if user else None)
            raise

    def _count_failed_log_in(self, state: Any, email: str) -> Steps[None]:
        """Count a wrong password (or unknown email) against the log-in limits."""
        # The answer is a 401 either way: if concurrent failures filled the counter first, this
        # one is not counted (the counters never pass the limit) and the next attempt is refused.
        yield from self.limits.hit("login", email=email, ip=state.client_ip, per_account=True)

    def current_user(self, state: Any) -> Steps[User]:
        """The signed-in user's record."""
        _, user_id = self._user_of(state)
        user = yield from self.bastion._user_store.get(user_id)
        if user is None:
            raise Unauthorized("The account no longer exists.")
        return user

    def change_password(self, state: Any, password: str, old_password: str) -> Steps[User]:
        """Change the password (the old one is required); other sessions end by default."""
        identity = state.identity
        audit = self.bastion.audit
        try:
            self._user_of(state)
            user = yield from self.current_user(state)
            yield from self._limit(state, "password", user.email, user.id, per_account=True)
            if len(old_password) > self.settings.password_max_length or not (
                yield Compute(self.hasher.verify, (user.password_hash, old_password))
            ):
                raise InvalidCredentials("The current password is wrong.")
            values = yield from self.bastion._security_core.current()
            policy = self._policy(values)
            policy.check(
                password, user_id=user.id, email=user.email, name=user.name, phone=user.phone
            )
            # The expensive rule last, and off the event loop: one argon2 verify per old password.
            yield Compute(policy.check_history, (password, user.password_history, self.hasher))
            context = PasswordContext(
                user_id=user.id, email=user.email, name=user.name, phone=user.phone
            )
            yield from self._app_checks(policy, password, context)
            new_hash = yield Compute(self.hasher.hash, (password,))
            history = tuple(policy.remember(new_hash, user.password_history))
            yield from self.bastion._user_store.set_password(user.id, new_hash, history)
        except BastionError as exc:
            audit.failed(
                "password_change",
                state,
                exc,
                user_id=identity.user_id,
                session_id=identity.session_id,
            )
            raise
        revoke = self.settings.revoke_sessions_on_password_change
        # Recorded as soon as it is true: if ending the other sessions fails next, the log must
        # still say the password changed (that failure is a session_revoke failure).
        audit.record(
            "password_change",
            state,
            user_id=user.id,
            session_id=identity.session_id,
            details={"revoke_other_sessions": revoke},
        )
        if revoke:
            scope: dict[str, DetailValue] = {"scope": "others", "cause": "password_change"}
            try:
                removed = yield from self.bastion._sessions_core.revoke_all(
                    user.id, keep=identity.session_id
                )
            except BastionError as exc:
                audit.failed(
                    "session_revoke",
                    state,
                    exc,
                    user_id=user.id,
                    session_id=identity.session_id,
                    details=scope,
                )
                raise
            audit.record(
                "session_revoke",
                state,
                user_id=user.id,
                session_id=identity.session_id,
                details={**scope, "count": len(removed), "session_ids": tuple(removed)},
            )
        return user

    # -- the HTTP contract ------------------------------------------------------------------

    def handle(
        self, name: str, state: Any, body: bytes, params: dict[str, str] | None = None
    ) -> Steps[Reply]:
        """Run one account route; every outcome, errors included, is a :class:`Reply`.

        ``body`` is what the adapter read (within ``max_body_size``; empty for GET and HEAD).
        """
        params = params or {}
        data: dict[str, str] = {}
        try:
            # Every account route, reads included: a page of another site has no business
            # with any of them, and a uniform 403 tells it nothing (not even "signed in").
            if from_another_site(state.scheme, state.headers, self.settings.allowed_origins):
                raise CrossSiteRequest(_CROSS_SITE)
            data = self._body(name, state, body)
            result: Reply | Steps[Reply] = getattr(self, "_http_" + name)(state, data, params)
            if isinstance(result, Reply):
                return result
            reply: Reply = yield from result
            return reply
        except Exception as exc:
            secrets = [data[key] for key in _SECRET_FIELDS if key in data]
            return self.failure(name, state, params, exc, secrets)

    @staticmethod
    def _body(name: str, state: Any, body: bytes) -> dict[str, str]:
        """The route's fields: JSON only (a form a page of any site can post is not)."""
        spec = BODIES.get(name)
        if spec is None:
            return {}
        if body:  # an empty body needs no type: DELETE without a password, say
            require_json(state.headers)
        return _fields(decode_object(body), *spec)

    def failure(
        self,
        name: str,
        state: Any,
        params: dict[str, str],
        exc: Exception,
        secrets: Iterable[str] = (),
    ) -> Reply:
        """The reply of a route that failed: a Bastion error as it is, anything else a 500.

        The client never sees an exception's own text; the log gets the traceback, with the
        request's passwords and credential taken out.
        """
        error: BastionError
        if isinstance(exc, BastionError):
            error = exc
        else:
            hidden = [*secrets, state.credentials.token or ""]
            text = redact("".join(traceback.format_exception(exc)), hidden)
            if isinstance(exc, ValueError):
                # Bad input found deep in a store of the app's own (an id, a label): the
                # client's mistake, in words the store chose; the log keeps them.
                logger.warning("account route %s: a store refused a value:\n%s", name, text)
                error = BadRequest()
            else:
                logger.error("account route %s failed:\n%s", name, text)
                error = ServerError()
        self._audit_failure(name, state, params, error)
        return Reply(error.status, error.to_dict(), dict(error.headers))

    def _audit_failure(
        self, name: str, state: Any, params: dict[str, str], error: BastionError
    ) -> None:
        """Record a route's failure (unless a step did already) under the caller's ids."""
        event = _ROUTE_EVENTS.get(name)
        if event is None:
            return
        identity: Identity = state.identity
        details: dict[str, DetailValue] = {}
        if name == "delete_sessions":
            details["scope"] = "all"
        elif name == "delete_session":
            target = params.get("session_id", "")
            if target in ("current", identity.session_id):
                event = "log_out"
            else:
                details["scope"] = "one"
                if is_session_id(target):  # else a string of the client's: not logged
                    details["session_ids"] = (target,)
        self.bastion.audit.failed(
            event,
            state,
            error,
            user_id=identity.user_id,
            session_id=identity.session_id,
            details=details,
        )

    def _http_sign_up(
        self, state: Any, data: dict[str, str], params: dict[str, str]
    ) -> Steps[Reply]:
        user = yield from self.sign_up(
            state, data["email"], data["password"], data.get("name", ""), data.get("phone", "")
        )
        return Reply(201, user.to_public())

    def _http_get_account(
        self, state: Any, data: dict[str, str], params: dict[str, str]
    ) -> Steps[Reply]:
        user = yield from self.current_user(state)
        return Reply(200, user.to_public())

    def _http_log_in(
        self, state: Any, data: dict[str, str], params: dict[str, str]
    ) -> Steps[Reply]:
        _, new = yield from self.log_in(state, data["email"], data["password"])
        return Reply(201, new.session.to_dict(current_id=new.session.id))

    def _http_list_sessions(
        self, state: Any, data: dict[str, str], params: dict[str, str]
    ) -> Steps[Reply]:
        identity, user_id = self._user_of(state)
        found = yield from self.bastion._sessions_core.list(user_id)
        rows = [s.to_dict(current_id=identity.session_id) for s in found]
        return Reply(200, {"total": len(rows), "sessions": rows})

    def _confirm(
        self, state: Any, identity: Identity, user_id: str, password: str | None
    ) -> Steps[None]:
        """Re-authentication to end other sessions: the password, or a session just started.

        A stolen session must not be able to sign the owner out everywhere; ending one's own
        current session stays free.
        """
        if password is None:
            window_ms = self.settings.reauth_window * 1000
            if window_ms and identity.session_id:
                created = yield from self.bastion._sessions_core.created_ms(
                    user_id, identity.session_id
                )
                if created is not None and time.time() * 1000 - created < window_ms:
                    return
            raise ReauthenticationRequired()
        user = yield from self.current_user(state)
        yield from self._limit(state, "password", user.email, user.id, per_account=True)
        if len(password) > self.settings.password_max_length or not (
            yield Compute(self.hasher.verify, (user.password_hash, password))
        ):
            raise InvalidCredentials("The password is wrong.")

    def _http_delete_sessions(
        self, state: Any, data: dict[str, str], params: dict[str, str]
    ) -> Steps[Reply]:
        identity, user_id = self._user_of(state)
        yield from self._confirm(state, identity, user_id, data.get("password"))
        removed = yield from self.bastion._sessions_core.revoke_all(user_id)
        self.bastion.audit.record(
            "session_revoke",
            state,
            user_id=user_id,
            session_id=identity.session_id,
            details={"scope": "all", "count": len(removed), "session_ids": tuple(removed)},
        )
        # The caller's session went with the rest, so this only clears the cookie and records
        # no log_out of its own.
        yield from self.bastion._login_core.logout(state)
        return Reply(204)

    def _http_delete_session(
        self, state: Any, data: dict[str, str], params: dict[str, str]
    ) -> Steps[Reply]:
        identity, user_id = self._user_of(state)
        session_id = params.get("session_id", "")
        if session_id in ("current", identity.session_id):
            yield from self.bastion._login_core.logout(state)
            return Reply(204)
        yield from self._confirm(state, identity, user_id, data.get("password"))
        if not (yield from self.bastion._sessions_core.revoke(user_id, session_id)):
            raise NotFound("No such session.")
        self.bastion.audit.record(
            "session_revoke",
            state,
            user_id=user_id,
            session_id=identity.session_id,
            details={"scope": "one", "count": 1, "session_ids": (session_id,)},
        )
        return Reply(204)

    def _http_create_jwt(self, state: Any, data: dict[str, str], params: dict[str, str]) -> Reply:
        self._user_of(state)
        return Reply(201, {"jwt": self.bastion.create_jwt(state)})

    def _http_change_password(
        self, state: Any, data: dict[str, str], params: dict[str, str]
    ) -> Steps[Reply]:
        user = yield from self.change_password(state, data["password"], data["oldPassword"])
        return Reply(200, user.to_public())
