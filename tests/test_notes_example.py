"""The notes example (``examples/``): one HTTP suite, run against each of its three apps.

Each app runs on a real server (uvicorn for Starlette and FastAPI, Werkzeug's for Flask) over a
real redis-server, as a user would run it; the tests speak HTTP only, except where an
administrator's tool is the point (API keys, labels).
"""

from __future__ import annotations

import importlib
import itertools
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bastion import Bastion, Settings
from bastion.cli import main
from bastion.demo import notes_settings
from tests.redis_server import RedisServer
from tests.servers import Served

pytestmark = pytest.mark.redis_server

FRAMEWORKS = ("starlette", "fastapi", "flask")
PASSWORD = "correct horse battery staple"
NOTES = "databases/main/collections/notes"


def example_settings(redis_url: str, **env: str) -> Settings:
    """The example's own settings on this Redis, with a JWT key (as BASTION_* would give)."""
    # No policy watcher: the apps outlive the suite's redis-server, and nothing reloads here.
    values = {
        "BASTION_JWT_SECRET": "j" * 40,
        "BASTION_POLICY_RELOAD_INTERVAL": "0",
        **{f"BASTION_{k.upper()}": v for k, v in env.items()},
    }
    return notes_settings(redis_url=redis_url, env=values)


@pytest.fixture(scope="module", params=FRAMEWORKS)
def served(request: pytest.FixtureRequest, redis_server: RedisServer) -> Iterator[Served]:
    """The framework's notes app, built by the example's create_app, on a real server."""
    framework = str(request.param)
    module = importlib.import_module(f"examples.{framework}_notes")
    # Many log-ins of one email from one address: the limits raised, as BASTION_* may.
    limits = {"rate_limit_per_email": "1000", "rate_limit_per_account": "1000"}
    app = module.create_app(example_settings(redis_server.url, **limits))
    server = Served(app, wsgi=framework == "flask")
    yield server
    server.stop()


@pytest.fixture
def http(served: Served, real_redis: str) -> Iterator[httpx.Client]:
    """A client of the served app, on an emptied Redis."""
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=30) as client:
        yield client


@pytest.fixture
def admin(real_redis: str) -> Iterator[Bastion]:
    """A Bastion on the same Redis, for what an administrator does (keys, labels, checks)."""
    with Bastion(Settings(redis_url=real_redis)) as bastion:
        yield bastion


