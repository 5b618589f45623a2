"""The indexed engine decides exactly as ``casbin.Enforcer.enforce`` on randomized policies."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import casbin  # type: ignore[import-untyped]
from casbin.persist.adapters import StringAdapter  # type: ignore[import-untyped]
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.grammar import ACTIONS, POLICY_ACTIONS
from bastion.policies.engine import PolicyEngine
from bastion.policies.modeldef import DEFAULT_MODEL_PATH, DENY_MODEL_PATH, parse_model
from bastion.policies.rules import Rule

ROLES = [
    "any",
    "guests",
    "users",
    "users/verified",
    "user:a",
    "user:b.c",
    "team:t1",
    "team:t1/owner",
    "label:x",
    "member:m1",
]
# Few distinct segments, so that random rules and requests meet often; look-alike prefixes
# ("n" / "n2", "a" / "a.b") and ids with ":" "." "@" on purpose.
SEGMENTS = ["a", "a.b", "n", "n2", "x:y"]
REQUESTS_PER_POLICY = 50

paths = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=3).map("/".join)
objects = st.one_of(paths, paths.map(lambda p: p + "/*"), st.just("*"))
role_sets = st.frozensets(st.sampled_from(ROLES), max_size=6)
links = st.lists(st.tuples(st.sampled_from(ROLES), st.sampled_from(ROLES)), max_size=8)
extra_rows = st.one_of(
    st.just(()),
    st.lists(
        st.tuples(st.sampled_from(ROLES), st.sampled_from(POLICY_ACTIONS)), min_size=1, max_size=3
    ).map(tuple),
)


def near(obj: str) -> list[str]:
    """Requests a rule's object is about: the path itself, a child, and the parent of a ``/*``."""
    if obj == "*":
        return ["a", "n2/x:y"]
    if obj.endswith("/*"):
        return [obj[:-2], obj[:-1] + "a.b", obj[:-1] + "n/n"]
    return [obj, obj + "/a"]


def requests(rows: Sequence[tuple[str, ...]]) -> st.SearchStrategy[list[Any]]:
    """Requests, half of them aimed at the rules' own roles and paths so that many match."""
    aimed_paths = sorted({p for row in rows for p in near(row[1])})
    aimed_roles = sorted({row[0] for row in rows})
    resources = st.one_of(paths, st.sampled_from(aimed_paths)) if aimed_paths else paths
    roles = role_sets
    if aimed_roles:
        roles = st.one_of(
            role_sets,
            st.tuples(role_sets, st.sampled_from(aimed_roles)).map(lambda t: t[0] | {t[1]}),
        )
    request = st.tuples(roles, st.sampled_from(ACTIONS), resources, extra_rows)
    return st.lists(request, min_size=REQUESTS_PER_POLICY, max_size=REQUESTS_PER_POLICY)


def allow_rules() -> st.SearchStrategy[list[tuple[str, ...]]]:
    """``p, sub, obj, act`` rows."""
    row = st.tuples(st.sampled_from(ROLES), objects, st.sampled_from(POLICY_ACTIONS))
    return st.lists(row, max_size=40)


def deny_rules() -> st.SearchStrategy[list[tuple[str, ...]]]:
    """``p, sub, obj, act, eft`` rows; a few carry an effect Casbin treats as neither."""
    eft = st.sampled_from(["allow", "allow", "deny", "maybe"])
    row = st.tuples(st.sampled_from(ROLES), objects, st.sampled_from(POLICY_ACTIONS), eft)
    return st.lists(row, max_size=40)


def reference(
    model_text: str, rows: Sequence[tuple[str, ...]], g: Sequence[tuple[str, str]]
) -> Any:
    """A plain casbin.Enforcer with these rows, read through Casbin's own string adapter."""
    lines = [", ".join(("p", *row)) for row in rows] + [f"g, {a}, {b}" for a, b in g]
    model = casbin.Enforcer.new_model(text=model_text)
    return casbin.Enforcer(model, StringAdapter("\n".join(lines)) if lines else None)


