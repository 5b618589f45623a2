"""Session-bound JWTs, and the RFC 8725 attack list: every forged or stale token gets 401."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from bastion import Bastion, ConfigError, Settings
from bastion.settings import JWTKey
from bastion.tokens.jwt import TYP
from tests.conftest import demo_app, end_session_now, make_bastion

pytestmark = pytest.mark.anyio
SECRET = "s" * 40
COOKIE = "__Host-bastion_session"


def _client(bastion: Bastion) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(demo_app(bastion)), base_url="https://t")


async def _session_and_jwt(client: httpx.AsyncClient) -> tuple[str, str]:
    login = await client.post("/login", json={"user": "alice"}, headers={"X-Bastion-Fallback": "1"})
    token = login.headers["x-bastion-session"]
    client.cookies.clear()
    minted = await client.post("/jwt", headers={"X-Bastion-Session": token})
    assert minted.status_code == 201, minted.text
    return token, minted.json()["jwt"]


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/me", headers={"Authorization": f"Bearer {token}"})


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "iss": "bastion",
        "aud": "bastion",
        "sub": "alice",
        "sid": "A" * 22,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "jti": "j",
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _b64(data: dict[str, Any] | bytes) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def hs(backend: str, request: pytest.FixtureRequest) -> Bastion:
    return make_bastion(backend, request, jwt_secret=SECRET)


async def test_jwt_carries_the_sessions_identity(hs: Bastion) -> None:
    async with _client(hs) as client:
        session, token = await _session_and_jwt(client)
        header = jwt.get_unverified_header(token)
        assert header == {"alg": "HS256", "typ": TYP, "kid": "default"}
        claims = jwt.decode(token, options={"verify_signature": False})
        assert set(claims) == {"iss", "aud", "sub", "sid", "iat", "nbf", "exp", "jti"}
        assert claims["exp"] - claims["iat"] == 900
        by_jwt = (await _me(client, token)).json()
        by_session = (await client.get("/me", headers={"X-Bastion-Session": session})).json()
        assert by_jwt["user"] == "alice" and by_jwt["session"] == by_session["session"]
        assert by_jwt["roles"] == by_session["roles"]
        assert by_jwt["scopes"] == ["authenticated", "jwt"]


async def test_a_jwt_cannot_mint_a_jwt(hs: Bastion) -> None:
    async with _client(hs) as client:
        _, token = await _session_and_jwt(client)
        again = await client.post("/jwt", headers={"Authorization": f"Bearer {token}"})
        assert again.status_code == 403
        assert again.json()["type"] == "user_jwt_creation_denied"
        guest = await client.post("/jwt")
        assert guest.status_code == 401


@pytest.mark.parametrize("how", ["logout", "revoke", "evicted", "expired"])
async def test_jwt_dies_with_its_session(
    backend: str, request: pytest.FixtureRequest, how: str
) -> None:
    bastion = make_bastion(backend, request, jwt_secret=SECRET, session_limit=1)
    async with _client(bastion) as client:
        session, token = await _session_and_jwt(client)
        assert (await _me(client, token)).status_code == 200
        sid = session.split(".")[1]
        if how == "logout":
            await client.post("/logout", headers={"X-Bastion-Session": session})
        elif how == "revoke":
            await bastion.sessions.revoke("alice", sid)
        elif how == "evicted":
            await bastion.sessions.create("alice")  # cap 1
        else:
            end_session_now(bastion.sync.redis, "alice", sid)
        dead = await _me(client, token)
        assert dead.status_code == 401
        assert dead.json()["type"] == "user_jwt_invalid"
        assert "session has ended" in dead.json()["message"]


def _forge(kind: str, session_token: str, valid: str) -> str:
    sid = session_token.split(".")[1]
    good = _claims(sid=sid)
    header = {"alg": "HS256", "typ": TYP, "kid": "default"}

    def sign(claims: dict[str, Any], **h: Any) -> str:
        return jwt.encode(claims, SECRET, algorithm="HS256", headers={**header, **h})

    if kind == "alg_none":
        return f"{_b64({**header, 'alg': 'none'})}.{_b64(good)}."
    if kind == "alg_outside_list":
        return jwt.encode(
            good, SECRET * 2, algorithm="HS512", headers={"typ": TYP, "kid": "default"}
        )
    if kind == "tampered_payload":
        head, _, sig = valid.split(".")
        return f"{head}.{_b64(_claims(sid=sid, sub='bob'))}.{sig}"
    if kind == "tampered_signature":
        head, body, sig = valid.split(".")
        return f"{head}.{body}.{sig[:-2]}{'AA' if sig[-2:] != 'AA' else 'BB'}"
    if kind == "expired":
        return sign(_claims(sid=sid, exp=int(time.time()) - 1))
    if kind == "nbf_future":
        return sign(_claims(sid=sid, nbf=int(time.time()) + 300))
    if kind == "wrong_aud":
        return sign(_claims(sid=sid, aud="other-app"))
    if kind == "missing_aud":
        return sign(_claims(sid=sid, aud=None))
    if kind == "wrong_iss":
        return sign(_claims(sid=sid, iss="evil"))
    if kind == "missing_iss":
        return sign(_claims(sid=sid, iss=None))
    if kind == "missing_sid":
        return sign(_claims(sid=None))
    if kind == "missing_exp":
        return sign(_claims(sid=sid, exp=None))
    if kind == "missing_nbf":
        return sign(_claims(sid=sid, nbf=None))
    if kind == "unknown_kid":
        return sign(good, kid="other")
    if kind == "no_kid":
        return jwt.encode(good, SECRET, algorithm="HS256", headers={"typ": TYP})
    if kind == "wrong_typ":
        return sign(good, typ="JWT")
    if kind in ("jku", "x5u", "jwk"):
        value: Any = (
            {"kty": "oct", "k": _b64(SECRET.encode())} if kind == "jwk" else "http://127.0.0.1:1/k"
        )
        return sign(good, **{kind: value})
    if kind == "other_deployment":
        return jwt.encode(good, "o" * 40, algorithm="HS256", headers=header)
    if kind == "garbage":
        return "not.a.jwt"
    if kind == "two_parts":
        return valid.rsplit(".", 1)[0]
    raise AssertionError(kind)


ATTACKS = [
    "alg_none", "alg_outside_list", "tampered_payload", "tampered_signature", "expired",
    "nbf_future", "wrong_aud", "missing_aud", "wrong_iss", "missing_iss", "missing_sid",
    "missing_exp", "missing_nbf", "unknown_kid", "no_kid", "wrong_typ", "jku", "x5u", "jwk",
    "other_deployment", "garbage", "two_parts",
]  # fmt: skip


@pytest.mark.parametrize("kind", ATTACKS)
async def test_rfc8725_attacks_are_401(hs: Bastion, kind: str) -> None:
    async with _client(hs) as client:
        session, valid = await _session_and_jwt(client)
        assert (await _me(client, valid)).status_code == 200
        response = await _me(client, _forge(kind, session, valid))
        assert response.status_code == 401, kind
        assert response.json()["type"] == "user_jwt_invalid"


@pytest.fixture
def ed_keys(tmp_path: Path) -> tuple[Path, Path]:
    private = ed25519.Ed25519PrivateKey.generate()
    private_file, public_file = tmp_path / "ed.pem", tmp_path / "ed.pub.pem"
    private_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public_file.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_file, public_file


async def test_eddsa_and_the_public_key_as_hmac_secret(
    backend: str, request: pytest.FixtureRequest, ed_keys: tuple[Path, Path]
) -> None:
    private_file, public_file = ed_keys
    key = JWTKey(
        kid="ed", alg="EdDSA", private_key_file=str(private_file), public_key_file=str(public_file)
    )
    bastion = make_bastion(backend, request, jwt_keys=(key,))
    async with _client(bastion) as client:
        session, token = await _session_and_jwt(client)
        assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
        assert (await _me(client, token)).json()["user"] == "alice"
        # The classic confusion: HS256 "signed" with the public key, under the EdDSA key's kid.
        claims = _claims(sid=session.split(".")[1])
        forged = f"{_b64({'alg': 'HS256', 'typ': TYP, 'kid': 'ed'})}.{_b64(claims)}"
        import hashlib
        import hmac

        signature = hmac.new(public_file.read_bytes(), forged.encode(), hashlib.sha256).digest()
        forged += "." + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        response = await _me(client, forged)
        assert response.status_code == 401
        assert "algorithm" in response.json()["message"]


async def test_rotation_old_keys_verify_newest_signs(
    backend: str, request: pytest.FixtureRequest
) -> None:
    old = JWTKey(kid="2026-10", secret="o" * 40)
    new = JWTKey(kid="2026-11", secret="n" * 40)
    before = make_bastion(backend, request, jwt_keys=(old,))
    async with _client(before) as client:
        _, old_token = await _session_and_jwt(client)
    after = Bastion(
        Settings(jwt_keys=(new, old), redis_url=before.settings.redis_url),
        redis=before.redis,
        sync_redis=before.sync.redis,
    )
    async with _client(after) as client:
        assert (await _me(client, old_token)).json()["user"] == "alice"
        _, new_token = await _session_and_jwt(client)
        assert jwt.get_unverified_header(new_token)["kid"] == "2026-11"
    retired = Bastion(
        Settings(jwt_keys=(new,), redis_url=before.settings.redis_url),
        redis=before.redis,
        sync_redis=before.sync.redis,
    )
    async with _client(retired) as client:
        assert (await _me(client, old_token)).status_code == 401
        assert (await _me(client, new_token)).status_code == 200


async def test_jwt_beside_a_session_is_refused(hs: Bastion) -> None:
    async with _client(hs) as client:
        session, token = await _session_and_jwt(client)
        for extra in ({"cookie": f"{COOKIE}={session}"}, {"X-Bastion-Session": session}):
            response = await client.get(
                "/me", headers={"Authorization": f"Bearer {token}", **extra}
            )
            assert response.status_code == 403
            assert response.json()["type"] == "user_jwt_and_cookie_set"


async def test_jwts_are_off_without_a_key_on_a_real_redis(real_redis: str) -> None:
    bastion = Bastion(Settings(redis_url=real_redis))
    assert not bastion.jwt.enabled
    async with _client(bastion) as client:
        response = await _me(client, "a.b.c")
        assert response.status_code == 401
        assert "not enabled" in response.json()["message"]


@pytest.mark.parametrize(
    ("settings", "name"),
    [
        ({"jwt_secret": "short"}, "jwt_keys[default].secret"),
        ({"jwt_keys": [{"kid": "k", "alg": "HS512", "secret": "x" * 40}]}, "jwt_keys[k].secret"),
        ({"jwt_keys": [{"kid": "k", "alg": "none", "secret": "x" * 40}]}, "jwt_keys[k].alg"),
        ({"jwt_keys": [{"kid": "k", "alg": "EdDSA"}]}, "jwt_keys[k].public_key_file"),
        ({"jwt_keys": [{"kid": "k", "secret": "x" * 40, "color": "red"}]}, "jwt_keys"),
        ({"jwt_lifetime": 7200}, "jwt_lifetime"),
        (
            {"jwt_keys": [{"kid": "a", "secret": "x" * 40}, {"kid": "a", "secret": "y" * 40}]},
            "jwt_keys",
        ),
    ],
)
def test_weak_or_broken_jwt_settings_fail_at_start_up(settings: dict[str, Any], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping(settings)
    assert info.value.name == name


def test_a_key_of_the_wrong_type_fails_at_start_up(
    tmp_path: Path, ed_keys: tuple[Path, Path]
) -> None:
    _, public_file = ed_keys
    key = JWTKey(kid="rsa", alg="RS256", public_key_file=str(public_file))
    with pytest.raises(ConfigError, match="suitable for RS256"):
        Bastion(Settings(jwt_keys=(JWTKey(kid="hs", secret="h" * 40), key)))
    missing = JWTKey(kid="gone", alg="EdDSA", public_key_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="readable PEM"):
        Bastion(Settings(jwt_keys=(JWTKey(kid="hs", secret="h" * 40), missing)))


def test_verified_tokens_are_cached_but_still_expire(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.errors import JWTInvalid
    from bastion.tokens import jwt as jwt_module
    from bastion.tokens.jwt import JWTService

    service = JWTService(Settings(jwt_secret=SECRET, jwt_lifetime=60))
    token = service.mint("alice", "A" * 22)
    assert service.verify(token).user_id == "alice"
    assert token in service._verified
    assert service.verify(token).session_id == "A" * 22  # served from the cache
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(JWTInvalid):
        service.verify(tampered)  # a different string is never a cache hit
    later = time.time() + 61
    monkeypatch.setattr(jwt_module.time, "time", lambda: later)
    with pytest.raises(JWTInvalid, match="expired"):
        service.verify(token)
    assert token not in service._verified


def _signed(session_token: str, **changes: Any) -> str:
    """A token signed with the deployment's real key, with the given claims changed."""
    claims = _claims(sid=session_token.split(".")[1], **changes)
    return jwt.encode(
        claims, SECRET, algorithm="HS256", headers={"typ": TYP, "kid": "default", "alg": "HS256"}
    )


