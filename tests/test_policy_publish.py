"""``bastion policy publish | history | rollback``: one checked policy for every host, via Redis.

Two Bastions with folders of their own stand for two hosts; the watchers run as in production
(started as the first request starts them, default ``policy_reload_interval``). A redis-server
of this module's own: a published version would reach every other test's watcher.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bastion import Bastion, Settings
from bastion.cli import main
from bastion.policies.published import Bundle, PolicyVersions
from tests.redis_server import RedisServer
from tests.test_readme import blocks_tested_by

ROUTES = [{"method": "GET", "path": "/notes/{id}", "action": "read", "resource": "notes/{id}"}]
READ_A = (frozenset({"any", "users", "user:alice"}), "read", "notes/a")
READ_B = (frozenset({"any", "users", "user:alice"}), "read", "notes/b")
SWAP_WITHIN = 1.0
"""The promise: every worker on every host has a published version within a second."""


@pytest.fixture(scope="module")
def server(redis_server: RedisServer) -> Iterator[RedisServer]:
    own = RedisServer().start()
    try:
        yield own
    finally:
        own.cleanup()


@pytest.fixture
def url(server: RedisServer) -> Iterator[str]:
    yield server.url
    redis.Redis.from_url(server.url).flushall()


def _folder(root: Path, name: str, policy: str, suite: str | None = None) -> Path:
    folder = root / name
    folder.mkdir()
    (folder / "policy.csv").write_text(policy)
    if suite is not None:
        (folder / "policy.test.yaml").write_text(suite)
    return folder


def _host(url: str, folder: Path) -> Bastion:
    """A Bastion whose local policy is ``folder``'s, its watcher running (as after a request)."""
    bastion = Bastion(
        Settings.from_mapping(
            {"redis_url": url, "policy_files": [str(folder / "policy.csv")], "routes": ROUTES}
        )
    )
    bastion.policy_watcher.start()
    return bastion


def _allows(bastion: Bastion, request: tuple[frozenset[str], str, str]) -> bool:
    return bastion.policy.engine.decide(*request).allowed


def _until(hosts: list[Bastion], request: tuple[frozenset[str], str, str], allowed: bool) -> float:
    """Seconds until every host decides ``request`` as ``allowed`` (fails after 5 s)."""
    started = time.monotonic()
    while not all(_allows(h, request) is allowed for h in hosts):
        if time.monotonic() - started > 5:
            raise AssertionError("a host never swapped to the published policy")
        time.sleep(0.005)
    return time.monotonic() - started


SUITE_A = """name: a
policies: [policy.csv]
principals:
  alice: {user: alice}
tests:
  - name: users read a
    principal: alice
    resource: notes/a
    expect: {read: allow}
"""


def _publish(url: str, folder: Path, *more: str) -> int:
    return main(["policy", "publish", str(folder), "--redis-url", url, *more])


