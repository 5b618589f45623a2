"""Bastion: sessions, permissions and password safety for ASGI and WSGI apps."""

from bastion.core import Bastion
from bastion.errors import BastionError, ConfigError
from bastion.identity import Identity
from bastion.middleware.asgi import BastionMiddleware
from bastion.sessions import NewSession, SessionInfo
from bastion.settings import Settings

__all__ = [
    "Bastion",
    "BastionError",
    "BastionMiddleware",
    "ConfigError",
    "Identity",
    "NewSession",
    "SessionInfo",
    "Settings",
]
__version__ = "0.1.0"
