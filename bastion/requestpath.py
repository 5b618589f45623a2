"""The one path Bastion's checks see for a request: the path the app will route (sans-IO).

Servers decode the request target before a framework sees it (ASGI ``scope["path"]``, WSGI
``PATH_INFO``: every percent-escape, ``%2F`` included, decoded once), and Starlette, FastAPI and
Flask dispatch on that decoded path. Matching the route map against anything else (the raw,
still-encoded target) lets a request be judged as one path and served as another: ``/%61dmin``
is checked as an unknown route and served as ``/admin``. So the route map and the account-route
exemption see the decoded path, and three kinds of path are refused with 400 before anything
else, because the frameworks (and the file servers behind a catch-all route) disagree on them:

* A ``.`` or ``..`` segment, sent as is or encoded (``%2e``). Frameworks do not resolve them,
  but file servers do (Starlette's ``StaticFiles``, Werkzeug's ``safe_join``), so
  ``/account/../payroll.txt`` would be judged under one name and serve ``/payroll.txt``. No
  legitimate link contains one: browsers and HTTP clients resolve them before sending.
* An empty segment before the end (``//``): Werkzeug dispatches ``//admin`` to ``/admin``,
  Starlette to a catch-all, and file servers merge the slashes.
* Control characters (C0 and DEL): no route contains one.

A trailing ``/`` is kept here: the route map matches without it (so ``/items/`` in a FastAPI
app is the ``/items`` route), while the account-route exemption takes exact paths only.

The path is computed once per request, only when the route map is in force.
"""

from __future__ import annotations

import re

from bastion.errors import BadRequest

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def canonical_path(path: str) -> str:
    """The path the route map sees; ``BadRequest`` for a dot or empty segment or a control."""
    if _CONTROL.search(path) is not None:
        raise BadRequest("The request path contains a control character.")
    if "/." in path or path.startswith("."):
        for segment in path.split("/"):
            if segment in (".", ".."):
                raise BadRequest("The request path contains a '.' or '..' segment.")
    if "//" in path:
        raise BadRequest("The request path contains an empty segment ('//').")
    return path


def wsgi_path(script_name: str, path_info: str) -> str:
    """The decoded path of a WSGI request as text (``BadRequest`` if it is not UTF-8).

    PEP 3333 passes the decoded bytes as latin-1 text; Werkzeug reads them back as UTF-8 before
    it routes, and so does this.
    """
    try:
        return (script_name + path_info).encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        raise BadRequest("The request path is not valid UTF-8.") from None
