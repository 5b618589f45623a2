"""Settings: one validated object, built from code, a TOML file and ``BASTION_*`` variables."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_type_hints
from urllib.parse import urlsplit

from bastion.errors import ConfigError
from bastion.identity import is_role
from bastion.passwords.policy import CONTEXT_WORD_MAX_LENGTH, CONTEXT_WORDS_MAX, context_tokens
from bastion.routes import ResourceSpec, RouteSpec
from bastion.secret import Secret, SecretURL

SameSite = Literal["lax", "strict", "none"]
Unmatched = Literal["deny", "authenticated", "allow"]
SessionCacheMode = Literal["tracking", "off"]

ONE_YEAR = 31_536_000
MIN_BODY_SIZE = 16_384
MAX_BODY_SIZE = 1_048_576
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}")
# RFC 6265 cookie-name token: no separators, no controls.
_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,64}")
_ORIGIN = re.compile(r"https?://[^/\s?#]+")
_KEY_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,32}")
_REDIS_SCHEMES = ("redis", "rediss", "unix")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


JWT_ALGORITHMS = {"HS256": 32, "HS384": 48, "HS512": 64, "EdDSA": 0, "ES256": 0, "RS256": 0}
"""Algorithms a JWT key may use, with the least secret length in bytes for the HMAC ones."""
_KID = re.compile(r"[A-Za-z0-9._-]{1,64}")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class JWTKey:
    """One JWT key: an HMAC ``secret``, or PEM files (the public verifies, the private signs).

    ``secret`` may be given as a plain string; it is kept as a :class:`Secret`, so the key's repr
    and every error about it show ``'**********'``.
    """

    kid: str
    alg: str = "HS256"
    secret: Secret | str | None = None
    private_key_file: str | None = None
    public_key_file: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.kid, str) or not _KID.fullmatch(self.kid):
            raise ConfigError("jwt_keys.kid", self.kid, "1-64 letters, digits and . _ -")
        where = f"jwt_keys[{self.kid}]"
        secret = _secret(f"{where}.secret", self.secret)
        object.__setattr__(self, "secret", secret)
        if self.alg not in JWT_ALGORITHMS:
            raise ConfigError(f"{where}.alg", self.alg, f"one of {', '.join(JWT_ALGORITHMS)}")
        least = JWT_ALGORITHMS[self.alg]
        if least:
            if secret is None or len(secret.get_secret_value().encode()) < least:
                raise ConfigError(
                    f"{where}.secret",
                    secret,
                    f"a secret of at least {least} bytes for {self.alg}",
                )
            if self.private_key_file or self.public_key_file:
                raise ConfigError(f"{where}", self.alg, "a secret only: HMAC keys use no PEM files")
        else:
            if secret is not None:
                raise ConfigError(f"{where}.secret", secret, f"no secret for {self.alg}")
            if not self.public_key_file and not self.private_key_file:
                raise ConfigError(
                    f"{where}.public_key_file",
                    None,
                    f"a PEM file for {self.alg} (and a private one to sign)",
                )

    @property
    def can_sign(self) -> bool:
        """Whether this key can mint tokens (an HMAC secret or a private key)."""
        return self.secret is not None or self.private_key_file is not None


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Every Bastion setting, validated when the object is built."""

    redis_url: SecretURL | str | None = None
    """Redis to keep sessions in; None runs the embedded in-process fakeredis (development only).

    Kept as a :class:`SecretURL`: shown with its password masked, read with
    ``get_secret_value()``."""
    redis_cluster: bool = False
    """``redis_url`` names one node of a Redis Cluster: the client discovers the others and
    follows MOVED / ASK redirections (env ``BASTION_REDIS_CLUSTER=true``)."""
    redis_sentinels: tuple[str, ...] = ()
    """Sentinels as ``host:port`` that name the master of ``redis_sentinel_master``; set,
    ``redis_url`` is optional and gives only the scheme, user, password and database."""
    redis_sentinel_master: str | None = None
    """The name the sentinels monitor the master under (``sentinel monitor NAME ...``)."""
    redis_timeout: float = 2.0
    """Seconds a request waits at most for a Redis that does not answer (retries included)
    before it fails closed with 503."""
    redis_lean_reads: bool = False
    """Send the request path's reads (the session's HMGET, a document's SMEMBERS) straight on a
    pooled connection, past redis-py's command methods: faster, but hooks on those methods
    (OpenTelemetry's redis instrumentation, ...) no longer see them."""
    redis_max_connections: int = 100
    """Connections each process keeps to Redis at most (for the async and for the sync client
    each). A request that finds them all busy waits for one, within ``redis_timeout``."""
    key_prefix: str = "bastion"
    """Prefix of every Redis key Bastion writes, so several apps can share one Redis."""
    session_cache: SessionCacheMode = "off"
    """``tracking``: each worker process serves session checks (cookie, header, JWT) from memory,
    invalidated by Redis client-side tracking within milliseconds of a revocation and never
    trusted longer than ``session_cache_lease`` without proof from Redis (async apps; needs
    ``CLIENT TRACKING``, Redis 6+). ``off``: every check reads Redis."""
    session_cache_max_entries: int = 20_000
    """Most sessions one worker process keeps in memory (about 0.5 KB each); oldest out first."""
    session_cache_lease: float = 1.0
    """Seconds a cached session may be served after the last proof that invalidations arrive:
    the bound on a revocation's delay when anything fails."""
    session_cache_max_age: float = 60.0
    """Seconds after which a cached session is read from Redis again, invalidation or not."""

    session_limit: int = 10
    """Most active sessions a user may hold; a new one past the cap evicts the oldest."""
    session_length: int = ONE_YEAR
    """Absolute lifetime of a session in seconds."""
    session_idle_timeout: int | None = None
    """Seconds of inactivity after which a session dies; None turns the idle timeout off."""

    cookie_name: str = "__Host-bastion_session"
    """Name of the session cookie; the ``__Host-`` prefix pins it to this host and Path=/."""
    cookie_secure: bool = True
    """Send the cookie only over HTTPS; a ``__Host-`` cookie must be Secure."""
    cookie_samesite: SameSite = "lax"
    """SameSite attribute of the session cookie."""
    session_header: str = "X-Bastion-Session"
    """Request header that carries the session token for clients that cannot keep cookies."""
    allowed_origins: tuple[str, ...] = ()
    """Origins, besides the request's own, allowed to send cookie-authenticated unsafe requests
    and to call the account routes: other origins of the same site (a subdomain, a port). A
    request the browser marks ``Sec-Fetch-Site: cross-site`` is refused whatever this lists."""

    jwt_secret: Secret | str | None = None
    """Shorthand for one HS256 key (kid ``default``), at least 32 bytes; kept as a ``Secret``."""
    jwt_keys: tuple[JWTKey, ...] = ()
    """JWT keys, newest first: the first signs, every one verifies (so keys can be rotated)."""
    jwt_lifetime: int = 900
    """Lifetime of a JWT in seconds."""
    jwt_issuer: str = "bastion"
    """``iss`` of the JWTs this deployment mints and accepts."""
    jwt_audience: str = "bastion"
    """``aud`` of the JWTs this deployment mints and accepts; give each deployment its own."""

    policy_model: str | None = None
    """Casbin model file; None uses the shipped Appwrite-style model."""
    policy_files: tuple[str, ...] = ()
    """Casbin policy CSV files (``p`` and ``g`` lines) the teams edit."""
    policy_reload_interval: float = 0.25
    """Seconds between checks for a published policy version, changed policy files and
    announced reloads (one GET and a few ``stat`` calls); 0 turns them off."""
    routes: tuple[RouteSpec, ...] = ()
    """The route map (``[[routes]]``): authorization is on when it has entries or policy files."""
    resources: tuple[ResourceSpec, ...] = ()
    """Container settings (``[[resources]]``): where children's own permissions count."""
    unmatched_routes: Unmatched = "deny"
    """What happens to requests no route matches once authorization is on."""
    report_only: bool = False
    """Log every decision without enforcing it, to roll Bastion out on an existing app."""
    admin_roles: tuple[str, ...] = ()
    """Roles whose holders may grant per-resource permissions to any role."""

    account_prefix: str = "/account"
    """Where the account routes are mounted; the account service guards them itself."""
    max_body_size: int = 65_536
    """Most bytes an account route reads of a request body; a larger one is refused with 413."""

    password_min_length: int = 8
    """Fewest characters a password may have (never below 8)."""
    password_max_length: int = 256
    """Most characters a password may have; longer ones are refused before any hashing."""
    password_dictionary: bool = True
    """Refuse the 10,000 most common passwords (compared after NFKC and casefolding)."""
    password_dictionary_path: str | None = None
    """A dictionary file of your own, one password a line, added to the shipped list."""
    password_dictionary_replace: bool = False
    """Use ``password_dictionary_path`` instead of the shipped list rather than beside it."""
    password_personal_data: bool = True
    """Refuse passwords that contain the user's id, email, name or phone."""
    password_context_words: tuple[str, ...] = ()
    """Names of the product, organisation and site (``["bastion", "acme"]``) no password may
    contain, compared like personal data."""
    password_history: int = 0
    """How many previous passwords a user may not reuse (0 turns history off)."""
    password_hash_memory_kib: int = 19_456
    """argon2id memory cost in KiB (OWASP's minimum is 19 MiB with 2 passes)."""
    password_hash_time_cost: int = 2
    """argon2id passes."""
    password_hash_parallelism: int = 1
    """argon2id lanes."""
    revoke_sessions_on_password_change: bool = True
    """A password change ends every other session of the user."""
    reauth_window: int = 300
    """Seconds after log-in during which a session may end the user's other sessions without
    the password (0: always ask for it)."""

    rate_limit_per_email: int = 10
    """Attempts per window on each account endpoint for one email from one client IP."""
    rate_limit_per_ip: int = 100
    """Attempts per window on each account endpoint from one client IP, whatever the email."""
    rate_limit_per_account: int = 100
    """Attempts per window at log-in and at password checks for one email, from every client IP
    together, so rotating addresses cannot brute-force one account."""
    rate_limit_window: int = 3600
    """Length of a rate-limit window in seconds."""
    trusted_proxies: tuple[str, ...] = ()
    """Proxy addresses (IPs or CIDRs) whose X-Forwarded-For names the client IP."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "redis_url", _redis_url(self.redis_url))
        object.__setattr__(self, "jwt_secret", _secret("jwt_secret", self.jwt_secret))
        _in_range("redis_timeout", self.redis_timeout, 0.05, 60.0)
        _check_topology(self)
        if not isinstance(self.redis_lean_reads, bool):
            raise ConfigError("redis_lean_reads", self.redis_lean_reads, "true or false")
        _in_range("redis_max_connections", self.redis_max_connections, 1, 10_000)
        if not _KEY_PREFIX.fullmatch(self.key_prefix):
            raise ConfigError(
                "key_prefix", self.key_prefix, "1-32 characters of letters, digits, _ . : -"
            )
        if self.session_cache not in get_args(SessionCacheMode):
            raise ConfigError("session_cache", self.session_cache, "one of tracking, off")
        _in_range("session_cache_max_entries", self.session_cache_max_entries, 1, 10_000_000)
        _in_range("session_cache_lease", self.session_cache_lease, 0.2, 10.0)
        _in_range("session_cache_max_age", self.session_cache_max_age, 1.0, 3600.0)
        _in_range("session_limit", self.session_limit, 1, 100)
        _in_range("session_length", self.session_length, 60, ONE_YEAR)
        _in_range("reauth_window", self.reauth_window, 0, 86_400)
        if self.session_idle_timeout is not None:
            _in_range("session_idle_timeout", self.session_idle_timeout, 60, self.session_length)
        if not _COOKIE_NAME.fullmatch(self.cookie_name):
            raise ConfigError("cookie_name", self.cookie_name, "1-64 cookie-name characters")
        if self.cookie_samesite not in get_args(SameSite):
            raise ConfigError("cookie_samesite", self.cookie_samesite, "one of lax, strict, none")
        if self.cookie_name.startswith(("__Host-", "__Secure-")) and not self.cookie_secure:
            raise ConfigError(
                "cookie_secure",
                self.cookie_secure,
                f"true, because browsers drop a {self.cookie_name.split('-')[0]}- cookie"
                " that is not Secure",
            )
        if self.cookie_samesite == "none" and not self.cookie_secure:
            raise ConfigError(
                "cookie_secure", self.cookie_secure, "true when cookie_samesite is none"
            )
        if not _HEADER_NAME.fullmatch(self.session_header):
            raise ConfigError(
                "session_header", self.session_header, "1-64 letters, digits and hyphens"
            )
        origins = tuple(o.rstrip("/").lower() for o in self.allowed_origins)
        for origin in origins:
            if not _ORIGIN.fullmatch(origin):
                raise ConfigError(
                    "allowed_origins",
                    origin,
                    "origins like https://app.example.com (scheme and host, no path)",
                )
        object.__setattr__(self, "allowed_origins", origins)
        _in_range("jwt_lifetime", self.jwt_lifetime, 60, 3600)
        if self.jwt_secret is not None:
            JWTKey(kid="default", secret=self.jwt_secret)  # same length rule, named after the field
        kids = [k.kid for k in self.jwt_keys]
        if len(set(kids)) != len(kids):
            raise ConfigError("jwt_keys", kids, "keys with distinct kid values")
        if self.jwt_keys and not self.jwt_keys[0].can_sign:
            raise ConfigError(
                "jwt_keys[0]", self.jwt_keys[0].kid, "a key that can sign (the first signs)"
            )
        if self.jwt_secret is not None and self.jwt_keys:
            raise ConfigError("jwt_secret", self.jwt_secret, "unset when jwt_keys is given")
        for name in ("jwt_issuer", "jwt_audience"):
            if not 1 <= len(getattr(self, name)) <= 256:
                raise ConfigError(name, getattr(self, name), "1-256 characters")
        if self.policy_reload_interval != 0:
            _in_range("policy_reload_interval", self.policy_reload_interval, 0.1, 3600)
        if self.unmatched_routes not in get_args(Unmatched):
            raise ConfigError(
                "unmatched_routes", self.unmatched_routes, "one of deny, authenticated, allow"
            )
        for role in self.admin_roles:
            if not is_role(role):
                raise ConfigError("admin_roles", role, "roles like label:admin or team:ops/owner")
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", self.account_prefix):
            raise ConfigError("account_prefix", self.account_prefix, "a path like /account")
        # Below 16 KiB a password change with two long passwords, escaped by a client's JSON
        # encoder as \uXXXX, might not fit; above 1 MiB it is no longer a limit on account forms.
        _in_range("max_body_size", self.max_body_size, MIN_BODY_SIZE, MAX_BODY_SIZE)
        _in_range("password_min_length", self.password_min_length, 8, 256)
        _in_range("password_max_length", self.password_max_length, self.password_min_length, 1024)
        _in_range("password_history", self.password_history, 0, 20)
        if self.password_dictionary_replace and self.password_dictionary_path is None:
            raise ConfigError(
                "password_dictionary_replace",
                self.password_dictionary_replace,
                "false unless password_dictionary_path names a file to replace the shipped list",
            )
        object.__setattr__(
            self, "password_context_words", _context_words(self.password_context_words)
        )
        _in_range("password_hash_memory_kib", self.password_hash_memory_kib, 19_456, 4_194_304)
        _in_range("password_hash_time_cost", self.password_hash_time_cost, 1, 20)
        _in_range("password_hash_parallelism", self.password_hash_parallelism, 1, 16)
        if self.password_hash_time_cost < 2 and self.password_hash_memory_kib < 47_104:
            raise ConfigError(
                "password_hash_time_cost",
                self.password_hash_time_cost,
                "at least 2, or 1 with password_hash_memory_kib >= 47104 (OWASP's minimums)",
            )
        _in_range("rate_limit_per_email", self.rate_limit_per_email, 1, 1_000_000)
        _in_range("rate_limit_per_ip", self.rate_limit_per_ip, 1, 1_000_000)
        _in_range("rate_limit_per_account", self.rate_limit_per_account, 1, 1_000_000)
        _in_range("rate_limit_window", self.rate_limit_window, 1, 86_400)
        for proxy in self.trusted_proxies:
            try:
                ipaddress.ip_network(proxy, strict=False)
            except ValueError:
                raise ConfigError("trusted_proxies", proxy, "IP addresses or CIDRs") from None

    @property
    def authorization(self) -> bool:
        """Whether requests are authorized (a route map or policy files are configured)."""
        return bool(self.routes or self.policy_files)

    @property
    def jwt_keyset(self) -> tuple[JWTKey, ...]:
        """The configured JWT keys, ``jwt_secret`` included; the first signs."""
        if self.jwt_secret is not None:
            return (JWTKey(kid="default", secret=self.jwt_secret),)
        return self.jwt_keys

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """Build settings from a TOML file, then ``BASTION_*`` variables, then keyword overrides.

        Without ``path``, ``BASTION_CONFIG`` names the file, if set.
        """
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if path is None:
            path = env.get("BASTION_CONFIG") or None
        if path is not None:
            values.update(_read_toml(Path(path)))
        values.update(_read_env(env))
        values.update(overrides)
        return cls.from_mapping(values, origin="settings")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, origin: str = "settings") -> Settings:
        """Build settings from plain values, refusing names Bastion does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            # Masked, like a misspelt variable: the value of an unknown name may be a secret.
            raise ConfigError(
                unknown[0],
                Secret(repr(values[unknown[0]])),
                f"a known setting ({origin}: {', '.join(sorted(known))})",
            )
        hints = _hints()
        checked = {name: _coerce(name, value, hints[name]) for name, value in values.items()}
        return cls(**checked)


