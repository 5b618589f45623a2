"""The ``bastion`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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


def test_an_old_session_id_starting_with_a_dash_is_revoked_after_double_dash(
    real_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Ids are no longer drawn with a leading "-", but sessions made before may have one.
    monkeypatch.setattr("bastion.sessions.store.new_session_id", lambda: "-" + "A" * 21)
    store = Bastion(Settings(redis_url=real_redis)).sync_sessions
    made = store.create("alice")
    assert made.session.id.startswith("-")
    argv = ["sessions", "revoke", "--redis-url", real_redis, "alice", "--", made.session.id]
    assert main(argv) == 0
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


EXAMPLES = Path(__file__).resolve().parent.parent / "bastion" / "policies" / "examples"


def test_policy_check_test_explain(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "check", str(EXAMPLES)]) == 0
    assert main(["policy", "test", str(EXAMPLES)]) == 0
    assert " 0 failed" in capsys.readouterr().out
    resource = "databases/main/collections/notes/documents/n1"
    assert main(["policy", "explain", str(EXAMPLES), "--as", "alice", "--action", "update",
                 "--resource", resource]) == 0  # fmt: skip
    assert "ALLOW" in capsys.readouterr().out
    assert main(["policy", "explain", str(EXAMPLES), "--as", "any,guests", "--action", "read",
                 "--resource", resource]) == 1  # fmt: skip

    broken = tmp_path / "policy.csv"
    broken.write_text((EXAMPLES / "policy.csv").read_text() + "p, users, notes*, read\n")
    capsys.readouterr()
    assert main(["policy", "check", str(broken)]) == 1
    lines = (EXAMPLES / "policy.csv").read_text().count("\n") + 1
    assert f"policy.csv:{lines}: error" in capsys.readouterr().out


def test_policy_check_reads_the_route_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "policy.csv").write_text("p, users, notes/*, read\n")
    config = tmp_path / "bastion.toml"
    config.write_text(
        'policy_files = ["policy.csv"]\n'
        "[[routes]]\n"
        'method = "GET"\npath = "/notes/{id}"\naction = "read"\nresource = "notes/{id}"\n'
    )
    assert main(["policy", "check", "--config", str(config)]) == 0
    config.write_text(
        config.read_text().replace('resource = "notes/{id}"', 'resource = "notes/{nid}"')
    )
    assert main(["policy", "check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "routes[0]" in out and "{nid}" in out


def test_policy_reload_announces(real_redis: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "reload", "--redis-url", real_redis]) == 0
    assert main(["policy", "reload", "--redis-url", real_redis]) == 0
    assert "version 2" in capsys.readouterr().out
