"""A load run over real HTTP: sign-ups, log-ins, reads, writes, refusals and API keys, checked.

``./scripts/load`` (``--help``) starts a redis-server of its own (unless ``--redis-url`` names
one), serves ``bench/load_app.py`` under uvicorn with N workers on a free 127.0.0.1 port, and
runs C clients for the duration. Every answer is checked against what it must be (the oracle:
status, error type and, where it matters, the identity the app saw), so a wrong allow, a wrong
deny, a credential served as a guest or a 5xx is counted and shown. At the end every user's
sessions are counted through ``bastion.sessions.list``: never above the cap, and exactly what
the log-ins predict. ``--fault restart|pause-short|pause-long`` stops Redis (and starts it
again) or pauses it with ``CLIENT PAUSE`` in the middle of the run, and reports the 503s, their
delay and the first success once Redis is back. Everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio

from bastion import Bastion, Settings
from bench.load_app import SESSION_LIMIT
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
NOTES = "/databases/main/collections/notes/documents"
STORM = SESSION_LIMIT + 3  # concurrent log-ins of one user: three past the cap
FAULTS = ("restart", "pause-short", "pause-long")
PASSWORD_KINDS = frozenset({"sign_up", "log_in", "log_in_wrong_password", "log_in_storm"})
RECOVERY_GRACE = 1.0
"""Seconds after Redis is back during which a 503 still counts as the outage's."""
WEIGHTS = {
    # Password work (argon2id, tens of ms of CPU each) is a few percent of the requests, as in
    # an app's real traffic; a storm is STORM log-ins at once and STORM probes.
    "sign_up": 3,
    "log_in": 4,
    "log_in_wrong_password": 1,
    "log_in_storm": 1,
    "whoami": 12,
    "read_own": 40,
    "create": 12,
    "update_own": 16,
    "read_evicted": 4,
    "forged_token": 4,
    "read_other": 12,
    "update_other": 6,
    "admin_read": 6,
    "guest_read": 4,
    "guest_update": 2,
    "guest_create": 2,
    "guest_whoami": 4,
    "key_read": 16,
    "key_without_scope": 6,
    "key_update": 4,
}


# --- a small HTTP/1.1 keep-alive client: the load generator must cost far less than the app --


@dataclass
class Answer:
    """One HTTP response."""

    status: int
    headers: dict[str, str]
    body: Any


class Connection:
    """One keep-alive HTTP/1.1 connection to the app (reopened after any failure)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """Send one request and read its response (10 s at most)."""
        try:
            return await asyncio.wait_for(self._request(method, path, body, headers), 10)
        except BaseException:
            self.close()
            raise

    async def _request(
        self, method: str, path: str, body: Any, headers: dict[str, str] | None
    ) -> Answer:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        data = b"" if body is None else json.dumps(body).encode()
        lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        if body is not None:
            lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(data)}")
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split(" ", 2)[1])
        got = {}
        for line in head[1:]:
            if line:
                name, _, value = line.partition(":")
                got[name.strip().lower()] = value.strip()
        if "chunked" in got.get("transfer-encoding", ""):
            raise RuntimeError("chunked responses are not read by the load client")
        raw = await self.reader.readexactly(int(got.get("content-length", "0")))
        if got.get("connection", "").lower() == "close":
            self.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode("latin-1")
        return Answer(status, got, parsed)

    def close(self) -> None:
        """Drop the connection; the next request opens a new one."""
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# --- what the clients know, and the oracle ------------------------------------------------------


@dataclass
class User:
    """A user one client signed up: only that client logs it in, so its sessions are known."""

    id: str
    email: str
    storm: bool = False
    logins: list[str | None] = field(default_factory=list)
    """Tokens in creation order; None for a log-in whose outcome is unknown (a 503)."""
    docs: list[str] = field(default_factory=list)

    def state(self, index: int) -> str:
        """``live``, ``evicted`` or ``unknown`` for the log-in at ``index``."""
        newer = self.logins[index + 1 :]
        known = sum(token is not None for token in newer)
        if known >= SESSION_LIMIT:
            return "evicted"
        if len(newer) < SESSION_LIMIT:
            return "live"
        return "unknown"

    def tokens(self, state: str) -> list[str]:
        """The tokens in that state."""
        return [t for i, t in enumerate(self.logins) if t is not None and self.state(i) == state]

    def expected_sessions(self) -> tuple[int, int]:
        """The least and most sessions the user may hold now."""
        known = sum(token is not None for token in self.logins)
        return min(known, SESSION_LIMIT), min(len(self.logins), SESSION_LIMIT)


@dataclass
class Record:
    """One checked request."""

    kind: str
    sent: float
    done: float
    status: int
    problem: str | None  # None: the answer is the one the oracle expected
    credential: bool
    retry_after: bool = False

    @property
    def latency(self) -> float:
        return self.done - self.sent


@dataclass
class Expect:
    """What an answer must be: a status, an error type, and the identity it must echo."""

    status: int
    type: str | None = None
    who: str | None = None
    kind: str | None = None


class Shared:
    """What every client may read: the admin's token, the API keys, every note."""

    def __init__(self) -> None:
        self.admin_id = ""
        self.admin_token = ""
        self.reader_key = ""
        self.reader_key_id = ""
        self.files_key = ""
        self.docs: list[tuple[str, str]] = []  # (note id, owner id)
        self.records: list[Record] = []
        self.users: list[User] = []
        self.storm_cap_checks = 0
        self.storm_cap_violations: list[str] = []
        self.until = float("inf")


