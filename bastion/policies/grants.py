"""Per-resource permissions as data (Appwrite's ``$permissions``), in Redis beside the resource.

A document (file, or any child resource ``CONTAINER/KIND/ID``) holds rows ``(role, action)``:
``read user:alice``, ``write team:t1/editor``. They are granted and revoked at run time, read in
the same round trip as the session when a request needs them, and count only where the container's
``document_security`` (``file_security``) is on.

Keys share the container's hash tag, so every script here touches one cluster slot:

* ``P:perm:{CONTAINER}:KIND/ID`` — a set of ``"action role"`` rows of one resource;
* ``P:permidx:{CONTAINER}:KIND:ACTION:ROLE`` — the ids of KIND children granting ACTION to
  ROLE, so a list endpoint learns which children a caller may see without a look-up per child.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.errors import Forbidden
from bastion.fronts import AsyncFront, OldStoreNames, SyncFront, step
from bastion.grammar import ACTIONS, POLICY_ACTIONS, is_resource
from bastion.identity import Identity, is_role
from bastion.policies.rules import Rule
from bastion.redisio import Call, Script, Steps

if TYPE_CHECKING:  # the engine (and pycasbin) loads when a policy is built, not with this module
    from bastion.policies.engine import PolicyEngine

SCRIPTS = {
    # KEYS: rows, index. ARGV: row, id. Returns 1 if the row is new.
    "perm_grant": """
redis.call('SADD', KEYS[2], ARGV[2])
return redis.call('SADD', KEYS[1], ARGV[1])
""",
    # KEYS: rows, index. ARGV: row, id. Returns 1 if the row existed.
    "perm_revoke": """
redis.call('SREM', KEYS[2], ARGV[2])
return redis.call('SREM', KEYS[1], ARGV[1])
""",
    # KEYS: rows, then the index of each row in ARGV. ARGV: id, then rows ("action role").
    # Removes those rows and the id from their indexes; returns {how many rows existed, the rows
    # still there} (granted meanwhile: their index keys were not known, so not declared here).
    "perm_clear": """
local removed = 0
for i = 2, #ARGV do
  removed = removed + redis.call('SREM', KEYS[1], ARGV[i])
  redis.call('SREM', KEYS[i], ARGV[1])
end
return {removed, redis.call('SMEMBERS', KEYS[1])}
""",
}


CLEAR_ROUNDS = 10
"""Rounds :meth:`GrantCore.clear` makes while rows keep being granted under it (one usually)."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True, slots=True)
class Child:
    """A resource that can hold its own permissions: ``CONTAINER/KIND/ID``."""

    container: str
    kind: str
    id: str

    @property
    def path(self) -> str:
        """The full resource path."""
        return f"{self.container}/{self.kind}/{self.id}"


def child_of(resource: str) -> Child | None:
    """Split a resource into container, kind and id; None if it has no container (< 3 segments)."""
    if not is_resource(resource):
        return None
    parts = resource.rsplit("/", 2)
    if len(parts) != 3:
        return None
    return Child(parts[0], parts[1], parts[2])


def _check(resource: str, role: str, action: str) -> Child:
    child = child_of(resource)
    if child is None:
        raise ValueError(
            f"{resource!r} cannot hold permissions: expected CONTAINER/KIND/ID, like "
            "databases/db1/collections/c1/documents/d1"
        )
    if not is_role(role):
        raise ValueError(f"{role!r} is not a role (any, users, user:ID, team:ID/ROLE, ...)")
    if action not in POLICY_ACTIONS:
        raise ValueError(f"{action!r} is not one of {', '.join(POLICY_ACTIONS)}")
    return child


@dataclass(frozen=True, slots=True)
class ChildFilter:
    """Which children of a container a caller may act on, as a predicate a query can use.

    ``all``: every child but those in ``excluded``; otherwise only the children in ``ids``.
    Push it into a query as ``WHERE id NOT IN excluded`` or ``WHERE id IN ids``.
    """

    all: bool
    ids: frozenset[str] = frozenset()
    excluded: frozenset[str] = frozenset()

    def allows(self, child_id: str) -> bool:
        """Whether the caller may act on this child."""
        if self.all:
            return child_id not in self.excluded
        return child_id in self.ids


