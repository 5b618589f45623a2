"""Security settings that change while the app runs, for every worker at once (Appwrite's console
"Security" tab): session limit, password history, dictionary check, personal-data check.

The values live in one Redis hash; the settings file gives the defaults. Each worker re-reads
the hash at most once a second, and only when an account operation needs a value, so a change
applies everywhere within a second and costs nothing on ordinary requests.

``bastion.security`` (async) and ``bastion.sync.security`` are the fronts over the steps of
:class:`SecurityCore`, which the account service runs inside its own steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace
from typing import Any

from bastion.errors import ConfigError
from bastion.fronts import AsyncFront, SyncFront, step
from bastion.redisio import Call, Steps
from bastion.settings import Settings

REFRESH_SECONDS = 1.0
_RANGES = {"session_limit": (1, 100), "password_history": (0, 20)}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True, slots=True)
class SecurityValues:
    """The run-time security settings in force."""

    session_limit: int
    password_history: int
    password_dictionary: bool
    password_personal_data: bool

    @classmethod
    def defaults(cls, settings: Settings) -> SecurityValues:
        """The values of the settings file, before any run-time change."""
        return cls(
            settings.session_limit,
            settings.password_history,
            settings.password_dictionary,
            settings.password_personal_data,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


KEYS = tuple(f.name for f in fields(SecurityValues))


def parse_value(name: str, raw: str) -> int | bool:
    """Check one value for ``name``; ``ConfigError`` with the allowed range when it is wrong."""
    if name not in KEYS:
        raise ConfigError(name, raw, f"one of {', '.join(KEYS)}")
    text = raw.strip().lower()
    if name in _RANGES:
        low, high = _RANGES[name]
        if not text.lstrip("-").isdigit() or not low <= int(text) <= high:
            raise ConfigError(name, raw, f"{low}..{high}")
        return int(text)
    if text not in _TRUE | _FALSE:
        raise ConfigError(name, raw, "true or false")
    return text in _TRUE


class SecurityCore:
    """Reads and writes the run-time security settings as sans-IO steps, with a 1 s cache."""

    def __init__(self, settings: Settings) -> None:
        self._key = f"{settings.key_prefix}:security"
        self._defaults = SecurityValues.defaults(settings)
        self._cached = self._defaults
        self._fetched = float("-inf")

    def current(self) -> Steps[SecurityValues]:
        """The values in force (read from Redis at most once a second per worker)."""
        if time.monotonic() - self._fetched < REFRESH_SECONDS:
            return self._cached
        stored = yield Call("hgetall", (self._key,))
        changes: dict[str, Any] = {}
        for raw_name, raw_value in stored.items():
            name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
            value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
            try:
                changes[name] = parse_value(name, value)
            except ConfigError:
                continue  # a value written by hand and wrong: the default stands
        values = replace(self._defaults, **changes)
        self._cached, self._fetched = values, time.monotonic()
        return values

    def set(self, name: str, raw: str) -> Steps[SecurityValues]:
        """Change one value for every worker (within a second); ``ConfigError`` names the range.

        Returns the values now in force.
        """
        value = parse_value(name, raw)
        stored = str(int(value)) if isinstance(value, bool) else str(value)
        yield Call("hset", (self._key, name, stored))
        self._fetched = float("-inf")
        return (yield from self.current())

    def reset(self) -> Steps[SecurityValues]:
        """Back to the settings file's values for every worker; returns the values in force."""
        yield Call("delete", (self._key,))
        self._fetched = float("-inf")
        return (yield from self.current())


class _SecuritySteps:
    """The run-time security settings as users see them."""

    current = step(SecurityCore.current)
    set = step(SecurityCore.set)
    reset = step(SecurityCore.reset)


class AsyncSecurity(_SecuritySteps, AsyncFront[SecurityCore]):
    """``bastion.security``: show and change the run-time security settings from asyncio code."""


class SyncSecurity(_SecuritySteps, SyncFront[SecurityCore]):
    """``bastion.sync.security``: the same methods for threaded code and the CLI."""
