"""A log-in ends the credential's session (a JWT's too); ending other sessions needs the password.

Black-box through the real account routes on Starlette, FastAPI and Flask, on a real redis-server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from bastion import Bastion, Settings, account
from bastion.errors import ConfigError
from tests.test_account_contract import PASSWORD, Client, clients, log_in, sign_up

FRAMEWORKS = ["starlette", "fastapi", "flask"]
HEADER = "x-bastion-session"


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(framework: str, real_redis: str) -> Iterator[Any]:
    with clients(framework) as client_for:
        yield lambda **settings: client_for(
            Bastion(Settings(redis_url=real_redis, jwt_secret="j" * 40, **settings))
        )


def devices(client: Client) -> tuple[Client, Client, str, str]:
    """Two signed-in devices of one user (cookies kept apart) and their session ids."""
    sign_up(client)
    other = client.device()
    theirs = log_in(other).json()["id"]
    mine = log_in(client).json()["id"]
    return client, other, mine, theirs


def test_a_log_in_with_a_jwt_ends_the_jwts_session(make: Any) -> None:
    client = make()
    sign_up(client)
    minted = client.device()
    first = log_in(minted).json()["id"]
    jwt = minted.request("POST", "/account/jwts").json()["jwt"]
    bearer = {"Authorization": f"Bearer {jwt}"}
    app = client.device()  # a client that only holds the JWT (no cookie)
    assert app.request("GET", "/account", headers=bearer).status_code == 200
    again = app.request(
        "POST",
        "/account/sessions",
        json={"email": "ada@example.com", "password": PASSWORD},
        headers={**bearer, "X-Bastion-Fallback": "true"},
    )
    assert again.status_code == 201
    # The session the JWT came from ended, and the JWT with it; the new session works.
    later = client.device()  # without the cookie the log-in just set
    failed = later.request("GET", "/account", headers=bearer)
    assert (failed.status_code, failed.json()["type"]) == (401, "user_jwt_invalid")
    assert minted.request("GET", "/account").status_code == 401
    fresh = {HEADER: again.headers[HEADER]}
    listed = later.request("GET", "/account/sessions", headers=fresh).json()["sessions"]
    assert [s["id"] for s in listed] == [again.json()["id"]] and first != again.json()["id"]


def test_ending_another_session_asks_for_the_password(make: Any) -> None:
    client, other, _, theirs = devices(make(reauth_window=0))
    refused = client.request("DELETE", f"/account/sessions/{theirs}")
    assert refused.status_code == 403
    assert refused.json()["type"] == "user_reauthentication_required"
    wrong = client.request(
        "DELETE", f"/account/sessions/{theirs}", json={"password": "not the password at all"}
    )
    assert (wrong.status_code, wrong.json()["type"]) == (401, "user_invalid_credentials")
    assert other.request("GET", "/account").status_code == 200  # still signed in
    done = client.request("DELETE", f"/account/sessions/{theirs}", json={"password": PASSWORD})
    assert done.status_code == 204
    assert other.request("GET", "/account").status_code == 401
    assert client.request("GET", "/account").status_code == 200


def test_log_out_everywhere_asks_for_the_password(make: Any) -> None:
    client, other, _, _ = devices(make(reauth_window=0))
    refused = client.request("DELETE", "/account/sessions")
    assert (refused.status_code, refused.json()["type"]) == (403, "user_reauthentication_required")
    assert other.request("GET", "/account").status_code == 200
    assert (
        client.request("DELETE", "/account/sessions", json={"password": PASSWORD}).status_code
        == 204
    )
    assert other.request("GET", "/account").status_code == 401
    assert client.request("GET", "/account").status_code == 401


def test_ending_the_current_session_stays_free(make: Any) -> None:
    client, other, mine, _ = devices(make(reauth_window=0))
    assert client.request("DELETE", f"/account/sessions/{mine}").status_code == 204
    assert client.request("GET", "/account").status_code == 401
    assert other.request("DELETE", "/account/sessions/current").status_code == 204
    assert other.request("GET", "/account").status_code == 401


def test_a_session_inside_the_window_needs_no_password_and_an_older_one_does(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, other, _, theirs = devices(make(reauth_window=60))
    third = client.device()
    newest = log_in(third).json()["id"]
    # Just logged in: the session is inside the window.
    assert client.request("DELETE", f"/account/sessions/{theirs}").status_code == 204
    assert other.request("GET", "/account").status_code == 401
    # A minute later (the account service's clock moved; the session's creation time is Redis's).
    later = time.time() + 61
    monkeypatch.setattr(account.time, "time", lambda: later)
    late = client.request("DELETE", f"/account/sessions/{newest}")
    assert (late.status_code, late.json()["type"]) == (403, "user_reauthentication_required")
    assert third.request("GET", "/account").status_code == 200


def test_a_stolen_jwt_cannot_sign_the_owner_out_everywhere(make: Any) -> None:
    client, other, _, theirs = devices(make(reauth_window=0))
    jwt = client.request("POST", "/account/jwts").json()["jwt"]
    thief = client.device()
    bearer = {"Authorization": f"Bearer {jwt}"}
    refused = thief.request("DELETE", f"/account/sessions/{theirs}", headers=bearer)
    assert refused.status_code == 403
    assert thief.request("DELETE", "/account/sessions", headers=bearer).status_code == 403
    assert other.request("GET", "/account").status_code == 200


def test_the_window_is_a_checked_setting() -> None:
    assert Settings().reauth_window == 300
    for bad in (-1, 86_401):
        with pytest.raises(ConfigError, match="reauth_window"):
            Settings(reauth_window=bad)