class User:
    """A signed-up user who sends their session token in the fallback header."""

    def __init__(self, http: httpx.Client, email: str, password: str = PASSWORD) -> None:
        self.http = http
        body = {"email": email, "password": password}
        signed_up = http.post("/account", json=body)
        assert signed_up.status_code == 201, signed_up.text
        self.id: str = signed_up.json()["id"]
        self.email = email
        logged_in = http.post("/account/sessions", json=body, headers={"X-Bastion-Fallback": "1"})
        assert logged_in.status_code == 201, logged_in.text
        self.token = logged_in.headers["x-bastion-session"]
        self.headers = {"X-Bastion-Session": self.token}

    def __call__(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        sent = {**self.headers, **(headers or {})}
        return self.http.request(method, path, headers=sent, **kwargs)

    def note(self, title: str = "Groceries", body: str = "eggs") -> dict[str, str]:
        created = self("POST", "/notes", json={"title": title, "body": body})
        assert created.status_code == 201, created.text
        return dict(created.json())

    def titles(self) -> list[str]:
        listed = self("GET", "/notes")
        assert listed.status_code == 200, listed.text
        return [n["title"] for n in listed.json()["notes"]]


def error(response: httpx.Response, status: int, type_: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["type"] == type_, response.text


def test_a_user_creates_reads_lists_changes_and_deletes_a_note(http: httpx.Client) -> None:
    ada = User(http, "ada@example.com")
    note = ada.note("Groceries", "eggs")
    assert set(note) == {"id", "title", "body", "owner"} and note["owner"] == ada.id
    assert ada("GET", f"/notes/{note['id']}").json() == note
    assert ada("GET", "/notes").json() == {"notes": [note]}
    changed = ada("PATCH", f"/notes/{note['id']}", json={"body": "eggs, milk"})
    assert changed.status_code == 200 and changed.json() == {**note, "body": "eggs, milk"}
    second = ada.note("Ideas")
    assert ada.titles() == ["Ideas", "Groceries"]  # newest first
    assert ada("DELETE", f"/notes/{note['id']}").status_code == 204
    error(ada("GET", f"/notes/{note['id']}"), 404, "general_not_found")
    assert ada("GET", "/notes").json() == {"notes": [second]}


def test_another_users_note_does_not_exist_for_you(http: httpx.Client) -> None:
    ada, bob = User(http, "ada@example.com"), User(http, "bob@example.com")
    note = ada.note()
    for method, body in (("GET", None), ("PATCH", {"title": "mine"}), ("DELETE", None)):
        error(bob(method, f"/notes/{note['id']}", json=body), 404, "general_not_found")
    error(bob("POST", f"/notes/{note['id']}/share", json={"role": "users", "actions": ["read"]}),
          404, "general_not_found")  # fmt: skip
    assert bob.titles() == []
    assert ada("GET", f"/notes/{note['id']}").json()["title"] == "Groceries"  # unchanged


def test_sharing_grants_rows_on_the_note(http: httpx.Client, admin: Bastion) -> None:
    ada, bob, cy = (User(http, f"{n}@example.com") for n in ("ada", "bob", "cy"))
    note = ada.note()
    path = f"/notes/{note['id']}"
    shared = ada("POST", f"{path}/share", json={"role": f"user:{bob.id}", "actions": ["read"]})
    assert shared.status_code == 200, shared.text
    assert [f"user:{bob.id}", "read"] in shared.json()["permissions"]
    assert bob("GET", path).status_code == 200 and bob.titles() == ["Groceries"]
    # Bob may read it, not change it: he is told so (403), the note is no secret to him.
    error(bob("PATCH", path, json={"title": "bob's"}), 403, "general_access_forbidden")
    error(bob("POST", f"{path}/share", json={"role": "users", "actions": ["read"]}),
          403, "general_access_forbidden")  # fmt: skip
    ada("POST", f"{path}/share", json={"role": f"user:{bob.id}", "actions": ["update"]})
    assert bob("PATCH", path, json={"title": "Shopping"}).json()["title"] == "Shopping"
    assert cy.titles() == []
    # A role Ada holds (every signed-in user): everyone signed in reads it.
    assert ada("POST", f"{path}/share", json={"role": "users", "actions": ["read"]}).is_success
    assert cy.titles() == ["Shopping"]
    # Deleting the note clears its rows.
    assert ada("DELETE", path).status_code == 204
    assert admin.sync.permissions.list(f"{NOTES}/documents/{note['id']}") == []
    assert cy.titles() == [] and bob.titles() == []


def test_sharing_refuses_roles_the_caller_does_not_hold(http: httpx.Client) -> None:
    ada = User(http, "ada@example.com")
    path = f"/notes/{ada.note()['id']}/share"
    error(ada("POST", path, json={"role": "team:editors", "actions": ["read"]}),
          401, "user_unauthorized")  # fmt: skip
    error(ada("POST", path, json={"role": "label:admin", "actions": ["read"]}),
          401, "user_unauthorized")  # fmt: skip
    error(ada("POST", path, json={"role": "user:nobody00", "actions": ["read"]}),
          404, "general_not_found")  # fmt: skip
    for bad in (
        {"role": "nope", "actions": ["read"]},
        {"role": "users", "actions": ["fly"]},
        {"role": "users", "actions": []},
        {"role": "users"},
    ):
        error(ada("POST", path, json=bad), 400, "general_bad_request")


def test_api_keys_need_their_scope_and_get_no_account_routes(
    http: httpx.Client, admin: Bastion
) -> None:
    ada = User(http, "ada@example.com")
    note = ada.note()
    path = f"/notes/{note['id']}"
    reader = {"X-API-Key": admin.sync.api_keys.create("reader", ["documents.read"]).key}
    writer = {"X-API-Key": admin.sync.api_keys.create("writer", ["documents.write"]).key}
    assert http.get(path, headers=reader).json() == note
    assert http.get("/notes", headers=reader).json() == {"notes": [note]}
    for method, body in (("POST", {"title": "x"}), ("PATCH", {"title": "x"}), ("DELETE", None)):
        target = "/notes" if method == "POST" else path
        error(http.request(method, target, json=body, headers=reader),
              401, "general_unauthorized_scope")  # fmt: skip
    error(http.get(path, headers=writer), 401, "general_unauthorized_scope")
    created = http.post("/notes", json={"title": "From a script"}, headers=writer)
    assert created.status_code == 201 and created.json()["owner"].startswith("key:")
    assert http.patch(path, json={"title": "Edited"}, headers=writer).json()["title"] == "Edited"
    shared = http.post(f"{path}/share", json={"role": "users", "actions": ["read"]}, headers=writer)
    assert shared.status_code == 200, shared.text
    assert http.delete(path, headers=writer).status_code == 204
    for key in (reader, writer):
        for method, route in (("GET", "/account"), ("GET", "/account/sessions"),
                              ("POST", "/account/jwts")):  # fmt: skip
            assert http.request(method, route, headers=key).status_code == 401
        error(http.get("/", headers=key), 401, "general_unauthorized_scope")


def test_a_label_admin_reads_every_note_at_once(
    http: httpx.Client, real_redis: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ada, root = User(http, "ada@example.com"), User(http, "root@example.com")
    note = ada.note()
    error(root("GET", f"/notes/{note['id']}"), 404, "general_not_found")
    assert root.titles() == []
    assert main(["users", "label", "root@example.com", "admin", "--redis-url", real_redis]) == 0
    assert "label:admin" in capsys.readouterr().out
    # The same session, at its next request: no new log-in needed.
    assert root("GET", f"/notes/{note['id']}").json() == note
    assert root.titles() == ["Groceries"]
    # Read, not write.
    error(root("PATCH", f"/notes/{note['id']}", json={"title": "x"}), 403,
          "general_access_forbidden")  # fmt: skip
    assert main(["users", "label", root.id, "admin", "--remove", "--redis-url", real_redis]) == 0
    assert root.titles() == []


def test_guests_get_the_page_and_nothing_else(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/notes.js"' in page.text
    script = http.get("/static/notes.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert http.get("/static/notes.css").headers["content-type"].startswith("text/css")
    error(http.get("/static/secrets.txt"), 404, "general_not_found")
    error(http.get("/notes"), 401, "user_unauthorized")
    error(http.post("/notes", json={"title": "x"}), 401, "user_unauthorized")
    error(http.get("/elsewhere"), 401, "user_unauthorized")  # no route in the map
    error(http.get("/notes/a*b"), 400, "general_bad_request")


def test_bad_input_gets_a_clear_error(http: httpx.Client) -> None:
    ada = User(http, "ada@example.com")
    path = f"/notes/{ada.note()['id']}"
    text = {**ada.headers, "Content-Type": "text/plain"}
    as_json = {**ada.headers, "Content-Type": "application/json"}
    error(http.post("/notes", content=b'{"title": "x"}', headers=text), 415,
          "general_unsupported_media_type")  # fmt: skip
    error(http.post("/notes", content=b'{"title": ', headers=as_json), 400, "general_bad_request")
    error(http.post("/notes", content=b"[1, 2]", headers=as_json), 400, "general_bad_request")
    huge = b'{"title": "x", "body": "' + b"y" * 20_000 + b'"}'
    error(http.post("/notes", content=huge, headers=as_json), 413,
          "general_payload_too_large")  # fmt: skip
    for bad in ({}, {"title": ""}, {"title": 3}, {"title": "x" * 201}, {"title": "x", "body": 1}):
        error(ada("POST", "/notes", json=bad), 400, "general_bad_request")
    for bad in ({}, {"title": ""}, {"colour": "red"}):
        error(ada("PATCH", path, json=bad), 400, "general_bad_request")
    error(ada("PATCH", path, content=b"title=x", headers={"Content-Type": "text/plain"}),
          415, "general_unsupported_media_type")  # fmt: skip


def test_a_cross_site_post_with_the_cookie_is_refused(http: httpx.Client) -> None:
    ada = User(http, "ada@example.com")
    cookie = {"Cookie": f"__Host-bastion_session={ada.token}"}
    assert http.get("/notes", headers=cookie).status_code == 200
    for origin in ({"Origin": "http://evil.example"}, {"Sec-Fetch-Site": "cross-site"}):
        refused = http.post("/notes", json={"title": "x"}, headers={**cookie, **origin})
        error(refused, 403, "general_cross_site_request")
    assert ada.titles() == []


def test_the_examples_password_and_session_settings(http: httpx.Client) -> None:
    weak = http.post("/account", json={"email": "eve@example.com", "password": "password123"})
    error(weak, 400, "password_in_dictionary")
    personal = http.post("/account", json={"email": "zebediah@example.com",
                                           "password": "zebediah-rules-ok"})  # fmt: skip
    error(personal, 400, "password_personal_data")
    ada = User(http, "ada@example.com")
    passwords = [PASSWORD, *(f"new password number {i}" for i in range(1, 6))]
    for old, new in itertools.pairwise(passwords):
        changed = ada("PATCH", "/account/password", json={"password": new, "oldPassword": old})
        assert changed.status_code == 200, changed.text
    # Five changes later the first password is out of the history of 5; the second is not.
    again = {"password": passwords[1], "oldPassword": passwords[-1]}
    error(ada("PATCH", "/account/password", json=again), 400, "password_recently_used")
    # The cap is 10: the 11th log-in ends the oldest session.
    body = {"email": "ada@example.com", "password": passwords[-1]}
    tokens = [
        http.post("/account/sessions", json=body, headers={"X-Bastion-Fallback": "1"}).headers[
            "x-bastion-session"
        ]
        for _ in range(11)
    ]
    error(http.get("/account", headers={"X-Bastion-Session": tokens[0]}), 401,
          "user_session_invalid")  # fmt: skip
    listed = http.get("/account/sessions", headers={"X-Bastion-Session": tokens[-1]})
    assert listed.json()["total"] == 10


def test_the_team_files_pass_the_policy_tools(capsys: pytest.CaptureFixture[str]) -> None:
    from bastion.demo import NOTES_CONFIG

    assert main(["policy", "check", "--config", str(NOTES_CONFIG)]) == 0
    assert main(["policy", "test", str(NOTES_CONFIG.parent)]) == 0
    assert "coverage: 5/5 rules exercised (100%)" in capsys.readouterr().out


def test_the_examples_import_only_bastions_public_names() -> None:
    from pathlib import Path

    for path in (Path(__file__).parents[1] / "examples").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "bastion._" not in text and "._" not in text.replace("__", ""), path
        for line in text.splitlines():
            if line.startswith(("from bastion", "import bastion")):
                module = line.split()[1]
                assert module in {
                    "bastion",
                    "bastion.errors",
                    "bastion.adapters.starlette",
                    "bastion.adapters.fastapi",
                    "bastion.adapters.flask",
                }, (path, line)
