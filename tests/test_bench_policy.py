"""The policy benchmark still runs and still measures what it claims (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def test_quick_policy_benchmark_runs(redis_server: RedisServer) -> None:
    # redis_server: the benchmark starts its own redis-server; the fixture makes sure one exists
    # (and skips, or fails under CI, when it does not).
    done = subprocess.run(
        [sys.executable, "-m", "bench.policy", "--quick", "--json", "--pin", "off"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)

    # 1. Decisions: every size, with and without the documents' rows; Casbin where it fits.
    decisions = {row["key"]: row for row in summary["decisions"]["rows"]}
    documents = summary["decisions"]["documents"]
    for size in (1_000, 10_000, 100_000):
        for key in (f"rules_{size}", f"rules_{size}_documents_{documents}"):
            row = decisions[key]
            assert row["calls"] > 0
            assert 0 < row["p50_us"] <= row["p99_us"]
            assert 0.2 < row["allowed_fraction"] < 0.9  # allowed and denied requests mixed
            assert row["casbin"]["status"] in ("ran", "skipped")
    small = decisions["rules_1000"]["casbin"]
    assert small["status"] == "ran" and small["calls"] > 0 and small["agrees_with_engine"]
    skipped = decisions[f"rules_100000_documents_{documents}"]["casbin"]
    assert skipped["status"] == "skipped" and skipped["would_take_s"] > 0

    # 2-3. Over ASGI: the rows, and the Redis traffic each request makes.
    rows = {row["key"]: row for row in summary["end_to_end"]["rows"]}
    assert {
        "bare",
        "starlette_auth",
        "bastion_open",
        "bastion_rows",
        "redis_hmget",
        "redis_pipeline",
        "bastion_session_only",
        "stubbed_open",
        "stubbed_rows",
    } <= set(rows)
    if importlib.util.find_spec("fastapi_authz") is not None:
        assert rows["casbin_middleware"]["redis_commands_per_request"] == 0.0
    # The session check alone (one HMGET when this was written), in one round trip; (a) adds no
    # command, (b) exactly one SMEMBERS (the document's rows), and neither a round trip.
    session = rows["bastion_session_only"]
    credential = session["redis_commands_by_name"]
    assert session["redis_commands_per_request"] >= 1.0
    assert session["redis_round_trips_per_request"] == 1.0
    assert rows["bastion_open"]["redis_commands_by_name"] == credential
    assert (
        rows["bastion_open"]["redis_commands_per_request"] == session["redis_commands_per_request"]
    )
    assert rows["bastion_open"]["redis_round_trips_per_request"] == 1.0
    assert rows["bastion_rows"]["redis_commands_by_name"] == {
        **credential,
        "smembers": credential.get("smembers", 0.0) + 1.0,
    }
    assert (
        rows["bastion_rows"]["redis_commands_per_request"]
        == session["redis_commands_per_request"] + 1.0
    )
    assert rows["bastion_rows"]["redis_round_trips_per_request"] == 1.0
    assert rows["redis_pipeline"]["redis_commands_by_name"] == {"hmget": 1.0, "smembers": 1.0}
    assert rows["redis_pipeline"]["redis_round_trips_per_request"] == 1.0
    assert rows["bare"]["redis_commands_per_request"] == 0.0
    assert rows["stubbed_rows"]["redis_commands_per_request"] == 0.0
    assert all(row["us_per_request"] > 0 for row in rows.values())
    targets = summary["end_to_end"]["targets"]
    assert {"bastion_open", "bastion_rows"} <= set(targets)
    # Each judged against a minimal middleware making the same Redis traffic.
    assert targets["bastion_open"]["reference"] == "hmget_middleware"
    assert targets["bastion_rows"]["reference"] == "pipeline_middleware"
    assert rows["hmget_middleware"]["redis_commands_by_name"] == {"hmget": 1.0}
    assert rows["pipeline_middleware"]["redis_commands_by_name"] == {"hmget": 1.0, "smembers": 1.0}
    assert rows["after_wait_open"]["redis_commands_by_name"] == {"hmget": 1.0}
    assert all(len(row["rounds_us"]) == summary["end_to_end"]["rounds"] for row in rows.values())
    # The same apps under load, each row a real measurement.
    load = summary["end_to_end"]["under_load"]
    loaded = {row["key"] for row in load["rows"]}
    assert loaded == {
        "bare_loaded",
        "hmget_middleware_loaded",
        "pipeline_middleware_loaded",
        "bastion_open_loaded",
        "bastion_rows_loaded",
    }
    assert all(row["us_per_request"] > 0 for row in load["rows"])
    assert all("served_p50_us" in row for row in summary["decisions"]["rows"])
