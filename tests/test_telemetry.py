"""OpenTelemetry: Bastion's spans and counters on real requests, and nothing without an SDK.

The SDK is set as the global provider (as an app sets it) with an in-memory span exporter and
metric reader; the API keeps its providers in module globals that it lets be set once, so the
``otel`` fixture saves and restores them around each test. Requests go through each framework's
middleware (ASGI: Starlette, FastAPI; WSGI: Flask) to a real redis-server.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry import metrics, trace
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.metrics import _internal as metrics_globals
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from bastion import Bastion, Settings
from bastion.telemetry import Telemetry, telemetry
from tests.test_account_contract import (
    FRAMEWORKS,
    PASSWORD,
    Client,
    _bastion,
    clients,
    log_in,
    sign_up,
)

ROUTES = [{"method": "GET", "path": "/notes/{id}", "action": "read", "resource": "notes/{id}"}]
COOKIE = "__Host-bastion_session"


@dataclass
class Otel:
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def finished(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans.get_finished_spans() if s.name == name]

    def counts(self) -> dict[tuple[str, frozenset[tuple[str, Any]]], int]:
        """Every Bastion counter's value by (name, attributes)."""
        out: dict[tuple[str, frozenset[tuple[str, Any]]], int] = {}
        data = self.reader.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                if scope.scope.name != "bastion":
                    continue  # the redis instrumentation's own histograms
                for metric in scope.metrics:
                    for point in metric.data.data_points:  # type: ignore[union-attr]
                        key = (metric.name, frozenset((point.attributes or {}).items()))
                        out[key] = int(point.value)  # type: ignore[union-attr]
        return out


def _reset_globals() -> tuple[Any, ...]:
    saved = (
        trace._TRACER_PROVIDER_SET_ONCE,
        trace._TRACER_PROVIDER,
        metrics_globals._METER_PROVIDER_SET_ONCE,
        metrics_globals._METER_PROVIDER,
    )
    trace._TRACER_PROVIDER_SET_ONCE, trace._TRACER_PROVIDER = Once(), None
    metrics_globals._METER_PROVIDER_SET_ONCE, metrics_globals._METER_PROVIDER = Once(), None
    return saved


def _restore_globals(saved: tuple[Any, ...]) -> None:
    (
        trace._TRACER_PROVIDER_SET_ONCE,
        trace._TRACER_PROVIDER,
        metrics_globals._METER_PROVIDER_SET_ONCE,
        metrics_globals._METER_PROVIDER,
    ) = saved


@pytest.fixture
def otel() -> Iterator[Otel]:
    """The SDK as the global tracer and meter provider, in memory, for this test only."""
    saved = _reset_globals()
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield Otel(spans, reader, tracer_provider)
    finally:
        _restore_globals(saved)
        tracer_provider.shutdown()
        meter_provider.shutdown()


