"""What an app loads: no PyYAML, no pycasbin without a policy, no Starlette on the WSGI side,
no SQLAlchemy unless the app imports its user store.

The checks run in a fresh interpreter (this one has loaded everything already), in the test
environment, where all three are installed: their absence from ``sys.modules`` is Bastion's doing.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bastion import Bastion, PolicyError, Settings
from bastion.cli import main
from bastion.policies.holder import build_engine
from bastion.policies.tools import commands

OPTIONAL = ("yaml", "casbin", "starlette", "fastapi", "flask", "sqlalchemy")

APP = """
import json, sys

import bastion

loaded = {"import": sorted(m for m in OPTIONAL if m in sys.modules)}
app = bastion.Bastion(bastion.Settings.from_mapping(SETTINGS))
loaded["Bastion"] = sorted(m for m in OPTIONAL if m in sys.modules)


def hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["bastion.identity"].kind.encode()]


seen = []
environ = {
    "REQUEST_METHOD": "GET",
    "PATH_INFO": "/",
    "SCRIPT_NAME": "",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "wsgi.url_scheme": "http",
}
body = b"".join(app.wsgi(hello)(environ, lambda status, headers, exc=None: seen.append(status)))
loaded["request"] = sorted(m for m in OPTIONAL if m in sys.modules)
print(json.dumps({"loaded": loaded, "status": seen, "body": body.decode()}))
"""


def run_app(settings: dict[str, object]) -> dict[str, object]:
    """Build a Bastion (embedded Redis) in a fresh interpreter and send it one WSGI request."""
    source = f"OPTIONAL = {OPTIONAL!r}\nSETTINGS = {settings!r}\n{APP}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_an_app_without_a_policy_loads_no_yaml_casbin_or_starlette() -> None:
    result = run_app({})
    assert result["status"] == ["200 OK"] and result["body"] == "guest"
    assert result["loaded"] == {"import": [], "Bastion": [], "request": []}


def test_a_policy_loads_casbin_and_no_yaml(tmp_path: Path) -> None:
    policy = tmp_path / "policy.csv"
    policy.write_text("p, any, pages/*, read\n", encoding="utf-8")
    routes = [{"method": "GET", "path": "/", "action": "read", "resource": "pages/home"}]
    result = run_app({"policy_files": (str(policy),), "routes": routes})
    assert result["status"] == ["200 OK"]
    assert result["loaded"] == {"import": [], "Bastion": ["casbin"], "request": ["casbin"]}


# -- without PyYAML (the policy-tools extra) --------------------------------------------------

FAILING_SUITE = """
tests:
  - name: guests may not read pages
    principal: [any, guests]
    resource: pages/home
    action: read
    expect: deny
"""


@pytest.fixture
def policy_with_a_failing_suite(tmp_path: Path) -> Path:
    """A policy whose suite fails: the self-test refuses it when it can read the suite."""
    (tmp_path / "policy.csv").write_text("p, any, pages/*, read\n", encoding="utf-8")
    (tmp_path / "policy.test.yaml").write_text(FAILING_SUITE, encoding="utf-8")
    return tmp_path


@pytest.fixture
def no_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    """PyYAML as if it were not installed (``import yaml`` raises ImportError)."""
    monkeypatch.setitem(sys.modules, "yaml", None)


def test_the_suites_beside_a_policy_run_with_pyyaml(policy_with_a_failing_suite: Path) -> None:
    with pytest.raises(PolicyError, match="guests may not read pages"):
        Bastion(Settings(policy_files=(str(policy_with_a_failing_suite / "policy.csv"),)))


@pytest.mark.usefixtures("no_yaml")
def test_without_pyyaml_the_suites_are_skipped_with_a_warning(
    policy_with_a_failing_suite: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bastion.policy")
    policy = policy_with_a_failing_suite / "policy.csv"
    app = Bastion(Settings(policy_files=(str(policy),)))
    assert app.policy.engine.decide(frozenset({"any"}), "read", "pages/home").allowed
    [record] = [r for r in caplog.records if r.name == "bastion.policy"]
    assert record.levelno == logging.WARNING
    assert "policy.test.yaml" in record.getMessage()
    assert "pip install 'bastion[policy-tools]'" in record.getMessage()
    # The other checks still run: a broken policy is still refused.
    policy.write_text("p, any, pages/*, reed\n", encoding="utf-8")
    with pytest.raises(PolicyError, match="reed"):
        build_engine(None, [policy], suites=[policy_with_a_failing_suite / "policy.test.yaml"])


@pytest.mark.usefixtures("no_yaml")
def test_policy_test_without_pyyaml_says_what_to_install(
    policy_with_a_failing_suite: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    assert commands.test([policy_with_a_failing_suite], out) == 2
    assert "pip install 'bastion[policy-tools]'" in out.getvalue()
    assert main(["policy", "test", str(policy_with_a_failing_suite)]) == 2
    assert "pip install 'bastion[policy-tools]'" in capsys.readouterr().out


@pytest.mark.usefixtures("no_yaml")
def test_policy_check_and_explain_need_no_pyyaml(policy_with_a_failing_suite: Path) -> None:
    out = io.StringIO()
    assert commands.check([policy_with_a_failing_suite], out) == 0, out.getvalue()
    code = commands.explain([policy_with_a_failing_suite], "any", "read", "pages/home", out)
    assert code == 0, out.getvalue()


def test_the_demo_names_the_extra_of_a_missing_framework(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "starlette.applications", None)
    # The example's module, if an earlier test imported it, must be imported again.
    monkeypatch.delitem(sys.modules, "examples.starlette_notes", raising=False)
    assert main(["demo", "--framework", "starlette"]) == 2
    err = capsys.readouterr().err
    assert "needs starlette: pip install 'bastion[demo,starlette]'" in err


def test_without_starlette_the_asgi_middleware_sets_only_the_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bastion.identity import Identity
    from bastion.middleware.asgi import scope_publisher

    scope: dict[str, object] = {}
    scope_publisher()(scope, Identity.guest())  # Starlette is installed here
    assert set(scope) == {"user", "auth"} and type(scope["auth"]).__name__ == "AuthCredentials"
    monkeypatch.setitem(sys.modules, "starlette.authentication", None)
    publish = scope_publisher.__wrapped__()  # built afresh, as if without Starlette
    scope.clear()
    publish(scope, Identity.guest())
    assert scope == {"user": Identity.guest()}


def test_import_bastion_imports_no_opentelemetry() -> None:
    """``import bastion`` makes no OpenTelemetry import of its own (redis-py may: not ours)."""
    code = """
import builtins, sys

importers = set()
real_import = builtins.__import__

def recording(name, globals=None, locals=None, fromlist=(), level=0):
    if name.split(".")[0] == "opentelemetry":
        importers.add((globals or {}).get("__name__", "?"))
    return real_import(name, globals, locals, fromlist, level)

builtins.__import__ = recording
import bastion, bastion.core, bastion.middleware.wsgi, bastion.audit, bastion.telemetry
print(sorted(m for m in importers if m.split(".")[0] == "bastion"))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"
