"""The session cookie's ``Set-Cookie`` values."""

from __future__ import annotations

from bastion.settings import Settings

_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


def _attributes(settings: Settings, max_age: int) -> str:
    # Path=/ and no Domain: what a __Host- cookie requires, and the narrowest scope otherwise.
    parts = [f"Path=/; Max-Age={max_age}; HttpOnly"]
    if settings.cookie_secure:
        parts.append("Secure")
    parts.append(f"SameSite={_SAMESITE[settings.cookie_samesite]}")
    return "; ".join(parts)


def session_cookie(settings: Settings, token: str) -> str:
    """``Set-Cookie`` value that stores a session token for the session's whole length."""
    return f"{settings.cookie_name}={token}; {_attributes(settings, settings.session_length)}"


def clear_cookie(settings: Settings) -> str:
    """``Set-Cookie`` value that deletes the session cookie."""
    return f"{settings.cookie_name}=; {_attributes(settings, 0)}"