def _secret(name: str, value: object) -> Secret | None:
    """A secret setting as a :class:`Secret`; a value of the wrong type is refused, masked."""
    if value is None or isinstance(value, Secret):
        return value
    if isinstance(value, str):
        return Secret(value)
    raise ConfigError(name, Secret(repr(value)), "a string")


def _redis_url(value: object) -> SecretURL | None:
    """``redis_url`` as a :class:`SecretURL`, its scheme checked (errors show it masked)."""
    if value is None:
        return None
    if isinstance(value, SecretURL):
        url = value
    elif isinstance(value, (str, Secret)):
        url = SecretURL((value if isinstance(value, str) else value.get_secret_value()).strip())
    else:
        raise ConfigError("redis_url", Secret(repr(value)), "a Redis URL (a string)")
    try:
        scheme = urlsplit(url.get_secret_value()).scheme
    except ValueError:
        scheme = ""
    if scheme not in _REDIS_SCHEMES:
        raise ConfigError(
            "redis_url", url, "a URL like redis://host:6379/0 (redis://, rediss:// or unix://)"
        )
    return url


_SENTINEL = re.compile(r"\[?[A-Za-z0-9_.:-]{1,255}?\]?:[0-9]{1,5}")
_MASTER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _check_topology(settings: Settings) -> None:
    """Cluster and Sentinel settings fit together and with ``redis_url``."""
    sentinels = tuple(s.strip() for s in settings.redis_sentinels)
    object.__setattr__(settings, "redis_sentinels", sentinels)
    for address in sentinels:
        if not _SENTINEL.fullmatch(address) or not 0 < int(address.rsplit(":", 1)[1]) < 65536:
            raise ConfigError("redis_sentinels", address, "addresses like 10.0.0.5:26379")
    master = settings.redis_sentinel_master
    if sentinels and master is None:
        raise ConfigError(
            "redis_sentinel_master", None, "the master's name when redis_sentinels is set"
        )
    if master is not None:
        if not sentinels:
            raise ConfigError(
                "redis_sentinels", (), "at least one host:port when redis_sentinel_master is set"
            )
        if not _MASTER_NAME.fullmatch(master):
            raise ConfigError("redis_sentinel_master", master, "1-64 letters, digits and _ . -")
    if settings.redis_cluster:
        if sentinels:
            raise ConfigError(
                "redis_cluster", True, "false with redis_sentinels (a cluster has no sentinels)"
            )
        if settings.redis_url is None:
            raise ConfigError("redis_url", None, "the URL of one cluster node with redis_cluster")
        url = reveal_url(settings.redis_url)
        if url.startswith("unix:"):
            raise ConfigError("redis_url", settings.redis_url, "a redis:// or rediss:// node")
        if urlsplit(url).path.strip("/") not in ("", "0"):
            raise ConfigError(
                "redis_url", settings.redis_url, "database 0 (a cluster has no other database)"
            )


