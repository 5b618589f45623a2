"""Bastion: sessions, permissions and password safety for ASGI and WSGI apps."""

from bastion.audit import AuditEvent
from bastion.core import Bastion
from bastion.errors import BastionError, ConfigError, PasswordRejected
from bastion.identity import Identity
from bastion.middleware.asgi import BastionMiddleware
from bastion.middleware.wsgi import BastionWSGIMiddleware
from bastion.passwords.checks import PasswordCheck, PasswordContext
from bastion.policies.diagnostics import PolicyError
from bastion.secret import Secret
from bastion.sessions import NewSession, SessionInfo
from bastion.sessions.cache import SessionCacheStats
from bastion.settings import JWTKey, Settings
from bastion.users import SyncUserStore, User, UserStore

__all__ = [
    "AuditEvent",
    "Bastion",
    "BastionError",
    "BastionMiddleware",
    "BastionWSGIMiddleware",
    "ConfigError",
    "Identity",
    "JWTKey",
    "NewSession",
    "PasswordCheck",
    "PasswordContext",
    "PasswordRejected",
    "PolicyError",
    "Secret",
    "SessionCacheStats",
    "SessionInfo",
    "Settings",
    "SyncUserStore",
    "User",
    "UserStore",
]
__version__ = "0.1.0"  # the one version: pyproject.toml reads it from here
