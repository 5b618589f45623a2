"""The ``bastion`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bastion import Bastion, Settings
from bastion.cli import main
from bastion.demo import DEMO_IDLE_TIMEOUT, demo_settings


def test_sessions_list_and_revoke(real_redis: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = Bastion(Settings(redis_url=real_redis)).sync.sessions
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
    store = Bastion(Settings(redis_url=real_redis)).sync.sessions
    made = store.create("alice")
    assert made.session.id.startswith("-")
    argv = ["sessions", "revoke", "--redis-url", real_redis, "alice", "--", made.session.id]
    assert main(argv) == 0
    assert store.list("alice") == []


def test_sessions_revoke_all_users(real_redis: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = Bastion(Settings(redis_url=real_redis)).sync.sessions
    tokens = [store.create(user).token for user in ("alice", "bob", "carol") for _ in range(2)]
    assert main(["sessions", "revoke", "--all-users", "--redis-url", real_redis]) == 0
    out = capsys.readouterr().out
    assert out.startswith("revoked 6 session(s) of every user in ") and "SCAN" in out
    assert all(store.authenticate(t) is None for t in tokens)
    assert main(["sessions", "revoke", "--all-users", "--redis-url", real_redis]) == 0
    assert "revoked 0 session(s)" in capsys.readouterr().out

    kept = store.create("alice")
    assert main(["sessions", "revoke", "alice", "--all-users", "--redis-url", real_redis]) == 2
    assert "--all-users takes no USER" in capsys.readouterr().err
    assert main(["sessions", "revoke", "--redis-url", real_redis]) == 2
    assert "give a USER, or --all-users" in capsys.readouterr().err
    assert store.authenticate(kept.token) is not None


def test_users_disable_enable_delete(real_redis: str, capsys: pytest.CaptureFixture[str]) -> None:
    bastion = Bastion(Settings(redis_url=real_redis))
    user = bastion._sync_runner.run(bastion._user_store.create("ada@example.com", "h"))
    made = [bastion.sync.sessions.create(user.id) for _ in range(2)]
    url = ["--redis-url", real_redis]

    assert main(["users", "disable", user.id, *url]) == 0
    assert f"disabled user {user.id}: ended 2 session(s)" in capsys.readouterr().out
    assert all(bastion.sync.sessions.authenticate(m.token) is None for m in made)
    assert bastion.sync.users.get(user.id).disabled  # type: ignore[union-attr]
    assert main(["users", "enable", "--email", "ADA@example.com", *url]) == 0
    assert f"enabled user {user.id}" in capsys.readouterr().out
    assert main(["users", "enable", user.id, *url]) == 0
    assert "was not disabled" in capsys.readouterr().out

    bastion.sync.sessions.create(user.id)
    assert main(["users", "delete", "--email", "ada@example.com", *url]) == 0
    out = capsys.readouterr().out
    assert f"deleted user {user.id}: ended 1 session(s)" in out and "email is free" in out
    assert bastion.sync.users.get(user.id) is None

    for action in ("disable", "enable", "delete"):
        assert main(["users", action, user.id, *url]) == 1
        assert f"no user {user.id}" in capsys.readouterr().err
        assert main(["users", action, "--email", "ada@example.com", *url]) == 1
        assert "no user with that email" in capsys.readouterr().err
    assert main(["users", "disable", *url]) == 2
    assert main(["users", "disable", user.id, "--email", "ada@example.com", *url]) == 2
    assert "give a USER id or --email EMAIL" in capsys.readouterr().err
    assert main(["users", "disable", user.id]) == 2
    assert "--redis-url" in capsys.readouterr().err


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
    assert "demo" in out and "sessions" in out and "users" in out


EXAMPLES = Path(__file__).resolve().parent / "data" / "policy"


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


def test_the_demo_has_an_idle_timeout_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    assert demo_settings(Settings.load()).session_idle_timeout == DEMO_IDLE_TIMEOUT == 1800
    monkeypatch.setenv("BASTION_SESSION_IDLE_TIMEOUT", "600")
    assert demo_settings(Settings.load()).session_idle_timeout == 600


def test_demo_banner_masks_the_redis_password(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import uvicorn

    served: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    url = "redis://demo:redis-password-4f9c@127.0.0.1:6399/0"
    assert main(["demo", "--redis-url", url]) == 0
    assert served  # the app was built and handed to the server
    out, err = capsys.readouterr()
    assert "Redis at redis://demo:***@127.0.0.1:6399/0" in out
    for text in (out, err, caplog.text):
        assert "redis-password-4f9c" not in text