def judge(answer: Answer, expect: Expect) -> str | None:
    """Why ``answer`` is not what ``expect`` says, or None."""
    body = answer.body if isinstance(answer.body, dict) else {}
    if answer.status != expect.status:
        got = f"{answer.status} {body.get('type', '')}".strip()
        return f"expected {expect.status} {expect.type or ''}, got {got}".replace("  ", " ")
    if expect.type is not None and body.get("type") != expect.type:
        return f"expected type {expect.type}, got {body.get('type')!r}"
    if expect.who is not None and body.get("who") != expect.who:
        return f"expected the app to see {expect.who!r}, it saw {body.get('who')!r}"
    if expect.kind is not None and body.get("kind") != expect.kind:
        return f"expected kind {expect.kind}, got {body.get('kind')!r}"
    return None


class Client:
    """One simulated client: a connection, its own users, and a loop of random requests."""

    def __init__(self, number: int, port: int, shared: Shared, rng: random.Random) -> None:
        self.number = number
        self.port = port
        self.conn = Connection(port)
        self.shared = shared
        self.rng = rng
        self.users: list[User] = []
        self.storm_user: User | None = None

    async def call(
        self,
        kind: str,
        expect: Expect,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        conn: Connection | None = None,
    ) -> Answer | None:
        """One request, judged and recorded; None when no answer came (also recorded)."""
        sent = time.monotonic()
        try:
            answer = await (conn or self.conn).request(method, path, body, headers)
        except Exception as error:  # a transport failure is a wrong outcome too
            failure = f"no answer: {type(error).__name__}: {error}"
            self.record(Record(kind, sent, time.monotonic(), 0, failure, _has_credential(headers)))
            return None
        done = time.monotonic()
        problem = judge(answer, expect)
        body_ = answer.body if isinstance(answer.body, dict) else {}
        record = Record(kind, sent, done, answer.status, problem, _has_credential(headers))
        if answer.status == 503:
            record.retry_after = "retry-after" in answer.headers
            if body_.get("type") != "service_unavailable":
                record.problem = f"a 503 of type {body_.get('type')!r}"
        if problem is not None and record.credential and _served_as_guest(answer):
            record.problem = f"GUEST DOWNGRADE: {problem}"
        self.record(record)
        return answer

    def record(self, record: Record) -> None:
        self.shared.records.append(record)

    # the requests ------------------------------------------------------------------------------

    async def sign_up(self, *, storm: bool = False) -> User | None:
        email = f"load-{self.number}-{secrets.token_hex(6)}@example.com"
        answer = await self.call(
            "sign_up",
            Expect(201),
            "POST",
            "/account",
            {"email": email, "password": PASSWORD},
        )
        if answer is None or answer.status != 201 or not isinstance(answer.body, dict):
            return None  # an unknown outcome: the client forgets this user
        user = User(answer.body["id"], email, storm=storm)
        if answer.body.get("email") != email:
            self.shared.records[-1].problem = f"sign-up answered another email: {answer.body}"
        self.shared.users.append(user)
        return user

    async def log_in(
        self, user: User, kind: str = "log_in", conn: Connection | None = None
    ) -> None:
        answer = await self.call(
            kind,
            Expect(201),
            "POST",
            "/account/sessions",
            {"email": user.email, "password": PASSWORD},
            {"X-Bastion-Fallback": "true"},
            conn,
        )
        if answer is None or answer.status != 201:
            user.logins.append(None)  # it may have made a session: count it as possible
            return
        token = answer.headers.get("x-bastion-session")
        body = answer.body if isinstance(answer.body, dict) else {}
        if token is None or body.get("userId") != user.id:
            self.shared.records[-1].problem = "a log-in answered without its token or user"
            user.logins.append(None)
            return
        user.logins.append(token)

    async def storm(self) -> None:
        """Log one user in STORM times at once, then count which of the tokens still work."""
        if self.storm_user is None:
            self.storm_user = await self.sign_up(storm=True)
            if self.storm_user is None:
                return
        user = self.storm_user
        before = len(user.logins)
        conns = [Connection(self.port) for _ in range(STORM)]
        try:
            await asyncio.gather(*(self.log_in(user, "log_in_storm", c) for c in conns))
        finally:
            for conn in conns:
                conn.close()
        made = user.logins[before:]
        working = 0
        unknown = made.count(None)
        for token in made:
            if token is None:
                continue
            answer = await self.call(
                "storm_probe",
                Expect(200, who=user.id, kind="session"),
                "GET",
                "/whoami",
                headers={"X-Bastion-Session": token},
            )
            if answer is not None and answer.status == 401:
                last = self.shared.records[-1]
                problem = judge(answer, Expect(401, "user_session_invalid"))
                last.problem = problem  # evicted by the cap: right, if the count below holds
            elif (
                answer is not None
                and answer.status == 200
                and self.shared.records[-1].problem is None
            ):
                working += 1
            else:
                unknown += 1
        self.shared.storm_cap_checks += 1
        # Exactly the cap survives, less any log-in or probe whose outcome is unknown.
        if working > SESSION_LIMIT or working < SESSION_LIMIT - unknown:
            self.shared.storm_cap_violations.append(
                f"{STORM} log-ins of {user.id} at once left {working} working tokens "
                f"(cap {SESSION_LIMIT}, {unknown} unknown)"
            )

    def live_user(self) -> tuple[User, str] | None:
        """One of this client's users with a session known to be live, and its token."""
        choices = [(u, t) for u in self.users for t in u.tokens("live")]
        return self.rng.choice(choices) if choices else None

    async def step(self) -> None:
        """One random request (or a few, for a storm) from the mix."""
        kind = self.rng.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        shared = self.shared
        if kind == "sign_up" or not self.users:
            user = await self.sign_up()
            if user is not None:
                self.users.append(user)
            return
        if kind == "log_in":
            await self.log_in(self.rng.choice(self.users))
            return
        if kind == "log_in_wrong_password":
            user = self.rng.choice(self.users)
            await self.call(
                kind,
                Expect(401, "user_invalid_credentials"),
                "POST",
                "/account/sessions",
                {"email": user.email, "password": PASSWORD + "?"},
            )
            return
        if kind == "log_in_storm":
            await self.storm()
            return
        any_doc = self.rng.choice(shared.docs)[0] if shared.docs else secrets.token_hex(8)
        if kind.startswith("guest_"):
            if kind == "guest_read":  # a not_found route: a refused read is a 404, even a guest's
                expect = Expect(404, "general_not_found")
                await self.call(kind, expect, "GET", f"{NOTES}/{any_doc}")
            elif kind == "guest_update":
                expect = Expect(401, "user_unauthorized")
                await self.call(kind, expect, "PATCH", f"{NOTES}/{any_doc}", {})
            elif kind == "guest_create":
                await self.call(kind, Expect(401, "user_unauthorized"), "POST", NOTES, {})
            else:
                await self.call(kind, Expect(200, who="", kind="guest"), "GET", "/whoami")
            return
        if kind.startswith("key_"):
            key_headers = {"X-API-Key": shared.reader_key}
            if kind == "key_read":
                expect = Expect(200, who=f"key:{shared.reader_key_id}", kind="key")
                await self.call(kind, expect, "GET", f"{NOTES}/{any_doc}", headers=key_headers)
            elif kind == "key_update":
                expect = Expect(401, "general_unauthorized_scope")
                await self.call(kind, expect, "PATCH", f"{NOTES}/{any_doc}", {}, key_headers)
            else:
                expect = Expect(401, "general_unauthorized_scope")
                headers = {"X-API-Key": shared.files_key}
                await self.call(kind, expect, "GET", f"{NOTES}/{any_doc}", headers=headers)
            return
        if kind == "admin_read":
            expect = Expect(200, who=shared.admin_id, kind="session")
            headers = {"X-Bastion-Session": shared.admin_token}
            await self.call(kind, expect, "GET", f"{NOTES}/{any_doc}", headers=headers)
            return
        if kind in ("read_evicted", "forged_token"):
            gone = [t for u in self.users for t in u.tokens("evicted")]
            if kind == "forged_token" or not gone:
                user = self.rng.choice(self.users)
                token = f"{user.id}.{secrets.token_urlsafe(16)}.{secrets.token_urlsafe(32)}"
                kind = "forged_token"
            else:
                token = self.rng.choice(gone)
            headers = {"X-Bastion-Session": token}
            await self.call(
                kind, Expect(401, "user_session_invalid"), "GET", "/whoami", headers=headers
            )
            return
        found = self.live_user()
        if found is None:
            await self.log_in(self.rng.choice(self.users))
            return
        user, token = found
        headers = {"X-Bastion-Session": token}
        mine = Expect(200, who=user.id, kind="session")
        if kind == "whoami":
            await self.call(kind, mine, "GET", "/whoami", headers=headers)
        elif kind == "create" or (not user.docs and kind in ("read_own", "update_own")):
            expect = Expect(201, who=user.id, kind="session")
            answer = await self.call("create", expect, "POST", NOTES, {}, headers)
            if answer is not None and answer.status == 201 and isinstance(answer.body, dict):
                user.docs.append(answer.body["doc"])
                shared.docs.append((answer.body["doc"], user.id))
        elif kind == "read_own":
            await self.call(
                kind, mine, "GET", f"{NOTES}/{self.rng.choice(user.docs)}", headers=headers
            )
        elif kind == "update_own":
            path = f"{NOTES}/{self.rng.choice(user.docs)}"
            await self.call(kind, mine, "PATCH", path, {}, headers)
        else:
            theirs = [doc for doc, owner in shared.docs[-200:] if owner != user.id]
            if not theirs:
                await self.call("whoami", mine, "GET", "/whoami", headers=headers)
            elif kind == "read_other":
                expect = Expect(404, "general_not_found")
                path = f"{NOTES}/{self.rng.choice(theirs)}"
                await self.call(kind, expect, "GET", path, headers=headers)
            else:
                expect = Expect(403, "general_access_forbidden")
                path = f"{NOTES}/{self.rng.choice(theirs)}"
                await self.call(kind, expect, "PATCH", path, {}, headers)

    async def warm_up(self) -> None:
        """A first user, signed up and logged in (before the clock starts)."""
        user = await self.sign_up()
        if user is not None:
            self.users.append(user)
            await self.log_in(user)

    async def run(self) -> None:
        """Requests until the run's end (each step is finished, so every outcome is known)."""
        if self.number == 0:
            await self.storm()  # at least one storm in every run, however short
        while time.monotonic() < self.shared.until:
            await self.step()
        self.conn.close()


