"""Every fenced block of README.md, run exactly as printed, so the guide cannot drift.

Conventions (README.md, "Contributing and layout", points here):

- The line right before each fence is a marker, ``<!-- readme-test: KIND key=value ... -->``
  (an HTML comment: GitHub does not show it). A fence without one fails
  ``test_every_block_is_marked``: nothing is skipped silently.
- Each block runs in a fresh temporary directory holding every ``file`` block printed above it
  (a later block of the same name replaces an earlier one), as a reader following the guide
  would have them. Its environment: ``BASTION_REDIS_URL`` names the suite's one redis-server
  (emptied before each block), ``PATH`` starts with this venv's ``bin`` (``python``,
  ``bastion``, ``uvicorn``, ``flask``), no other ``BASTION_*`` variable. So a complete script
  that reads its settings with ``Settings.load()`` needs nothing but ``script``.

KINDs:

- ``file``: written to the file it names (``file=NAME``, or a first line ``# NAME``) for the
  blocks below; another block must use it (its name or module appears in a later block).
- ``script``: a Python block, run as ``python block.py``; it must exit 0.
- ``shell``: run by ``bash -e -o pipefail``; it must exit 0 (``exit=N``: exit N), and print
  ``expect=TEXT`` when given. ``cwd=repo`` runs it in the repository instead (read-only
  commands such as ``./scripts/demo``).
- ``serve``: a long-running command, started in its own process group, probed over HTTP by
  ``probe=NAME`` (the ``PROBES`` below) once ``port`` answers, then stopped. ``port=env``: the
  harness picks a free port and passes it as ``UVICORN_PORT`` / ``FLASK_RUN_PORT`` (what
  ``uvicorn`` and ``flask run`` read when no ``--port`` is given); ``port=8000``: that port, so
  the block (and those run ``during=`` it) runs in a network namespace of its own
  (``unshare -rn``, with a redis-server of its own there) where no other process holds it; where
  namespaces are not allowed, the port is taken under a lock file, waiting for it to be free.
- ``pip``: ``pip install 'bastion[EXTRAS]'`` lines; not run (tests download nothing), but every
  extra must exist in pyproject.toml.
- ``tested``: run as printed by the test named ``by=tests/FILE.py::TEST``, which takes the block
  from :func:`blocks_tested_by` and checks what it does (an app that needs a request signed
  with a secret of the test's, say); that test must exist and call ``blocks_tested_by``.

Any kind: ``name=N`` names a block; ``after=N1,N2`` runs those named blocks first, in the same
directory and Redis state (a block that needs a user signed up by an app served above);
``during=N`` runs the block while the named ``serve`` block's command serves (its probe not
run); ``at=N`` gives it the files printed above block N instead of its own (a command of a
later section that serves the app of an earlier one). In a
``shell`` or ``serve`` block, the line ``./scripts/test`` (the suite itself, which cannot run
inside itself) is checked to be exactly the command ``.ci/run`` executes, and not run here.
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
VENV_BIN = Path(sys.executable).parent
KINDS = {"file", "script", "shell", "serve", "pip", "tested"}
KEYS = {"file", "name", "after", "during", "at", "cwd", "exit", "expect", "port", "probe", "by"}
MARKER = re.compile(r"^<!--\s*readme-test:\s*(.*?)\s*-->\s*$")
SUITE = "./scripts/test"
TIMEOUT = 90  # seconds a block may take; scripts take 1-3 s


@dataclass
class Block:
    """One fenced block of the README and the marker above it."""

    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    kind: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    problem: str | None = None  # what is wrong with the marker, if anything

    @property
    def id(self) -> str:
        """A test id: where the block is and what it is."""
        return f"L{self.line}-{self.lang or 'plain'}-{self.kind or 'unmarked'}"

    @property
    def filename(self) -> str | None:
        """The file a ``file`` block writes: ``file=NAME`` or a first line ``# NAME``."""
        if "file" in self.options:
            return self.options["file"]
        first = self.text.splitlines()[0] if self.text else ""
        match = re.fullmatch(r"#\s*([\w./-]+\.\w+)\b.*", first)
        return match.group(1) if match else None


