"""Hand-written edge cases of the decision engine and the resource grammar."""

from __future__ import annotations

import threading
import warnings

import casbin  # type: ignore[import-untyped]
import pytest
from casbin.persist.adapters import StringAdapter  # type: ignore[import-untyped]

from bastion.grammar import (
    covering_objects,
    is_resource,
    is_resource_pattern,
    normalized_resource,
    resource,
    resource_problem,
)
from bastion.policies.diagnostics import PolicyError
from bastion.policies.engine import PolicyEngine
from bastion.policies.modeldef import DEFAULT_MODEL_PATH, deny_model, parse_model
from bastion.policies.rules import Rule
from bastion.policies.tools.suites import user_principal

GUEST = frozenset({"any", "guests"})


def engine(*lines: str, model: str = "default") -> PolicyEngine:
    """An engine from ``p, ...`` / ``g, ...`` lines (numbered from 1, in ``policy.csv``)."""
    rules: list[Rule] = []
    links: list[Rule] = []
    for number, line in enumerate(lines, start=1):
        ptype, *fields = (part.strip() for part in line.split(","))
        rule = Rule(ptype, tuple(fields), "policy.csv", number)
        (links if ptype == "g" else rules).append(rule)
    spec = deny_model() if model == "deny" else None
    return PolicyEngine(rules, links, model=spec)


def casbin_enforcer(text: str, *lines: str) -> casbin.Enforcer:
    """Plain Casbin on the same lines, for the cases where Bastion refuses what Casbin allows."""
    model = casbin.Enforcer.new_model(text=text)
    return casbin.Enforcer(model, StringAdapter("\n".join(lines)))


def users(user_id: str, *more: str) -> frozenset[str]:
    """A signed-in user's roles plus ``more``."""
    return user_principal(user_id) | set(more)


# -- the grammar ----------------------------------------------------------------------------


def test_keymatch_semantics_behind_the_index() -> None:
    """The index relies on keyMatch: 'a/b/*' covers a/b/c and deeper, never a/b or a/bc."""
    from casbin.util import key_match  # type: ignore[import-untyped]

    assert key_match("a/b/c", "a/b/*") and key_match("a/b/c/d", "a/b/*")
    assert not key_match("a/b", "a/b/*")
    assert not key_match("a/bc", "a/b/*")
    assert key_match("a/bc", "a/b*")  # why '*' is allowed only as a whole trailing segment
    assert covering_objects("a/b/c") == ["a/b/c", "a/*", "a/b/*", "*"]
    assert covering_objects("a/b/c", (0, 2)) == ["a/b/c", "*", "a/b/*"]


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("", "empty"),
        ("/databases/d", "starts with '/'"),
        ("databases/d/", "ends with '/'"),
        ("databases//d", "empty segment"),
        ("databases/./d", "'.' segments"),
        ("databases/../admin", "'..' segments"),
        ("..", "'..' segments"),
        ("databases/%2e%2e/admin", "percent-encoded"),
        ("databases%2Fadmin", "percent-encoded"),
        ("notes/*", "'*' is not allowed in a requested resource"),
        ("notes/a b", "character ' '"),
        ("notes/a,b", "character ','"),
        ("notes/é", "character 'é'"),
        (" notes", "whitespace"),
        ("a/" * 40 + "b", "more than 32 segments"),
        ("x" * 300, "longer than 255"),
        ("a/" + "x" * 1100, "longer than 1024"),
    ],
)
def test_refused_request_paths(path: str, problem: str) -> None:
    assert not is_resource(path)
    found = resource_problem(path)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    "path",
    ["databases/db1/collections/c1/documents/d1", "a.b", "user:42/x", "me@example.com", "a+b-c_d"],
)
def test_valid_request_paths(path: str) -> None:
    assert is_resource(path) and resource_problem(path) is None


def test_patterns_allow_only_a_whole_trailing_star() -> None:
    assert is_resource_pattern("*") and is_resource_pattern("buckets/b1/*")
    for bad in ("notes*", "a/*/b", "a/**", "a/b*", "*/a", "a/*/*"):
        assert not is_resource_pattern(bad)
        problem = resource_problem(bad, pattern=True)
        assert problem is not None and "trailing segment" in problem


def test_normalised_spelling_is_suggested_but_dots_are_never_resolved() -> None:
    assert normalized_resource("/a//b/./c/") == "a/b/c"
    assert normalized_resource("/a/b/*", pattern=True) == "a/b/*"
    assert normalized_resource("a/../b") is None
    assert normalized_resource("a/b") is None  # already canonical


