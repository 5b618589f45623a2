"""The ``bastion`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bastion import Bastion, Settings
from bastion.cli import main


def test_sessions_list_and_revoke(real_redis: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = Bastion(Settings(redis_url=real_redis)).sync_sessions
    made = [store.create("alice", user_agent="cli-test") for _ in range(3)]

    assert main(["sessions", "list", "alice", "--redis-url", real_redis]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [row["id"] for row in listed] == [m.session.id for m in made]
    assert all(row["userAgent"] == "cli-test" for row in listed)
    assert all(m.token.split(".")[-1] not in json.dumps(listed) for m in made)

    assert main(["sessions", "revoke", "alice", made[0].session.id, "--redis-url", real_redis]) == 0
    assert main(["sessions", "revoke", "alice", made[0].session.id, "--redis-url", real_redis]) == 1
    assert main(["sessions", "revoke", "alice", "--redis-url", real_redis]) == 0
    assert "revoked 2 session(s)" in capsys.readouterr().out
    assert store.list("alice") == []


def test_sessions_need_a_shared_redis(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sessions", "list", "alice"]) == 2
    assert "--redis-url" in capsys.readouterr().err


def test_bad_setting_is_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BASTION_SESSION_LIMIT", "1000")
    assert main(["sessions", "list", "alice", "--redis-url", "redis://127.0.0.1:1/0"]) == 2
    assert "session_limit=1000" in capsys.readouterr().err


def test_console_script_is_installed() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bastion.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "demo" in out and "sessions" in out