def _time_claims(kind: str) -> dict[str, Any]:
    now = int(time.time())
    return {
        "ten_years": {"iat": now, "nbf": now, "exp": now + 10 * 365 * 86400},
        "one_second_too_long": {"iat": now, "nbf": now, "exp": now + 901},
        "old_iat_long_exp": {"iat": now - 3000, "nbf": now - 3000, "exp": now + 3000},
        "exp_string": {"exp": str(now + 600)},
        "iat_string": {"iat": str(now)},
        "nbf_string": {"nbf": str(now)},
        "iat_far_past_string": {"iat": str(now - 10**9), "exp": now + 600},
        "exp_true": {"iat": 0, "nbf": 0, "exp": True},
        "iat_true": {"iat": True},
        "exp_list": {"exp": [now + 600]},
        "missing_iat": {"iat": None},
        "iat_in_the_future": {"iat": now + 3600, "exp": now + 4000},
    }[kind]


@pytest.mark.parametrize(
    "kind",
    [
        "ten_years", "one_second_too_long", "old_iat_long_exp", "exp_string", "iat_string",
        "nbf_string", "iat_far_past_string", "exp_true", "iat_true", "exp_list", "missing_iat",
        "iat_in_the_future",
    ],
)  # fmt: skip
async def test_a_real_key_cannot_sign_a_longer_life_or_odd_times(hs: Bastion, kind: str) -> None:
    async with _client(hs) as client:
        session, _ = await _session_and_jwt(client)
        response = await _me(client, _signed(session, **_time_claims(kind)))
        assert response.status_code == 401, kind
        assert response.json()["type"] == "user_jwt_invalid"