@pytest.fixture
def redis_hook(otel: Otel) -> Iterator[None]:
    """OpenTelemetry's redis instrumentation, as apps install it (it wraps execute_command)."""
    instrumentor = RedisInstrumentor()
    instrumentor.instrument(tracer_provider=otel.tracer_provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


@pytest.fixture
def no_sdk() -> Iterator[None]:
    """The API installed and no provider set: what an app without an SDK has."""
    saved = _reset_globals()
    try:
        yield
    finally:
        _restore_globals(saved)


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _guarded(url: str, tmp_path: Any, **settings: Any) -> Bastion:
    """A Bastion whose route map guards /notes/{id}, which the policy lets users read."""
    policy = tmp_path / "policy.csv"
    policy.write_text("p, users, notes/*, read\n")
    return Bastion(
        Settings.from_mapping(
            {
                "redis_url": url,
                "policy_files": [str(policy)],
                "routes": ROUTES,
                "policy_reload_interval": 0,
                **settings,
            }
        )
    )


def _attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_spans_and_counters_of_real_requests(
    framework: str, real_redis: str, tmp_path: Any, otel: Otel, redis_hook: None
) -> None:
    bastion = _guarded(real_redis, tmp_path, session_limit=1)
    with clients(framework) as client_for:
        first = client_for(bastion)
        assert sign_up(first).status_code == 201
        assert log_in(first, password="wrong " + PASSWORD).status_code == 401
        assert log_in(first).status_code == 201
        second: Client = first.device()
        assert log_in(second).status_code == 201  # the cap is 1: first's session is evicted
        otel.spans.clear()
        # Admitted: the session reads its hash, the policy allows (the app has no such page).
        assert second.request("GET", "/notes/n1").status_code == 404
        # Refused: a guest (401 by the policy) and an evicted session (401 before it).
        guest = first.device()
        assert guest.request("GET", "/notes/n1").json()["type"] == "user_unauthorized"
        assert first.request("GET", "/notes/n1").json()["type"] == "user_session_invalid"

    admissions = otel.finished("bastion.admission")
    assert [_attributes(s) for s in admissions] == [
        {"bastion.credential": "session", "bastion.outcome": "allow"},
        {
            "bastion.credential": "guest",
            "bastion.outcome": "deny",
            "bastion.refusal": "user_unauthorized",
            "http.response.status_code": 401,
        },
        {
            "bastion.credential": "session",
            "bastion.outcome": "deny",
            "bastion.refusal": "user_session_invalid",
            "http.response.status_code": 401,
        },
    ]
    decisions = otel.finished("bastion.decision")
    assert [_attributes(s) for s in decisions] == [
        {
            "bastion.credential": "session",
            "bastion.action": "read",
            "bastion.resource": "notes/n1",
            "bastion.decision": "allow",
        },
        {
            "bastion.credential": "guest",
            "bastion.action": "read",
            "bastion.resource": "notes/n1",
            "bastion.refusal": "user_unauthorized",
            "bastion.decision": "deny",
        },
    ]
    # Each decision, and the session's read as redis-py's own hook saw it, nest in admission.
    allowed = admissions[0].context
    assert decisions[0].parent is not None and decisions[0].parent.span_id == allowed.span_id
    reads = [s for s in otel.spans.get_finished_spans() if s.name == "HMGET"]
    assert reads and all(r.parent is not None for r in reads)
    assert reads[0].parent.span_id == allowed.span_id  # type: ignore[union-attr]

    counts = otel.counts()
    refusals = {
        dict(attrs)["bastion.refusal"]: value
        for (name, attrs), value in counts.items()
        if name == "bastion.refusals"
    }
    assert refusals == {
        "user_invalid_credentials": 1,
        "user_unauthorized": 1,
        "user_session_invalid": 1,
    }
    assert counts[("bastion.session.evictions", frozenset())] == 1
    decided = {
        dict(attrs)["bastion.decision"]: value
        for (name, attrs), value in counts.items()
        if name == "bastion.decisions"
    }
    assert decided == {"allow": 1, "deny": 1}


def test_log_in_spans(framework: str, real_redis: str, otel: Otel) -> None:
    with clients(framework) as client_for:
        client = client_for(_bastion(real_redis))
        assert sign_up(client).status_code == 201
        assert log_in(client, password="wrong " + PASSWORD).status_code == 401
        assert log_in(client).status_code == 201
    spans = otel.finished("bastion.account.log_in")
    assert [_attributes(s) for s in spans] == [
        {
            "bastion.route": "log_in",
            "http.response.status_code": 401,
            "bastion.outcome": "failure",
            "bastion.refusal": "user_invalid_credentials",
        },
        {"bastion.route": "log_in", "http.response.status_code": 201, "bastion.outcome": "success"},
    ]
    # The audit events of the log-ins land on their spans (the audit log goes through here too).
    assert [e.name for e in spans[0].events] == ["bastion.log_in"]
    assert [
        _attributes(s)["bastion.outcome"] for s in otel.finished("bastion.account.sign_up")
    ] == ["success"]


def test_a_provider_set_after_bastion_started_is_used(real_redis: str, no_sdk: None) -> None:
    with clients("flask") as client_for:
        client = client_for(_bastion(real_redis))
        assert client.request("GET", "/account").status_code == 401
        assert telemetry.current() is None
        spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(spans))
        trace.set_tracer_provider(provider)
        assert client.request("GET", "/account").status_code == 401
    assert [s.name for s in spans.get_finished_spans()] == [
        "bastion.admission",
        "bastion.account.get_account",
    ]


# -- without an SDK, or without OpenTelemetry ---------------------------------------------------