def reveal_url(url: SecretURL | str) -> str:
    """The URL's text (``SecretURL`` hides it)."""
    return url.get_secret_value() if isinstance(url, SecretURL) else url


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ConfigError(name, value, f"{low}..{high}")


def _context_words(words: object) -> tuple[str, ...]:
    """``password_context_words`` checked: a list of names, each one the rule can use."""
    name = "password_context_words"
    if isinstance(words, str) or not isinstance(words, (list, tuple)):
        raise ConfigError(name, words, "a list of strings (comma-separated in the environment)")
    if len(words) > CONTEXT_WORDS_MAX:
        raise ConfigError(name, f"<{len(words)} words>", f"at most {CONTEXT_WORDS_MAX} words")
    checked = []
    for word in words:
        if not isinstance(word, str):
            raise ConfigError(name, word, "a list of strings")
        word = word.strip()
        # The rule folds each word and ignores tokens shorter than 3 (4 if all digits), as for
        # personal data; a configured word it would ignore is a mistake, so it is refused here.
        if len(word) > CONTEXT_WORD_MAX_LENGTH or not context_tokens([word]):
            raise ConfigError(
                name,
                word,
                f"words of 3..{CONTEXT_WORD_MAX_LENGTH} characters (4.. if only digits): shorter"
                " ones would refuse too many passwords",
            )
        checked.append(word)
    return tuple(checked)


