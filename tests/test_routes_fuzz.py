"""The route map on generated request paths: a resource that the grammar accepts, or a 400."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import BadRequest
from bastion.policies.grammar import is_resource
from bastion.policies.routes import RouteMap, RouteSpec

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


@settings(max_examples=500, deadline=None)
@given(
    prefix=st.sampled_from(["/databases/", "/buckets/", "/notes", "/"]),
    parts=st.lists(segment, max_size=7),
)
def test_matching_never_yields_an_unsafe_resource(prefix: str, parts: list[str]) -> None:
    raw = prefix + "/".join(parts)
    try:
        target = ROUTES.match("GET", raw)
    except BadRequest:
        return
    if target is not None:
        assert is_resource(target.resource), (raw, target.resource)
        assert ".." not in target.resource.split("/")
