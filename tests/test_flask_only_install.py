"""A Flask-only install works: ``pip install '.[flask]'`` in a fresh venv, no Starlette in it.

The venv (``.venv-flask-only``, an editable install of this checkout) is made once per
pyproject.toml and Python version, then reused: later runs cost one subprocess. Where it cannot
be made (no network for pip, say) the test is skipped, and fails when ``CI`` is set.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_server import require_redis_server

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-flask-only"
STAMP = VENV / ".bastion-installed"
PYTHON = VENV / "bin" / "python"


def _key() -> str:
    """What the venv depends on: the declared dependencies and this Python."""
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    return hashlib.sha256(pyproject + sys.version.encode()).hexdigest()


def _run(*command: str | Path) -> None:
    done = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=900
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stderr[-3000:]}")


def flask_only_python() -> Path:
    """The venv's Python, made (or remade, when pyproject.toml changed) with ``.[flask]`` only."""
    key = _key()
    if PYTHON.exists() and STAMP.exists() and STAMP.read_text(encoding="utf-8") == key:
        return PYTHON
    shutil.rmtree(VENV, ignore_errors=True)
    _run(sys.executable, "-m", "venv", VENV)
    _run(
        PYTHON,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "-e",
        f"{ROOT}[flask]",
    )
    STAMP.write_text(key, encoding="utf-8")
    return PYTHON


@pytest.fixture(scope="module")
def python() -> Path:
    """The Flask-only venv's interpreter."""
    try:
        return flask_only_python()
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as exc:
        message = f"cannot make the Flask-only venv: {exc}"
        if require_redis_server():  # CI: the same rule as for redis-server
            pytest.fail(message)
        pytest.skip(message)


def test_a_flask_only_install_signs_up_logs_in_and_reads_the_account(
    python: Path, real_redis: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_REDIS_URL"] = real_redis
    done = subprocess.run(
        [str(python), str(ROOT / "tests" / "flask_only_app.py")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=VENV,  # not the checkout: nothing importable from the current directory
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {
        "statuses": [201, 201, 200, 200],
        "email": "ada@example.com",
        "kind": "session",
        "starlette_installed": False,
        "loaded": [],
    }
