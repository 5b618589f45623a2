"""Redis key layout of the session store: all keys of one user share the hash tag ``{user id}``.

A user's sessions live in one hash (:func:`sessions`), so every script touches only keys it
declares, all in one cluster slot, and a slot migration moves them in one piece. Its fields:

- ``SID``: ``"ORDER EXPIRES LASTSEEN"`` (ms; ORDER is the creation rank, creation ms * 1000)
- ``SID:h``: the SHA-256 digest of the session's secret
- ``SID:m``: ``"UAREF IP"`` (UAREF ``-`` when there is no user agent)
- ``r:v``, ``r:lb``, ``r:tm``: the user's role fields (verified, labels, teams), once
- ``a:UAREF:N``: the user agents, stored once per user in pieces of 64 bytes (UAREF: 0, 1, ...),
  browsers' boilerplate phrases a byte each (:mod:`bastion.sessions.agents`)

Every value stays within 64 bytes, so the hash keeps Redis's compact listpack encoding in the
default configuration up to about 20 sessions. Before this layout each session had a hash of
its own beside a sorted set (:func:`old_user_sessions`, :func:`old_session`); those are moved
into the hash when met (see ``scripts.ADOPT``).
"""

from __future__ import annotations


def sessions(prefix: str, user_id: str) -> str:
    """Hash of all the user's sessions (see the module docstring for its fields)."""
    # sessions_around's parts, written out: every request with a session or JWT builds this.
    return f"{prefix}:{{{user_id}}}:s"


def sessions_around(prefix: str) -> tuple[str, str]:
    """What comes before and after the user id in every user's session hash (to SCAN for them)."""
    return f"{prefix}:{{", "}:s"


def old_user_sessions(prefix: str, user_id: str) -> str:
    """The old layout's sorted set of the user's session ids (read to move them, never written)."""
    head, tail = old_user_sessions_around(prefix)
    return f"{head}{user_id}{tail}"


def old_user_sessions_around(prefix: str) -> tuple[str, str]:
    """What comes before and after the user id in the old layout's sorted sets."""
    return f"{prefix}:{{", "}:sessions"


def old_session(prefix: str, user_id: str, session_id: str) -> str:
    """The old layout's hash of one session."""
    return f"{prefix}:{{{user_id}}}:session:{session_id}"


def user(prefix: str, user_id: str) -> str:
    """Hash of the user's account record (same hash tag as their sessions)."""
    return f"{prefix}:{{{user_id}}}:user"
