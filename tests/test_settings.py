"""Settings from code, TOML and environment, each bad value refused with its name and range."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion import ConfigError, Settings
from bastion.cookies import clear_cookie, session_cookie
from bastion.errors import BastionError, CrossSiteRequest, ServiceUnavailable, SessionInvalid


def test_defaults_are_the_secure_ones() -> None:
    s = Settings()
    assert s.session_limit == 10
    assert s.session_length == 31_536_000
    assert s.session_idle_timeout is None
    assert s.cookie_name == "__Host-bastion_session"
    assert s.cookie_secure is True and s.cookie_samesite == "lax"
    assert s.redis_url is None


@pytest.mark.parametrize(
    ("values", "name", "allowed"),
    [
        ({"session_limit": 0}, "session_limit", "1..100"),
        ({"session_limit": 101}, "session_limit", "1..100"),
        ({"session_limit": True}, "session_limit", "whole number"),
        ({"session_limit": "ten"}, "session_limit", "whole number"),
        ({"session_length": 59}, "session_length", "60..31536000"),
        ({"session_length": 31_536_001}, "session_length", "60..31536000"),
        ({"session_idle_timeout": 30}, "session_idle_timeout", "60.."),
        (
            {"session_length": 3600, "session_idle_timeout": 7200},
            "session_idle_timeout",
            "60..3600",
        ),
        ({"cookie_samesite": "sometimes"}, "cookie_samesite", "lax, strict, none"),
        ({"cookie_secure": False}, "cookie_secure", "__Host-"),
        ({"cookie_secure": "maybe"}, "cookie_secure", "true or false"),
        ({"cookie_name": "has space"}, "cookie_name", "cookie-name"),
        (
            {"cookie_name": "sid", "cookie_secure": False, "cookie_samesite": "none"},
            "cookie_secure",
            "none",
        ),
        ({"session_header": "X Bad"}, "session_header", "letters"),
        ({"allowed_origins": ["https://ok.example/path"]}, "allowed_origins", "scheme and host"),
        ({"allowed_origins": "ftp://x"}, "allowed_origins", "scheme and host"),
        ({"redis_timeout": 0}, "redis_timeout", "0.05..60"),
        ({"redis_lean_reads": "maybe"}, "redis_lean_reads", "true or false"),
        ({"redis_lean_reads": 1}, "redis_lean_reads", "true or false"),
        ({"key_prefix": "bad prefix"}, "key_prefix", "1-32"),
        ({"sesion_limit": 5}, "sesion_limit", "known setting"),
        ({"password_context_words": [1]}, "password_context_words", "a list of strings"),
        ({"password_context_words": ["ab"]}, "password_context_words", "3..64 characters"),
        ({"password_context_words": ["  it "]}, "password_context_words", "3..64 characters"),
        ({"password_context_words": ["123"]}, "password_context_words", "4.. if only digits"),
        ({"password_context_words": ["x" * 65]}, "password_context_words", "3..64 characters"),
        (
            {"password_context_words": [f"word{n}" for n in range(101)]},
            "password_context_words",
            "at most 100 words",
        ),
        ({"password_dictionary_replace": "maybe"}, "password_dictionary_replace", "true or false"),
    ],
)
def test_bad_values_name_the_setting_and_range(
    values: dict[str, object], name: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping(values)
    assert info.value.name == name
    assert name in str(info.value) and allowed in str(info.value)


def test_redis_lean_reads_is_off_unless_asked_for(tmp_path: Path) -> None:
    assert Settings().redis_lean_reads is False
    assert Settings.load(env={"BASTION_REDIS_LEAN_READS": "true"}).redis_lean_reads is True
    assert Settings.load(env={"BASTION_REDIS_LEAN_READS": "false"}).redis_lean_reads is False
    config = tmp_path / "bastion.toml"
    config.write_text("redis_lean_reads = true\n")
    assert Settings.load(config, env={}).redis_lean_reads is True
    with pytest.raises(ConfigError, match="redis_lean_reads"):
        Settings(redis_lean_reads="false")  # type: ignore[arg-type]


def test_env_overrides_toml_and_code_overrides_env(tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(
        'session_limit = 5\ncookie_samesite = "strict"\nallowed_origins = ["https://a.example"]\n'
        "[routes]\nignored = true\n"
    )
    env = {
        "BASTION_SESSION_LIMIT": "7",
        "BASTION_SESSION_IDLE_TIMEOUT": "900",
        "BASTION_COOKIE_SECURE": "yes",
        "BASTION_ALLOWED_ORIGINS": "https://b.example, https://C.example/",
        "OTHER": "x",
    }
    s = Settings.load(config, env=env, session_length=7200)
    assert s.session_limit == 7
    assert s.session_idle_timeout == 900
    assert s.cookie_samesite == "strict"
    assert s.allowed_origins == ("https://b.example", "https://c.example")
    assert s.session_length == 7200
    assert Settings.load(env={"BASTION_CONFIG": str(config)}).session_limit == 5
    assert Settings.load(env={"BASTION_SESSION_IDLE_TIMEOUT": ""}).session_idle_timeout is None


def test_password_context_words_from_code_toml_and_env(tmp_path: Path) -> None:
    assert Settings().password_context_words == ()
    code = Settings(password_context_words=["bastion", " Acme Corp "])
    assert code.password_context_words == ("bastion", "Acme Corp")
    config = tmp_path / "bastion.toml"
    config.write_text('password_context_words = ["bastion", "acme"]\n')
    assert Settings.load(config, env={}).password_context_words == ("bastion", "acme")
    env = {"BASTION_PASSWORD_CONTEXT_WORDS": "bastion, acme ,acme corp"}
    from_env = Settings.load(config, env=env)
    assert from_env.password_context_words == ("bastion", "acme", "acme corp")
    assert Settings.load(env={"BASTION_PASSWORD_CONTEXT_WORDS": ""}).password_context_words == ()
    # A plain string given in code is not a list of words (it would be one word per letter).
    with pytest.raises(ConfigError, match="a list of strings"):
        Settings(password_context_words="acme")  # type: ignore[arg-type]


def test_bastion_table_in_toml(tmp_path: Path) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text("[bastion]\nsession_limit = 3\n")
    assert Settings.load(config, env={}).session_limit == 3


@pytest.mark.parametrize(
    ("content", "name"),
    [("session_limit = 500\n", "session_limit"), ("not toml ===\n", "config"), ("x = 1\n", "x")],
)
def test_bad_files_and_env_fail_at_start_up(tmp_path: Path, content: str, name: str) -> None:
    config = tmp_path / "bastion.toml"
    config.write_text(content)
    with pytest.raises(ConfigError) as info:
        Settings.load(config, env={})
    assert info.value.name == name
    with pytest.raises(ConfigError, match="BASTION_SESION_LIMIT"):
        Settings.load(env={"BASTION_SESION_LIMIT": "3"})
    with pytest.raises(ConfigError, match="existing TOML"):
        Settings.load(tmp_path / "missing.toml", env={})


def test_cookie_headers_follow_settings() -> None:
    s = Settings(
        cookie_name="sid", cookie_secure=False, cookie_samesite="strict", session_length=3600
    )
    assert session_cookie(s, "tok") == "sid=tok; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict"
    assert clear_cookie(s) == "sid=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"


@pytest.mark.parametrize(
    ("error", "status", "type_"),
    [
        (SessionInvalid(), 401, "user_session_invalid"),
        (CrossSiteRequest(), 403, "general_cross_site_request"),
        (ServiceUnavailable(), 503, "service_unavailable"),
    ],
)
def test_errors_are_data(error: BastionError, status: int, type_: str) -> None:
    assert error.to_dict() == {"code": status, "type": type_, "message": error.message}
    assert error.body().startswith(b'{"code":')


JWT_SECRET = "jwt-secret-value-that-is-long-enough-1234"
KEY_SECRET = "key-secret-value-that-is-long-enough-5678"
REDIS_PASSWORD = "redis-password-4f9c"


def _everywhere(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, text


def test_repr_and_str_mask_every_secret() -> None:
    from bastion.settings import JWTKey

    url = f"redis://app:{REDIS_PASSWORD}@127.0.0.1:6379/0"
    with_secret = Settings(redis_url=url, jwt_secret=JWT_SECRET)
    with_keys = Settings(jwt_keys=(JWTKey(kid="k1", secret=KEY_SECRET),))
    for settings in (with_secret, with_keys):
        for text in (repr(settings), str(settings), f"{settings}", "{}".format(settings)):  # noqa: UP032
            _everywhere(text, JWT_SECRET, KEY_SECRET, REDIS_PASSWORD)
    assert "jwt_secret=Secret('**********')" in repr(with_secret)
    assert "redis_url=SecretURL('redis://app:***@127.0.0.1:6379/0')" in repr(with_secret)
    assert "secret=Secret('**********')" in repr(with_keys)
    assert str(with_secret.jwt_secret) == "**********" == f"{with_secret.jwt_secret}"
    assert str(with_secret.redis_url) == "redis://app:***@127.0.0.1:6379/0"
    # The value is there for the code that needs it, read on purpose.
    from bastion.secret import Secret, SecretURL

    assert isinstance(with_secret.jwt_secret, Secret)
    assert with_secret.jwt_secret.get_secret_value() == JWT_SECRET
    assert isinstance(with_secret.redis_url, SecretURL)
    assert with_secret.redis_url.get_secret_value() == url
    assert with_keys.jwt_keyset[0].secret == Secret(KEY_SECRET)
    # Settings built from a loaded one (a copy, an override) keep working.
    again = Settings(redis_url=with_secret.redis_url, jwt_secret=with_secret.jwt_secret)
    assert again == with_secret


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:pw-4f9c@host:6379/0", "redis://app:***@host:6379/0"),
        ("rediss://:pw-4f9c@host:6380", "rediss://:***@host:6380"),
        ("redis://pw-4f9c@host/1", "redis://***@host/1"),
        (
            "unix:///run/redis.sock?db=0&password=pw-4f9c",
            "unix:///run/redis.sock?db=0&password=***",
        ),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("redis://app:pw-4f9c@[::1", "**********"),
    ],
)
def test_redis_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    from bastion.secret import mask_url

    assert mask_url(url) == shown


@pytest.mark.parametrize(
    ("values", "name", "secret"),
    [
        ({"jwt_secret": "short-jwt-4f9c"}, "jwt_keys[default].secret", "short-jwt-4f9c"),
        ({"jwt_secret": 123456789}, "jwt_secret", "123456789"),
        (
            {"jwt_secret": JWT_SECRET, "jwt_keys": [{"kid": "k", "secret": KEY_SECRET}]},
            "jwt_secret",
            JWT_SECRET,
        ),
        ({"jwt_keys": [{"kid": "k", "secret": "short-key-4f9c"}]}, "jwt_keys[k].secret", "short"),
        ({"jwt_keys": [{"kid": "k", "secret": 987654321}]}, "jwt_keys[k].secret", "987654321"),
        (
            {"jwt_keys": [{"kid": "k", "alg": "EdDSA", "secret": KEY_SECRET}]},
            "jwt_keys[k].secret",
            KEY_SECRET,
        ),
        (
            {"jwt_keys": [{"kid": "k", "alg": "nope", "secret": KEY_SECRET}]},
            "jwt_keys[k].alg",
            KEY_SECRET,
        ),
        ({"jwt_keys": [KEY_SECRET]}, "jwt_keys", KEY_SECRET),
        ({"jwt_keys": KEY_SECRET}, "jwt_keys", KEY_SECRET),
        ({"redis_url": f"http://app:{REDIS_PASSWORD}@host/0"}, "redis_url", REDIS_PASSWORD),
        ({"redis_url": f"app:{REDIS_PASSWORD}@host"}, "redis_url", REDIS_PASSWORD),
        ({"redis_url": 6379}, "redis_url", "6379"),
        ({"jwt_secrets": JWT_SECRET}, "jwt_secrets", JWT_SECRET),
        ({"redis_uri": f"redis://:{REDIS_PASSWORD}@h"}, "redis_uri", REDIS_PASSWORD),
    ],
)
def test_bad_secret_values_are_never_shown(
    values: dict[str, object], name: str, secret: str
) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_mapping(values)
    assert info.value.name == name
    _everywhere(str(info.value), secret)
    _everywhere(repr(info.value), secret)
    _everywhere(repr(info.value.value), secret)
    _everywhere(str(info.value.value), secret)


def test_a_misspelt_secret_variable_is_named_not_shown(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(env={"BASTION_JWT_SECRETS": JWT_SECRET})
    assert info.value.name == "BASTION_JWT_SECRETS" and "known setting" in str(info.value)
    _everywhere(str(info.value) + repr(info.value) + repr(info.value.value), JWT_SECRET)
    for variable, value in (
        ("BASTION_JWT_SECRET", "short-jwt-4f9c"),
        ("BASTION_REDIS_URL", f"tcp://app:{REDIS_PASSWORD}@host"),
    ):
        with pytest.raises(ConfigError) as info:
            Settings.load(env={variable: value})
        _everywhere(str(info.value) + repr(info.value) + repr(info.value.value), value)
        _everywhere(str(info.value), REDIS_PASSWORD)
    config = tmp_path / "bastion.toml"
    config.write_text(f'jwt_secret = "short-jwt-4f9c"\nredis_uri = "redis://:{REDIS_PASSWORD}@h"\n')
    with pytest.raises(ConfigError) as info:
        Settings.load(config, env={})
    _everywhere(str(info.value), REDIS_PASSWORD, "short-jwt-4f9c")
