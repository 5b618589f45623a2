"""Steps 3 and 4 of a request: which resource and action it asks for, and whether it may (sans-IO).

The middleware hands over the identity and, where the container's ``document_security`` is on,
the resource's own permission rows (read in the same round trip as the credential). Guests who
are refused get 401 (logging in may help), signed-in users 403, or 404 on routes that hide
existence; API keys skip resource permissions but need the route's scope.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from bastion.errors import BastionError, Forbidden, MissingScope, NotFound, Unauthorized
from bastion.identity import Identity
from bastion.routes import RouteMap, Target
from bastion.settings import Settings
from bastion.telemetry import telemetry

if TYPE_CHECKING:  # the engine (and pycasbin) loads when a policy is built, not with this module
    from bastion.policies.engine import Decision, PolicyEngine

logger = logging.getLogger("bastion.decisions")


class Authorizer:
    """The route map, the container settings and the current policy, applied to requests."""

    def __init__(self, settings: Settings, engine: Callable[[], PolicyEngine]) -> None:
        self.settings = settings
        self.active = settings.authorization
        self.routes = RouteMap(settings.routes)
        self._engine = engine
        self._child_security = frozenset(r.path for r in settings.resources if r.child_security)
        # The account routes Bastion mounted (they guard themselves): method -> path templates.
        self._exempt: dict[str, set[tuple[str, ...]]] = {}
        self._exempt_prefix = "\0"  # no canonical path starts with NUL: nothing is exempt yet
        # Report-only exists to show a team what would happen: every decision is an INFO event.
        self._log_allows = settings.report_only

    def exempt(self, routes: Iterable[tuple[str, str]]) -> None:
        """Leave these routes (method, path template) to their own checks: the account routes.

        Called by the adapters that mount the account routes, so exactly those routes are
        exempt, with the methods the frameworks answer on them (``HEAD`` beside ``GET``, and
        ``OPTIONS``), and nothing else under their prefix.
        """
        for method, template in routes:
            segments = tuple(part for part in template.split("/") if part)
            for each in {method, "OPTIONS", *(("HEAD",) if method == "GET" else ())}:
                self._exempt.setdefault(each, set()).add(segments)
        prefixes = {"/" + shape[0] for shapes in self._exempt.values() for shape in shapes}
        self._exempt_prefix = prefixes.pop() if len(prefixes) == 1 else ""

    def guards(self, method: str, path: str) -> bool:
        """Whether the route map decides this request (``path``: the canonical path)."""
        if not self.active:
            return False
        if not path.startswith(self._exempt_prefix):
            return True
        segments = path[1:].split("/")
        for shape in self._exempt.get(method, ()):
            if len(shape) == len(segments) and all(
                want == got or (want[0] == "{" and got)
                for want, got in zip(shape, segments, strict=True)
            ):
                return False
        return True

    def target(self, method: str, path: str) -> Target | None:
        """The route and resource of a request (``BadRequest`` for an unusable id)."""
        return self.routes.match(method, path)

    def needs_rows(self, target: Target | None) -> bool:
        """Whether the resource's own permission rows count for this request."""
        if target is None or not self._child_security:
            return False
        # The route map built the path from checked segments: splitting it is enough here.
        parts = target.resource.rsplit("/", 2)
        return len(parts) == 3 and parts[0] in self._child_security

    def authorize(
        self, identity: Identity, target: Target | None, rows: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Return if allowed, else raise the error the caller should see (unless report-only)."""
        if telemetry.current() is None:  # no SDK: the decision alone
            self._decide(identity, target, rows)
            return
        telemetry.decide(
            lambda: self._decide(identity, target, rows),
            identity.kind,
            target.route.action if target else None,
            target.resource if target else None,
        )

    def _decide(
        self, identity: Identity, target: Target | None, rows: Sequence[tuple[str, str]]
    ) -> bool:
        """True if allowed; False if denied in report-only mode; else raise the refusal."""
        if target is not None and identity.key_id is None:  # the usual case, kept short
            decision = self._engine().decide_valid(
                identity.roles, target.route.action, target.resource, rows
            )
            if decision.allowed:
                if self._log_allows or logger.isEnabledFor(logging.DEBUG):
                    self._log(identity, target, True, decision.reason, decision)
                return True
            self._deny(identity, target, decision.reason, decision, rows)
            return False
        try:
            allowed, reason = self._judge_other(identity, target)
        except BastionError as refusal:
            self._log(identity, target, False, f"{refusal.type}: {refusal.message}", None)
            if not self.settings.report_only:
                raise
            return False
        if allowed:
            if self._log_allows or logger.isEnabledFor(logging.DEBUG):
                self._log(identity, target, True, reason, None)
            return True
        self._deny(identity, target, reason, None)
        return False

    def _deny(
        self,
        identity: Identity,
        target: Target | None,
        reason: str,
        decision: Decision | None,
        rows: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Log a denial, then refuse (report-only: the event says so, and the request goes on)."""
        self._log(identity, target, False, reason, decision)
        if not self.settings.report_only:
            raise self._refusal(identity, target, rows)

    def _judge_other(self, identity: Identity, target: Target | None) -> tuple[bool, str]:
        """Requests no route matched, and API keys (which skip resource permissions)."""
        if target is None:
            rule = self.settings.unmatched_routes
            if rule == "allow" or (rule == "authenticated" and identity.is_authenticated):
                return True, f"no route matched; unmatched_routes = {rule}"
            if identity.is_scoped:  # no route, so no scope: like a route without one
                raise MissingScope("(none: this route accepts no API key)")
            if not identity.is_authenticated:
                raise Unauthorized()
            return False, f"no route matched; unmatched_routes = {rule}"
        route = target.route
        if route.scope is None:
            raise MissingScope("(none: this route accepts no API key)")
        identity.require_scope(route.scope)
        return True, f"API key holds scope {route.scope}"

    def _refusal(
        self, identity: Identity, target: Target | None, rows: Sequence[tuple[str, str]] = ()
    ) -> BastionError:
        # A route that hides existence hides it from those who may not read the resource; one
        # who may read it is told the truth about the update or delete it asked for.
        if (
            target is not None
            and target.route.not_found
            and (
                target.route.action == "read"
                or not self._engine()
                .decide_valid(identity.roles, "read", target.resource, rows)
                .allowed
            )
        ):
            return NotFound()
        if not identity.is_authenticated:
            return Unauthorized()
        return Forbidden()

    def _log(
        self,
        identity: Identity,
        target: Target | None,
        allowed: bool,
        reason: str,
        decision: Decision | None,
    ) -> None:
        event = {
            "result": "allow" if allowed else "deny",
            "subject": identity.identity or "guest",
            "kind": identity.kind,
            "roles": sorted(identity.roles),
            "action": target.route.action if target else None,
            "resource": target.resource if target else None,
            "route": target.route.path if target else None,
            "rule": [f"{r} ({r.source})" for r in decision.rules] if decision else [],
            "reason": reason,
            "report_only": self.settings.report_only,
        }
        logger.log(
            logging.DEBUG if allowed and not self._log_allows else logging.INFO,
            "%(result)s subject=%(subject)s action=%(action)s resource=%(resource)s "
            "reason=%(reason)s",
            event,
            extra={"bastion_decision": event},
        )