def _has_credential(headers: dict[str, str] | None) -> bool:
    """Whether a request carries a session or an API key."""
    return headers is not None and ("X-Bastion-Session" in headers or "X-API-Key" in headers)


def _served_as_guest(answer: Answer) -> bool:
    """Whether an answer shows the app saw no credential (a guest's refusal or identity)."""
    body = answer.body if isinstance(answer.body, dict) else {}
    return body.get("kind") == "guest" or body.get("type") == "user_unauthorized"


# --- the servers ------------------------------------------------------------------------------


class App:
    """``bench.load_app`` under uvicorn with N workers, in a process group of its own."""

    def __init__(self, redis_url: str, workers: int, redis_timeout: float) -> None:
        self.port = free_port()
        handle, name = tempfile.mkstemp(prefix="bastion-load-", suffix=".log")
        self.log_path = Path(name)
        self.log = os.fdopen(handle, "wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        env |= {"BASTION_REDIS_URL": redis_url, "BASTION_REDIS_TIMEOUT": str(redis_timeout)}
        command = [sys.executable, "-m", "uvicorn", "bench.load_app:create_app", "--factory"]
        command += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", str(workers)]
        command += ["--no-proxy-headers", "--no-access-log", "--log-level", "warning"]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    async def wait_ready(self) -> None:
        """Wait until the app answers (at most 60 s)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with {self.proc.returncode}:\n{self.tail()}")
            conn = Connection(self.port)
            try:
                answer = await conn.request("GET", "/whoami")
                if answer.status == 200:
                    return
            except OSError:
                await asyncio.sleep(0.1)
            finally:
                conn.close()
        raise RuntimeError(f"the app did not answer within 60 s:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def log_lines(self) -> dict[str, Any]:
        """How many lines the app logged: in all, Redis outage lines, tracebacks."""
        lines = self.log_path.read_text(errors="replace").splitlines()
        return {
            "lines": len(lines),
            "redis_unavailable": sum("Redis unavailable" in line for line in lines),
            "tracebacks": sum(line.startswith("Traceback") for line in lines),
            "first_lines": list(dict.fromkeys(lines))[:5],  # distinct, for the reader
        }

    def stop(self) -> None:
        """Stop uvicorn and its workers."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()
        self.log_path.unlink(missing_ok=True)


# --- the run ------------------------------------------------------------------------------


@dataclass
class Options:
    """What to run."""

    duration: float = 60.0
    workers: int = 4
    clients: int = 16
    redis_url: str | None = None
    fault: str | None = None
    redis_timeout: float = 1.0
    seed: int | None = None
    fault_at: float = 2.0  # seconds into the run
    after_fault: float = 3.0  # seconds of load once Redis is back


@dataclass
class Fault:
    """When the fault began and when Redis was back."""

    name: str
    began: float = 0.0
    back: float = 0.0


async def inject(fault: Fault, server: RedisServer | None, url: str, timeout: float) -> None:
    """Stop and restart Redis, or pause it for less or more than ``redis_timeout``."""
    client = redis.asyncio.Redis.from_url(url)
    try:
        if fault.name == "restart":
            assert server is not None
            fault.began = time.monotonic()
            with contextlib.suppress(redis.ConnectionError):
                await client.shutdown(save=True)  # every acknowledged write is kept
            await asyncio.sleep(1.0)  # down for a second
            server.stop()
            await asyncio.to_thread(server.start)  # the same port and data directory
            fault.back = time.monotonic()
        else:
            pause = timeout * (0.3 if fault.name == "pause-short" else 3.0)
            fault.began = time.monotonic()
            await client.client_pause(int(pause * 1000))  # all commands (Redis's default)
            fault.back = fault.began + pause
            await asyncio.sleep(pause)
    finally:
        await client.aclose()


async def prepare(port: int, bastion: Bastion, shared: Shared) -> None:
    """The admin (a user with the label), the two API keys, and one note to read."""
    helper = Client(-1, port, shared, random.Random(0))
    admin = await helper.sign_up()
    if admin is None:
        raise RuntimeError(f"could not sign the admin up: {shared.records[-1].problem}")
    await bastion.users.update(admin.id, labels=("admin",))
    await helper.log_in(admin)
    shared.admin_id, shared.admin_token = admin.id, admin.logins[-1] or ""
    reader = await bastion.api_keys.create("load-reader", ["documents.read", "whoami"])
    files = await bastion.api_keys.create("load-files", ["files.read"])
    shared.reader_key, shared.reader_key_id = reader.key, reader.info.id
    shared.files_key = files.key
    helper.conn.close()
    problems = [r.problem for r in shared.records if r.problem]
    if problems:
        raise RuntimeError(f"the set-up failed: {problems}")
    shared.records.clear()
    shared.users.clear()


async def count_sessions(bastion: Bastion, shared: Shared) -> dict[str, Any]:
    """Every user's sessions, through the public API: never above the cap, as predicted."""
    over: list[str] = []
    unexpected: list[str] = []
    most = 0
    for user in shared.users:
        count = len(await bastion.sessions.list(user.id))
        most = max(most, count)
        if count > SESSION_LIMIT:
            over.append(f"{user.id}: {count}")
        low, high = user.expected_sessions()
        if not low <= count <= high:
            unexpected.append(f"{user.id}: {count} sessions, expected {low}..{high}")
    return {"users": len(shared.users), "most": most, "over_cap": over, "unexpected": unexpected}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def summarise(
    shared: Shared, fault: Fault | None, elapsed: float, timeout: float
) -> dict[str, Any]:
    """Counts, latencies and the wrong outcomes, by kind."""
    by_kind: dict[str, list[Record]] = defaultdict(list)
    wrong: Counter[str] = Counter()
    examples: list[str] = []
    outage: list[Record] = []
    for record in shared.records:
        by_kind[record.kind].append(record)
        problem = record.problem
        if record.status == 503 and problem is None:
            continue  # the oracle never expects a 503: judged below
        if record.status == 503 and fault is not None and _in_outage(record, fault):
            outage.append(record)
            if not record.retry_after:
                problem = "a 503 without Retry-After"
            elif record.problem and record.problem.startswith("a 503 of type"):
                pass
            else:
                continue
        if problem is None:
            continue
        if problem.startswith("GUEST DOWNGRADE"):
            wrong["guest_downgrade"] += 1
        elif record.status >= 500:
            wrong["5xx"] += 1
        elif record.status == 0:
            wrong["no_answer"] += 1
        elif 200 <= record.status < 300:
            wrong["wrong_allow"] += 1
        elif problem.startswith("expected 2"):
            wrong["wrong_deny"] += 1
        else:
            wrong["wrong_answer"] += 1
        if len(examples) < 10:
            when = ""
            if fault is not None:
                when = f" (sent {record.sent - fault.back:+.3f} s from Redis's return, took "
                when += f"{record.latency:.3f} s)"
            examples.append(f"{record.kind}: {problem}{when}")
    kinds = {
        kind: {
            "count": len(rows),
            "p50_ms": round(percentile([r.latency for r in rows], 0.50) * 1000, 1),
            "p99_ms": round(percentile([r.latency for r in rows], 0.99) * 1000, 1),
        }
        for kind, rows in sorted(by_kind.items())
    }
    summary: dict[str, Any] = {
        "requests": len(shared.records),
        "seconds": round(elapsed, 2),
        "per_second": round(len(shared.records) / elapsed, 1) if elapsed else 0.0,
        "kinds": kinds,
        "wrong": dict(wrong),
        "wrong_total": sum(wrong.values()),
        "examples": examples,
        "storms": shared.storm_cap_checks,
        "storm_cap_violations": shared.storm_cap_violations,
    }
    if fault is not None:
        summary["fault"] = fault_figures(shared, fault, outage, timeout)
    return summary


def _in_outage(record: Record, fault: Fault) -> bool:
    """Whether a request overlapped the outage (503s are right only then)."""
    return record.done >= fault.began and record.sent <= fault.back + RECOVERY_GRACE


def fault_figures(
    shared: Shared, fault: Fault, outage: list[Record], timeout: float
) -> dict[str, Any]:
    """The 503s of the outage, their delay, and the first success once Redis was back."""
    credentialed_ok = sorted(
        (
            r
            for r in shared.records
            if r.credential and 200 <= r.status < 300 and r.done > fault.back
        ),
        key=lambda r: r.done,
    )

    # How long each 503 took once Redis had stopped answering: from the later of its start and
    # the outage's. Requests that hash a password are kept apart: their argon2 work (tens to
    # hundreds of ms on a busy CPU) comes on top of the wait for Redis.
    def delay(record: Record) -> float:
        return record.done - max(record.sent, fault.began)

    plain = [r for r in outage if r.kind not in PASSWORD_KINDS]
    hashing = [r for r in outage if r.kind in PASSWORD_KINDS]
    late = [r for r in plain if delay(r) > timeout + 0.1]
    after = [r.done - fault.back for r in outage if r.done > fault.back]
    # Requests with a credential sent while Redis could not answer them in time must be 503s
    # (a pause holds a request until redis_timeout; a stopped Redis refuses at once).
    margin = 0.1 if fault.name == "restart" else timeout + 0.2
    during = [
        r
        for r in shared.records
        if r.credential and fault.began + 0.05 <= r.sent <= fault.back - margin
    ]
    overlapping = [
        r
        for r in shared.records
        if r.done >= fault.began and r.sent <= fault.back and r.kind not in PASSWORD_KINDS
    ]
    return {
        "name": fault.name,
        "credentialed_during_outage": len(during),
        "credentialed_during_outage_not_503": sum(r.status != 503 for r in during),
        "max_latency_overlapping_ms": round(
            max((r.latency for r in overlapping), default=0) * 1000, 1
        ),
        "outage_s": round(fault.back - fault.began, 3),
        "redis_timeout_s": timeout,
        "unavailable": len(outage),
        "unavailable_with_retry_after": sum(r.retry_after for r in outage),
        "unavailable_max_delay_ms": round(max(map(delay, plain), default=0) * 1000, 1),
        "unavailable_password_routes_max_delay_ms": round(
            max(map(delay, hashing), default=0) * 1000, 1
        ),
        "unavailable_max_latency_ms": round(max((r.latency for r in outage), default=0) * 1000, 1),
        "unavailable_over_timeout_plus_100ms": len(late),
        "last_unavailable_after_back_ms": round(max(after, default=0) * 1000, 1),
        "unavailable_sent_after_back": sum(r.sent > fault.back for r in outage),
        "first_success_after_back_ms": (
            round((credentialed_ok[0].done - fault.back) * 1000, 1) if credentialed_ok else None
        ),
        "successes_after_back": len(credentialed_ok),
    }


async def drive(
    options: Options, port: int, url: str, server: RedisServer | None
) -> dict[str, Any]:
    """Set up, run the clients (and the fault), then count every user's sessions."""
    shared = Shared()
    rng = random.Random(options.seed)
    async with Bastion(Settings(redis_url=url, redis_timeout=options.redis_timeout)) as bastion:
        await prepare(port, bastion, shared)
        fault = Fault(options.fault) if options.fault else None
        clients = [
            Client(n, port, shared, random.Random(rng.random())) for n in range(options.clients)
        ]
        await asyncio.gather(*(c.warm_up() for c in clients))
        problems = [r.problem for r in shared.records if r.problem]
        if problems:
            raise RuntimeError(f"the clients' first sign-up and log-in failed: {problems[:3]}")
        shared.records.clear()
        started = time.monotonic()
        if fault is None:
            shared.until = started + options.duration
        tasks = [asyncio.create_task(c.run()) for c in clients]
        if fault is not None:
            await asyncio.sleep(options.fault_at)
            await inject(fault, server, url, options.redis_timeout)
            await asyncio.sleep(max(0.0, fault.back + options.after_fault - time.monotonic()))
            shared.until = time.monotonic()
        await asyncio.gather(*tasks)
        elapsed = time.monotonic() - started
        summary = summarise(shared, fault, elapsed, options.redis_timeout)
        summary["sessions"] = await count_sessions(bastion, shared)
    return summary


@contextlib.contextmanager
def servers(options: Options) -> Iterator[tuple[str, RedisServer | None, App]]:
    """Redis (our own unless a URL is given) and the app; both stopped on the way out."""
    server = None if options.redis_url else RedisServer().start()
    url = options.redis_url or (server.url if server else "")
    app = None
    try:
        app = App(url, options.workers, options.redis_timeout)
        yield url, server, app
    finally:
        if app is not None:
            app.stop()
        if server is not None:
            server.cleanup()


def run(options: Options) -> dict[str, Any]:
    """One load run, its servers started and stopped here; the summary as a dict."""
    if options.fault == "restart" and options.redis_url:
        raise ValueError("--fault restart needs the run's own redis-server (no --redis-url)")
    with servers(options) as (url, server, app):
        asyncio.run(app.wait_ready())
        summary = asyncio.run(drive(options, app.port, url, server))
        summary["app_log"] = app.log_lines()
    summary["load_average"] = [round(x, 1) for x in os.getloadavg()]  # the machine's, at the end
    summary["options"] = {
        "workers": options.workers,
        "clients": options.clients,
        "duration": options.duration,
        "fault": options.fault,
        "redis_timeout": options.redis_timeout,
    }
    return summary


def render(summary: dict[str, Any]) -> str:
    """The summary as text."""
    o = summary["options"]
    lines = [
        f"{summary['requests']} requests in {summary['seconds']} s: {summary['per_second']}/s "
        f"({o['workers']} uvicorn workers, {o['clients']} clients, one redis-server, loopback; "
        f"load average {summary['load_average'][0]} on {os.cpu_count()} CPUs)",
        "",
        f"{'kind':<24}{'count':>8}{'p50 ms':>10}{'p99 ms':>10}",
    ]
    for kind, row in summary["kinds"].items():
        lines.append(f"{kind:<24}{row['count']:>8}{row['p50_ms']:>10}{row['p99_ms']:>10}")
    wrong = summary["wrong"]
    lines += [
        "",
        "wrong outcomes: "
        + ", ".join(
            f"{name} {wrong.get(name, 0)}"
            for name in (
                "wrong_allow",
                "wrong_deny",
                "guest_downgrade",
                "5xx",
                "wrong_answer",
                "no_answer",
            )
        ),
    ]
    lines += [f"  {example}" for example in summary["examples"]]
    sessions = summary["sessions"]
    lines.append(
        f"sessions: {sessions['users']} users counted, at most {sessions['most']} each "
        f"(cap {SESSION_LIMIT}); over the cap: {len(sessions['over_cap'])}; "
        f"not as predicted: {len(sessions['unexpected'])}"
    )
    lines.append(
        f"log-in storms ({STORM} at once): {summary['storms']}, "
        f"cap violations: {len(summary['storm_cap_violations'])}"
    )
    if "fault" in summary:
        f = summary["fault"]
        first = f["first_success_after_back_ms"]
        lines += [
            "",
            f"fault {f['name']}: Redis out for {f['outage_s']} s "
            f"(redis_timeout {f['redis_timeout_s']} s)",
            f"  503s: {f['unavailable']} ({f['unavailable_with_retry_after']} with Retry-After), "
            f"slowest {f['unavailable_max_delay_ms']} ms after the outage began "
            f"(from the request's start: {f['unavailable_max_latency_ms']} ms), "
            f"{f['unavailable_over_timeout_plus_100ms']} over redis_timeout + 100 ms; "
            f"sign-ups and log-ins (argon2 on top): slowest "
            f"{f['unavailable_password_routes_max_delay_ms']} ms",
            f"  credentialed requests sent while Redis could not answer: "
            f"{f['credentialed_during_outage']}, answered other than 503: "
            f"{f['credentialed_during_outage_not_503']}; slowest request (no password work) "
            f"overlapping the "
            f"outage: {f['max_latency_overlapping_ms']} ms",
            f"  recovery: first credentialed success {first} ms after Redis was back; "
            f"last 503 {f['last_unavailable_after_back_ms']} ms after "
            f"({f['unavailable_sent_after_back']} 503s to requests sent after it was back)",
        ]
    log = summary["app_log"]
    lines.append(
        f"app log: {log['lines']} lines ({log['redis_unavailable']} 'Redis unavailable', "
        f"{log['tracebacks']} tracebacks)"
    )
    lines += [f"  {line[:160]}" for line in log["first_lines"]]
    lines.append("verdict: " + ("OK" if ok(summary) else "WRONG OUTCOMES (see above)"))
    return "\n".join(lines)


def ok(summary: dict[str, Any]) -> bool:
    """Whether the run found nothing wrong."""
    sessions = summary["sessions"]
    fault = summary.get("fault")
    return not (
        summary["wrong_total"]
        or summary["storm_cap_violations"]
        or sessions["over_cap"]
        or sessions["unexpected"]
        or (
            fault
            and (fault["credentialed_during_outage_not_503"] or not fault["successes_after_back"])
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./scripts/load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of load (60)")
    parser.add_argument("--workers", type=int, default=4, help="uvicorn workers (4)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--redis-url", help="a Redis to use (default: a redis-server of our own)")
    parser.add_argument("--fault", choices=FAULTS, help="stop/restart or pause Redis mid-run")
    parser.add_argument(
        "--redis-timeout", type=float, default=1.0, help="the app's redis_timeout (1.0 s)"
    )
    parser.add_argument("--quick", action="store_true", help="a 5 s smoke run (2 workers)")
    parser.add_argument("--seed", type=int, help="the request mix's random seed")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    options = Options(
        duration=5.0 if args.quick else args.duration,
        workers=2 if args.quick and args.workers == 4 else args.workers,
        clients=8 if args.quick and args.clients == 16 else args.clients,
        redis_url=args.redis_url,
        fault=args.fault,
        redis_timeout=args.redis_timeout,
        seed=args.seed,
    )
    try:
        summary = run(options)
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0 if ok(summary) else 1


if __name__ == "__main__":
    sys.exit(main())
