"""Credentials: where they travel (transports) by how they are checked (backends), registered.

* :mod:`~bastion.credentials.transports`: ``Cookie``, ``Header``, ``Authorization``.
* :mod:`~bastion.credentials.backend`: ``CredentialBackend``, the one interface of every kind.
* :mod:`~bastion.credentials.builtin`: the session, JWT and API-key backends.
* :mod:`~bastion.credentials.registry`: the registered kinds of a Bastion, and the rules that
  find a request's one credential (precedence, one kind per request).

An app adds a kind with ``Bastion(settings, credentials=[MyBackend()])``.
"""

from bastion.credentials.backend import CredentialBackend, CredentialRequest
from bastion.credentials.registry import (
    MAX_CREDENTIAL_LENGTH,
    NO_CREDENTIALS,
    CredentialRegistry,
    Credentials,
)
from bastion.credentials.transports import Authorization, Cookie, Header, Transport
from bastion.identity import user_roles

__all__ = [
    "MAX_CREDENTIAL_LENGTH",
    "NO_CREDENTIALS",
    "Authorization",
    "Cookie",
    "CredentialBackend",
    "CredentialRegistry",
    "CredentialRequest",
    "Credentials",
    "Header",
    "Transport",
    "user_roles",
]
