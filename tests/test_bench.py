"""The benchmark still runs and still measures what it claims (no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from bench.sessions import render as _render
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent


def test_quick_benchmark_runs(redis_server: RedisServer) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.sessions", "--quick", "--json", "--pin", "off"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    summary = json.loads(done.stdout)
    rows = {row["key"]: row for row in summary["rows"]}
    assert {
        "bare",
        "starlette_session",
        "bastion_session",
        "bastion_guest",
        "bastion_jwt",
        "bastion_api_key",
        "starlette_auth_jwt",
    } <= set(rows)
    assert rows["bastion_session"]["redis_commands_per_request"] == 1.0  # one round trip
    assert rows["bastion_session_lean"]["redis_commands_per_request"] == 1.0  # the same HMGET
    assert isinstance(summary["lean_reads_gain_us"], float)
    assert rows["bastion_jwt"]["redis_commands_per_request"] == 1.0  # is the session alive
    assert rows["bastion_api_key"]["redis_commands_per_request"] == 1.0  # the key's record
    assert rows["bastion_guest"]["redis_commands_per_request"] == 0.0  # guests cost none
    assert rows["starlette_auth_jwt"]["redis_commands_per_request"] == 0.0  # stateless peer
    assert all(row["us_per_request"] > 0 for row in rows.values())
    # The password dictionary check with its forms, beside the exact look-up it replaced.
    assert {
        "dictionary_accepted",
        "dictionary_refused",
        "dictionary_worst",
        "dictionary_exact",
    } <= (set(rows))
    dictionary = summary["password_dictionary"]
    assert dictionary["target_us"] == 50.0
    assert dictionary["accepted_us_per_check"] > 0 and dictionary["refused_us_per_check"] > 0
    assert "dictionary check with its forms" in _render(summary)