def test_resource_joins_single_segments_only() -> None:
    assert resource("databases", "db1", "documents", "a.b:c") == "databases/db1/documents/a.b:c"
    for bad in ("../x", "a/b", "..", ".", "", "*", "%2e%2e", "a b"):
        with pytest.raises(ValueError):
            resource("databases", bad)


# -- decisions --------------------------------------------------------------------------------


def test_prefix_look_alikes_are_not_children() -> None:
    e = engine("p, users, notes/*, read")
    alice = users("alice")
    assert e.decide(alice, "read", "notes/n1").allowed
    assert e.decide(alice, "read", "notes/n1/deeper").allowed
    assert not e.decide(alice, "read", "notes2").allowed
    assert not e.decide(alice, "read", "notes2/n1").allowed
    assert not e.decide(alice, "read", "notes").allowed  # '/*' is the children only


def test_traversal_and_encoding_are_refused_where_casbin_would_allow() -> None:
    line = "p, users, public/*, read"
    e = engine(line)
    plain = casbin_enforcer(DEFAULT_MODEL_PATH.read_text(), line)
    alice = users("alice")
    for sneaky in ("public/../admin", "public/%2e%2e/admin", "public//admin", "public/*"):
        assert plain.enforce(alice, sneaky, "read")  # keyMatch is a plain prefix test
        decision = e.decide(alice, "read", sneaky)
        assert not decision.allowed
        assert decision.reason.startswith("refused:")
        assert decision.rules == ()


def test_ids_with_colons_dots_and_at_signs() -> None:
    e = engine(
        "p, user:a.b@c, docs/user:a.b@c/*, write",
        "p, users, docs/a.b, read",
    )
    me = users("a.b@c")
    assert e.decide(me, "update", "docs/user:a.b@c/n:1.2").allowed
    assert not e.decide(me, "update", "docs/user:a.b@cX/n1").allowed
    assert e.decide(me, "read", "docs/a.b").allowed
    assert not e.decide(me, "read", "docs/aXb").allowed  # a dot is a dot, not a regex


def test_write_means_create_update_delete_never_read() -> None:
    e = engine("p, team:t1/editor, databases/d/*, write")
    editor = users("erin", "team:t1", "team:t1/editor")
    for action in ("create", "update", "delete"):
        assert e.decide(editor, action, "databases/d/collections/c").allowed
    assert not e.decide(editor, "read", "databases/d/collections/c").allowed


def test_unknown_and_write_request_actions_are_refused() -> None:
    e = engine("p, users, a/*, write", "p, users, a/*, read")
    alice = users("alice")
    for action in ("write", "READ", "", "read "):
        decision = e.decide(alice, action, "a/b")
        assert not decision.allowed and "unknown action" in decision.reason


def test_collection_create_is_not_inherited_by_documents() -> None:
    e = engine("p, users, databases/d/collections/c, create")
    alice = users("alice")
    assert e.decide(alice, "create", "databases/d/collections/c").allowed
    assert not e.decide(alice, "create", "databases/d/collections/c/documents/x").allowed
    assert not e.decide(alice, "update", "databases/d/collections/c").allowed


def test_guests_on_a_public_bucket() -> None:
    e = engine("p, any, buckets/public/files/*, read")
    assert e.decide(GUEST, "read", "buckets/public/files/logo.png").allowed
    assert e.decide(users("alice"), "read", "buckets/public/files/logo.png").allowed
    assert not e.decide(GUEST, "update", "buckets/public/files/logo.png").allowed
    assert not e.decide(GUEST, "read", "buckets/private/files/logo.png").allowed
    assert not e.decide(frozenset(), "read", "buckets/public/files/logo.png").allowed


def test_team_role_grants() -> None:
    e = engine(
        "p, team:t1/editor, databases/d/collections/c/documents/*, update",
        "p, team:t1, databases/d/collections/c/documents/*, read",
    )
    member = users("m", "team:t1")
    editor = users("e", "team:t1", "team:t1/editor")
    doc = "databases/d/collections/c/documents/x"
    assert e.decide(member, "read", doc).allowed
    assert not e.decide(member, "update", doc).allowed
    assert e.decide(editor, "update", doc).allowed
    assert not e.decide(editor, "delete", doc).allowed
    assert not e.decide(users("o", "team:t2/editor"), "update", doc).allowed