def _hints() -> dict[str, Any]:
    return get_type_hints(Settings)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Check a value against its field type, turning strings from env/TOML into that type."""
    args = get_args(hint)
    if Secret in args or SecretURL in args:
        # Checked and wrapped by Settings itself; here only blank (unset) and the type matter.
        if value is None or (isinstance(value, str) and value.strip() == ""):
            return None
        if isinstance(value, str):
            return value.strip()  # as every other string from a file or the environment
        if isinstance(value, Secret):
            return value
        raise ConfigError(name, Secret(repr(value)), "a string")
    optional = type(None) in args
    if optional:
        (hint,) = [a for a in args if a is not type(None)]
        if value is None or (isinstance(value, str) and value.strip() == ""):
            return None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(name, value, "true or false")
    if hint is int:
        if isinstance(value, bool):
            raise ConfigError(name, value, "a whole number")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
        raise ConfigError(name, value, "a whole number")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(name, value, "a number")
    if hint is str or (get_args(hint) and all(isinstance(a, str) for a in get_args(hint))):
        if isinstance(value, str):
            return value.strip() if hint is str else value.strip().lower()
        raise ConfigError(name, value, "a string")
    for spec in (RouteSpec, ResourceSpec):
        if hint == tuple[spec, ...]:  # type: ignore[valid-type]
            if not isinstance(value, (list, tuple)):
                raise ConfigError(name, value, f"a list of [[{name}]] tables")
            specs = []
            for index, item in enumerate(value):
                try:
                    specs.append(item if isinstance(item, spec) else spec.from_table(item))
                except (ValueError, TypeError, AttributeError) as exc:
                    raise ConfigError(f"{name}[{index}]", item, f"a valid entry ({exc})") from None
            return tuple(specs)
    if hint == tuple[JWTKey, ...]:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, Secret(repr(value)), "a list of [[jwt_keys]] tables")
        keys = []
        for item in value:
            if isinstance(item, JWTKey):
                keys.append(item)
                continue
            if not isinstance(item, dict):
                # Masked: a secret pasted where the table belongs must not reach the message.
                raise ConfigError(
                    name, Secret(repr(item)), "a table with kid, alg and secret or key files"
                )
            fields = {f.name for f in dataclasses.fields(JWTKey)}
            if set(item) - fields or "kid" not in item:
                raise ConfigError(
                    name, sorted(item), f"tables with kid and {', '.join(sorted(fields - {'kid'}))}"
                )
            keys.append(JWTKey(**item))
        return tuple(keys)
    if getattr(hint, "__origin__", None) is tuple:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ConfigError(name, value, "a list of strings")
    raise AssertionError(f"no coercion for {name}: {hint!r}")  # pragma: no cover


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config", str(path), "an existing TOML file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("config", str(path), f"valid TOML ({exc})") from None
    # Settings may sit at the top level or under [bastion]; other tables belong to later layers.
    section = data.get("bastion", data)
    values = {k: v for k, v in section.items() if not isinstance(v, dict)}
    # File names in the file are relative to the file, wherever the app is started from.
    base = path.parent
    for name in ("policy_model", "password_dictionary_path"):
        if isinstance(values.get(name), str):
            values[name] = str(base / values[name])
    if isinstance(values.get("policy_files"), list):
        values["policy_files"] = [
            str(base / f) if isinstance(f, str) else f for f in values["policy_files"]
        ]
    for key in values.get("jwt_keys", ()) if isinstance(values.get("jwt_keys"), list) else ():
        for name in ("private_key_file", "public_key_file"):
            if isinstance(key, dict) and isinstance(key.get(name), str):
                key[name] = str(base / key[name])
    return values


def _read_env(env: Mapping[str, str]) -> dict[str, str]:
    known = {f.name for f in dataclasses.fields(Settings)}
    values: dict[str, str] = {}
    for key, value in env.items():
        if not key.startswith("BASTION_") or key == "BASTION_CONFIG":
            continue
        name = key[len("BASTION_") :].lower()
        if name not in known:
            # The value is masked: a misspelt secret (BASTION_JWT_SECRETS) is still a secret.
            raise ConfigError(
                key, Secret(value), f"a known setting (BASTION_{'/'.join(sorted(known)).upper()})"
            )
        values[name] = value
    return values
