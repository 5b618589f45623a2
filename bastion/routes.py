"""The route map: method + path template → action + resource (+ the API-key scope, + 404 on deny).

Teams write it in ``bastion.toml``::

    [[routes]]
    method = "GET"
    path = "/databases/{db}/collections/{coll}/documents/{doc}"
    action = "read"
    resource = "databases/{db}/collections/{coll}/documents/{doc}"
    scope = "documents.read"      # what an API key must hold on this route
    not_found = true              # a denied read answers 404, so ids do not leak

``not_found`` on a route of another action (an update, a delete) answers 404 to a caller who may
not read the resource either, and 403 to one who may read it: what it hides is only what the
caller could not have seen.

Matching walks a tree of path segments (static before ``{param}``), so its cost follows the
path's depth, not the number of routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn

from bastion.errors import BadRequest
from bastion.grammar import ACTIONS, MAX_LENGTH, is_resource, is_segment, resource

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_SCOPE = re.compile(r"[a-z][a-z0-9_-]{0,31}(?:\.[a-z][a-z0-9_-]{0,31}){0,3}")
_STATIC = re.compile(r"[A-Za-z0-9._~@:+!$&'()*,;=-]+")


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One entry of the route map, validated when built."""

    methods: tuple[str, ...]
    path: str
    action: str
    resource: str
    scope: str | None = None
    not_found: bool = False
    params: tuple[str, ...] = field(default=(), compare=False)
    plan: tuple[str | int, ...] = field(default=(), compare=False)
    """The resource template as static segments and indexes into the captured values."""
    template: str = field(default="", compare=False)
    """The resource template for ``str.format`` with the captured values (``a/{0}/b/{1}``)."""
    used: tuple[int, ...] = field(default=(), compare=False)
    """The captured values the resource uses (the only ones checked against the grammar)."""
    slashes: int = field(default=0, compare=False)
    """How many "/" the resource has when every id is one segment."""

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem is not None:
            raise ValueError(f"route {' '.join(self.methods)} {self.path}: {problem}")
        params = tuple(_PARAM.findall(self.path))
        object.__setattr__(self, "params", params)
        plan: list[str | int] = []
        for part in self.resource.split("/"):
            found = _PARAM.fullmatch(part)
            plan.append(params.index(found[1]) if found else part)
        object.__setattr__(self, "plan", tuple(plan))
        # Static segments passed the grammar above, which has no braces: format-safe.
        template = "/".join(f"{{{step}}}" if isinstance(step, int) else step for step in plan)
        object.__setattr__(self, "template", template)
        used = tuple(dict.fromkeys(step for step in plan if isinstance(step, int)))
        object.__setattr__(self, "used", used)
        object.__setattr__(self, "slashes", template.count("/"))

    def problem(self) -> str | None:
        """Why this route cannot be used, or None."""
        if not self.methods or not set(self.methods) <= _METHODS:
            return f"methods must be among {', '.join(sorted(_METHODS))}"
        if not self.path.startswith("/"):
            return "path must start with '/'"
        names: list[str] = []
        for segment in self.path.strip("/").split("/") if self.path != "/" else []:
            match = _PARAM.fullmatch(segment)
            if match:
                names.append(match[1])
            elif "{" in segment or "}" in segment:
                return f"'{segment}': a {{param}} must be a whole path segment"
            elif not _STATIC.fullmatch(segment):
                return f"'{segment}' is not a valid path segment"
        if len(set(names)) != len(names):
            return "a {param} name appears twice"
        if self.action not in ACTIONS:
            return f"action must be one of {', '.join(ACTIONS)}"
        used = _PARAM.findall(self.resource)
        unknown = sorted(set(used) - set(names))
        if unknown:
            return f"resource uses {{{unknown[0]}}}, which the path does not capture"
        try:
            resource(*(("x" if _PARAM.fullmatch(s) else s) for s in self.resource.split("/")))
        except ValueError as exc:
            return f"resource {self.resource!r} points at no valid resource ({exc})"
        if self.scope is not None and not _SCOPE.fullmatch(self.scope):
            return f"scope {self.scope!r} is not a scope like documents.read"
        return None

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> RouteSpec:
        """A route from a ``[[routes]]`` table (``method`` may be one string or a list)."""
        allowed = {"method", "methods", "path", "action", "resource", "scope", "not_found"}
        extra = sorted(set(table) - allowed)
        if extra:
            raise ValueError(f"route table has unknown key {extra[0]!r}")
        methods = table.get("methods", table.get("method"))
        if isinstance(methods, str):
            methods = [methods]
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            raise ValueError('route needs method = "GET" or methods = ["GET", ...]')
        for name in ("path", "action", "resource"):
            if not isinstance(table.get(name), str):
                raise ValueError(f'route needs {name} = "..."')
        scope = table.get("scope")
        not_found = table.get("not_found", False)
        if scope is not None and not isinstance(scope, str):
            raise ValueError("route scope must be a string")
        if not isinstance(not_found, bool):
            raise ValueError("route not_found must be true or false")
        return cls(
            tuple(m.upper() for m in methods),
            table["path"],
            table["action"],
            table["resource"],
            scope,
            not_found,
        )


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    """Settings of one container resource: whether its children's own permissions count.

    ``document_security`` (collections) and ``file_security`` (buckets) are the same switch under
    Appwrite's two names: when on, a document's (file's) own rows count beside the policy lines;
    when off, only the policy lines do.
    """

    path: str
    child_security: bool = False

    def __post_init__(self) -> None:
        try:
            resource(*self.path.split("/"))
        except ValueError as exc:
            raise ValueError(f"resource {self.path!r}: {exc}") from None

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> ResourceSpec:
        """A resource from a ``[[resources]]`` table."""
        allowed = {"path", "document_security", "file_security"}
        extra = sorted(set(table) - allowed)
        if extra:
            raise ValueError(f"resource table has unknown key {extra[0]!r}")
        if not isinstance(table.get("path"), str):
            raise ValueError('resource needs path = "databases/DB/collections/C"')
        flags = [table[k] for k in ("document_security", "file_security") if k in table]
        if not all(isinstance(f, bool) for f in flags):
            raise ValueError("document_security / file_security must be true or false")
        return cls(table["path"], any(flags))


