"""Users: the record, the store protocol (async and sync), and the default store on Redis.

An app that keeps its users in a database of its own passes a store as ``Bastion(users=...)``:
any object with the methods of :class:`UserStore` (``async def``) or :class:`SyncUserStore`
(plain ``def``); :mod:`bastion.users.sqlalchemy` is one for SQLAlchemy 2.0 (the
``sqlalchemy`` extra, imported only by whoever imports it). Sessions, roles for requests and
Bastion's marks stay in Redis whatever store keeps the records. Without a store, records live
in Redis (:mod:`bastion.users.redis`). Apps read and change users through ``bastion.users`` and
``bastion.sync.users`` (:mod:`bastion.user_admin`).
"""

# The names code imported from bastion.users before it was a package stay importable here.
from bastion.emails import normalize_email as normalize_email
from bastion.users.protocol import SyncUserStore, UserStore, UserStoreMismatch
from bastion.users.record import User, new_id, validate_profile
from bastion.users.redis import (
    SCRIPTS,
    RedisUserStore,
    SyncRedisUserStore,
    UserCore,
    roles_from_fields,
)

__all__ = [
    "SCRIPTS",
    "RedisUserStore",
    "SyncRedisUserStore",
    "SyncUserStore",
    "User",
    "UserCore",
    "UserStore",
    "UserStoreMismatch",
    "new_id",
    "normalize_email",
    "roles_from_fields",
    "validate_profile",
]
