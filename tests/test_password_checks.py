"""The app's own password checks (``Bastion(password_checks=...)``) through the real account routes.

A fake breached-password range service runs on 127.0.0.1; sign-up and password change go
through Starlette, FastAPI and Flask on a real redis-server.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from bastion import (
    Bastion,
    ConfigError,
    PasswordCheck,
    PasswordContext,
    PasswordRejected,
    Settings,
)
from bastion.errors import PasswordTooLong, ServiceUnavailable
from bastion.passwords import PasswordPolicy
from tests.breach_service import BreachService, breach_check, sha1_hex
from tests.redis_server import free_port
from tests.test_account_contract import FRAMEWORKS, Client, clients

PASSWORD = "correct horse battery staple"
BREACHED = "monkey-island-1990"  # not in the shipped list, not personal: only the service knows
NEW_CLEAN = "a whole new pass phrase"
SERVER_ERROR = {"code": 500, "type": "general_server_error", "message": "Server error."}

Make = Callable[..., Client]


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def service() -> Iterator[BreachService]:
    with BreachService({BREACHED: 4_211, "Tr0ub4dor&3-xkcd": 12}) as running:
        yield running


@pytest.fixture
def make(framework: str, real_redis: str) -> Iterator[Make]:
    """Build a client of one framework over a Bastion with the given checks and settings."""
    with clients(framework) as client_for:

        def build(checks: list[PasswordCheck], **settings: Any) -> Client:
            bastion = Bastion(
                Settings(redis_url=real_redis, jwt_secret="j" * 40, **settings),
                password_checks=checks,
            )
            return client_for(bastion)

        yield build


def sign_up(client: Client, password: str, email: str = "ada@example.com") -> httpx.Response:
    body = {"email": email, "password": password, "name": "Ada L", "phone": "+15551234567"}
    return client.request("POST", "/account", json=body)


def change(client: Client, password: str, old: str = PASSWORD) -> httpx.Response:
    return client.request(
        "PATCH", "/account/password", json={"password": password, "oldPassword": old}
    )


def log_in(client: Client, password: str = PASSWORD) -> httpx.Response:
    return client.request(
        "POST", "/account/sessions", json={"email": "ada@example.com", "password": password}
    )


# --- the breached-password service through the account routes ------------------------------


def test_breached_password_is_refused_on_sign_up(make: Make, service: BreachService) -> None:
    client = make([breach_check(service.url)])
    refused = sign_up(client, BREACHED)
    assert refused.status_code == 400, refused.text
    assert refused.json() == {
        "code": 400,
        "type": "password_breached",
        "message": "This password has appeared in a data breach. Choose another one.",
    }
    created = sign_up(client, PASSWORD)  # the refusal created nothing: same email, 201
    assert created.status_code == 201, created.text
    # k-anonymity: the service saw five hex digits of each SHA-1, never more.
    assert service.paths == [f"/range/{sha1_hex(BREACHED)[:5]}", f"/range/{sha1_hex(PASSWORD)[:5]}"]


def test_breached_password_is_refused_on_password_change(
    make: Make, service: BreachService
) -> None:
    client = make([breach_check(service.url)])
    assert sign_up(client, PASSWORD).status_code == 201
    assert log_in(client).status_code == 201
    refused = change(client, BREACHED)
    assert refused.status_code == 400, refused.text
    assert refused.json()["type"] == "password_breached"
    assert log_in(client, BREACHED).status_code == 401  # the old password still stands
    assert log_in(client).status_code == 201
    changed = change(client, NEW_CLEAN)
    assert changed.status_code == 200, changed.text
    assert log_in(client, NEW_CLEAN).status_code == 201


def test_checks_run_after_bastions_own_rules(make: Make, service: BreachService) -> None:
    client = make([breach_check(service.url)], password_history=3)
    common = sign_up(client, "password1")
    assert common.json()["type"] == "password_in_dictionary"
    personal = sign_up(client, "ada-is-5551234567")
    assert personal.json()["type"] == "password_personal_data"
    assert service.paths == []  # nothing Bastion refuses itself reaches the app's check
    assert sign_up(client, PASSWORD).status_code == 201
    log_in(client)
    reused = change(client, PASSWORD)
    assert reused.json()["type"] == "password_recently_used"  # history too, argon2 and all
    assert service.paths == [f"/range/{sha1_hex(PASSWORD)[:5]}"]


def test_checks_get_the_users_context_off_the_event_loop(make: Make) -> None:
    seen: list[tuple[str, PasswordContext, bool]] = []

    def record(password: str, context: PasswordContext) -> None:
        try:
            asyncio.get_running_loop()
            on_loop = True
        except RuntimeError:
            on_loop = False
        seen.append((password, context, on_loop))

    client = make([record])
    created = sign_up(client, PASSWORD, email="  Ada@Example.com ")
    assert created.status_code == 201
    user_id = created.json()["id"]
    expected = PasswordContext(
        user_id=user_id, email="ada@example.com", name="Ada L", phone="+15551234567"
    )
    assert seen == [(PASSWORD, expected, False)]
    log_in(client)
    assert change(client, NEW_CLEAN).status_code == 200
    assert seen[1] == (NEW_CLEAN, expected, False)


def test_checks_run_in_order_and_the_first_refusal_wins(make: Make) -> None:
    calls: list[str] = []

    class TooPlain(PasswordRejected):
        type = "password_too_plain"

    def first(password: str, context: PasswordContext) -> None:
        calls.append("first")
        if "plain" in password:
            raise TooPlain("Too plain.")

    def second(password: str, context: PasswordContext) -> None:
        calls.append("second")

    client = make([first, second])
    refused = sign_up(client, "a plain old phrase")
    assert refused.json() == {"code": 400, "type": "password_too_plain", "message": "Too plain."}
    assert calls == ["first"]
    assert sign_up(client, PASSWORD).status_code == 201
    assert calls == ["first", "first", "second"]


# --- checks that fail ----------------------------------------------------------------------


def test_a_crashing_check_is_a_500_without_details_and_a_log_without_the_password(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    def leaky(password: str, context: PasswordContext) -> None:
        # The worst a check can do: put the password in a message and in a URL.
        quoted = urllib.parse.quote(password, safe="")
        raise ValueError(f"cannot check {password!r} at https://example.invalid/?p={quoted}")

    client = make([leaky])
    with caplog.at_level(logging.ERROR, logger="bastion.passwords"):
        response = sign_up(client, PASSWORD)
    assert response.status_code == 500
    assert response.json() == SERVER_ERROR
    logged = caplog.text
    assert "Traceback" in logged and "ValueError" in logged and "leaky" in logged
    assert PASSWORD not in logged
    assert urllib.parse.quote(PASSWORD, safe="") not in logged
    assert all(record.exc_info is None for record in caplog.records)  # no raw traceback
    assert log_in(client).status_code == 401  # no account was made


def test_an_unreachable_service_is_a_500_and_the_password_not_accepted(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    client = make([breach_check(f"http://127.0.0.1:{free_port()}")])  # nothing listens there
    assert sign_up(client, PASSWORD).json() == SERVER_ERROR
    assert "URLError" in caplog.text and "not_breached" in caplog.text


def test_a_check_that_returns_a_reason_is_a_500(
    make: Make, caplog: pytest.LogCaptureFixture
) -> None:
    def says_why(password: str, context: PasswordContext) -> Any:
        return "breached"  # not the protocol: refusals are raised

    client = make([says_why])
    assert sign_up(client, PASSWORD).json() == SERVER_ERROR
    assert "returned a str instead of None" in caplog.text
    assert "breached" not in caplog.text.replace("returned a str", "")


def test_a_bastion_error_from_a_check_is_answered_as_it_is(make: Make) -> None:
    def fail_closed(password: str, context: PasswordContext) -> None:
        raise ServiceUnavailable("The breached-password service is down. Try again shortly.")

    client = make([fail_closed])
    response = sign_up(client, PASSWORD)
    assert response.status_code == 503
    assert response.json()["type"] == "service_unavailable"


# --- configuration -------------------------------------------------------------------------


async def _async_check(password: str, context: PasswordContext) -> None:
    return None


class _AsyncCallable:
    async def __call__(self, password: str, context: PasswordContext) -> None:
        return None


def _fine(password: str, context: PasswordContext) -> None:
    return None


@pytest.mark.parametrize(
    ("checks", "allowed"),
    [
        ([_async_check], "plain functions"),
        ([_AsyncCallable()], "plain functions"),
        (["not a function"], "functions (password, context)"),
        (_fine, "a list of functions"),
    ],
)
def test_bad_password_checks_fail_at_start_up(checks: Any, allowed: str) -> None:
    with pytest.raises(ConfigError) as info:
        Bastion(Settings(), password_checks=checks)
    assert info.value.name == "password_checks"
    assert allowed in str(info.value)


def test_policy_runs_checks_only_for_passwords_within_the_maximum() -> None:
    calls: list[str] = []
    policy = PasswordPolicy(checks=[lambda password, context: calls.append(password)])
    context = PasswordContext(user_id="u1", email="ada@example.com")
    with pytest.raises(PasswordTooLong):
        policy.run_checks("x" * 257, context)
    policy.run_checks(PASSWORD, context)
    assert calls == [PASSWORD]
    PasswordPolicy().run_checks("x" * 257, context)  # no checks: nothing to guard


def test_password_rejected_raised_as_is_has_a_type() -> None:
    error = PasswordRejected()
    assert (error.status, error.type) == (400, "password_rejected")
