"""What Bastion relies on in pycasbin beyond its public API (``bastion.policies.casbin_compat``).

A new pycasbin release (the bound in pyproject.toml is the next major) must pass these first:
the matcher rewriting ``CoreEnforcer._get_expression`` does, and the copy of ``enforce_ex``'s
loop agreeing with ``enforce_ex`` itself, result and explaining rule alike.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from bastion.policies.casbin_compat import (
    Enforcer,
    Model,
    casbin_functions,
    generate_g_function,
    get_effector,
    matcher_expression,
    scan_policy,
)
from bastion.policies.modeldef import DEFAULT_MODEL_PATH, DENY_MODEL_PATH, rewrite_matcher

ROOT = Path(__file__).resolve().parents[1]


def test_pycasbin_is_bounded_below_the_next_major() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    [spec] = [d for d in pyproject["project"]["dependencies"] if d.startswith("pycasbin")]
    bound = re.search(r"<\s*(\d+)", spec)
    assert bound is not None, f"{spec!r}: pycasbin needs an upper bound (its private API is used)"
    installed = int(metadata.version("pycasbin").split(".")[0])
    assert installed < int(bound.group(1))


# -- CoreEnforcer._get_expression --------------------------------------------------------------


def test_the_matcher_is_rewritten_into_python() -> None:
    expression = matcher_expression('p.sub == r.sub && !(r.act != "x") || r.obj != "a"', {})
    assert expression.expr == 'p.sub == r.sub and not (r.act != "x") or r.obj != "a"'


def test_the_expression_evaluates_with_casbin_names_and_functions() -> None:
    shipped = Model()
    shipped.load_model_from_text(DEFAULT_MODEL_PATH.read_text(encoding="utf-8"))
    matcher = shipped["m"]["m"].value  # Casbin's own spelling: p_sub, r_obj...
    assert "p_sub" in matcher and "&&" in matcher
    expression = matcher_expression(matcher, casbin_functions())
    names = {"r_sub": {"users"}, "r_obj": "a/b", "r_act": "update"}
    assert expression.eval({**names, "p_sub": "users", "p_obj": "a/*", "p_act": "write"})
    assert not expression.eval({**names, "p_sub": "users", "p_obj": "a/*", "p_act": "read"})
    assert not expression.eval({**names, "p_sub": "guests", "p_obj": "a/*", "p_act": "write"})


def test_an_unparsable_matcher_raises_what_the_model_checks_catch() -> None:
    with pytest.raises((SyntaxError, ValueError)):
        matcher_expression("r_sub == (", {})
    assert rewrite_matcher("r_sub == (") is None


# -- enforce_ex's loop --------------------------------------------------------------------------

ABAC_MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub_rule, obj, act

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = eval(p.sub_rule) && r.obj == p.obj && r.act == p.act
"""

PRIORITY_MODEL = """
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act, eft

[role_definition]
g = _, _

[policy_effect]
e = priority(p.eft) || deny

[matchers]
m = g(r.sub, p.sub) && keyMatch(r.obj, p.obj) && r.act == p.act
"""

CASES: dict[str, tuple[str, list[list[str]], list[list[str]], list[tuple[Any, str, str]]]] = {
    "allow": (
        DEFAULT_MODEL_PATH.read_text(encoding="utf-8"),
        [
            ["users", "notes/*", "read"],
            ["team:t/editor", "notes/*", "write"],
            ["any", "pages/home", "read"],
        ],
        [],
        [
            (frozenset(roles), obj, act)
            for roles, obj, act in itertools.product(
                [{"any"}, {"any", "users"}, {"users", "team:t/editor"}],
                ["notes/n1", "pages/home", "pages/other"],
                ["read", "update", "delete"],
            )
        ],
    ),
    "deny": (
        DENY_MODEL_PATH.read_text(encoding="utf-8"),
        [
            ["users", "notes/*", "write", "allow"],
            ["users", "notes/*", "read", "allow"],
            ["label:banned", "notes/*", "read", "deny"],
            ["label:banned", "notes/secret", "update", "deny"],
        ],
        [],
        [
            (frozenset(roles), obj, act)
            for roles, obj, act in itertools.product(
                [{"users"}, {"users", "label:banned"}, {"any"}],
                ["notes/n1", "notes/secret"],
                ["read", "update"],
            )
        ],
    ),
    "eval": (
        ABAC_MODEL,
        [
            ['r.sub == "alice"', "doc1", "read"],
            ['r.sub.startswith("team-")', "doc1", "update"],
            ['r.sub != "mallory"', "doc2", "read"],
        ],
        [],
        list(
            itertools.product(["alice", "team-x", "mallory"], ["doc1", "doc2"], ["read", "update"])
        ),
    ),
    "priority": (
        PRIORITY_MODEL,
        [
            ["alice", "data/*", "read", "deny"],
            ["readers", "data/*", "read", "allow"],
            ["readers", "data/open", "read", "deny"],
        ],
        [["alice", "readers"], ["bob", "readers"]],
        list(itertools.product(["alice", "bob", "carol"], ["data/open", "data/x"], ["read"])),
    ),
}


def _enforcer(text: str, rules: list[list[str]], links: list[list[str]]) -> Any:
    model = Model()
    model.load_model_from_text(text)
    enforcer = Enforcer(model)
    for rule in rules:
        enforcer.add_policy(*rule)
    for link in links:
        enforcer.add_grouping_policy(*link)
    return enforcer


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_copied_loop_agrees_with_enforce_ex(name: str) -> None:
    text, rules, links, requests = CASES[name]
    enforcer = _enforcer(text, rules, links)
    model = enforcer.model
    functions = casbin_functions()
    for key, assertion in (model["g"] or {}).items():
        functions[key] = generate_g_function(assertion.rm)
    effector = get_effector(model["e"]["e"].value)
    request_tokens = model["r"]["r"].tokens
    policy = [list(row) for row in model["p"]["p"].policy]
    outcomes = set()
    for request in requests:
        expected, why = enforcer.enforce_ex(*request)
        outcomes.add(expected)
        allowed, index = scan_policy(
            model["m"]["m"].value,
            functions,
            effector,
            dict(zip(request_tokens, request, strict=True)),
            model["p"]["p"].tokens,
            policy,
        )
        assert (allowed, policy[index] if index is not None else []) == (expected, why), request
    assert outcomes == {True, False}  # the case tells allows from denies
