"""What an outside review got through the account routes (issue 11), on Starlette, FastAPI and
Flask over HTTP, on a real redis-server: look-alike emails, invisible passwords, dressed-up
common passwords, an email claim a failed sign-up left behind, successful log-ins counted
against the log-in limit."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import ServiceUnavailable
from bastion.redisio import Script, Steps
from tests import test_account_contract as contract
from tests.test_account_contract import Client, log_in, sign_up

# The contract's fixtures: one Bastion and client per framework, on the real redis-server.
framework = contract.framework
make = contract.make
store = contract.store

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")


# --- 1. emails ------------------------------------------------------------------------------


def post(client: Client, path: str, body: dict[str, str]) -> Any:
    """POST ``body`` as ASCII JSON: "\\ud800" escaped, as a client can send a lone surrogate."""
    headers = {"content-type": "application/json"}
    return client.request("POST", path, content=json.dumps(body).encode(), headers=headers)


def sign_up_as(client: Client, email: str) -> Any:
    return post(client, "/account", {"email": email, "password": contract.PASSWORD})


def log_in_as(client: Client, email: str) -> Any:
    return post(client, "/account/sessions", {"email": email, "password": contract.PASSWORD})


LOOKALIKE_EMAILS = {
    "zero-width space": "ada\u200b@example.com",
    "zero-width joiner": "ada@exam\u200dple.com",
    "soft hyphen": "a\u00adda@example.com",
    "NUL": "ada@example.com\x00",
    "ESC": "\x1bada@example.com",
    "right-to-left override": "\u202eada@example.com",
    "left-to-right mark": "ada@example.com\u200e",
    "byte order mark": "\ufeffada@example.com",
    "trailing dot": "ada@example.com.",
    "no dot": "ada@localhost",
    "empty label": "ada@example..com",
    "leading dot": "ada@.example.com",
    "leading hyphen": "ada@-example.com",
    "trailing hyphen": "ada@example-.com",
    "underscore": "ada@exa_mple.com",
    "label of 64": "ada@" + "a" * 64 + ".com",
    "domain of 254": "ada@" + ".".join(["a" * 62] * 4) + ".co",
    "not IDNA 2008 (a symbol)": "ada@\u2603.com",
    "bad punycode": "ada@xn--a.com",
    "two @": "ada@ada@example.com",
}
GOOD_EMAILS = {
    "plain": ("ada@example.com", "ada@example.com"),
    "case and spaces": ("  Ada@Example.COM ", "ada@example.com"),
    "full-width": ("\uff41\uff44\uff41@example.com", "ada@example.com"),
    "subdomains": ("ada@mail.example.co.uk", "ada@mail.example.co.uk"),
    "hyphens and digits": ("ada@my-host-1.example.com", "ada@my-host-1.example.com"),
    "IDNA label": ("ada@B\u00fccher.de", "ada@b\u00fccher.de"),
    "label of 63": ("ada@" + "a" * 63 + ".com", "ada@" + "a" * 63 + ".com"),
    "domain of 253": ("ada@" + ".".join(["a" * 62] * 4) + ".c", None),
    "Unicode local part": ("\u00e9lodie@example.com", "\u00e9lodie@example.com"),
}


def test_sign_up_refuses_look_alike_emails(make: Any) -> None:
    client, bastion = make(rate_limit_per_ip=1000, rate_limit_per_email=1000)
    assert sign_up(client).status_code == 201
    for case, email in LOOKALIKE_EMAILS.items():
        refused = sign_up_as(client, email)
        assert refused.status_code == 400, (case, refused.text)
        body = refused.json()
        assert body["type"] == "general_bad_request", case
        assert body["message"].startswith("Invalid email:"), (case, body)
    messages = {
        case: sign_up_as(client, LOOKALIKE_EMAILS[case]).json()["message"]
        for case in ("zero-width space", "trailing dot", "no dot", "label of 64")
    }
    assert "invisible or control character" in messages["zero-width space"]
    assert "must not end with a dot" in messages["trailing dot"]
    assert "at least one dot" in messages["no dot"]
    assert "at most 63 characters" in messages["label of 64"]
    # Nothing was stored for them: the one account is the one signed up first.
    keys = list(bastion.sync.redis.scan_iter(match="bastion:email:*"))
    assert len(keys) == 1


def test_sign_up_accepts_real_addresses(make: Any) -> None:
    client, _ = make(rate_limit_per_ip=1000, rate_limit_per_email=1000)
    for case, (email, stored) in GOOD_EMAILS.items():
        made = sign_up_as(client, email)
        if case in ("case and spaces", "full-width"):
            assert made.status_code == 409, (case, made.text)  # the same as "plain"
            continue
        assert made.status_code == 201, (case, made.text)
        if stored is not None:
            assert made.json()["email"] == stored, case


def test_log_in_normalises_like_sign_up(make: Any) -> None:
    client, _ = make()
    assert sign_up(client, email="Ada@Example.com").status_code == 201
    assert log_in(client, email="  ADA@EXAMPLE.COM ").status_code == 201
    assert log_in(client, email="\uff21\uff24\uff21@example.com").status_code == 201
    unknown = log_in(client, email="nobody@example.com").json()
    # A look-alike finds no account, and says so exactly as an unknown email does.
    for email in ("ada\u200b@example.com", "ada@example.com."):
        refused = log_in_as(client, email)
        assert refused.status_code == 401, (email, refused.text)
        assert refused.json() == unknown
    # A lone surrogate cannot even be read from the body (no text holds one).
    for send in (sign_up_as, log_in_as):
        unreadable = send(client, "ada\ud800@example.com")
        assert unreadable.status_code == 400, unreadable.text
        assert unreadable.json()["type"] == "general_bad_request"


# --- 2. and 3. passwords --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "error"),
    [
        (" " * 12, "password_too_short"),
        ("\u3000" * 12, "password_too_short"),  # ideographic spaces
        ("\u200b" * 12, "password_too_short"),  # zero-width spaces
        ("\u200d\u200c\u2060\ufeff" * 3, "password_too_short"),  # joiners, word joiner, BOM
        ("\u00ad" * 12, "password_too_short"),  # soft hyphens
        ("\u0301" * 12, "password_too_short"),  # combining acute accents on nothing
        ("\u20dd" * 12, "password_too_short"),  # enclosing circles (Me)
        ("\u3164" * 12, "password_too_short"),  # Hangul fillers
        ("ab\u200bcd\u3000ef\u0301g", "password_too_short"),  # 7 visible characters
        ("\t\n\r\x0b\x0c" * 2, "password_too_short"),
        ("Password1!", "password_in_dictionary"),
        ("P@ssw0rd!", "password_in_dictionary"),
        ("Summer2024!", "password_in_dictionary"),
        ("letmein!", "password_in_dictionary"),
        ("!!Password2024", "password_in_dictionary"),
        ("$unsh1ne2024", "password_in_dictionary"),  # leading $ read as s, 1 as i
        ("1l0vey0u!", "password_in_dictionary"),  # the 1 read as i, the 0s as o
        ("M1chelle#1", "password_in_dictionary"),  # 1 as i inside, "#1" cut off
        ("pass\u200bword", "password_in_dictionary"),
    ],
)
def test_invisible_and_dressed_up_passwords_are_refused(
    make: Any, password: str, error: str
) -> None:
    client, _ = make()
    refused = client.request(
        "POST", "/account", json={"email": "grace@example.com", "password": password}
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["type"] == error
    if error == "password_too_short":
        assert "spaces and invisible characters do not count" in refused.json()["message"]


def readme_accepted_passwords() -> list[tuple[str, str]]:
    """The passwords the README shows being accepted, each with the name it is shown for."""
    shown = [(pw, "") for pw in re.findall(r'"password": "([^"]+)"', README)]
    shown += re.findall(r'`([^`]+)` accepted for "([^"]+)"', README)
    return sorted(set(shown))


def test_the_readme_passwords_are_found() -> None:
    found = readme_accepted_passwords()
    assert ("correct horse battery staple", "") in found
    assert ("Ed-is-great-77", "Ed Li") in found


@pytest.mark.parametrize(("password", "name"), readme_accepted_passwords())
def test_passwords_the_readme_accepts_are_accepted(make: Any, password: str, name: str) -> None:
    client, _ = make()
    body = {"email": "someone@example.com", "password": password, "name": name}
    made = client.request("POST", "/account", json=body)
    assert made.status_code == 201, made.text
    assert log_in(client, email="someone@example.com", password=password).status_code == 201


def test_the_password_hashed_is_the_one_typed(make: Any) -> None:
    # Invisible characters count for nothing in the length, but they are part of the password.
    client, _ = make()
    password = "\u200bcorrect horse battery staple\u3000"
    body = {"email": "ada@example.com", "password": password}
    assert client.request("POST", "/account", json=body).status_code == 201
    assert log_in(client, password="correct horse battery staple").status_code == 401
    assert log_in(client, password=password).status_code == 201


# --- 4. an email claim a failed sign-up left ------------------------------------------------


def test_a_sign_up_that_failed_after_claiming_the_email_frees_it(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bastion = make()
    store = bastion._user_roles
    assert store is bastion._user_store
    store.claim_ttl_ms = 400  # the default is 30 s
    create = store.create

    def failing(*args: Any, **kwargs: Any) -> Steps[Any]:
        # The claim goes through; Redis "fails" as the user record is about to be written.
        steps = create(*args, **kwargs)
        op = next(steps)
        while True:
            if isinstance(op, Script) and op.name == "user_create":
                steps.close()
                raise ServiceUnavailable()
            op = steps.send((yield op))

    monkeypatch.setattr(store, "create", failing)
    assert sign_up(client).status_code == 503
    monkeypatch.setattr(store, "create", create)

    raw = bastion.sync.redis
    (claim,) = list(raw.scan_iter(match="bastion:email:*"))
    assert 0 < raw.pttl(claim) <= 400  # a claim that expires, not one that stays
    assert sign_up(client).status_code == 409  # still a sign-up under way, as far as anyone knows
    time.sleep(0.5)
    made = sign_up(client)
    assert made.status_code == 201, made.text
    assert raw.pttl(claim) == -1  # a completed sign-up's claim stays
    assert log_in(client).status_code == 201
    assert client.request("GET", "/account").json()["id"] == made.json()["id"]


def test_a_sign_up_leaves_a_permanent_claim(make: Any) -> None:
    client, bastion = make()
    assert sign_up(client).status_code == 201
    raw = bastion.sync.redis
    (claim,) = list(raw.scan_iter(match="bastion:email:*"))
    assert raw.pttl(claim) == -1


# --- 5. the log-in limit counts failures only -----------------------------------------------


def test_successful_log_ins_do_not_count_against_the_limit(
    make: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bastion = make()  # 10 an hour per (email, IP)
    assert sign_up(client).status_code == 201
    statuses = [log_in(client).status_code for _ in range(15)]
    assert statuses == [201] * 15

    failed = [log_in(client, password=f"wrong guess {n}").status_code for n in range(10)]
    assert failed == [401] * 10
    verifies: list[str] = []

    def no_verify(*args: Any) -> bool:
        verifies.append("argon2")
        return False

    monkeypatch.setattr(bastion._account.hasher, "verify", no_verify)
    monkeypatch.setattr(bastion._account.hasher, "dummy_verify", no_verify)
    refused = log_in(client)  # the right password, after ten failures
    assert refused.status_code == 429, refused.text
    assert refused.json()["type"] == "general_rate_limit_exceeded"
    assert refused.headers["x-ratelimit-limit"] == "10"
    assert verifies == []  # a locked-out client gets no argon2 verify
    monkeypatch.undo()
    # Unknown emails are failures too, on their own (email, IP) counter.
    unknown = [log_in(client, email="nobody@example.com").status_code for _ in range(11)]
    assert unknown == [401] * 10 + [429]


def test_sign_up_still_counts_every_attempt(make: Any) -> None:
    client, _ = make(rate_limit_per_email=2)
    statuses = [sign_up(client).status_code for _ in range(3)]
    assert statuses == [201, 409, 429]