def test_without_an_sdk_no_span_or_counter_is_made(
    framework: str, real_redis: str, tmp_path: Any, no_sdk: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API installed, no provider set: Bastion calls none of it on a request."""
    calls: list[str] = []

    def spy(owner: Any, name: str) -> None:
        original = getattr(owner, name)

        def called(*args: Any, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.split(".")[0] == "bastion":  # FastAPI asks the API itself, for its own
                calls.append(f"{caller}: {owner.__name__}.{name}")
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, called)

    for owner in (trace.ProxyTracerProvider, trace.NoOpTracerProvider):
        spy(owner, "get_tracer")
    for owner in (trace.ProxyTracer, trace.NoOpTracer):
        spy(owner, "start_span")
        spy(owner, "start_as_current_span")
    spy(metrics_globals._ProxyMeterProvider, "get_meter")
    spy(metrics.NoOpMeterProvider, "get_meter")
    spy(metrics_globals._ProxyMeter, "create_counter")
    spy(metrics.NoOpCounter, "add")
    # The public getters read os.environ each call (0.8 µs): not once per request either.
    spy(trace, "get_tracer_provider")
    spy(metrics, "get_meter_provider")
    bastion = _guarded(real_redis, tmp_path, session_limit=1)
    with clients(framework) as client_for:
        client = client_for(bastion)
        assert sign_up(client).status_code == 201
        assert log_in(client, password="wrong " + PASSWORD).status_code == 401
        assert log_in(client).status_code == 201
        assert log_in(client.device()).status_code == 201  # an eviction
        assert client.request("GET", "/notes/n1").status_code == 401
        assert client.device().request("GET", "/notes/n1").status_code == 401
    assert telemetry.current() is None
    assert calls == []


def test_without_opentelemetry_installed_requests_run_and_nothing_is_imported(
    real_redis: str, tmp_path: Any
) -> None:
    """A fresh interpreter where the package cannot be imported (redis-py looks for it too)."""
    policy = tmp_path / "policy.csv"
    policy.write_text("p, users, notes/*, read\n")
    code = f"""
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "opentelemetry":
            raise ImportError(name)
        return None

sys.meta_path.insert(0, Absent())
from flask import Flask
from bastion import Bastion, Settings
from bastion.adapters.flask import init_app
from bastion.telemetry import telemetry

bastion = Bastion(Settings.from_mapping({{
    "redis_url": {real_redis!r}, "policy_files": [{str(policy)!r}], "routes": {ROUTES!r},
    "policy_reload_interval": 0}}))
app = Flask("absent")
init_app(app, bastion)
client = app.test_client()
statuses = [client.get("/notes/n1", base_url="https://t").status_code for _ in range(3)]
print(statuses, telemetry._trace, any(m.startswith("opentelemetry") for m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "[401, 401, 401] None False"


def test_the_api_globals_bastion_reads_are_where_it_reads_them() -> None:
    """Bastion reads the providers from these globals (the public getters cost 0.8 µs a call)."""
    assert hasattr(trace, "_TRACER_PROVIDER") and hasattr(metrics_globals, "_METER_PROVIDER")
    fresh = Telemetry()
    fresh.current()
    assert fresh._trace is trace and fresh._metrics is metrics_globals


# -- redis-py's own command hooks --------------------------------------------------------------


@pytest.mark.parametrize("lean", [False, True], ids=["default", "redis_lean_reads"])
def test_redis_command_hooks_see_the_request_reads_unless_lean_reads(
    framework: str, real_redis: str, otel: Otel, redis_hook: None, lean: bool
) -> None:
    with clients(framework) as client_for:
        client = client_for(_bastion(real_redis, redis_lean_reads=lean))
        assert sign_up(client).status_code == 201
        assert log_in(client).status_code == 201
        otel.spans.clear()
        assert client.request("GET", "/account").status_code == 200  # a session's request
    names = [s.name for s in otel.spans.get_finished_spans()]
    assert "bastion.admission" in names
    # The session's HMGET on the request path; the account route reads the user through the
    # client's methods either way.
    admission = otel.finished("bastion.admission")[0].context.span_id
    in_admission = [
        s.name
        for s in otel.spans.get_finished_spans()
        if s.parent is not None and s.parent.span_id == admission
    ]
    assert in_admission == ([] if lean else ["HMGET"])


@pytest.mark.anyio
async def test_session_cache_counters(real_redis: str, otel: Otel) -> None:
    """The session cache's counters are observed as ``bastion.session_cache.*``."""
    from bastion.telemetry import telemetry

    bastion = Bastion(Settings(redis_url=real_redis, session_cache="tracking"))
    new = await bastion.sessions.create("u1")
    cache = bastion._session_cache
    assert cache is not None
    telemetry.current()  # the instruments of the SDK just set
    for _ in range(100):
        await bastion.sessions.authenticate(new.token)
        if bastion.session_cache_stats().hits >= 3:
            break
        await asyncio.sleep(0.01)
    stats = bastion.session_cache_stats()
    counters = otel.counts()
    assert counters[("bastion.session_cache.hits", frozenset())] >= stats.hits >= 3
    assert counters[("bastion.session_cache.flushes", frozenset())] >= 1
    await bastion.aclose()