def test_g_lines_expand_transitively_and_cycles_are_harmless() -> None:
    e = engine(
        "p, team:t1/owner, buckets/b/*, delete",
        "g, user:alice, team:t1/owner",
        "g, team:t1/owner, team:t1/editor",
        "g, team:t1/editor, team:t1",
        "g, team:t1, team:t1/owner",  # a cycle back up
    )
    alice = users("alice")
    expanded = e.expand_roles(alice)
    assert expanded == alice | {"team:t1/owner", "team:t1/editor", "team:t1"}
    assert e.expand_roles(alice) is expanded  # cached
    assert e.expand_roles(users("bob")) == users("bob")
    decision = e.decide(alice, "delete", "buckets/b/f")
    assert decision.allowed and decision.rules[0].source == "policy.csv:1"
    assert not e.decide(users("bob"), "delete", "buckets/b/f").allowed


def test_decision_names_the_rule_and_its_line() -> None:
    e = engine("p, users, a/*, read", "p, user:alice, a/b, read")
    decision = e.decide(users("alice"), "read", "a/b")
    # Both match; like Casbin's enforce_ex, the first in policy order decided.
    assert decision.allowed
    assert [r.source for r in decision.rules] == ["policy.csv:1"]
    assert "policy.csv:1" in decision.reason and "p, users, a/*, read" in decision.reason
    denied = e.decide(users("bob"), "update", "a/b")
    assert not denied.allowed and denied.rules == ()
    assert "no rule grants" in denied.reason


def test_explicit_deny_beats_allow_in_the_deny_model() -> None:
    e = engine(
        "p, users, databases/*, write, allow",
        "p, label:banned, databases/*, write, deny",
        "p, users, databases/d/locked, delete, deny",
        model="deny",
    )
    alice, banned = users("alice"), users("bad", "label:banned")
    assert e.decide(alice, "update", "databases/d/x").allowed
    decision = e.decide(banned, "update", "databases/d/x")
    assert not decision.allowed
    assert [r.source for r in decision.rules] == ["policy.csv:2"]
    assert decision.reason.startswith("denied by")
    assert e.decide(alice, "update", "databases/d/locked").allowed
    assert not e.decide(alice, "delete", "databases/d/locked").allowed
    # Still deny by default.
    assert not e.decide(alice, "read", "databases/d/x").allowed
    assert not e.decide(alice, "update", "buckets/b").allowed


def test_extra_document_rows() -> None:
    e = engine("p, users, databases/d/collections/c/documents/*, read")
    doc = "databases/d/collections/c/documents/n1"
    alice, bob = users("alice"), users("bob")
    rows = [("user:alice", "write"), ("team:t9", "read")]
    decision = e.decide(alice, "update", doc, rows)
    assert decision.allowed and decision.rules[0].source == "document"
    assert decision.rules[0].fields == ("user:alice", doc, "write")
    assert not e.decide(bob, "update", doc, rows).allowed
    assert not e.decide(users("t", "team:t9"), "update", doc, rows).allowed
    assert e.decide(users("t", "team:t9"), "read", doc, rows).allowed
    # File rules come first in policy order.
    assert e.decide(alice, "read", doc, [("user:alice", "read")]).rules[0].source == "policy.csv:1"
    # Rows count only on the resource they belong to: the caller passes them with it.
    assert not e.decide(alice, "update", doc + "/sub", []).allowed


def test_container_decisions_are_shared_only_by_children_without_their_own_lines() -> None:
    # The engine keeps a container's decision for its children; a child named by a line of its
    # own, or decided with rows, must not borrow it (and must not lend it to its siblings).
    lines = (
        "p, users, databases/d/collections/c/documents/*, read",
        "p, user:bob, databases/d/collections/c/documents/special, update",
        "p, label:x, databases/d/collections/c/documents/special, read",
    )
    e = engine(*lines)
    reference = casbin_enforcer(DEFAULT_MODEL_PATH.read_text(), *lines)
    base = "databases/d/collections/c/documents/"
    bob, guest = users("bob"), GUEST
    cases = [
        (bob, "read", base + "a"),
        (bob, "update", base + "a"),
        (bob, "update", base + "special"),
        (bob, "update", base + "b"),
        (guest, "read", base + "special"),
        (guest, "read", base + "a"),
        (users("x", "label:x"), "read", base + "special"),
        (bob, "read", "databases/d/collections/c"),
        (bob, "read", "databases/d/collections/c2"),
        (bob, "read", "databases"),
    ]
    for _ in range(2):  # the second pass is served from the kept decisions
        for roles, action, path in cases:
            decision = e.decide(roles, action, path)
            assert decision.allowed == reference.enforce(roles, path, action), (roles, action, path)
    assert e.decide(bob, "update", base + "special").rules[0].line == 2
    assert not e.decide(bob, "update", base + "c").allowed
    # Rows are never served from the table: they differ from one document to the next.
    assert e.decide(guest, "read", base + "a", [("any", "read")]).allowed
    assert not e.decide(guest, "read", base + "b").allowed