class Target(NamedTuple):
    """What a request asks for: the route it matched and the concrete resource path."""

    route: RouteSpec
    resource: str


class _Node:
    __slots__ = ("param", "route", "static")

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.route: RouteSpec | None = None


class RouteMap:
    """All routes, indexed for matching by method and path segments."""

    def __init__(self, routes: tuple[RouteSpec, ...] | list[RouteSpec]) -> None:
        self.routes = tuple(routes)
        self._trees: dict[str, _Node] = {}
        for route in self.routes:
            for method in route.methods:
                self._insert(method, route)
            if "GET" in route.methods and "HEAD" not in route.methods:
                self._insert("HEAD", route, replace=False)

    def _insert(self, method: str, route: RouteSpec, *, replace: bool = True) -> None:
        node = self._trees.setdefault(method, _Node())
        for segment in _segments(route.path):
            if _PARAM.fullmatch(segment):
                node.param = node.param or _Node()
                node = node.param
            else:
                node = node.static.setdefault(segment, _Node())
        if node.route is not None:
            if not replace:
                return
            raise ValueError(
                f"routes {node.route.path} and {route.path} both match {method} requests "
                "of the same shape"
            )
        node.route = route

    def __bool__(self) -> bool:
        return bool(self.routes)

    def match(self, method: str, path: str) -> Target | None:
        """The route and resource for a request, None when no route matches.

        ``path`` is the decoded path the app routes, as :func:`bastion.requestpath.canonical_path`
        gives it: matched segment by segment as the framework would, never decoded again.
        Raises ``BadRequest`` when a captured id cannot be part of a resource.
        """
        tree = self._trees.get(method)
        if tree is None:
            return None
        segments = _segments(path)
        values: list[str] = []
        route = _greedy(tree, segments, values)
        if route is None:
            values.clear()
            route = _walk(tree, segments, 0, values)
            if route is None:
                return None
        path = route.template.format(*values)
        # The template's static segments were checked when the route was built. One check of
        # the whole path covers the ids too, as long as each id stayed one segment (the count
        # of "/" tells); the slow path below only finds what to say.
        if path.count("/") != route.slashes or not is_resource(path):
            _refuse(route, values)
        return Target(route, path)


def _refuse(route: RouteSpec, values: list[str]) -> NoReturn:
    """Raise the ``BadRequest`` for a resource the request's ids cannot form."""
    for index in route.used:
        value = values[index]
        if not is_segment(value):
            shown = value if len(value) <= 64 else value[:61] + "..."
            raise BadRequest(f"The request names an invalid resource id {shown!r}.")
    raise BadRequest(f"The resource path is longer than {MAX_LENGTH} characters.")


def _segments(path: str) -> list[str]:
    # One trailing "/" is not a segment: "/items/" is the "/items" route, in a template too.
    if path.endswith("/"):
        path = path[:-1]
    return [] if path == "" else path[1:].split("/") if path.startswith("/") else path.split("/")


def _greedy(node: _Node, segments: list[str], values: list[str]) -> RouteSpec | None:
    """Static first, no backtracking: the usual case, without recursion (``_walk`` is the rest)."""
    for raw in segments:
        if raw == "":
            return None
        child = node.static.get(raw)
        if child is not None:
            node = child
        elif node.param is not None:
            values.append(raw)
            node = node.param
        else:
            return None
    return node.route


def _walk(node: _Node, segments: list[str], index: int, values: list[str]) -> RouteSpec | None:
    if index == len(segments):
        return node.route
    raw = segments[index]
    if raw == "":
        return None
    child = node.static.get(raw)
    if child is not None:
        found = _walk(child, segments, index + 1, values)
        if found is not None:
            return found
    if node.param is not None:
        values.append(raw)
        found = _walk(node.param, segments, index + 1, values)
        if found is not None:
            return found
        values.pop()
    return None
