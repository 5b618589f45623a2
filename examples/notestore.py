"""The notes example's own code, shared by its three apps: the notes in Redis and their input.

This is plain app code, not Bastion's: a hash per note and a sorted set of ids by creation,
kept in the Redis Bastion uses (``bastion.redis`` / ``bastion.sync.redis``), so the demo's
embedded Redis holds them too. Who may see or change a note is Bastion's business (the route
map, ``policy.csv`` and each note's permission rows); this module only stores and checks input.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bastion.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType

CONFIG = Path(__file__).parent / "notes" / "bastion.toml"
"""The team's files: this route map and settings, ``policy.csv`` and its tests beside it."""

COLLECTION = "databases/main/collections/notes"
OWNER_ACTIONS = ("read", "update", "delete")
"""What the creator of a note gets on it."""
SHARE_ACTIONS = ("read", "update", "delete", "write")
MAX_BODY = 16_384
MAX_TITLE, MAX_TEXT = 200, 10_000

PAGE_DIR = Path(__file__).parent / "notes" / "page"
PAGE_FILES = {
    "index.html": "text/html; charset=utf-8",
    "notes.js": "text/javascript; charset=utf-8",
    "notes.css": "text/css; charset=utf-8",
}
PAGE_HEADERS = {
    # The page loads nothing from elsewhere and runs only its own script.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

_PREFIX = "notes"


def resource(note_id: str) -> str:
    """The Bastion resource of a note."""
    return f"{COLLECTION}/documents/{note_id}"


def page_file(name: str) -> tuple[Path, str]:
    """The file and media type of one of the page's files (404 for any other name)."""
    if name not in PAGE_FILES:
        raise NotFound()
    return PAGE_DIR / name, PAGE_FILES[name]


def read_json(content_type: str | None, body: bytes) -> dict[str, Any]:
    """A JSON object body, or the error the client gets (415, 413, 400)."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType("Send the body as JSON (Content-Type: application/json).")
    if len(body) > MAX_BODY:
        raise PayloadTooLarge(MAX_BODY)
    try:
        data = json.loads(body)
    except ValueError:
        raise BadRequest("The body is not valid JSON.") from None
    if not isinstance(data, dict):
        raise BadRequest("The body must be a JSON object.")
    return data


def _text(data: dict[str, Any], name: str, limit: int, *, required: bool) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (name == "title" and not value.strip()):
        raise BadRequest(f"{name} must be a non-empty string." if required else f"{name}: text.")
    if len(value) > limit:
        raise BadRequest(f"{name} is longer than {limit} characters.")
    return value


def new_note(data: dict[str, Any]) -> tuple[str, str]:
    """Title and body of a note to create."""
    title = _text(data, "title", MAX_TITLE, required=True)
    text = _text(data, "body", MAX_TEXT, required=False) or ""
    assert title is not None
    return title, text


def note_changes(data: dict[str, Any]) -> dict[str, str]:
    """The fields a PATCH changes (title, body; at least one)."""
    unknown = sorted(set(data) - {"title", "body"})
    if unknown:
        raise BadRequest(f"Unknown field {unknown[0]!r}: a note has a title and a body.")
    changes = {
        name: value
        for name, limit in (("title", MAX_TITLE), ("body", MAX_TEXT))
        if (value := _text(data, name, limit, required=False)) is not None
    }
    if not changes:
        raise BadRequest("Give a title or a body to change.")
    return changes


def share_request(data: dict[str, Any]) -> tuple[str, list[str]]:
    """The role and actions of a share (the role's grammar is checked by Bastion's grant)."""
    role, actions = data.get("role"), data.get("actions")
    if not isinstance(role, str) or not role:
        raise BadRequest("role must be a role like user:ID, users or team:ID.")
    if (
        not isinstance(actions, list)
        or not actions
        or not all(isinstance(a, str) and a in SHARE_ACTIONS for a in actions)
    ):
        raise BadRequest(f"actions must be a non-empty list of {', '.join(SHARE_ACTIONS)}.")
    return role, list(dict.fromkeys(actions))


def shared_user(role: str) -> str | None:
    """The user id a share names (``user:ID``), or None for any other role."""
    kind, _, rest = role.partition(":")
    return rest if kind == "user" and rest and "/" not in rest else None


def _key(note_id: str) -> str:
    return f"{_PREFIX}:note:{note_id}"


def _record(note_id: str, title: str, text: str, owner: str) -> dict[str, str]:
    return {"id": note_id, "title": title, "body": text, "owner": owner}


def _note(raw: dict[Any, Any]) -> dict[str, str] | None:
    if not raw:
        return None
    fields = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }
    return {name: fields.get(name, "") for name in ("id", "title", "body", "owner")}


def _ids(raw: Iterable[Any]) -> list[str]:
    return [i.decode() if isinstance(i, bytes) else i for i in raw]


class AsyncNotes:
    """The notes in Redis, for asyncio apps (``redis.asyncio``)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    async def create(self, title: str, text: str, owner: str) -> dict[str, str]:
        """Store a new note; returns it with its new id."""
        note_id = secrets.token_hex(8)
        record = _record(note_id, title, text, owner)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_key(note_id), mapping=record)
            pipe.zadd(f"{_PREFIX}:ids", {note_id: time.time()})
            await pipe.execute()
        return record

    async def get(self, note_id: str) -> dict[str, str] | None:
        """The note, or None."""
        return _note(await self.redis.hgetall(_key(note_id)))

    async def update(self, note_id: str, changes: dict[str, str]) -> dict[str, str] | None:
        """Change a note's fields; None if there is no such note."""
        if not await self.redis.exists(_key(note_id)):
            return None
        await self.redis.hset(_key(note_id), mapping=changes)
        return await self.get(note_id)

    async def delete(self, note_id: str) -> bool:
        """Delete a note; False if there was none."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_key(note_id))
            pipe.zrem(f"{_PREFIX}:ids", note_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def all_ids(self) -> list[str]:
        """Every note's id, newest first."""
        return _ids(await self.redis.zrevrange(f"{_PREFIX}:ids", 0, -1))

    async def many(self, ids: Iterable[str]) -> list[dict[str, str]]:
        """The notes with these ids that exist, in the order given."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for note_id in ids:
                pipe.hgetall(_key(note_id))
            found = await pipe.execute()
        return [note for raw in found if (note := _note(raw)) is not None]


class SyncNotes:
    """The notes in Redis, for threaded apps (the blocking ``redis`` client)."""

    def __init__(self, redis: Any) -> None:
        self.redis = redis

    def create(self, title: str, text: str, owner: str) -> dict[str, str]:
        """Store a new note; returns it with its new id."""
        note_id = secrets.token_hex(8)
        record = _record(note_id, title, text, owner)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(_key(note_id), mapping=record)
            pipe.zadd(f"{_PREFIX}:ids", {note_id: time.time()})
            pipe.execute()
        return record

    def get(self, note_id: str) -> dict[str, str] | None:
        """The note, or None."""
        return _note(self.redis.hgetall(_key(note_id)))

    def update(self, note_id: str, changes: dict[str, str]) -> dict[str, str] | None:
        """Change a note's fields; None if there is no such note."""
        if not self.redis.exists(_key(note_id)):
            return None
        self.redis.hset(_key(note_id), mapping=changes)
        return self.get(note_id)

    def delete(self, note_id: str) -> bool:
        """Delete a note; False if there was none."""
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_key(note_id))
            pipe.zrem(f"{_PREFIX}:ids", note_id)
            deleted, _ = pipe.execute()
        return bool(deleted)

    def all_ids(self) -> list[str]:
        """Every note's id, newest first."""
        return _ids(self.redis.zrevrange(f"{_PREFIX}:ids", 0, -1))

    def many(self, ids: Iterable[str]) -> list[dict[str, str]]:
        """The notes with these ids that exist, in the order given."""
        with self.redis.pipeline(transaction=False) as pipe:
            for note_id in ids:
                pipe.hgetall(_key(note_id))
            found = pipe.execute()
        return [note for raw in found if (note := _note(raw)) is not None]
