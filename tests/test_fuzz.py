"""Generated cookies and headers: never a 500, never authenticated without the exact token."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion import Bastion
from bastion.sessions.token import parse_token
from tests.conftest import demo_app

COOKIE = b"__Host-bastion_session"
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


class Harness:
    """One event loop and one client for every generated example of a test."""

    def __init__(self, bastion: Bastion) -> None:
        self.runner = asyncio.Runner()
        self.bastion = bastion
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(demo_app(bastion)), base_url="https://testserver"
        )
        self.token = self.runner.run(bastion.sessions.create("alice")).token

    def get(self, headers: list[tuple[bytes, bytes]]) -> httpx.Response:
        return self.runner.run(self.client.get("/me", headers=headers))

    def close(self) -> None:
        self.runner.run(self.client.aclose())
        self.runner.close()


@pytest.fixture
def harness(bastion: Bastion) -> Iterator[Harness]:
    h = Harness(bastion)
    yield h
    h.close()


def _mutations(token: str) -> st.SearchStrategy[str]:
    """Near misses of a valid token: one character changed, dropped or added, parts swapped."""
    index = st.integers(0, len(token) - 1)
    char = st.characters(codec="utf-8", exclude_characters="\r\n\x00")
    return st.one_of(
        st.tuples(index, char).map(lambda t: token[: t[0]] + t[1] + token[t[0] + 1 :]),
        index.map(lambda i: token[:i] + token[i + 1 :]),
        st.tuples(index, char).map(lambda t: token[: t[0]] + t[1] + token[t[0] :]),
        st.sampled_from(["bob", "alice2", "Alice", "alic", "x"]).map(
            lambda u: u + token[len("alice") :]
        ),
        st.just(token.replace(".", ":")),
        st.just(token + "." + token),
        # Whitespace around a value is not part of it (read_credentials strips it, like
        # Starlette's cookie parser), so " " + token is the token itself, not a near miss.
    ).filter(lambda t: t.encode().strip() != token.encode())


header_bytes = st.binary(max_size=2000).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


def _check(response: httpx.Response) -> None:
    assert response.status_code in (200, 401), response.text
    if response.status_code == 200:
        assert response.json()["user"] == "", "authenticated without a valid token"
    else:
        assert response.json()["type"] == "user_session_invalid"


@FUZZ
@given(data=st.data())
def test_generated_cookie_values(harness: Harness, data: st.DataObject) -> None:
    value = data.draw(
        st.one_of(
            _mutations(harness.token).map(lambda s: s.encode("utf-8")),
            header_bytes,
            st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass")),
        )
    )
    response = harness.get([(b"cookie", COOKIE + b"=" + value)])
    _check(response)


@FUZZ
@given(header=header_bytes)
def test_generated_cookie_headers(harness: Harness, header: bytes) -> None:
    _check(harness.get([(b"cookie", header)]))


@FUZZ
@given(data=st.data())
def test_generated_fallback_headers(harness: Harness, data: st.DataObject) -> None:
    value = data.draw(
        st.one_of(_mutations(harness.token).map(lambda s: s.encode("utf-8")), header_bytes)
    )
    _check(harness.get([(b"x-bastion-session", value)]))


def test_the_exact_token_still_works(harness: Harness) -> None:
    response = harness.get([(b"cookie", COOKIE + b"=" + harness.token.encode())])
    assert response.json()["user"] == "alice"


@given(st.text(max_size=400))
def test_parse_token_never_raises(text: str) -> None:
    parsed = parse_token(text)
    if parsed is not None:
        assert text == f"{parsed.user_id}.{parsed.session_id}.{parsed.secret}"


@FUZZ
@given(st.lists(st.tuples(st.binary(max_size=30), st.binary(max_size=300)), max_size=8))
def test_reading_credentials_never_raises(
    bastion: Bastion, headers: list[tuple[bytes, bytes]]
) -> None:
    found = bastion.credentials.read(headers)
    assert found.token is None or found.token.isascii()
    assert (found.token is None) == (found.problem is not None or found.backend is None)