def parse(text: str) -> list[Block]:
    """The fenced blocks of a markdown text, with their markers (``` fences, not nested)."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(`{3,})(\S*)\s*$", lines[i])
        if not opening:
            i += 1
            continue
        fence, lang = opening.group(2), opening.group(3)
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        block = Block(line=i + 1, lang=lang, text="\n".join(lines[i + 1 : end]) + "\n")
        marker = MARKER.match(lines[i - 1]) if i > 0 else None
        if marker is None:
            block.problem = "no <!-- readme-test: KIND --> marker on the line before the fence"
        else:
            words = shlex.split(marker.group(1))
            block.kind = words[0] if words else None
            for word in words[1:]:
                key, sep, value = word.partition("=")
                if not sep or key not in KEYS:
                    block.problem = f"unknown marker option {word!r} (known: {sorted(KEYS)})"
                block.options[key] = value
            if block.kind not in KINDS:
                block.problem = f"unknown kind {block.kind!r} (known: {sorted(KINDS)})"
        blocks.append(block)
        i = end + 1
    return blocks


BLOCKS = parse(README.read_text(encoding="utf-8"))
NAMED = {b.options["name"]: b for b in BLOCKS if "name" in b.options}


# ---------------------------------------------------------------------------------------------
# The checks that need no block run


def marker_problems(blocks: list[Block]) -> list[str]:
    """Everything wrong with the markers of these blocks, one message each."""
    problems = [f"README.md:{b.line}: {b.problem}" for b in blocks if b.problem]
    names: dict[str, Block] = {}
    for index, block in enumerate(blocks):
        where = f"README.md:{block.line}"
        for key in ("after", "during", "at"):
            for name in filter(None, block.options.get(key, "").split(",")):
                if name not in names:
                    problems.append(f"{where}: {key}={name} names no block above it")
        if "during" in block.options and NAMED.get(block.options["during"], block).kind != "serve":
            problems.append(f"{where}: during= names no serve block")
        if "name" in block.options:
            names[block.options["name"]] = block
        if block.kind == "file":
            filename = block.filename
            if filename is None:
                problems.append(f"{where}: a file block names no file (file=NAME or # NAME)")
                continue
            used = {filename, Path(filename).stem} if filename.endswith(".py") else {filename}
            later = [b.text for b in blocks[index + 1 :] if b.filename != filename]
            if not any(re.search(rf"\b{re.escape(u)}\b", t) for t in later for u in used):
                problems.append(f"{where}: no block below uses {filename}")
        if block.kind == "serve" and block.options.get("probe") not in PROBES:
            problems.append(f"{where}: serve needs probe= one of {sorted(PROBES)}")
        if block.kind == "serve" and "port" not in block.options:
            problems.append(f"{where}: serve needs port=env or port=NUMBER")
        if block.kind == "tested" and not is_a_readme_test(block.options.get("by", "")):
            problems.append(f"{where}: by= names no test that calls blocks_tested_by")
        if block.kind == "script" and block.lang != "python":
            problems.append(f"{where}: script blocks are python")
    return problems


def is_a_readme_test(test_id: str) -> bool:
    """Whether ``tests/FILE.py::TEST`` is a test function that reads its blocks from here."""
    path, _, name = test_id.partition("::")
    source = ROOT / path
    if not (name and path.startswith("tests/") and source.is_file()):
        return False
    body = source.read_text(encoding="utf-8").partition(f"\ndef {name}(")[2]
    return bool(body) and "blocks_tested_by(" in body.split("\ndef ", 1)[0]


def blocks_tested_by(test_id: str) -> list[str]:
    """The text of the README blocks marked ``tested by=test_id``, in order (at least one)."""
    found = [b.text for b in BLOCKS if b.kind == "tested" and b.options.get("by") == test_id]
    assert found, f"no README block is marked tested by={test_id}"
    return found


def test_every_block_is_marked() -> None:
    """Every fence has a valid marker, so none is left out of the run below."""
    assert len(BLOCKS) >= 20, "README.md lost its examples?"
    assert marker_problems(BLOCKS) == []


def test_an_unmarked_block_is_reported() -> None:
    """The marker check itself: a bare fence, a bad kind and an unused file are each named."""
    text = "\n".join(
        [
            "```python",
            "print(1)",
            "```",
            "<!-- readme-test: run -->",
            "```sh",
            "true",
            "```",
            "<!-- readme-test: file -->",
            "```toml",
            "# bastion.toml",
            "```",
        ]
    )
    problems = marker_problems(parse(text))
    assert len(problems) == 3, problems
    assert "no <!-- readme-test" in problems[0]
    assert "unknown kind 'run'" in problems[1]
    assert "no block below uses bastion.toml" in problems[2]


def test_version_is_the_installed_metadata() -> None:
    """``bastion.__version__`` is the one version: the installed distribution's."""
    from importlib.metadata import version

    import bastion

    assert bastion.__version__ == version("bastion")
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", bastion.__version__)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"], "a second version beside bastion.__version__"
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bastion.__version__"}