def test_a_published_policy_reaches_two_hosts_within_a_second(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Each host's local files allow something else; the published policy wins on both.
    one = _host(url, _folder(tmp_path, "one", "p, users, notes/b, read\n"))
    two = _host(url, _folder(tmp_path, "two", "p, users, notes/c, read\n"))
    try:
        assert _allows(one, READ_B) and not _allows(one, READ_A)
        time.sleep(0.2)  # both watchers made their first check: nothing published yet
        assert _allows(one, READ_B)
        published = _folder(tmp_path, "published", "p, users, notes/a, read\n", SUITE_A)
        assert _publish(url, published, "--by", "alice@ci") == 0
        # The CLI returns right after the version is stored: the publication's moment.
        assert "published policy version 1" in capsys.readouterr().out
        assert _until([one, two], READ_A, True) < SWAP_WITHIN
        assert not _allows(one, READ_B)
        assert one.policy_watcher.published == two.policy_watcher.published == 1
    finally:
        one.close()
        two.close()


def test_a_host_started_after_publishing_uses_the_published_version(
    url: str, tmp_path: Path
) -> None:
    assert _publish(url, _folder(tmp_path, "published", "p, users, notes/a, read\n")) == 0
    late = _host(url, _folder(tmp_path, "late", "p, users, notes/b, read\n"))
    try:
        _until([late], READ_A, True)
        assert not _allows(late, READ_B)
    finally:
        late.close()


def test_local_files_rule_until_a_version_is_published_then_are_ignored(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(tmp_path, "host", "p, users, notes/b, read\n")
    host = Bastion(
        Settings.from_mapping(
            {"redis_url": url, "policy_files": [str(folder / "policy.csv")], "routes": ROUTES,
             "policy_reload_interval": 0}
        )
    )  # fmt: skip
    watcher = host.policy_watcher
    try:
        # Single-host use: no version in Redis, the local files are the policy and reload.
        watcher.check_now()
        (folder / "policy.csv").write_text("p, users, notes/b, read\np, users, notes/x, read\n")
        assert watcher.check_now() is True
        assert _allows(host, READ_B)
        assert _publish(url, _folder(tmp_path, "published", "p, users, notes/a, read\n")) == 0
        assert watcher.check_now() is True
        assert _allows(host, READ_A) and not _allows(host, READ_B)
        # Published wins: a change to the local files is logged, not applied.
        (folder / "policy.csv").write_text("p, users, notes/b, read\n")
        with caplog.at_level(logging.WARNING, logger="bastion.policy"):
            assert watcher.check_now() is False
        assert "published policy version 1 stays in force" in caplog.text
        assert _allows(host, READ_A) and not _allows(host, READ_B)
    finally:
        host.close()


def test_a_broken_policy_is_refused_at_publish_and_never_replaces_a_good_one(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    host = _host(url, _folder(tmp_path, "host", "p, users, notes/b, read\n"))
    try:
        assert _publish(url, _folder(tmp_path, "good", "p, users, notes/a, read\n")) == 0
        _until([host], READ_A, True)
        capsys.readouterr()
        broken = _folder(tmp_path, "broken", "p, users, notes/a, read\np, users, notes*, read\n")
        assert _publish(url, broken) == 1
        out = capsys.readouterr().out
        assert "policy.csv:2" in out and "not published" in out
        failing = _folder(
            tmp_path, "failing", "p, users, notes/b, read\n", SUITE_A
        )  # parses, but its own test suite fails
        assert _publish(url, failing) == 1
        assert "not published: the test suites did not pass" in capsys.readouterr().out
        versions = PolicyVersions(redis.Redis.from_url(url), "bastion")
        assert [v.number for v in versions.history()] == [1] and versions.current() == 1
        time.sleep(0.6)  # a watcher check later: still the good one
        assert _allows(host, READ_A) and not _allows(host, READ_B)
    finally:
        host.close()


def test_a_broken_version_in_redis_is_refused_by_the_workers(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Stored by hand (or by a Bastion whose checks differ): each worker checks what it builds.
    host = _host(url, _folder(tmp_path, "host", "p, users, notes/b, read\n"))
    client = redis.Redis.from_url(url)
    versions = PolicyVersions(client, "bastion")
    try:
        good = Bundle.read(
            None, [_folder(tmp_path, "good", "p, users, notes/a, read\n") / "policy.csv"]
        )
        versions.publish(good, good.engine(), by="test")
        _until([host], READ_A, True)
        broken = Bundle(None, (("policy.csv", "p, users, notes*, read\n"),))
        with caplog.at_level(logging.ERROR, logger="bastion.policy"):
            versions.publish(broken, good.engine(), by="test")
            time.sleep(1.0)
        assert "published policy version 2 refused" in caplog.text
        assert "policy.csv:1" in caplog.text
        assert _allows(host, READ_A)
        assert host.policy_watcher.published == 1
    finally:
        host.close()


def test_history_and_rollback(url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    host = _host(url, _folder(tmp_path, "host", ""))
    first = _folder(tmp_path, "first", "p, users, notes/a, read\n")
    second = _folder(tmp_path, "second", "p, users, notes/b, read\n")
    try:
        before = time.time()
        assert _publish(url, first, "--by", "alice@ci", "--note", "first cut") == 0
        assert _publish(url, second, "--by", "bob@ci") == 0
        _until([host], READ_B, True)
        assert main(["policy", "rollback", "1", "--by", "carol@ops", "--redis-url", url]) == 0
        assert "published policy version 3" in capsys.readouterr().out
        _until([host], READ_A, True)
        assert not _allows(host, READ_B)
        assert host.policy_watcher.published == 3

        assert main(["policy", "history", "--json", "--redis-url", url]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [(r["version"], r["by"], r["note"], r["current"]) for r in rows] == [
            (1, "alice@ci", "first cut", False),
            (2, "bob@ci", "", False),
            (3, "carol@ops", "rollback to version 1", True),
        ]
        assert rows[0]["sha256"] == Bundle.read(None, [first / "policy.csv"]).sha256
        assert rows[2]["sha256"] == rows[0]["sha256"] != rows[1]["sha256"]
        for row in rows:
            at = time.mktime(time.strptime(row["at"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
            assert before - 2 <= at <= time.time() + 2
            assert row["rules"] == 1 and row["files"] == ["policy.csv"]
        assert main(["policy", "history", "--redis-url", url]) == 0
        text = capsys.readouterr().out.splitlines()
        assert (
            text[2].startswith("*    3")
            and "carol@ops" in text[2]
            and rows[2]["sha256"][:12] in text[2]
        )

        assert main(["policy", "rollback", "9", "--redis-url", url]) == 1
        assert "no version 9" in capsys.readouterr().err
    finally:
        host.close()


def test_publish_needs_a_shared_redis_and_one_policy(
    tmp_path: Path, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path, "p", "p, users, notes/a, read\n")
    assert main(["policy", "publish", str(folder)]) == 2
    assert "needs a shared Redis" in capsys.readouterr().err
    _folder(tmp_path, "q", "p, users, notes/b, read\n")
    assert _publish(url, tmp_path) == 1
    assert "policy files in 2 folders" in capsys.readouterr().out


def test_the_readme_section_runs_as_printed(url: str, tmp_path: Path) -> None:
    (block,) = blocks_tested_by(
        "tests/test_policy_publish.py::test_the_readme_section_runs_as_printed"
    )
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "BASTION_REDIS_URL": url, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", block],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "published policy version 1" in done.stdout
    assert "(rollback to version 1)" in done.stdout
    rows = json.loads(done.stdout[done.stdout.rindex("\n[") :])
    assert [(r["version"], r["by"], r["current"]) for r in rows][-1] == (2, "ops@example.com", True)
