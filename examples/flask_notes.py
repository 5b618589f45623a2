"""The notes example on Flask: ``flask --app examples/flask_notes run``.

Bastion decides who may call each route before the app runs (the route map and ``policy.csv``
in ``examples/notes/``, and each note's own permission rows); the views store notes, grant their
creator the note, and ask Bastion which notes a caller may list. Settings come from
``examples/notes/bastion.toml``, overridden by ``BASTION_*`` variables (``BASTION_REDIS_URL``;
without one, the embedded development Redis).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request, send_file

from bastion import Bastion, Settings
from bastion.adapters.flask import current_identity, init_app
from bastion.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge, Unauthorized
from examples import notestore
from examples.notestore import SyncNotes, resource


def read_body() -> dict[str, Any]:
    """The request's JSON object, read no further than the size the app accepts."""
    body = request.stream.read(notestore.MAX_BODY + 1)
    if len(body) > notestore.MAX_BODY:
        raise PayloadTooLarge(notestore.MAX_BODY)
    return notestore.read_json(request.headers.get("Content-Type"), body)


def create_app(settings: Settings | None = None) -> Flask:
    """The notes app on ``settings`` (default: the example's bastion.toml and BASTION_*)."""
    bastion = Bastion(settings or Settings.load(notestore.CONFIG))
    notes = SyncNotes(bastion.sync.redis)
    permissions = bastion.sync.permissions
    app = Flask(__name__, static_folder=None)  # /static/<name> is the page's own route
    init_app(app, bastion)  # the middleware, JSON errors and the account routes

    @app.get("/")
    @app.get("/static/<name>")
    def page(name: str = "index.html") -> Any:
        path, media_type = notestore.page_file(name)
        response = send_file(path, mimetype=media_type.split(";")[0])  # Flask adds the charset
        response.headers.update(notestore.PAGE_HEADERS)
        return response

    @app.get("/notes")
    def list_notes() -> Any:
        # Which notes the caller may read, without a look-up per note.
        allowed = permissions.filter(current_identity(), "read", notestore.COLLECTION, "documents")
        ids = [i for i in notes.all_ids() if allowed.allows(i)]
        return {"notes": notes.many(ids)}

    @app.post("/notes")
    def create_note() -> Any:
        title, text = notestore.new_note(read_body())
        who = current_identity()
        note = notes.create(title, text, owner=who.identity)
        if who.user_id:  # a user's note is theirs; an API key is no user and gets no rows
            for action in notestore.OWNER_ACTIONS:
                permissions.grant(resource(note["id"]), f"user:{who.user_id}", action)
        return note, 201

    @app.get("/notes/<id>")
    def get_note(id: str) -> Any:
        note = notes.get(id)
        if note is None:
            raise NotFound()
        return note

    @app.patch("/notes/<id>")
    def update_note(id: str) -> Any:
        note = notes.update(id, notestore.note_changes(read_body()))
        if note is None:
            raise NotFound()
        return note

    @app.delete("/notes/<id>")
    def delete_note(id: str) -> Any:
        if not notes.delete(id):
            raise NotFound()
        permissions.clear(resource(id))  # its rows go with it
        return "", 204

    @app.post("/notes/<id>/share")
    def share_note(id: str) -> Any:
        role, actions = notestore.share_request(read_body())
        if notes.get(id) is None:
            raise NotFound()
        # Sharing with a person names them (user:ID); any other role must be one the caller
        # holds, which Bastion checks when given who asks (by=).
        person = notestore.shared_user(role)
        if person is not None and bastion.sync.users.get(person) is None:
            raise NotFound(f"There is no user {person!r}.")
        try:
            for action in actions:
                permissions.grant(
                    resource(id), role, action, by=None if person else current_identity()
                )
        except Forbidden:
            raise Unauthorized(
                f"You can only share with a person (user:ID) or a role you hold, not {role!r}."
            ) from None
        except ValueError as exc:  # not a role of Bastion's grammar
            raise BadRequest(str(exc)) from None
        return {"id": id, "permissions": [list(row) for row in permissions.list(resource(id))]}

    return app


def __getattr__(name: str) -> Any:
    # `app` is built when a server asks for it, so importing create_app (as `bastion demo` and
    # the tests do) builds no app on the default settings.
    if name == "app":
        globals()["app"] = built = create_app()
        return built
    raise AttributeError(name)
