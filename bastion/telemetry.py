"""OpenTelemetry spans and counters of Bastion's work; the one module that imports OpenTelemetry.

Spans: ``bastion.admission`` around each request's admission (credentials, identity, cross-site
check, decision), ``bastion.decision`` around each policy decision, ``bastion.account.<route>``
around each account route (``bastion.account.log_in``, ...). Counters: ``bastion.refusals`` (by
error type and status), ``bastion.session.evictions`` (sessions the cap ended),
``bastion.decisions`` (allow / deny, by action), and the session cache's
``bastion.session_cache.*`` (hits, misses, invalidations, ...: observed from its counters).
The audit log's span events go through here too.

Everything comes from the global providers, so an app turns it on the usual way
(``trace.set_tracer_provider`` / ``metrics.set_meter_provider`` with the SDK), before or after
Bastion is built. Without ``opentelemetry-api`` (the ``otel`` extra), or without an SDK provider,
every hook is one check of two module globals and nothing else: no span, no counter call.
The package is imported at the first hook that runs, never by ``import bastion``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar

logger = logging.getLogger("bastion.telemetry")

T = TypeVar("T")
Steps = Any  # bastion.redisio.Steps: not imported, so this module stays a leaf
Attributes = Mapping[str, str | int | bool | tuple[str, ...]]

SCOPE = "bastion"
"""The instrumentation scope of every span and counter (the tracer's and meter's name)."""

# Attribute names, shared by spans and counters.
CREDENTIAL = "bastion.credential"
"""What the request authenticated with: ``guest``, ``session``, ``jwt`` or ``key``."""
OUTCOME = "bastion.outcome"
"""``allow`` / ``deny`` for admission, ``success`` / ``failure`` for an account route."""
REFUSAL = "bastion.refusal"
"""The error ``type`` the client got (``user_unauthorized``, ...), on a refusal."""
STATUS = "http.response.status_code"
"""The HTTP status of a refusal (or of an account route's answer)."""
DECISION = "bastion.decision"
ACTION = "bastion.action"
RESOURCE = "bastion.resource"
REASON = "bastion.reason"
ROUTE = "bastion.route"

CACHE_COUNTERS = (
    "hits",
    "misses",
    "fills",
    "discarded_fills",
    "invalidations",
    "flushes",
    "lease_lapses",
    "reconnects",
)
"""The session cache's counters, each an observable counter ``bastion.session_cache.<name>``."""

_UNLOADED: Any = object()


class Instruments(NamedTuple):
    """The tracer and counters of the providers in force (None where that provider is a no-op)."""

    tracer: Any
    refusals: Any
    evictions: Any
    decisions: Any


class Telemetry:
    """Bastion's hooks into OpenTelemetry, idle until the app configures an SDK provider."""

    def __init__(self) -> None:
        # opentelemetry.trace, None without the package; it and the metrics globals module
        # hold the providers an app set (see _load).
        self._trace: Any = _UNLOADED
        self._metrics: Any = None
        self._tracer_provider: object = None
        self._meter_provider: object = None
        self._instruments: Instruments | None = None
        # The tracer provider under which admission traces nothing: the one last seen, when it
        # gave no tracer (None: the API's global before an app sets one). admission() compares
        # it without a call, which is what every request of an app without an SDK pays.
        self._untraced: object = None
        self._lock = threading.Lock()
        # Session caches whose counters are observed (bastion.session_cache.*), while alive.
        self._caches: weakref.WeakSet[Any] = weakref.WeakSet()

    def current(self) -> Instruments | None:
        """The instruments to use now, or None when nothing would record (the usual case)."""
        trace = self._trace
        if trace is None:
            return None
        if trace is _UNLOADED:
            if not self._load():
                return None
            trace = self._trace
        tracer_provider, meter_provider = trace._TRACER_PROVIDER, self._metrics._METER_PROVIDER
        if tracer_provider is self._tracer_provider and meter_provider is self._meter_provider:
            return self._instruments
        return self._rebuild(tracer_provider, meter_provider)

    # -- the hooks ---------------------------------------------------------------------------

    def admission(self, steps: Steps, credential: Callable[[T], str], headers: T) -> Steps:
        """``steps`` (a request's admission) in a ``bastion.admission`` span, when tracing.

        ``credential(headers)`` names what a refused request sent (its identity is not known
        then); it runs only on that path.
        """
        trace = self._trace
        if trace is None or (trace is not _UNLOADED and trace._TRACER_PROVIDER is self._untraced):
            return steps  # the usual case: the steps themselves, nothing around them
        instruments = self.current()
        if instruments is None or instruments.tracer is None:
            return steps
        return _traced_admission(
            self._trace, instruments.tracer, steps, lambda: credential(headers)
        )

    def refused(self, error_type: str, status: int) -> None:
        """Count a refusal Bastion answered (``bastion.refusals``)."""
        instruments = self.current()
        if instruments is not None and instruments.refusals is not None:
            instruments.refusals.add(1, {REFUSAL: error_type, STATUS: status})

    def evicted(self, count: int) -> None:
        """Count sessions the per-user cap ended (``bastion.session.evictions``)."""
        instruments = self.current()
        if count and instruments is not None and instruments.evictions is not None:
            instruments.evictions.add(count)

    def decide(
        self,
        decide: Callable[[], bool],
        credential: str,
        action: str | None,
        resource: str | None,
    ) -> bool:
        """Run a policy decision (``decide``: True allow, False deny, or raises the refusal).

        Traced as ``bastion.decision`` and counted in ``bastion.decisions`` when on.
        """
        instruments = self.current()
        if instruments is None:
            return decide()
        attributes: dict[str, str] = {CREDENTIAL: credential}
        if action is not None:
            attributes[ACTION] = action
        if resource is not None:
            attributes[RESOURCE] = resource
        span = None
        if instruments.tracer is not None:
            span = instruments.tracer.start_span("bastion.decision", attributes=attributes)
        allowed = False
        try:
            allowed = decide()
            return allowed
        except Exception as exc:
            if span is not None:
                span.set_attribute(REFUSAL, getattr(exc, "type", type(exc).__name__))
            raise
        finally:
            verdict = "allow" if allowed else "deny"
            if span is not None:
                span.set_attribute(DECISION, verdict)
                span.end()
            if instruments.decisions is not None:
                counted = {DECISION: verdict}
                if action is not None:
                    counted[ACTION] = action
                instruments.decisions.add(1, counted)

    @contextlib.contextmanager
    def account_route(self, name: str) -> Iterator[Callable[[int, object], None]]:
        """A ``bastion.account.<name>`` span around one account route, when tracing.

        Call the yielded function with the answer's status and JSON body: a failure (its
        ``type``) is set on the span and counted in ``bastion.refusals``.
        """
        answers: list[tuple[int, str | None]] = []

        def answered(status: int, body: object) -> None:
            error = body.get("type") if status >= 400 and isinstance(body, dict) else None
            answers.append((status, str(error) if error is not None else None))

        instruments = self.current()
        if instruments is None or instruments.tracer is None:
            yield answered
        else:
            with instruments.tracer.start_as_current_span(
                "bastion.account." + name, attributes={ROUTE: name}
            ) as span:
                yield answered
                if answers:
                    status, error = answers[-1]
                    span.set_attribute(STATUS, status)
                    span.set_attribute(OUTCOME, "failure" if error else "success")
                    if error:
                        span.set_attribute(REFUSAL, error)
                    if status >= 500:
                        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error))
        if answers and answers[-1][1] is not None:
            status, error = answers[-1]
            self.refused(str(error), status)

    def watch_cache(self, cache: Any) -> None:
        """Report a session cache's counters (``cache.stats()``) as ``bastion.session_cache.*``
        observable counters: read by the SDK when it exports, nothing on the request path."""
        self._caches.add(cache)

    def _cache_counter(self, name: str) -> Callable[[Any], list[Any]]:
        def observe(_options: Any) -> list[Any]:
            from opentelemetry.metrics import Observation

            caches = list(self._caches)
            if not caches:  # no session cache in this process: no data point at all
                return []
            return [Observation(sum(getattr(cache.stats(), name) for cache in caches))]

        return observe

    def add_event(self, name: str, attributes: Attributes, timestamp: int) -> None:
        """Add an event to the current span if it is recording (the audit log's events)."""
        if self._trace is _UNLOADED:
            self._load()
        trace = self._trace
        if trace is None:
            return
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes, timestamp=timestamp)

    # -- the providers -------------------------------------------------------------------------

    def _load(self) -> bool:
        """Import the API once (False without it); find where it keeps the global providers."""
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            self._trace = None
            return False
        from opentelemetry.metrics import _internal as metrics_globals

        if os.environ.get("OTEL_PYTHON_TRACER_PROVIDER"):
            trace.get_tracer_provider()  # the API sets a provider named there at its first call
        if os.environ.get("OTEL_PYTHON_METER_PROVIDER"):
            metrics.get_meter_provider()
        if hasattr(trace, "_TRACER_PROVIDER") and hasattr(metrics_globals, "_METER_PROVIDER"):
            # get_tracer_provider() looks at os.environ on every call until a provider is set:
            # 0.8 µs, on every request of an app without an SDK. The module globals it returns
            # say the same in a few ns (tests/test_telemetry.py pins them).
            self._trace, self._metrics = trace, metrics_globals
        else:  # pragma: no cover - an API that keeps them elsewhere: its public calls, slower
            self._trace, self._metrics = _Public(trace, metrics), _Public(trace, metrics)
        return True

    def _rebuild(self, tracer_provider: Any, meter_provider: Any) -> Instruments | None:
        """New instruments for new providers (an SDK was configured, or replaced)."""
        with self._lock:
            from opentelemetry import metrics, trace

            tracer = None
            if tracer_provider is not None and not isinstance(
                tracer_provider, (trace.NoOpTracerProvider, trace.ProxyTracerProvider)
            ):
                tracer = tracer_provider.get_tracer(SCOPE, _version())
            counters: list[Any] = [None, None, None]
            if meter_provider is not None and not isinstance(
                meter_provider, metrics.NoOpMeterProvider
            ):
                meter = meter_provider.get_meter(SCOPE, _version())
                counters = [
                    meter.create_counter(
                        "bastion.refusals",
                        unit="{request}",
                        description="Requests Bastion refused, by error type and status",
                    ),
                    meter.create_counter(
                        "bastion.session.evictions",
                        unit="{session}",
                        description="Sessions ended by the per-user session cap",
                    ),
                    meter.create_counter(
                        "bastion.decisions",
                        unit="{decision}",
                        description="Policy decisions, by outcome (allow, deny) and action",
                    ),
                ]
                for name in CACHE_COUNTERS:
                    meter.create_observable_counter(
                        f"bastion.session_cache.{name}",
                        callbacks=[self._cache_counter(name)],
                        unit="{event}",
                        description=f"Session cache {name.replace('_', ' ')} in this process",
                    )
            instruments = None
            if tracer is not None or counters[0] is not None:
                instruments = Instruments(tracer, *counters)
            self._instruments = instruments
            self._tracer_provider, self._meter_provider = tracer_provider, meter_provider
            self._untraced = tracer_provider if tracer is None else _UNLOADED
            return instruments


