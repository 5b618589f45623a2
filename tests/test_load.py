"""The load run (bench/load.py) over real HTTP: its oracle, a quick run, and faults under load.

What this adds to the tests beside it: ``test_unavailable.py`` checks one request at a time,
in-process, with Redis stopped (503 with ``Retry-After`` on each framework);
``test_concurrency.py`` checks the session cap under log-ins racing at the store. Here the
notes app of ``bench/load_app.py`` runs under uvicorn with 2 worker processes, 8 clients keep
it busy, and Redis is stopped and started again, or paused (``CLIENT PAUSE``) for less and for
more than ``redis_timeout``, in the middle: every answer is judged by the load script's oracle.
"""

from __future__ import annotations

from typing import Any

import pytest

from bench.load import Answer, Expect, Fault, Options, Record, Shared, judge, ok, run, summarise
from tests.redis_server import RedisServer

TIMEOUT = 1.0
SLACK = 0.6  # generous (a doubled wait would still fail): the CPUs are shared with everything
REQUIRED = {"sign_up", "log_in", "log_in_storm", "storm_probe", "read_own", "key_read"}


def fault_run(fault: str) -> dict[str, Any]:
    """A short run with one fault: 1.5 s of load, the fault, 2 s of load once Redis is back."""
    options = Options(
        workers=2, clients=8, fault=fault, redis_timeout=TIMEOUT, fault_at=1.5, after_fault=2.0
    )
    return run(options)


@pytest.fixture(scope="module")
def runs(redis_server: RedisServer) -> dict[str, dict[str, Any]]:
    """Summaries by fault, each run once (``redis_server``: skipped, or failed under CI, like
    it when redis-server is missing; each run starts a server of its own)."""
    return {}


def summary_of(runs: dict[str, dict[str, Any]], fault: str) -> dict[str, Any]:
    if fault not in runs:
        runs[fault] = fault_run(fault)
    return runs[fault]


def assert_no_wrong_outcome(summary: dict[str, Any]) -> None:
    assert summary["wrong_total"] == 0, summary["examples"]
    assert summary["storms"] >= 1 and not summary["storm_cap_violations"]
    sessions = summary["sessions"]
    assert sessions["users"] > 0 and sessions["most"] <= 5
    assert not sessions["over_cap"] and not sessions["unexpected"], sessions
    assert summary["app_log"]["tracebacks"] == 0


def test_the_oracle_counts_every_kind_of_wrong_outcome() -> None:
    shared = Shared()
    fault = Fault("pause-long", began=10.0, back=12.0)

    def answer(kind: str, status: int, body: dict[str, str], expect: Expect, **at: Any) -> None:
        problem = judge(Answer(status, {}, body), expect)
        if problem and at.get("credential") and body.get("type") == "user_unauthorized":
            problem = f"GUEST DOWNGRADE: {problem}"
        sent = at.get("sent", 1.0)
        shared.records.append(
            Record(kind, sent, sent + 0.01, status, problem, bool(at.get("credential")),
                   retry_after=bool(at.get("retry_after")))
        )  # fmt: skip

    mine = Expect(200, who="u1", kind="session")
    answer("read_own", 200, {"who": "u1", "kind": "session"}, mine, credential=True)
    answer("read_other", 200, {"who": "u1"}, Expect(404, "general_not_found"), credential=True)
    answer("read_own", 404, {"type": "general_not_found"}, mine, credential=True)
    answer("read_own", 401, {"type": "user_unauthorized"}, mine, credential=True)
    answer("whoami", 200, {"who": "u2", "kind": "session"}, mine, credential=True)
    answer("read_own", 500, {"type": "general_server_error"}, mine, credential=True)
    unavailable = {"type": "service_unavailable"}
    answer("read_own", 503, unavailable, mine, credential=True, sent=11.0, retry_after=True)
    answer("read_own", 503, unavailable, mine, credential=True, sent=11.0)  # no Retry-After
    answer("read_own", 503, unavailable, mine, credential=True, sent=20.0, retry_after=True)
    summary = summarise(shared, fault, 1.0, TIMEOUT)
    assert summary["wrong"] == {
        "wrong_allow": 2,  # another user's note; a user seen as someone else
        "wrong_deny": 1,
        "guest_downgrade": 1,
        "5xx": 3,  # the 500, a 503 without Retry-After, a 503 long after Redis was back
    }
    assert summary["fault"]["unavailable"] == 2


def test_a_quick_load_run_finds_no_wrong_outcome(redis_server: RedisServer) -> None:
    summary = run(Options(duration=5.0, workers=2, clients=8))
    assert_no_wrong_outcome(summary)
    assert set(summary["kinds"]) >= REQUIRED
    assert summary["requests"] > 50
    assert ok(summary)


@pytest.mark.parametrize("fault", ["restart", "pause-long"])
def test_an_outage_under_load_gives_503s_then_recovers(
    fault: str, runs: dict[str, dict[str, Any]]
) -> None:
    summary = summary_of(runs, fault)
    assert_no_wrong_outcome(summary)  # no 500, no credential served as a guest, no wrong answer
    figures = summary["fault"]
    assert figures["unavailable"] > 0
    assert figures["unavailable_with_retry_after"] == figures["unavailable"]
    # Every 503 came within redis_timeout (+ 100 ms, + slack) of Redis going quiet.
    assert figures["unavailable_max_delay_ms"] <= (TIMEOUT + 0.1 + SLACK) * 1000, figures
    # Requests with a credential sent while Redis could not answer got 503s, none went through.
    assert figures["credentialed_during_outage"] > 0
    assert figures["credentialed_during_outage_not_503"] == 0
    # The same app serves again once Redis is back: no restart, no 503 past the grace second.
    assert figures["successes_after_back"] > 0
    assert figures["first_success_after_back_ms"] <= 1000, figures
    assert ok(summary)


def test_a_pause_shorter_than_the_timeout_only_delays_requests(
    runs: dict[str, dict[str, Any]],
) -> None:
    summary = summary_of(runs, "pause-short")
    assert_no_wrong_outcome(summary)
    figures = summary["fault"]
    assert figures["unavailable"] == 0  # every request waited the pause out
    assert figures["successes_after_back"] > 0