class GrantCore:
    """Permission rows as sans-IO steps, with who may grant what and the list filter."""

    def __init__(
        self,
        key_prefix: str,
        engine: Callable[[], PolicyEngine],
        *,
        admin_roles: Iterable[str] = (),
        child_security: Iterable[str] = (),
    ) -> None:
        self._prefix = key_prefix
        self._engine = engine
        self._admin_roles = frozenset(admin_roles)
        self._child_security = frozenset(child_security)
        # Per engine, so a reload starts afresh and an old engine is not kept alive.
        self._specific: weakref.WeakKeyDictionary[PolicyEngine, dict[str, dict[str, list[Rule]]]]
        self._specific = weakref.WeakKeyDictionary()

    def _may_change(self, by: Identity | None, child: Child, role: str) -> Steps[None]:
        """Refuse a user who may not change ``child``'s permissions to name ``role``.

        Server code (``by=None``), API keys and ``admin_roles`` may change any. A user needs what
        Appwrite asks: ``update`` on the resource itself (the policy, plus the resource's own
        rows where its container's child security is on: one read, the rows), and to hold the
        role, so nobody hands out more than they have.
        """
        if by is None or by.is_scoped:
            return
        engine = self._engine()
        held = engine.expand_roles(by.roles)
        if held & self._admin_roles:
            return
        rows: list[tuple[str, str]] = []
        if child.container in self._child_security:
            rows = yield from self.rows_valid(child.path)
        if not engine.decide(by.roles, "update", child.path, rows).allowed:
            raise Forbidden(
                "You can only change the permissions of a resource you may update; you may not "
                f"update {child.path!r}."
            )
        if role not in held:
            raise Forbidden(f"You can only grant roles you hold; you do not hold {role!r}.")

    def _specific_rules(self, engine: PolicyEngine, prefix: str) -> dict[str, list[Rule]]:
        """Policy-file rules naming single children under ``prefix`` (built once per engine)."""
        per_engine = self._specific.setdefault(engine, {})
        found = per_engine.get(prefix)
        if found is None:
            found = {}
            for rule in engine.rules:
                obj = rule.obj
                if obj.startswith(prefix) and "/" not in obj[len(prefix) :] and obj[-1] != "*":
                    found.setdefault(obj[len(prefix) :], []).append(rule)
            per_engine[prefix] = found
        return found

    def _rows_key(self, child: Child) -> str:
        return self._rows_key_of(child.container, child.kind, child.id)

    def _rows_key_of(self, container: str, kind: str, child_id: str) -> str:
        return f"{self._prefix}:perm:{{{container}}}:{kind}/{child_id}"

    def _index_prefix(self, container: str, kind: str) -> str:
        return f"{self._prefix}:permidx:{{{container}}}:{kind}:"

    def grant(
        self, resource: str, role: str, action: str, *, by: Identity | None = None
    ) -> Steps[bool]:
        """Give ``role`` ``action`` on ``resource``; True if the row is new.

        ``by`` is the asking user (None: server code). A user needs ``update`` on ``resource``
        and must hold ``role`` (else ``Forbidden``); API keys and ``admin_roles`` may grant any.
        """
        child = _check(resource, role, action)
        yield from self._may_change(by, child, role)
        index = f"{self._index_prefix(child.container, child.kind)}{action}:{role}"
        added = yield Script(
            "perm_grant", [self._rows_key(child), index], [f"{action} {role}", child.id]
        )
        return bool(added)

    def revoke(
        self, resource: str, role: str, action: str, *, by: Identity | None = None
    ) -> Steps[bool]:
        """Take one row away; True if it existed (``by``: as for :meth:`grant`)."""
        child = _check(resource, role, action)
        yield from self._may_change(by, child, role)
        index = f"{self._index_prefix(child.container, child.kind)}{action}:{role}"
        removed = yield Script(
            "perm_revoke", [self._rows_key(child), index], [f"{action} {role}", child.id]
        )
        return bool(removed)

    def clear(self, resource: str) -> Steps[int]:
        """Delete every row of a resource (when it is deleted); returns how many there were."""
        child = child_of(resource)
        if child is None:
            return 0
        rows_key = self._rows_key(child)
        prefix = self._index_prefix(child.container, child.kind)
        rows = [_text(r) for r in (yield Call("smembers", (rows_key,)))]
        cleared = 0
        # The script declares each row's index key, so it must know the rows first; rows granted
        # between the read and the script come back and are cleared in the next round.
        for _ in range(CLEAR_ROUNDS):
            if not rows:
                break
            indexes = [prefix + row.replace(" ", ":", 1) for row in rows]
            removed, left = yield Script("perm_clear", [rows_key, *indexes], [child.id, *rows])
            cleared += int(removed)
            rows = [_text(r) for r in left]
        return cleared

    def rows(self, resource: str) -> Steps[list[tuple[str, str]]]:
        """The resource's own rows as ``(role, action)`` pairs, in a stable order."""
        if not is_resource(resource):
            return []
        return (yield from self.rows_valid(resource))

    def rows_valid(self, resource: str) -> Steps[list[tuple[str, str]]]:
        """:meth:`rows` for a resource already checked against the grammar (the route map's)."""
        parts = resource.rsplit("/", 2)
        if len(parts) != 3:
            return []
        container, kind, child_id = parts
        members = yield Call("smembers", (self._rows_key_of(container, kind, child_id),))
        pairs = []
        for member in members:
            action, _, role = (member.decode() if type(member) is bytes else member).partition(" ")
            pairs.append((role, action))
        pairs.sort()
        return pairs

    def ids_for(
        self, container: str, kind: str, roles: Iterable[str], action: str
    ) -> Steps[set[str]]:
        """Ids of KIND children of ``container`` whose rows give ``action`` to one of ``roles``."""
        if action not in ACTIONS:
            raise ValueError(f"{action!r} is not one of {', '.join(ACTIONS)}")
        granting = (action, "write") if action != "read" else (action,)
        prefix = self._index_prefix(container, kind)
        keys = [f"{prefix}{a}:{role}" for a in granting for role in sorted(roles)]
        if not keys:
            return set()
        members = yield Call("sunion", tuple(keys))
        return {m.decode() if isinstance(m, bytes) else m for m in members}

    def filter(
        self, identity: Identity, action: str, container: str, kind: str
    ) -> Steps[ChildFilter]:
        """Which ``KIND`` children of ``container`` the caller may ``action`` (for list endpoints).

        Policy lines on the container's children (``…/documents/*`` and above) decide "all";
        lines naming single children and, where child security is on, the children's own rows
        (from an index kept beside them) add or remove single ids.
        """
        if identity.is_scoped:
            return ChildFilter(True)  # keys skip resource permissions
        engine = self._engine()
        roles = engine.expand_roles(identity.roles)
        prefix = f"{container}/{kind}/"
        specific = self._specific_rules(engine, prefix)
        probe = "bastion-probe"
        while probe in specific:
            probe += "-"
        everyone = engine.decide(roles, action, prefix + probe).allowed
        from_rows: set[str] = set()
        if container in self._child_security:
            from_rows = yield from self.ids_for(container, kind, roles, action)
        if everyone:
            excluded = {i for i in specific if not engine.decide(roles, action, prefix + i).allowed}
            return ChildFilter(True, excluded=frozenset(excluded - from_rows))
        ids = {i for i in specific if engine.decide(roles, action, prefix + i).allowed}
        return ChildFilter(False, ids=frozenset(ids | from_rows))


class _GrantSteps:
    """Per-resource permissions as users see them: ``bastion.permissions`` and its sync twin."""

    grant = step(GrantCore.grant)
    revoke = step(GrantCore.revoke)
    filter = step(GrantCore.filter)
    clear = step(GrantCore.clear)
    list = step(GrantCore.rows)
    ids_for = step(GrantCore.ids_for)


class AsyncGrantStore(_GrantSteps, OldStoreNames, AsyncFront[GrantCore]):
    """``bastion.permissions``: per-resource permissions for asyncio code."""


class SyncGrantStore(_GrantSteps, OldStoreNames, SyncFront[GrantCore]):
    """``bastion.sync.permissions``: the same methods for threaded code."""