def test_license_is_the_one_the_metadata_names() -> None:
    """The LICENSE file exists, is MIT, and ships in the distribution's metadata."""
    from importlib.metadata import metadata

    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "the Bastion authors" in text
    assert metadata("bastion")["License-Expression"] == "MIT"


# ---------------------------------------------------------------------------------------------
# Running blocks


def ci_command_check(text: str) -> str:
    """The block without its ``./scripts/test`` lines, each checked against ``.ci/run``."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    kept = []
    for line in text.splitlines():
        command = line.split("#", 1)[0].strip()
        if command.split()[:1] == [SUITE]:
            assert f"exec {command}" in ci, f"{command!r} is not what .ci/run executes: {ci}"
        else:
            kept.append(line)
    return "\n".join(kept) + "\n"


def environment(redis_url: str, **extra: str) -> dict[str, str]:
    """What every block runs with: the suite's Redis, this venv first on PATH, no BASTION_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["BASTION_REDIS_URL"] = redis_url
    env.pop("PYTHONPATH", None)
    env.update(extra)
    return env


def workdir_files(block: Block, into: Path) -> None:
    """Write every ``file`` block above ``block`` (or its ``at=``) into ``into``, in order."""
    if "at" in block.options:
        block = NAMED[block.options["at"]]
    for other in BLOCKS:
        if other.line >= block.line:
            break
        if other.kind == "file" and other.filename:
            target = into / other.filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(other.text, encoding="utf-8")


def run(block: Block, cwd: Path, redis_url: str) -> None:
    """Run one block (after the blocks it names) in ``cwd``; fail with its output if it fails."""
    for name in filter(None, block.options.get("after", "").split(",")):
        workdir_files(NAMED[name], cwd)  # that block's files, as printed above it
        run(NAMED[name], cwd, redis_url)
        workdir_files(block, cwd)  # then this one's again; what the other made stays
    if block.kind == "file":
        return
    if block.kind == "pip":
        check_pip(block)
        return
    if block.kind == "serve":
        with serving(block, cwd, redis_url) as (port, log):
            try:
                PROBES[block.options["probe"]](HTTP(port))
            except AssertionError as exc:
                log.seek(0)
                raise AssertionError(f"README.md:{block.line}: {exc}\n{log.read()}") from exc
        return
    if "during" in block.options:
        with serving(NAMED[block.options["during"]], cwd, redis_url):
            execute(block, cwd, redis_url)
        return
    execute(block, cwd, redis_url)