async def test_times_within_the_lifetime_are_accepted(hs: Bastion) -> None:
    now = int(time.time())
    async with _client(hs) as client:
        session, _ = await _session_and_jwt(client)
        exact = _signed(session, iat=now, nbf=now, exp=now + 900)  # jwt_lifetime, to the second
        fractional = _signed(session, iat=now - 0.5, nbf=now - 0.5, exp=now + 899.5)
        for token in (exact, fractional):
            assert (await _me(client, token)).json()["user"] == "alice"


# --- the parser: never accepts what jwt.decode refuses --------------------------------------------

_AUDIT_SID = "A" * 22


def _raw(header: Any, claims: Any, *, secret: str = SECRET) -> str:
    """A compact JWS over any header and payload (JSON-encoded unless bytes), HS256-signed."""
    import hashlib
    import hmac

    def segment(value: Any) -> str:
        raw = value if isinstance(value, bytes) else json.dumps(value).encode()
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = f"{segment(header)}.{segment(claims)}"
    digest = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(digest).rstrip(b'=').decode()}"


def _standard_alphabet(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A valid token spelt in standard base64 (``+`` and ``/``), the jti picked to need it."""
    for n in range(1000):
        token = _raw(header, {**claims, "jti": f"j{n}"})
        if "-" in token or "_" in token:
            return token.replace("-", "+").replace("_", "/")
    raise AssertionError("no token with - or _")


def _parser_corpus() -> dict[str, str]:
    """Tokens signed with the real key whose every part is odd in one way."""
    now = int(time.time())
    header = {"alg": "HS256", "typ": TYP, "kid": "default"}
    good = _claims(sid=_AUDIT_SID)
    valid = _raw(header, good)
    head, body, sig = valid.split(".")
    # The signature's last character carries 2 unused bits: the same bytes, spelt otherwise.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    respelt = alphabet[alphabet.index(sig[-1]) ^ 1]
    corpus = {
        "valid": valid,
        "extra_header_field": _raw({**header, "cty": "x"}, good),
        "fractional_times": _raw(header, {**good, "iat": now - 0.5, "exp": now + 899.5}),
        "padded_signature": f"{valid}=",
        "padded_payload": f"{head}.{body}{'=' * (-len(body) % 4)}.{sig}" if len(body) % 4 else "",
        "non_canonical_signature": f"{head}.{body}.{sig[:-1]}{respelt}",
        "standard_alphabet": _standard_alphabet(header, good),
        "space_in_signature": f"{head}.{body}.{sig[:10]} {sig[10:]}",
        "non_ascii": f"{head}.{body}.{sig[:-1]}\u00e9",
        "empty_signature": f"{head}.{body}.",
        "empty_payload": _raw(header, b""),
        "four_segments": f"{valid}.{sig}",
        "crit_b64": _raw({**header, "b64": False, "crit": ["b64"]}, good),
        "crit_unknown": _raw({**header, "crit": ["exp"], "exp": 1}, good),
        "b64_true": _raw({**header, "b64": True}, good),
        "kid_number": _raw({**header, "kid": 1}, good),
        "kid_list": _raw({**header, "kid": ["default"]}, good),
        "alg_missing": _raw({"typ": TYP, "kid": "default"}, good),
        "alg_lowercase": _raw({**header, "alg": "hs256"}, good),
        "alg_hs384": _raw({**header, "alg": "HS384"}, good),
        "typ_missing": _raw({"alg": "HS256", "kid": "default"}, good),
        "header_list": _raw([header], good),
        "header_string": _raw("header", good),
        "header_not_json": _raw(b"{alg:HS256}", good),
        "payload_not_json": _raw(header, b"{sub:alice}"),
        "payload_list": _raw(header, [good]),
        "payload_number": _raw(header, 1),
        "payload_deep": _raw(header, b"[" * 1500 + b"]" * 1500),
        "payload_utf16": _raw(header, json.dumps(good).encode("utf-16")),
        "aud_list": _raw(header, {**good, "aud": ["bastion"]}),
        "aud_two": _raw(header, {**good, "aud": ["bastion", "other"]}),
        "aud_empty": _raw(header, {**good, "aud": ""}),
        "iss_number": _raw(header, {**good, "iss": 1}),
        "iss_list": _raw(header, {**good, "iss": ["bastion"]}),
        "sub_number": _raw(header, {**good, "sub": 1}),
        "sub_empty": _raw(header, {**good, "sub": ""}),
        "jti_number": _raw(header, {**good, "jti": 1}),
        "jti_null": _raw(header, {**good, "jti": None}),
        "sid_number": _raw(header, {**good, "sid": 1}),
        # Not yet past, but its whole second is: jwt.decode refuses it (int(exp) <= now).
        "exp_within_its_last_second": _raw(
            header, {**good, "iat": now - 10, "exp": int(time.time()) + 0.999}
        ),
        "iat_under_a_second_ahead": _raw(header, {**good, "iat": time.time() + 0.9}),
        "nbf_under_a_second_ahead": _raw(header, {**good, "nbf": time.time() + 0.9}),
        "nbf_ahead": _raw(header, {**good, "nbf": now + 5}),
        "exp_nan": _raw(
            header, json.dumps({**good, "exp": 0}).replace('"exp": 0', '"exp": NaN').encode()
        ),
        "exp_infinity": _raw(
            header, json.dumps(good).replace(f'"exp": {now + 600}', '"exp": Infinity').encode()
        ),
        "exp_1e400": _raw(
            header, json.dumps(good).replace(f'"exp": {now + 600}', '"exp": 1e400').encode()
        ),
        "iat_negative": _raw(header, {**good, "iat": -1, "nbf": -1, "exp": now + 600}),
        "exp_huge": _raw(header, {**good, "exp": 10**30}),
        "exp_float_string": _raw(header, {**good, "exp": f"{now + 600}.0"}),
        "other_secret": _raw(header, good, secret="o" * 40),
        "missing_jti": _raw(header, {k: v for k, v in good.items() if k != "jti"}),
        "missing_iat": _raw(header, {k: v for k, v in good.items() if k != "iat"}),
    }
    return {name: token for name, token in corpus.items() if token}


def _pyjwt_accepts(token: str) -> bool:
    from bastion.tokens.jwt import REQUIRED_CLAIMS

    try:
        jwt.decode(
            token,
            SECRET,
            algorithms=["HS256"],
            audience="bastion",
            issuer="bastion",
            options={"require": REQUIRED_CLAIMS, "strict_aud": True},
        )
    except jwt.PyJWTError:
        return False
    return True


def _bastion_accepts(token: str) -> bool:
    from bastion.errors import JWTInvalid
    from bastion.tokens.jwt import JWTService

    try:
        JWTService(Settings(jwt_secret=SECRET)).verify(token)
    except JWTInvalid:
        return False
    return True


# Refused by Bastion although jwt.decode takes them: not what Bastion mints.
STRICTER_THAN_PYJWT = {"padded_signature", "b64_true", "payload_utf16"}
ACCEPTED = {"valid", "fractional_times", "extra_header_field"}


@pytest.mark.parametrize("name", sorted(_parser_corpus()))
def test_the_parser_never_accepts_what_jwt_decode_refuses(name: str) -> None:
    token = _parser_corpus()[name]
    bastion = _bastion_accepts(token)
    assert bastion == (name in ACCEPTED), name
    if bastion:
        assert _pyjwt_accepts(token), name  # one parse, and never laxer than jwt.decode
    if name in STRICTER_THAN_PYJWT:
        assert _pyjwt_accepts(token), name  # the corpus entry shows what it says


def test_keys_are_prepared_once_at_start_up(tmp_path: Path) -> None:
    """pyjwt's key checks run when the key is loaded: a JWK-shaped HMAC secret stops start-up
    (jwt.decode would refuse it on every token), a short RSA key warns once, not per token."""
    jwk_secret = json.dumps({"kty": "oct", "k": "x" * 40})
    with pytest.raises(ConfigError, match="suitable for HS256"):
        Bastion(Settings(jwt_secret=jwk_secret))

    from cryptography.hazmat.primitives.asymmetric import rsa

    from bastion.tokens.jwt import JWTService

    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private_file = tmp_path / "rsa.pem"
    private_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key = JWTKey(kid="r", alg="RS256", private_key_file=str(private_file))
    with pytest.warns(jwt.InsecureKeyLengthWarning, match="1024 bits"):
        service = JWTService(Settings(jwt_keys=(key,)))
    with pytest.warns(jwt.InsecureKeyLengthWarning):
        token = service.mint("alice", _AUDIT_SID)  # pyjwt's encode still warns on its own
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert service.verify(token).user_id == "alice"
