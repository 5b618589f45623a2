"""Audit events: who signed up, logged in or out, changed a password, ended sessions, got a JWT.

Each account action produces one :class:`AuditEvent`, which :class:`AuditLog` sends to three
places: the ``bastion.audit`` logger (INFO for successes, WARNING for failures and refusals, the
event as ``record.bastion_audit``), the app's ``audit_hook`` if it gave one, and the current
OpenTelemetry span when ``opentelemetry-api`` is installed and the span is recording
(:mod:`bastion.telemetry`).

An event never holds a secret: no password, token, JWT, API key, hash or cookie reaches it,
because the callers pass only ids, counts and error types. Emails are left out too, even of failed
log-ins: the user id says whose account it was when the email has one, and a log of the emails
people mistyped or tried would be a list of personal data and of which addresses have accounts.

Events are for account actions only; per-request authentication records nothing here.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal

from bastion.errors import BastionError
from bastion.identity import is_valid_id
from bastion.sessions.token import is_session_id
from bastion.telemetry import telemetry

logger = logging.getLogger("bastion.audit")

EVENTS = (
    "sign_up",
    "log_in",
    "log_out",
    "password_change",
    "session_revoke",
    "session_evicted",
    "jwt_create",
    "rate_limited",
    "user_disable",
    "user_enable",
    "user_delete",
)
"""Every event name Bastion emits."""

Outcome = Literal["success", "failure"]
DetailValue = str | int | bool | tuple[str, ...]
"""What a detail may hold: the value types an OpenTelemetry attribute accepts too."""
AuditHook = Callable[["AuditEvent"], object]
"""An app's receiver of events: called synchronously, with each event, where it happens."""

MAX_USER_AGENT = 512  # the length a session keeps; the header is the client's to make long
_REPORTED = "_bastion_audit_reported"


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One account action: what, its outcome, whose, from where, and why it failed."""

    event: str
    outcome: Outcome
    user_id: str | None = None
    session_id: str | None = None
    """The caller's session; for ``log_in`` the new one, for ``log_out`` the one that ended."""
    client_ip: str = ""
    user_agent: str = ""
    reason: str | None = None
    """The error ``type`` of a failure (``user_invalid_credentials``, ...); None on success."""
    details: Mapping[str, DetailValue] = field(default_factory=dict, hash=False)
    """Facts of this event only, never secret: evicted or revoked session ids, counts, ..."""
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.outcome not in ("success", "failure"):
            raise ValueError(f"outcome must be 'success' or 'failure', not {self.outcome!r}")
        # Frozen all the way down: a hook must not change what the log and the span see.
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view (the ``bastion_audit`` of a log record)."""
        return {
            "event": self.event,
            "outcome": self.outcome,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "reason": self.reason,
            "timestamp": self.timestamp.isoformat(),
            "details": {k: list(v) if isinstance(v, tuple) else v for k, v in self.details.items()},
        }

    def attributes(self) -> dict[str, str | int | bool | tuple[str, ...]]:
        """The same fields as OpenTelemetry attributes (no None values; details flattened)."""
        out: dict[str, str | int | bool | tuple[str, ...]] = {
            "event": self.event,
            "outcome": self.outcome,
            "client_ip": self.client_ip,
            "user_agent": self.user_agent,
            "timestamp": self.timestamp.isoformat(),
        }
        for name in ("user_id", "session_id", "reason"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for key, detail in self.details.items():
            out[f"details.{key}"] = detail
        return out


class AuditLog:
    """Sends each event to the ``bastion.audit`` logger, the app's hook and the current span."""

    def __init__(self, hook: AuditHook | None = None) -> None:
        self.hook = hook

    def emit(self, event: AuditEvent) -> None:
        """Log the event, hand it to the hook and add it to the recording span."""
        failed = event.outcome == "failure"
        logger.log(
            logging.WARNING if failed else logging.INFO,
            "%s %s user=%s session=%s ip=%s reason=%s",
            event.event,
            event.outcome,
            event.user_id or "-",
            event.session_id or "-",
            event.client_ip or "-",
            event.reason or "-",
            extra={"bastion_audit": event.to_dict()},
        )
        if self.hook is not None:
            self._call_hook(event)
        self._add_to_span(event)

    def record(
        self,
        name: str,
        state: Any,
        *,
        outcome: Outcome = "success",
        reason: str | None = None,
        user_id: str | None = None,
        session_id: str | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> AuditEvent:
        """Emit an event of this request (its client address and user agent come from ``state``)."""
        event = AuditEvent(
            name,
            outcome,
            # Ids that fail their grammar came from the client (a URL, a body): never logged.
            user_id if user_id and is_valid_id(user_id) else None,
            session_id if session_id and is_session_id(session_id) else None,
            str(getattr(state, "client_ip", "") or ""),
            str(getattr(state, "user_agent", "") or "")[:MAX_USER_AGENT],
            reason,
            details or {},
        )
        self.emit(event)
        return event

    def failed(
        self,
        name: str,
        state: Any,
        error: BastionError,
        *,
        user_id: str | None = None,
        session_id: str | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> None:
        """Emit a failure for ``error`` unless one was emitted for it already.

        The innermost step that sees an error knows the most (the user id of a wrong password),
        so it reports it; the callers it passes through then stay silent about the same error.
        """
        if getattr(error, _REPORTED, False):
            return
        setattr(error, _REPORTED, True)
        self.record(
            name,
            state,
            outcome="failure",
            reason=error.type,
            user_id=user_id,
            session_id=session_id,
            details=details,
        )

    def _call_hook(self, event: AuditEvent) -> None:
        assert self.hook is not None
        try:
            result = self.hook(event)
        except Exception:
            # The app's storage failing must not fail the log-in it is recording.
            logger.exception("audit hook failed on a %s event", event.event)
            return
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it so Python does not warn later
            logger.error("audit hook returned an awaitable: it must be a plain function")

    def _add_to_span(self, event: AuditEvent) -> None:
        try:
            telemetry.add_event(
                "bastion." + event.event,
                event.attributes(),
                int(event.timestamp.timestamp() * 1_000_000_000),
            )
        except Exception:
            # Tracing is an observer: its failure must not fail the request it observes.
            logger.exception("could not add a %s event to the current span", event.event)
