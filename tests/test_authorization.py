"""The middleware deciding requests: route map, policy file, per-document rows, keys, reloads."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.adapters.starlette import exception_handlers
from bastion.errors import Forbidden
from bastion.identity import Identity
from bastion.policies.watch import announce
from tests.conftest import make_bastion

pytestmark = pytest.mark.anyio

POLICY = """\
p, any, buckets/public/files/*, read
p, users, databases/main/collections/notes, create
p, users, databases/main/collections/shared/documents/*, read
p, team:t1/editor, databases/main/collections/notes/documents/*, update
p, label:admin, databases/*, write
p, user:dave, databases/main/collections/notes/documents/d17, read
g, user:carol, team:t1/editor
"""
DOC = "/databases/{db}/collections/{coll}/documents/{doc}"
DOC_RESOURCE = "databases/{db}/collections/{coll}/documents/{doc}"
ROUTES = [
    {"method": "GET", "path": DOC, "action": "read", "resource": DOC_RESOURCE,
     "scope": "documents.read", "not_found": True},
    {"method": "PATCH", "path": DOC, "action": "update", "resource": DOC_RESOURCE,
     "scope": "documents.write"},
    {"method": "DELETE", "path": DOC, "action": "delete", "resource": DOC_RESOURCE,
     "scope": "documents.write"},
    {"method": "POST", "path": "/databases/{db}/collections/{coll}/documents", "action": "create",
     "resource": "databases/{db}/collections/{coll}", "scope": "documents.write"},
    {"method": "GET", "path": "/buckets/{bucket}/files/{file}", "action": "read",
     "resource": "buckets/{bucket}/files/{file}", "scope": "files.read"},
    {"method": "GET", "path": "/noscope/{x}", "action": "read", "resource": "noscope/{x}"},
]  # fmt: skip
RESOURCES = [
    {"path": "databases/main/collections/notes", "document_security": True},
    {"path": "buckets/private", "file_security": False},
]


async def anything(request: Request) -> Response:
    user = request.user
    return JSONResponse({"ok": True, "who": user.identity, "kind": user.kind})


def app_for(bastion: Bastion) -> Any:
    routes = [
        Route(path, anything, methods=["GET", "POST", "PATCH", "DELETE"])
        for path in {r["path"] for r in ROUTES} | {"/health"}
    ]
    return bastion.asgi(Starlette(routes=routes, exception_handlers=exception_handlers))


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.csv"
    path.write_text(POLICY)
    return path


def authz(backend: str, request: pytest.FixtureRequest, policy: Path, **extra: Any) -> Bastion:
    settings: dict[str, Any] = {
        "policy_files": (str(policy),),
        "routes": ROUTES,
        "resources": RESOURCES,
        "jwt_secret": "j" * 40,
        "policy_reload_interval": 0,
        **extra,
    }
    checked = Settings.from_mapping(settings)
    fields = {name: getattr(checked, name) for name in settings}
    return make_bastion(backend, request, **fields)


@pytest.fixture
def bastion(backend: str, request: pytest.FixtureRequest, policy_file: Path) -> Bastion:
    return authz(backend, request, policy_file)


class Caller:
    """Requests as one principal: a user's session, a JWT, an API key, or a guest."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.client = client
        self.headers = headers

    async def status(self, method: str, path: str) -> int:
        response = await self.client.request(method, path, headers=self.headers)
        assert response.headers["content-type"] == "application/json"
        return response.status_code


@pytest.fixture
async def client(bastion: Bastion) -> Any:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app_for(bastion)), base_url="https://t"
    ) as c:
        yield c


async def user(bastion: Bastion, client: httpx.AsyncClient, user_id: str) -> Caller:
    token = (await bastion.sessions.create(user_id)).token
    return Caller(client, {"X-Bastion-Session": token})


NOTE = "/databases/main/collections/notes/documents/n1"
SID = "S" * 22


async def test_document_rows_count_where_document_security_is_on(
    bastion: Bastion, client: httpx.AsyncClient
) -> None:
    alice, bob = await user(bastion, client, "alice"), await user(bastion, client, "bob")
    assert await alice.status("POST", "/databases/main/collections/notes/documents") == 200
    assert await alice.status("GET", NOTE) == 404  # no row yet; the route hides existence
    resource = NOTE.lstrip("/")
    await bastion.permissions.grant(resource, "user:alice", "read")
    await bastion.permissions.grant(resource, "user:alice", "write")
    assert await alice.status("GET", NOTE) == 200
    assert await alice.status("PATCH", NOTE) == 200
    assert await alice.status("DELETE", NOTE) == 200
    assert await bob.status("GET", NOTE) == 404
    assert await bob.status("PATCH", NOTE) == 403
    await bastion.permissions.revoke(resource, "user:alice", "read")
    assert await alice.status("GET", NOTE) == 404
    assert await bastion.permissions.clear(resource) == 1
    assert await bastion.permissions.list(resource) == []
    assert await alice.status("PATCH", NOTE) == 403


async def test_not_found_on_an_update_hides_only_what_the_caller_cannot_read(
    backend: str, request: pytest.FixtureRequest, policy_file: Path
) -> None:
    routes = [{**r, "not_found": True} if r["method"] in ("PATCH", "DELETE") else r for r in ROUTES]
    bastion = authz(backend, request, policy_file, routes=routes)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app_for(bastion)), base_url="https://t"
    ) as client:
        alice, bob = await user(bastion, client, "alice"), await user(bastion, client, "bob")
        guest = Caller(client, {})
        resource = NOTE.lstrip("/")
        # Bob may not read the note: its update and delete do not exist for him either.
        assert await bob.status("PATCH", NOTE) == 404
        assert await bob.status("DELETE", NOTE) == 404
        assert await guest.status("DELETE", NOTE) == 404
        # Alice may read it (a row) but not change it: the truth, 403.
        await bastion.permissions.grant(resource, "user:alice", "read")
        assert await alice.status("PATCH", NOTE) == 403
        assert await alice.status("DELETE", NOTE) == 403
        await bastion.permissions.grant(resource, "user:alice", "update")
        assert await alice.status("PATCH", NOTE) == 200


async def test_rows_do_not_count_where_security_is_off(
    bastion: Bastion, client: httpx.AsyncClient
) -> None:
    alice = await user(bastion, client, "alice")
    await bastion.permissions.grant("buckets/private/files/f1", "user:alice", "read")
    assert await alice.status("GET", "/buckets/private/files/f1") == 403


async def test_policy_file_semantics_through_the_middleware(
    bastion: Bastion, client: httpx.AsyncClient
) -> None:
    guest = Caller(client, {})
    carol, dave = await user(bastion, client, "carol"), await user(bastion, client, "dave")
    assert await guest.status("GET", "/buckets/public/files/logo.png") == 200
    assert await guest.status("GET", "/buckets/private/files/x") == 401  # a guest: log in
    assert await guest.status("POST", "/databases/main/collections/notes/documents") == 401
    # g line: carol is a t1 editor, who may update but not read (write/update never read).
    assert await carol.status("PATCH", NOTE) == 200
    assert await carol.status("GET", NOTE) == 404
    # A collection-level create does not reach the documents.
    assert await carol.status("DELETE", NOTE) == 403
    # A policy line on one document.
    assert await dave.status("GET", "/databases/main/collections/notes/documents/d17") == 200
    assert await dave.status("GET", "/databases/main/collections/notes/documents/d18") == 404
    # Prefix look-alike: notes2 is not under notes.
    assert await carol.status("PATCH", "/databases/main/collections/notes2/documents/n1") == 403


async def test_jwt_is_judged_like_its_session(bastion: Bastion, client: httpx.AsyncClient) -> None:
    new = await bastion.sessions.create("carol")
    token = bastion.jwt.mint("carol", new.session.id)
    by_jwt = Caller(client, {"Authorization": f"Bearer {token}"})
    assert await by_jwt.status("PATCH", NOTE) == 200
    assert await by_jwt.status("GET", NOTE) == 404


async def test_api_keys_skip_permissions_but_need_the_scope(
    bastion: Bastion, client: httpx.AsyncClient
) -> None:
    reader = await bastion.api_keys.create("reader", ["documents.read"])
    key = Caller(client, {"X-API-Key": reader.key})
    assert await key.status("GET", NOTE) == 200  # no permission row needed
    response = await client.patch(NOTE, headers={"X-API-Key": reader.key})
    assert response.status_code == 401
    assert response.json()["type"] == "general_unauthorized_scope"
    assert "documents.write" in response.json()["message"]
    assert await key.status("GET", "/buckets/private/files/x") == 401  # files.read missing
    assert await key.status("GET", "/noscope/x") == 401  # the route takes no key


async def test_ids_that_are_no_resource_are_400(
    bastion: Bastion, client: httpx.AsyncClient
) -> None:
    alice = await user(bastion, client, "alice")
    for path in (
        "/databases/main/collections/notes/documents/%2e%2e",
        "/databases/main/collections/notes/documents/%ff",
        "/databases/main/collections/notes/documents/a*b",
    ):
        response = await client.get(path, headers=alice.headers)
        assert response.status_code == 400, path
        assert response.json()["type"] == "general_bad_request"
    # The server decodes "%2F" before the framework routes, so the app would see two segments:
    # no route has that shape, and unmatched_routes = "deny" refuses it.
    response = await client.get(
        "/databases/main/collections/notes/documents/a%2Fb", headers=alice.headers
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("unmatched", "guest", "signed_in", "key"),
    [("deny", 401, 403, 401), ("authenticated", 401, 200, 401), ("allow", 200, 200, 200)],
)
async def test_unmatched_routes(
    backend: str,
    request: pytest.FixtureRequest,
    policy_file: Path,
    unmatched: str,
    guest: int,
    signed_in: int,
    key: int,
) -> None:
    bastion = authz(backend, request, policy_file, unmatched_routes=unmatched)
    reader = await bastion.api_keys.create("reader", ["documents.read"])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app_for(bastion)), base_url="https://t"
    ) as client:
        assert await Caller(client, {}).status("GET", "/health") == guest
        assert await (await user(bastion, client, "alice")).status("GET", "/health") == signed_in
        # An API key is not "authenticated" (no user): an unmatched route has no scope for it.
        by_key = await client.get("/health", headers={"X-API-Key": reader.key})
        assert by_key.status_code == key
        if key == 401:
            assert by_key.json()["type"] == "general_unauthorized_scope"


async def test_report_only_logs_and_lets_through(
    backend: str,
    request: pytest.FixtureRequest,
    policy_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bastion = authz(backend, request, policy_file, report_only=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app_for(bastion)), base_url="https://t"
    ) as client:
        bob = await user(bastion, client, "bob")
        with caplog.at_level(logging.INFO, logger="bastion.decisions"):
            assert await bob.status("PATCH", NOTE) == 200
        events = [r.bastion_decision for r in caplog.records if hasattr(r, "bastion_decision")]
        assert events and events[-1]["result"] == "deny"
        assert events[-1]["subject"] == "bob"
        # Allowed requests are INFO events too in report-only mode: every decision is shown.
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="bastion.decisions"):
            assert await bob.status("POST", "/databases/main/collections/notes/documents") == 200
        allowed = [r for r in caplog.records if hasattr(r, "bastion_decision")]
        assert [r.bastion_decision["result"] for r in allowed] == ["allow"]
        assert allowed[0].levelno == logging.INFO
        assert events[-1]["resource"] == NOTE.lstrip("/")
        assert events[-1]["report_only"] is True
        assert "user:bob" in events[-1]["roles"]
        assert all("X-Bastion-Session" not in r.getMessage() for r in caplog.records)
        token = bob.headers["X-Bastion-Session"]
        assert all(token not in r.getMessage() for r in caplog.records)


async def test_denials_are_logged_with_the_rule(
    bastion: Bastion, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    carol = await user(bastion, client, "carol")
    with caplog.at_level(logging.DEBUG, logger="bastion.decisions"):
        assert await carol.status("PATCH", NOTE) == 200
        assert await carol.status("DELETE", NOTE) == 403
    allow, deny = [r.bastion_decision for r in caplog.records if hasattr(r, "bastion_decision")]
    assert allow["result"] == "allow" and "policy.csv:4" in allow["rule"][0]
    assert deny["result"] == "deny" and deny["rule"] == []


async def test_users_grant_only_roles_they_hold(bastion: Bastion) -> None:
    alice = Identity.for_user_id("session", "alice", SID)
    doc = NOTE.lstrip("/")
    await bastion.permissions.grant(doc, "user:alice", "update")  # she may change it (a row)
    assert await bastion.permissions.grant(doc, "user:alice", "read", by=alice)
    assert await bastion.permissions.grant(doc, "users", "read", by=alice)
    with pytest.raises(Forbidden, match="label:admin"):
        await bastion.permissions.grant(doc, "label:admin", "read", by=alice)
    carol = Identity.for_user_id("session", "carol", SID)  # t1 editor through a g line
    assert await bastion.permissions.grant(doc, "team:t1/editor", "update", by=carol)
    with pytest.raises(ValueError, match="not a role"):
        await bastion.permissions.grant(doc, "admin", "read")
    with pytest.raises(ValueError, match="CONTAINER/KIND/ID"):
        await bastion.permissions.grant("databases", "users", "read")


async def test_granting_needs_update_on_the_resource(
    backend: str, request: pytest.FixtureRequest, policy_file: Path
) -> None:
    bastion = authz(backend, request, policy_file, admin_roles=["label:ops"])
    grant, revoke = bastion.permissions.grant, bastion.permissions.revoke
    notes = "databases/main/collections/notes/documents"
    bob = Identity.for_user_id("session", "bob", SID)  # holds "users", may update nothing
    await grant(f"{notes}/n1", "users", "read")
    for change in (grant, revoke):
        with pytest.raises(Forbidden, match="may update"):
            await change(f"{notes}/n1", "users", "read", by=bob)
        with pytest.raises(Forbidden, match="may update"):
            await change(f"{notes}/n1", "user:bob", "read", by=bob)
    assert await bastion.permissions.list(f"{notes}/n1") == [("users", "read")]

    # The policy gives carol (a t1 editor) update on every note: she may share and unshare.
    carol = Identity.for_user_id("session", "carol", SID)
    assert await grant(f"{notes}/n1", "user:carol", "read", by=carol)
    assert await revoke(f"{notes}/n1", "users", "read", by=carol)
    with pytest.raises(Forbidden, match="hold"):  # update is not enough: she must hold the role
        await grant(f"{notes}/n1", "label:ops", "read", by=carol)

    # A document's own row counts where document security is on (notes), ...
    await grant(f"{notes}/n2", "user:bob", "update")
    assert await grant(f"{notes}/n2", "user:bob", "read", by=bob)
    assert await revoke(f"{notes}/n2", "user:bob", "read", by=bob)
    with pytest.raises(Forbidden, match="may update"):
        await grant(f"{notes}/n3", "user:bob", "read", by=bob)
    # ... and not where it is off (the private bucket): there the row grants nothing.
    await grant("buckets/private/files/f1", "user:bob", "update")
    with pytest.raises(Forbidden, match="may update"):
        await grant("buckets/private/files/f1", "user:bob", "read", by=bob)

    # Admins, API keys and server code (by=None) may change any resource's permissions.
    ops = Identity.for_user("session", "ozzy", SID, frozenset({"users", "label:ops"}))
    key = Identity.for_key("0" * 16, frozenset({"documents.write"}))
    for by in (ops, key, None):
        assert await grant(f"{notes}/n4", "team:t9", "read", by=by)
        assert await revoke(f"{notes}/n4", "team:t9", "read", by=by)
    bastion.sync.permissions.grant(f"{notes}/n5", "user:carol", "read", by=carol)
    with pytest.raises(Forbidden, match="may update"):
        bastion.sync.permissions.revoke(f"{notes}/n5", "user:carol", "read", by=bob)


async def test_list_filter_without_a_lookup_per_document(bastion: Bastion) -> None:
    notes = "databases/main/collections/notes"
    for doc, role in [("n1", "user:alice"), ("n2", "users"), ("n3", "user:bob")]:
        await bastion.permissions.grant(f"{notes}/documents/{doc}", role, "read")
    alice = Identity.for_user_id("session", "alice", SID)
    seen = await bastion.permissions.filter(alice, "read", notes, "documents")
    assert not seen.all and seen.ids == {"n1", "n2"}
    dave = Identity.for_user_id("session", "dave", SID)
    seen = await bastion.permissions.filter(dave, "read", notes, "documents")
    assert seen.ids == {"n2", "d17"}  # a row for users, and dave's own policy line
    shared = await bastion.permissions.filter(
        alice, "read", "databases/main/collections/shared", "documents"
    )
    assert shared.all and shared.allows("anything")
    key = Identity.for_key("0" * 16, frozenset({"documents.read"}))
    assert (await bastion.permissions.filter(key, "read", notes, "documents")).all


async def test_a_broken_reload_keeps_the_good_policy(
    bastion: Bastion, client: httpx.AsyncClient, policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    eve = await user(bastion, client, "eve")
    assert await eve.status("GET", "/buckets/private/files/x") == 403
    policy_file.write_text(POLICY + "p, user:eve, buckets/private/files/*, reed\n")
    with caplog.at_level(logging.ERROR, logger="bastion.policy"):
        assert bastion.policy_watcher.check_now() is False
    assert "policy.csv:8" in caplog.text
    assert await eve.status("GET", "/buckets/private/files/x") == 403
    policy_file.write_text(POLICY + "p, user:eve, buckets/private/files/*, read\n")
    assert bastion.policy_watcher.check_now() is True
    assert await eve.status("GET", "/buckets/private/files/x") == 200


async def test_a_reload_announced_over_redis_reaches_other_workers(
    real_redis: str, policy_file: Path
) -> None:
    settings = Settings.from_mapping(
        {"redis_url": real_redis, "policy_files": [str(policy_file)], "routes": ROUTES,
         "policy_reload_interval": 0}
    )  # fmt: skip
    one, two = Bastion(settings), Bastion(settings)
    allowed = frozenset({"any"}), "read", "buckets/publik/files/x"
    # Same size and mtime: the file watch cannot see this edit, only an announcement can.
    stat = os.stat(policy_file)
    policy_file.write_text(POLICY.replace("buckets/public/", "buckets/publik/"))
    os.utime(policy_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert two.policy_watcher.check_now() is False
    assert not two.policy.engine.decide(*allowed).allowed
    announce(settings, one.sync.redis)
    assert two.policy_watcher.check_now() is True
    assert two.policy.engine.decide(*allowed).allowed
    assert one.policy_watcher.check_now() is True


def test_a_broken_policy_stops_start_up(tmp_path: Path) -> None:
    from bastion.policies.diagnostics import PolicyError

    broken = tmp_path / "policy.csv"
    broken.write_text("p, users, databases/*, read\np, users, notes*, read\n")
    with pytest.raises(PolicyError, match=r"policy\.csv:2"):
        Bastion(Settings(policy_files=(str(broken),)))


def test_no_reader_sees_half_a_policy_under_threads(tmp_path: Path) -> None:
    import threading

    filler = "".join(
        f"p, user:u{i}, databases/main/collections/c{i}/documents/*, read\n" for i in range(2000)
    )
    policy_a = filler + "p, users, notes/x, read\n"
    policy_b = filler + "p, users, notes/y, read\n"
    path = tmp_path / "policy.csv"
    path.write_text(policy_a)
    bastion = Bastion(Settings(policy_files=(str(path),), policy_reload_interval=0))
    roles = frozenset({"any", "users", "user:alice"})
    seen: set[tuple[bool, bool]] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            engine = bastion.policy.engine  # once per request, as the middleware does
            x = engine.decide(roles, "read", "notes/x").allowed
            y = engine.decide(roles, "read", "notes/y").allowed
            seen.add((x, y))

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for thread in readers:
        thread.start()
    try:
        for round_ in range(6):
            path.write_text(policy_b if round_ % 2 == 0 else policy_a)
            assert bastion.policy_watcher.reload()
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert seen <= {(True, False), (False, True)}
    assert seen == {(True, False), (False, True)}