class _Public:  # pragma: no cover - see Telemetry._load
    """The providers through the API's public getters, under the names of its globals."""

    def __init__(self, trace: Any, metrics: Any) -> None:
        self._trace_module, self._metrics_module = trace, metrics

    def __getattr__(self, name: str) -> Any:
        return getattr(self._trace_module, name)

    @property
    def _TRACER_PROVIDER(self) -> object:
        return self._trace_module.get_tracer_provider()

    @property
    def _METER_PROVIDER(self) -> object:
        return self._metrics_module.get_meter_provider()


def _version() -> str | None:
    """Bastion's version for the instrumentation scope (read from the installed metadata: the
    package itself imports this module)."""
    from importlib import metadata

    try:
        return metadata.version("bastion")
    except metadata.PackageNotFoundError:
        return None


def _traced_admission(
    trace: Any, tracer: Any, steps: Steps, credential: Callable[[], str]
) -> Steps:
    """The admission steps run with their span current (Redis spans and decisions nest in it)."""
    from opentelemetry import context

    span = tracer.start_span("bastion.admission")
    token = context.attach(trace.set_span_in_context(span))
    try:
        identity, credentials = yield from steps
    except Exception as exc:
        error_type = getattr(exc, "type", None)
        span.set_attribute(CREDENTIAL, _credential_or_guest(credential))
        span.set_attribute(OUTCOME, "deny")
        if error_type is not None:
            span.set_attribute(REFUSAL, error_type)
            status = int(getattr(exc, "status", 500))
            span.set_attribute(STATUS, status)
            if status >= 500:
                span.set_status(trace.Status(trace.StatusCode.ERROR, error_type))
        else:  # not a refusal: a bug, and the middleware answers 500
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        raise
    else:
        span.set_attribute(CREDENTIAL, identity.kind)
        span.set_attribute(OUTCOME, "allow")
        return identity, credentials
    finally:
        context.detach(token)
        span.end()


def _credential_or_guest(credential: Callable[[], str]) -> str:
    try:
        return credential()
    except Exception:  # an unreadable credential: the refusal says why
        return "unknown"


telemetry = Telemetry()
"""The process's hooks: the providers are global, so are they."""
