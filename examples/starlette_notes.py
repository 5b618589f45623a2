"""The notes example on Starlette: ``uvicorn examples.starlette_notes:app``.

Bastion decides who may call each route before the app runs (the route map and ``policy.csv``
in ``examples/notes/``, and each note's own permission rows); the views store notes, grant their
creator the note, and ask Bastion which notes a caller may list. Settings come from
``examples/notes/bastion.toml``, overridden by ``BASTION_*`` variables (``BASTION_REDIS_URL``;
without one, the embedded development Redis).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.adapters.starlette import account_routes
from bastion.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized
from examples import notestore
from examples.notestore import AsyncNotes, resource


async def read_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read no further than the size the app accepts."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > notestore.MAX_BODY:
            raise PayloadTooLarge(notestore.MAX_BODY)
    return notestore.read_json(request.headers.get("content-type"), body)


def create_app(settings: Settings | None = None) -> Any:
    """The notes app on ``settings`` (default: the example's bastion.toml and BASTION_*)."""
    bastion = Bastion(settings or Settings.load(notestore.CONFIG))
    notes = AsyncNotes(bastion.redis)

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "index.html")
        path, media_type = notestore.page_file(name)
        return FileResponse(path, media_type=media_type, headers=notestore.PAGE_HEADERS)

    async def list_notes(request: Request) -> Response:
        # Which notes the caller may read, without a look-up per note.
        allowed = await bastion.permissions.filter(
            request.user, "read", notestore.COLLECTION, "documents"
        )
        ids = [i for i in await notes.all_ids() if allowed.allows(i)]
        return JSONResponse({"notes": await notes.many(ids)})

    async def create_note(request: Request) -> Response:
        title, text = notestore.new_note(await read_body(request))
        who = request.user
        note = await notes.create(title, text, owner=who.identity)
        if who.user_id:  # a user's note is theirs; an API key is no user and gets no rows
            for action in notestore.OWNER_ACTIONS:
                await bastion.permissions.grant(resource(note["id"]), f"user:{who.user_id}", action)
        return JSONResponse(note, status_code=201)

    async def get_note(request: Request) -> Response:
        note = await notes.get(request.path_params["id"])
        if note is None:
            raise NotFound()
        return JSONResponse(note)

    async def update_note(request: Request) -> Response:
        changes = notestore.note_changes(await read_body(request))
        note = await notes.update(request.path_params["id"], changes)
        if note is None:
            raise NotFound()
        return JSONResponse(note)

    async def delete_note(request: Request) -> Response:
        note_id = request.path_params["id"]
        if not await notes.delete(note_id):
            raise NotFound()
        await bastion.permissions.clear(resource(note_id))  # its rows go with it
        return Response(status_code=204)

    async def share_note(request: Request) -> Response:
        note_id = request.path_params["id"]
        role, actions = notestore.share_request(await read_body(request))
        if await notes.get(note_id) is None:
            raise NotFound()
        who = request.user
        # Sharing with a person names them (user:ID); any other role must be one the caller
        # holds, which Bastion checks when given who asks (by=).
        person = notestore.shared_user(role)
        if person is not None and await bastion.users.get(person) is None:
            raise NotFound(f"There is no user {person!r}.")
        try:
            for action in actions:
                await bastion.permissions.grant(
                    resource(note_id), role, action, by=None if person else who
                )
        except Forbidden:
            raise Unauthorized(
                f"You can only share with a person (user:ID) or a role you hold, not {role!r}."
            ) from None
        except ValueError as exc:  # not a role of Bastion's grammar
            raise BadRequest(str(exc)) from None
        rows = await bastion.permissions.list(resource(note_id))
        return JSONResponse({"id": note_id, "permissions": [list(row) for row in rows]})

    return bastion.asgi(
        Starlette(
            routes=[
                Route("/", page),
                Route("/static/{name}", page),
                Route("/notes", list_notes, methods=["GET"]),
                Route("/notes", create_note, methods=["POST"]),
                Route("/notes/{id}", get_note, methods=["GET"]),
                Route("/notes/{id}", update_note, methods=["PATCH"]),
                Route("/notes/{id}", delete_note, methods=["DELETE"]),
                Route("/notes/{id}/share", share_note, methods=["POST"]),
                *account_routes(bastion),
            ],
            lifespan=bastion.lifespan,
        )
    )


def __getattr__(name: str) -> Any:
    # `app` is built when a server asks for it, so importing create_app (as `bastion demo` and
    # the tests do) builds no app on the default settings.
    if name == "app":
        globals()["app"] = built = create_app()
        return built
    raise AttributeError(name)