def test_a_file_deny_beats_a_document_allow() -> None:
    e = engine("p, label:banned, databases/*, write, deny", model="deny")
    doc = "databases/d/collections/c/documents/n1"
    banned = users("bad", "label:banned")
    assert e.decide(users("ok"), "update", doc, [("users", "write")]).allowed
    assert not e.decide(banned, "update", doc, [("users", "write")]).allowed


def test_index_refuses_rules_it_could_not_serve() -> None:
    with pytest.raises(PolicyError) as caught:
        engine("p, users, a/b, read", "p, users, notes*, read")
    assert caught.value.file == "policy.csv" and caught.value.line == 2
    with pytest.raises(PolicyError) as caught:
        engine("p, users, a/b")
    assert "invalid policy size" in str(caught.value) and caught.value.line == 1


def test_non_indexable_model_falls_back_with_a_warning() -> None:
    text = DEFAULT_MODEL_PATH.read_text().replace(
        "m = p.sub in r.sub && (r.obj == p.obj || keyMatch(r.obj, p.obj)) &&",
        "m = (r.obj == p.obj || keyMatch(r.obj, p.obj)) && p.sub in r.sub &&",
    )
    spec, problems = parse_model(text, "custom.conf")
    assert spec is not None and not problems
    assert spec.kind is None and "matcher" in spec.not_indexed_because
    lines = ["p, users, notes/*, read", "p, team:t1, notes/n1, write", "g, user:bob, team:t1"]
    rules = [Rule("p", ("users", "notes/*", "read"), "p.csv", 1)]
    rules.append(Rule("p", ("team:t1", "notes/n1", "write"), "p.csv", 2))
    links = [Rule("g", ("user:bob", "team:t1"), "p.csv", 3)]
    with pytest.warns(RuntimeWarning, match=r"custom\.conf.*linear|scans all 2 rules"):
        e = PolicyEngine(rules, links, model=spec)
    assert not e.is_indexed
    plain = casbin_enforcer(text, *lines)
    for roles in (users("alice"), users("bob"), GUEST):
        for action in ("read", "update"):
            for path in ("notes/n1", "notes", "notes2/x"):
                expected = plain.enforce(e.expand_roles(roles), path, action)
                assert e.decide(roles, action, path).allowed == expected
    decision = e.decide(users("bob"), "update", "notes/n1")
    assert decision.allowed and decision.rules[0].source == "p.csv:2"
    rows_decision = e.decide(users("carol"), "update", "notes/n1", [("user:carol", "update")])
    assert rows_decision.allowed and rows_decision.rules[0].source == "document"
    assert not e.decide(users("carol"), "read", "notes/../x").allowed


def test_shipped_models_are_indexed_and_whitespace_does_not_matter() -> None:
    assert engine().is_indexed and engine(model="deny").is_indexed
    text = (
        DEFAULT_MODEL_PATH.read_text()
        .replace(
            "m = p.sub in r.sub && (r.obj",
            "m =   p.sub  in  r.sub &&( r.obj",
        )
        .replace("r = sub, obj, act", "r = sub,obj,   act")
    )
    spec, _ = parse_model(text, "spaced.conf")
    assert spec is not None and spec.kind == "allow"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert PolicyEngine(model=spec).is_indexed


def test_an_empty_policy_denies_everything() -> None:
    e = PolicyEngine()
    assert e.is_indexed
    assert not e.decide(users("alice"), "read", "a").allowed


def test_decisions_are_the_same_from_many_threads() -> None:
    e = engine(
        "p, users, a/*, read",
        "p, team:t1/editor, a/b/*, write",
        "g, user:bob, team:t1/editor",
    )
    requests = [
        (who, action, path)
        for who in (users("alice"), users("bob"), GUEST)
        for action in ("read", "update", "delete")
        for path in ("a/b/c", "a/x", "b/c", "a/b")
    ]
    expected = [e.decide(*r).allowed for r in requests]
    failures: list[str] = []

    def worker() -> None:
        for _ in range(200):
            got = [e.decide(*r).allowed for r in requests]
            if got != expected:
                failures.append("mismatch")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_self_check_passes_on_sound_policies() -> None:
    assert engine("p, users, a/*, read", "p, any, b, write").self_check() == []
    deny = engine("p, users, a/*, write, allow", "p, users, a/b/*, write, deny", model="deny")
    assert deny.self_check() == []