def execute(block: Block, cwd: Path, redis_url: str) -> None:
    """Run a ``script`` or ``shell`` block to its end and check its exit status and output."""
    if block.kind == "script":
        path = cwd / "block.py"
        path.write_text(block.text, encoding="utf-8")
        argv = [sys.executable, str(path)]
        expected = 0
    else:
        argv = ["bash", "-e", "-o", "pipefail", "-c", ci_command_check(block.text)]
        expected = int(block.options.get("exit", "0"))
    where = ROOT if block.options.get("cwd") == "repo" else cwd
    done = subprocess.run(
        argv,
        cwd=where,
        env=environment(redis_url),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    output = f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    assert done.returncode == expected, f"README.md:{block.line} exited {done.returncode}\n{output}"
    if "expect" in block.options:
        assert block.options["expect"] in done.stdout, f"README.md:{block.line}\n{output}"


def check_pip(block: Block) -> None:
    """Each ``pip install 'bastion[...]'`` names extras that pyproject.toml defines."""
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    lines = [line.split("#", 1)[0].strip() for line in block.text.splitlines()]
    specs = [line for line in lines if line]
    assert specs, f"README.md:{block.line}: no pip command"
    for spec in specs:
        words = shlex.split(spec)
        assert words[:2] == ["pip", "install"], f"README.md:{block.line}: {spec!r}"
        for requirement in words[2:]:
            match = re.fullmatch(r"bastion\[([\w,-]+)\]", requirement)
            assert match, f"README.md:{block.line}: {requirement!r} is no bastion[extras]"
            unknown = set(match.group(1).split(",")) - extras
            assert not unknown, f"README.md:{block.line}: no extra {sorted(unknown)}"


@contextlib.contextmanager
def port_for(block: Block) -> Iterator[tuple[int, dict[str, str]]]:
    """The port a serve block listens on, and the variables that tell the command so."""
    option = block.options["port"]
    if option == "env":
        port = free_port()
        yield port, {"UVICORN_PORT": str(port), "FLASK_RUN_PORT": str(port)}
        return
    port = int(option)
    lock = Path(tempfile.gettempdir()) / f"bastion-readme-port-{port}.lock"
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # another suite serving the README waits here
        deadline = time.monotonic() + 300
        while answers(port):
            assert time.monotonic() < deadline, f"port {port} is taken by another process"
            time.sleep(0.5)
        yield port, {}


def answers(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@contextlib.contextmanager
def serving(block: Block, cwd: Path, redis_url: str) -> Iterator[tuple[int, Any]]:
    """Start a serve block's command, wait for its port, yield (port, log), then stop it."""
    where = ROOT if block.options.get("cwd") == "repo" else cwd
    with port_for(block) as (port, extra), tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            ["bash", "-e", "-c", ci_command_check(block.text)],
            cwd=where,
            env=environment(redis_url, **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole below
        )
        try:
            deadline = time.monotonic() + TIMEOUT
            while not answers(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    pytest.fail(f"README.md:{block.line} did not serve on {port}:\n{log.read()}")
                time.sleep(0.1)
            yield port, log
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


# ---------------------------------------------------------------------------------------------
# Probes: what a served example must do over HTTP


class HTTP:
    """JSON requests to 127.0.0.1:port, each on a new connection."""

    def __init__(self, port: int) -> None:
        self.port = port

    def __call__(
        self, method: str, path: str, body: Any = None, token: str | None = None
    ) -> tuple[int, Any, http.client.HTTPMessage]:
        """One request: status, JSON body (or text, or None) and headers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if token:
            headers["X-Bastion-Session"] = token
        if method == "POST" and path.endswith("/sessions"):
            headers["X-Bastion-Fallback"] = "true"
        try:
            conn.request(method, path, None if body is None else json.dumps(body), headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("latin-1")
        return response.status, parsed, response.headers


ADA = {"email": "ada@example.com", "password": "correct horse battery staple"}


def sign_up_and_log_in(http: HTTP) -> str:
    """Sign Ada up and log her in with the fallback header: her session token."""
    status, body, _ = http("POST", "/account", ADA)
    assert status == 201, (status, body)
    status, body, headers = http("POST", "/account/sessions", ADA)
    assert status == 201, (status, body)
    token = headers["X-Bastion-Session"]
    assert token, headers
    return str(token)


def error(body: Any, kind: str) -> dict[str, Any]:
    """``body`` if it is Bastion's JSON error of that type (else something it cannot equal)."""
    return body if isinstance(body, dict) and body.get("type") == kind else {"type": kind}


def probe_demo(http: HTTP) -> None:
    """The demo: guests are refused by the account routes; Ada signs up, logs in, reads herself."""
    status, body, _ = http("GET", "/account")
    assert (status, body) == (401, error(body, "user_unauthorized")), body
    token = sign_up_and_log_in(http)
    status, body, _ = http("GET", "/account", token=token)
    assert (status, body["email"]) == (200, ADA["email"]), body


def probe_notes(http: HTTP) -> None:
    """The "Use it" apps: a guest is refused, Ada signs up, logs in, reads herself and a note."""
    for path in ("/me", "/notes/n1"):
        status, body, _ = http("GET", path)
        assert (status, body) == (401, error(body, "user_unauthorized")), (path, status, body)
    token = sign_up_and_log_in(http)
    status, body, _ = http("GET", "/me", token=token)
    assert (status, body) == (200, {"email": ADA["email"]}), body
    status, body, _ = http("GET", "/notes/n1", token=token)
    assert status == 200 and body["note"] == "n1", (status, body)


PROBES: dict[str, Callable[[HTTP], None]] = {"demo": probe_demo, "notes": probe_notes}


@pytest.fixture(scope="module")
def shared_redis(redis_server: RedisServer) -> str:
    """The suite's redis-server: one for every block."""
    return redis_server.url


def fixed_port(block: Block) -> bool:
    """Whether the block serves on a fixed port, or runs while such a block serves."""
    served = NAMED.get(block.options.get("during", ""), block)
    return served.kind == "serve" and served.options.get("port", "env") != "env"


def namespaces() -> bool:
    """Whether this machine lets us run a command in a network namespace of its own."""
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    return done.returncode == 0


def loopback_up() -> None:
    """Bring ``lo`` up in a fresh network namespace (SIOCSIFFLAGS: UP, LOOPBACK, RUNNING)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        fcntl.ioctl(sock, 0x8914, struct.pack("16sH14s", b"lo", 0x1 | 0x8 | 0x40, bytes(14)))


def main(line: int, cwd: str) -> int:
    """Inside a network namespace: run the block at README line ``line`` in ``cwd``."""
    loopback_up()
    # Redis's default port, free in a namespace of our own: a block may name the URL a reader's
    # local server has (redis://127.0.0.1:6379/0), as printed.
    server = RedisServer(port=6379).start()
    try:
        run(next(b for b in BLOCKS if b.line == line), Path(cwd), server.url)
    finally:
        server.cleanup()
    return 0


@pytest.mark.redis_server
@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.kind not in ("file", "tested")], ids=lambda b: b.id
)
def test_block_runs_as_printed(block: Block, shared_redis: str, tmp_path: Path) -> None:
    """The block, with the files printed above it, does what the README says."""
    assert block.problem is None, block.problem
    client = redis.Redis.from_url(shared_redis)
    client.flushall()
    client.close()
    workdir_files(block, tmp_path)
    if fixed_port(block) and namespaces():
        where = [str(block.line), str(tmp_path)]
        done = subprocess.run(
            ["unshare", "-rn", sys.executable, "-m", "tests.test_readme", *where],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT * 2,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return
    run(block, tmp_path, shared_redis)


def test_python_blocks_name_nothing_undefined(tmp_path: Path) -> None:
    """Pyflakes' checks (ruff's F rules) on every Python block, function bodies never run too."""
    python = [b for b in BLOCKS if b.lang == "python"]
    for block in python:
        (tmp_path / f"readme_L{block.line}.py").write_text(block.text, encoding="utf-8")
    done = subprocess.run(
        [str(VENV_BIN / "ruff"), "check", "--isolated", "--select", "F", "--quiet", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


if __name__ == "__main__":
    sys.exit(main(int(sys.argv[1]), sys.argv[2]))
