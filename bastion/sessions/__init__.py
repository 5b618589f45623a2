"""Sessions on Redis: key layout, Lua scripts, and the async and sync stores over one core."""

from bastion.sessions.store import (
    ActiveSession,
    AsyncSessionStore,
    NewSession,
    SessionCore,
    SessionInfo,
    SyncSessionStore,
)

__all__ = [
    "ActiveSession",
    "AsyncSessionStore",
    "NewSession",
    "SessionCore",
    "SessionInfo",
    "SyncSessionStore",
]
