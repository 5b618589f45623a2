"""Actions and resource paths: what a policy line and a request may contain.

A resource path is ``segment/segment/...``: ``databases/db1/collections/c1/documents/d1``,
``buckets/b1/files/f1`` or any other path a team invents.

* Segments hold letters, digits and ``. _ @ : + -`` (so ids such as ``user:42``, ``a.b`` and
  ``me@example.com`` work), at most 255 characters each, at most 32 segments and 1,024 characters
  in all. No empty segment (``//``), no leading or trailing ``/``, no ``.`` or ``..`` segment
  (a dot inside an id, as in ``a.b``, is fine).
* ``*`` appears only in policy lines and only as a whole trailing segment: ``buckets/b1/*`` grants
  on every path below ``buckets/b1`` (not on ``buckets/b1`` itself) and ``*`` alone on every path.
  Casbin's ``keyMatch`` reads any ``*`` as "any suffix from here", so ``notes*`` would also match
  ``notes2/secret``; the grammar refuses it.
* Percent signs are refused everywhere. The caller decodes the URL exactly once before building a
  resource (Starlette's path parameters are already decoded); anything still holding ``%`` was
  encoded twice, and ``%2e%2e`` or ``%2F`` must never turn into ``..`` or a separator later.
  A decoded id that contains ``/`` is caught by :func:`resource`, which joins single segments.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from bastion.identity import is_role

__all__ = [
    "ACTIONS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_SEGMENT",
    "POLICY_ACTIONS",
    "covering_objects",
    "is_action",
    "is_policy_action",
    "is_resource",
    "is_resource_pattern",
    "is_role",
    "normalized_resource",
    "resource",
    "resource_problem",
]

ACTIONS: Final = ("read", "create", "update", "delete")
"""The actions a request asks for."""

POLICY_ACTIONS: Final = (*ACTIONS, "write")
"""The actions a policy line may grant; ``write`` is create + update + delete, never read."""

MAX_SEGMENT: Final = 255
MAX_LENGTH: Final = 1024
# Bounds the dict look-ups of one decision (one per ancestor), whatever the caller sends.
MAX_DEPTH: Final = 32

_SEGMENT_CHARS = r"A-Za-z0-9._@:+\-"
_SEGMENT = re.compile(rf"[{_SEGMENT_CHARS}]{{1,{MAX_SEGMENT}}}")
_PATH = re.compile(
    rf"[{_SEGMENT_CHARS}]{{1,{MAX_SEGMENT}}}(?:/[{_SEGMENT_CHARS}]{{1,{MAX_SEGMENT}}})*"
)
_BAD_CHAR = re.compile(rf"[^{_SEGMENT_CHARS}/*]")
_DOTS = frozenset({".", ".."})


def is_action(value: str) -> bool:
    """Whether ``value`` is an action a request may ask for (read, create, update, delete)."""
    return value in ACTIONS


def is_policy_action(value: str) -> bool:
    """Whether ``value`` is an action a policy line may grant (the four, or ``write``)."""
    return value in POLICY_ACTIONS


def is_resource(path: str) -> bool:
    """Whether ``path`` is a valid resource path for a request (no ``*``)."""
    if len(path) > MAX_LENGTH or _PATH.fullmatch(path) is None:
        return False
    if path.count("/") >= MAX_DEPTH:
        return False
    # Only paths holding a dot can hold a "." or ".." segment; most ids have none.
    return "." not in path or _DOTS.isdisjoint(path.split("/"))


def is_resource_pattern(path: str) -> bool:
    """Whether ``path`` is a valid policy object: a resource, ``PREFIX/*`` or ``*``."""
    if path == "*":
        return True
    if path.endswith("/*"):
        return is_resource(path[:-2])
    return is_resource(path)


def resource_problem(path: str, *, pattern: bool = False) -> str | None:
    """Why ``path`` is refused as a request resource (or a policy object), or None when valid."""
    if (is_resource_pattern if pattern else is_resource)(path):
        return None
    if path == "":
        return "the resource path is empty"
    if "%" in path:
        return (
            "percent-encoded characters are refused in resource paths: decode the URL once "
            "and build the resource from the decoded segments"
        )
    if len(path) > MAX_LENGTH:
        return f"the resource path is longer than {MAX_LENGTH} characters"
    if path != path.strip():
        return "the resource path starts or ends with whitespace"
    if path.startswith("/"):
        return "the resource path starts with '/' (write 'databases/db1', not '/databases/db1')"
    if path.endswith("/"):
        return "the resource path ends with '/'"
    segments = path.split("/")
    if "" in segments:
        return "the resource path has an empty segment ('//')"
    if len(segments) > MAX_DEPTH:
        return f"the resource path has more than {MAX_DEPTH} segments"
    for index, segment in enumerate(segments):
        if segment in _DOTS:
            return f"'{segment}' segments are refused in resource paths"
        if "*" in segment:
            if not pattern:
                return "'*' is not allowed in a requested resource"
            if segment != "*" or index != len(segments) - 1:
                return (
                    "'*' is allowed only as a whole trailing segment ('buckets/b1/*'): "
                    "keyMatch reads any other '*' as a prefix match"
                )
        if len(segment) > MAX_SEGMENT:
            return f"a segment is longer than {MAX_SEGMENT} characters"
    bad = _BAD_CHAR.search(path)
    if bad is not None:
        return (
            f"character {bad.group()!r} is not allowed in resource paths "
            "(letters, digits and . _ @ : + - only)"
        )
    return "the resource path is not valid"  # pragma: no cover - every case is named above


def normalized_resource(path: str, *, pattern: bool = False) -> str | None:
    """The canonical spelling of a sloppy path (``/a//b/./c/`` → ``a/b/c``), or None.

    ``..`` is never resolved: what it would point at is a guess, and a policy line should say
    exactly what it grants.
    """
    segments = [s for s in path.strip().split("/") if s not in ("", ".")]
    candidate = "/".join(segments)
    valid = is_resource_pattern(candidate) if pattern else is_resource(candidate)
    return candidate if valid and candidate != path else None


def is_segment(value: str) -> bool:
    """Whether ``value`` can be one segment of a resource path (``.`` and ``..`` cannot)."""
    return _SEGMENT.fullmatch(value) is not None and value not in _DOTS


def resource(*segments: str) -> str:
    """Join single segments into a resource path, refusing any segment that is not one segment.

    ``resource("databases", db, "documents", doc_id)`` with a decoded ``doc_id`` of ``"../x"``
    raises instead of producing a path that climbs.
    """
    if not segments:
        raise ValueError("a resource needs at least one segment")
    for segment in segments:
        if _SEGMENT.fullmatch(segment) is None or segment in _DOTS:
            shown = segment if len(segment) <= 64 else segment[:61] + "..."
            raise ValueError(f"invalid resource segment {shown!r}")
    path = "/".join(segments)
    problem = resource_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return path


def covering_objects(path: str, depths: Sequence[int] | None = None) -> list[str]:
    """Every policy object that can match the valid request ``path``.

    ``a/b/c`` → ``["a/b/c", "a/*", "a/b/*", "*"]``. keyMatch(``a/b/c``, ``a/b/c/*``) is False
    (the prefix before ``*`` is ``a/b/c/``, longer than the path), so a path's own ``/*`` is not
    among them: a grant on ``…/documents/*`` covers the documents, not the collection.
    ``depths`` (ascending) keeps only the ``PREFIX/*`` objects whose prefix has that many
    segments, and ``*`` only when it includes 0.
    """
    parts = path.split("/")
    objects = [path]
    if depths is None:
        prefix = ""
        for segment in parts[:-1]:
            prefix += segment + "/"
            objects.append(prefix + "*")
        objects.append("*")
        return objects
    last = len(parts)
    for depth in depths:
        if depth == 0:
            objects.append("*")
        elif depth < last:
            objects.append("/".join(parts[:depth]) + "/*")
        else:
            break
    return objects
