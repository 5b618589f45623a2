"""Redis key layout of the session store: all keys of one user share the hash tag ``{user id}``."""

from __future__ import annotations


def user_sessions(prefix: str, user_id: str) -> str:
    """Sorted set of the user's session ids, scored by creation order."""
    head, tail = user_sessions_around(prefix)
    return f"{head}{user_id}{tail}"


def user_sessions_around(prefix: str) -> tuple[str, str]:
    """What comes before and after the user id in every user's session set (to SCAN for them)."""
    return f"{prefix}:{{", "}:sessions"


def session_prefix(prefix: str, user_id: str) -> str:
    """Common prefix of the user's per-session hashes (the Lua scripts append the session id)."""
    return f"{prefix}:{{{user_id}}}:session:"


def session(prefix: str, user_id: str, session_id: str) -> str:
    """Hash of one session: secret digest, created, expires, last seen, IP, user agent."""
    return f"{prefix}:{{{user_id}}}:session:{session_id}"


def user(prefix: str, user_id: str) -> str:
    """Hash of the user's account record (same hash tag as their sessions)."""
    return f"{prefix}:{{{user_id}}}:user"