def expanded(enforcer: Any, roles: frozenset[str]) -> frozenset[str]:
    """The role set plus what Casbin's role manager says the g lines grant."""
    found = set(roles)
    for role in roles:
        found.update(enforcer.get_implicit_roles_for_user(role))
    return frozenset(found)


def agree(
    text: str,
    rows: list[tuple[str, ...]],
    g: list[tuple[str, str]],
    cases: list[tuple[frozenset[str], str, str, tuple[tuple[str, str], ...]]],
    *,
    indexed: bool = True,
) -> None:
    """Every case decides the same on the engine and on Casbin (and names Casbin's rule)."""
    spec, problems = parse_model(text, "model.conf")
    assert spec is not None, problems
    rules = [Rule("p", row, "policy.csv", n) for n, row in enumerate(rows, start=1)]
    role_links = [Rule("g", link, "policy.csv", 100 + n) for n, link in enumerate(g)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore" if not indexed else "error")
        engine = PolicyEngine(rules, role_links, model=spec)
    assert engine.is_indexed is indexed
    plain = reference(text, rows, g)
    for roles, action, resource, extra in cases:
        subject = expanded(plain, roles)
        assert engine.expand_roles(roles) == subject
        decision = engine.decide(roles, action, resource, extra)
        if extra:
            document_rows = [
                (role, resource, act, "allow") if spec.has_eft else (role, resource, act)
                for role, act in extra
            ]
            enforcer = reference(text, [*rows, *document_rows], g)
        else:
            enforcer = plain
        allowed, explained = enforcer.enforce_ex(subject, resource, action)
        assert decision.allowed == allowed, (roles, action, resource, extra, decision)
        if allowed and decision.rules and not spec.has_eft:
            # Allow-override stops at the first allowing row, in policy order: the same one.
            assert list(decision.rules[0].fields) == explained
        if spec.has_eft and decision.rules and explained[-1] in ("allow", "deny"):
            # Casbin names the last matching row it looked at: the first deny, or the last
            # allow (unless a row with some other effect matched after it).
            assert list(decision.rules[-1].fields) == explained


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=allow_rules(), g=links, data=st.data())
def test_default_model_agrees_with_casbin(
    rows: list[tuple[str, ...]],
    g: list[tuple[str, str]],
    data: st.DataObject,
) -> None:
    cases = data.draw(requests(rows))
    agree(DEFAULT_MODEL_PATH.read_text(encoding="utf-8"), rows, g, cases)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=deny_rules(), g=links, data=st.data())
def test_deny_model_agrees_with_casbin(
    rows: list[tuple[str, ...]],
    g: list[tuple[str, str]],
    data: st.DataObject,
) -> None:
    cases = data.draw(requests(rows))
    agree(DENY_MODEL_PATH.read_text(encoding="utf-8"), rows, g, cases)


# The shipped matcher with its clauses reordered: same meaning, but not the shipped text, so the
# engine must fall back to casbin.Enforcer (and still agree, document rows included).
REORDERED = DEFAULT_MODEL_PATH.read_text(encoding="utf-8").replace(
    "m = p.sub in r.sub && (r.obj == p.obj || keyMatch(r.obj, p.obj)) &&",
    "m = (r.obj == p.obj || keyMatch(r.obj, p.obj)) && p.sub in r.sub &&",
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=allow_rules(), g=links, data=st.data())
def test_fallback_model_agrees_with_casbin(
    rows: list[tuple[str, ...]],
    g: list[tuple[str, str]],
    data: st.DataObject,
) -> None:
    cases = data.draw(requests(rows))
    assert DEFAULT_MODEL_PATH.read_text(encoding="utf-8") != REORDERED
    agree(REORDERED, rows, g, cases, indexed=False)
