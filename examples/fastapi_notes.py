"""The notes example on FastAPI: ``uvicorn examples.fastapi_notes:app`` (API docs at /docs).

Bastion decides who may call each route before the app runs (the route map and ``policy.csv``
in ``examples/notes/``, and each note's own permission rows); the views store notes, grant their
creator the note, and ask Bastion which notes a caller may list. Settings come from
``examples/notes/bastion.toml``, overridden by ``BASTION_*`` variables (``BASTION_REDIS_URL``;
without one, the embedded development Redis).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from bastion import Bastion, Identity, Settings
from bastion.adapters.fastapi import account_router, current_identity
from bastion.errors import (
    BadRequest,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    UnsupportedMediaType,
)
from examples import notestore
from examples.notestore import AsyncNotes, resource


class NoteIn(BaseModel):
    """A new note."""

    model_config = ConfigDict(extra="forbid", strict=True)
    title: str = Field(min_length=1, max_length=notestore.MAX_TITLE, pattern=r"\S")
    body: str = Field(default="", max_length=notestore.MAX_TEXT)


class NoteChanges(BaseModel):
    """The fields a PATCH changes."""

    model_config = ConfigDict(extra="forbid", strict=True)
    title: str | None = Field(default=None, min_length=1, max_length=notestore.MAX_TITLE)
    body: str | None = Field(default=None, max_length=notestore.MAX_TEXT)


class Share(BaseModel):
    """Whom to give which actions on a note."""

    model_config = ConfigDict(extra="forbid", strict=True)
    role: str = Field(min_length=1, examples=["user:USER_ID", "users"])
    actions: list[Literal["read", "update", "delete", "write"]] = Field(min_length=1)


class Note(BaseModel):
    """A note as the API returns it."""

    id: str
    title: str
    body: str
    owner: str


class Notes(BaseModel):
    """The notes the caller may read."""

    notes: list[Note]


async def json_body(request: Request) -> None:
    """Refuse what is no JSON body of an acceptable size before FastAPI reads it."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise UnsupportedMediaType("Send the body as JSON (Content-Type: application/json).")
    if int(request.headers.get("content-length") or 0) > notestore.MAX_BODY:
        raise PayloadTooLarge(notestore.MAX_BODY)


# Users and API keys; guests are refused by the route map before any of this runs.
Caller = Annotated[Identity, Depends(current_identity())]
JSONBody = Depends(json_body)


def create_app(settings: Settings | None = None) -> Any:
    """The notes app on ``settings`` (default: the example's bastion.toml and BASTION_*)."""
    bastion = Bastion(settings or Settings.load(notestore.CONFIG))
    notes = AsyncNotes(bastion.redis)
    api = FastAPI(title="Bastion notes", lifespan=bastion.lifespan)
    api.include_router(account_router(bastion))

    @api.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        # The same JSON error as every other refusal, rather than FastAPI's 422.
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ())[1:]) or "body"
        error = BadRequest(f"{where}: {first.get('msg', 'invalid')}.")
        return JSONResponse(error.to_dict(), status_code=error.status)

    @api.get("/", include_in_schema=False)
    @api.get("/static/{name}", include_in_schema=False)
    async def page(name: str = "index.html") -> FileResponse:
        path, media_type = notestore.page_file(name)
        return FileResponse(path, media_type=media_type, headers=notestore.PAGE_HEADERS)

    @api.get("/notes")
    async def list_notes(who: Caller) -> Notes:
        # Which notes the caller may read, without a look-up per note.
        allowed = await bastion.permissions.filter(who, "read", notestore.COLLECTION, "documents")
        ids = [i for i in await notes.all_ids() if allowed.allows(i)]
        return Notes(notes=[Note(**n) for n in await notes.many(ids)])

    @api.post("/notes", status_code=201, dependencies=[JSONBody])
    async def create_note(new: NoteIn, who: Caller) -> Note:
        note = await notes.create(new.title, new.body, owner=who.identity)
        if who.user_id:  # a user's note is theirs; an API key is no user and gets no rows
            for action in notestore.OWNER_ACTIONS:
                await bastion.permissions.grant(resource(note["id"]), f"user:{who.user_id}", action)
        return Note(**note)

    @api.get("/notes/{id}")
    async def get_note(id: str, who: Caller) -> Note:
        note = await notes.get(id)
        if note is None:
            raise NotFound()
        return Note(**note)

    @api.patch("/notes/{id}", dependencies=[JSONBody])
    async def update_note(id: str, changes: NoteChanges, who: Caller) -> Note:
        fields = changes.model_dump(exclude_none=True)
        if not fields:
            raise BadRequest("Give a title or a body to change.")
        if "title" in fields and not fields["title"].strip():
            raise BadRequest("title must be a non-empty string.")
        note = await notes.update(id, fields)
        if note is None:
            raise NotFound()
        return Note(**note)

    @api.delete("/notes/{id}", status_code=204)
    async def delete_note(id: str, who: Caller) -> Response:
        if not await notes.delete(id):
            raise NotFound()
        await bastion.permissions.clear(resource(id))  # its rows go with it
        return Response(status_code=204)

    @api.post("/notes/{id}/share", dependencies=[JSONBody])
    async def share_note(id: str, share: Share, who: Caller) -> dict[str, Any]:
        if await notes.get(id) is None:
            raise NotFound()
        actions = list(dict.fromkeys(share.actions))
        # Sharing with a person names them (user:ID); any other role must be one the caller
        # holds, which Bastion checks when given who asks (by=).
        person = notestore.shared_user(share.role)
        if person is not None and await bastion.users.get(person) is None:
            raise NotFound(f"There is no user {person!r}.")
        try:
            for action in actions:
                await bastion.permissions.grant(
                    resource(id), share.role, action, by=None if person else who
                )
        except Forbidden:
            raise Unauthorized(
                "You can only share with a person (user:ID) or a role you hold, "
                f"not {share.role!r}."
            ) from None
        except ValueError as exc:  # not a role of Bastion's grammar
            raise BadRequest(str(exc)) from None
        rows = await bastion.permissions.list(resource(id))
        return {"id": id, "permissions": [list(row) for row in rows]}

    return bastion.asgi(api)


def __getattr__(name: str) -> Any:
    # `app` is built when a server asks for it, so importing create_app (as `bastion demo` and
    # the tests do) builds no app on the default settings.
    if name == "app":
        globals()["app"] = built = create_app()
        return built
    raise AttributeError(name)
