"""The route map on generated request paths: a resource that the grammar accepts, or a 400."""

from __future__ import annotations

from urllib.parse import unquote

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import BadRequest
from bastion.grammar import is_resource
from bastion.requestpath import canonical_path
from bastion.routes import RouteMap, RouteSpec

ROUTES = RouteMap(
    [
        RouteSpec(("GET",), "/databases/{db}/collections/{coll}/documents/{doc}", "read",
                  "databases/{db}/collections/{coll}/documents/{doc}"),
        RouteSpec(("GET",), "/buckets/{bucket}/files/{file}", "read",
                  "buckets/{bucket}/files/{file}"),
        RouteSpec(("POST",), "/notes", "create", "notes"),
    ]
)  # fmt: skip

segment = st.one_of(
    st.text(min_size=0, max_size=12),
    st.sampled_from(["..", ".", "%2e%2e", "%2F", "a%2Fb", "%ff", "%", "*", "a b", "ok", "x.y"]),
)


TEMPLATES = [
    "/databases/{}/collections/{}/documents/{}",
    "/buckets/{}/files/{}",
    "/notes",
]


@settings(max_examples=1000, deadline=None)
@given(template=st.sampled_from(TEMPLATES), ids=st.lists(segment, min_size=3, max_size=3))
def test_matching_never_yields_an_unsafe_resource(template: str, ids: list[str]) -> None:
    raw = template.format(*ids)
    try:
        # As the middleware does: the path the server decoded, made canonical, then matched.
        target = ROUTES.match("GET", canonical_path(unquote(raw)))
    except BadRequest:
        return
    if target is not None:
        assert is_resource(target.resource), (raw, target.resource)
        assert ".." not in target.resource.split("/")
        # The ids that made it through are exactly the ones sent, one segment each.
        assert target.resource.count("/") == template.count("/") - 1


def test_well_formed_ids_match() -> None:
    target = ROUTES.match("GET", "/databases/main/collections/notes/documents/user:42.v2")
    assert target is not None
    assert target.resource == "databases/main/collections/notes/documents/user:42.v2"


def test_static_segments_win_and_params_catch_the_rest() -> None:
    routes = RouteMap(
        [
            RouteSpec(("GET",), "/a/b/c", "read", "a/b/c"),
            RouteSpec(("GET",), "/a/{x}/d", "read", "a/{x}/d"),
        ]
    )
    static = routes.match("GET", "/a/b/c")
    assert static is not None and static.resource == "a/b/c"
    # "b" is a static segment, but only the parameter route continues with "d": backtrack.
    param = routes.match("GET", "/a/b/d")
    assert param is not None and param.resource == "a/b/d" and param.route.path == "/a/{x}/d"
    assert routes.match("GET", "/a/b/e") is None
