"""Strict policy and model loading: every diagnostic with its line; broken files never go live."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.policies.diagnostics import Diagnostic, PolicyError
from bastion.policies.engine import PolicyEngine
from bastion.policies.holder import PolicyHolder, build_engine
from bastion.policies.loader import load_policy, load_policy_strict
from bastion.policies.modeldef import DEFAULT_MODEL_PATH, DENY_MODEL_PATH, parse_model, read_model

MODEL = DEFAULT_MODEL_PATH.read_text(encoding="utf-8")


def write(tmp_path: Path, text: str, name: str = "policy.csv") -> Path:
    """A file in tmp_path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def found(diagnostics: list[Diagnostic], line: int) -> list[Diagnostic]:
    """The diagnostics of one line."""
    return [d for d in diagnostics if d.line == line]


def only(diagnostics: list[Diagnostic], line: int, severity: str, text: str) -> None:
    """Line ``line`` has exactly one diagnostic, of this severity, saying ``text``."""
    here = found(diagnostics, line)
    assert len(here) == 1, (line, here)
    assert here[0].severity == severity, here[0]
    assert text in here[0].message, here[0]


BROKEN = """\
# line 1: a comment
p, users, databases/db1/*, read

p, users, databases/db1
p2, users, databases/db1, read
P, users, databases/db1, read
p, admin, databases/db1, read
p, user:, databases/db1, read
p, users, databases/db1, reed
p, users, databases/*/x, read
p, users, notes*, read
p, users, /databases/db1, read
p, users, databases//db1, read
p, users, databases/db1/, read
p, users, databases/../admin, read
p, users, databases/%2e%2e, read
p, users, databases/db1/*, read
p, users, databases/db2, read, deny
p, users, databases/db3, read # trusted
p, users, "databases/db4", read
g, alice, team:t1
g, user:alice
\ufeffp, users, databases/db5, read
p, users, databases/a.b:c@d/*, write
g, user:bob, team:t1/owner
g, user:bob, team:t1/owner
p, any, *, read
p, users, , read
"""


def test_every_diagnostic_kind_with_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    policy, diagnostics = load_policy(None, [path])
    assert policy is not None
    assert all(d.file == str(path) for d in diagnostics)
    assert found(diagnostics, 1) == [] and found(diagnostics, 2) == []
    only(diagnostics, 4, "error", "p line has 2 field(s); the model's 'p = sub, obj, act' needs 3")
    only(diagnostics, 5, "error", "unknown policy type 'p2'")
    only(diagnostics, 6, "error", "Casbin would silently ignore")
    only(diagnostics, 7, "error", "unknown role 'admin': a user is 'user:admin'")
    only(diagnostics, 8, "error", "unknown role 'user:'")
    only(diagnostics, 9, "error", "unknown action 'reed'")
    only(diagnostics, 10, "error", "whole trailing segment")
    only(diagnostics, 11, "error", "whole trailing segment")
    only(diagnostics, 12, "error", "not normalised: write 'databases/db1'")
    only(diagnostics, 13, "error", "not normalised: write 'databases/db1'")
    only(diagnostics, 14, "error", "not normalised: write 'databases/db1'")
    only(diagnostics, 15, "error", "'..' segments are refused")
    only(diagnostics, 16, "error", "percent-encoded")
    only(diagnostics, 17, "warning", f"duplicate of {path}:2")
    only(diagnostics, 18, "error", "needs a model with explicit effects")
    only(diagnostics, 19, "error", "'#' starts a comment only at the beginning of a line")
    only(diagnostics, 20, "error", "no quoting")
    only(diagnostics, 21, "error", "unknown role 'alice': a user is 'user:alice'")
    only(diagnostics, 22, "error", "g line has 1 field(s); the model's g needs 2")
    only(diagnostics, 23, "error", "byte-order mark")
    assert found(diagnostics, 24) == []
    assert found(diagnostics, 25) == []
    only(diagnostics, 26, "warning", f"duplicate of {path}:25")
    only(diagnostics, 27, "warning", "'*' alone grants on every resource")
    only(diagnostics, 28, "error", "empty obj field")
    # Only the sound lines are kept, each with its line.
    assert [r.line for r in policy.rules] == [2, 24, 27]
    assert [link.line for link in policy.links] == [25]
    assert str(diagnostics[0]).startswith(f"{path}:4: error: ")


def test_effects_on_the_deny_model(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p, users, a/*, read, allow\n"
        "p, users, a/*, read, deny\n"
        "p, users, a/b, read, maybe\n"
        "p, users, a/c, read\n",
    )
    policy, diagnostics = load_policy(DENY_MODEL_PATH, [path])
    assert policy is not None
    assert found(diagnostics, 1) == []
    only(diagnostics, 2, "warning", f"is both allowed and denied (also {path}:1); the deny wins")
    only(diagnostics, 3, "error", "unknown effect 'maybe': effects are allow and deny")
    only(diagnostics, 4, "error", "p line has 3 field(s); the model's 'p = sub, obj, act, eft'")


def test_duplicates_are_found_across_files(tmp_path: Path) -> None:
    first = write(tmp_path, "p, users, a/*, read\n", "one.csv")
    second = write(tmp_path, "\n\np, users, a/*, read\n", "two.csv")
    _, diagnostics = load_policy(None, [first, second])
    assert diagnostics == [Diagnostic(str(second), 3, f"duplicate of {first}:1", "warning")]


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"p, users, a, read\np, users, \xff, read\n")
    _, diagnostics = load_policy(None, [missing, binary])
    assert diagnostics[0].file == str(missing) and diagnostics[0].line is None
    assert diagnostics[1].file == str(binary) and diagnostics[1].line == 2
    assert "UTF-8" in diagnostics[1].message


def test_strict_loading_raises_at_the_first_error(tmp_path: Path) -> None:
    path = write(tmp_path, "p, users, a, read\np, users, a, reed\np, users, b, reed\n")
    with pytest.raises(PolicyError) as caught:
        load_policy_strict(None, [path])
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.file, error.line) == (str(path), 2)
    assert str(error).startswith(f"{path}:2: unknown action 'reed'")
    assert "(and 1 more error(s))" in str(error)
    assert len(error.diagnostics) == 2
    good = write(tmp_path, "p, users, a, read\n", "good.csv")
    assert len(load_policy_strict(None, good).rules) == 1


MATCHER = (
    "m = p.sub in r.sub && (r.obj == p.obj || keyMatch(r.obj, p.obj)) && "
    '(r.act == p.act || (p.act == "write" && r.act != "read"))'
)


@pytest.mark.parametrize(
    ("broken", "line", "message"),
    [
        (MODEL.replace("[matchers]\n" + MATCHER, ""), None, "no [matchers] m = ..."),
        (
            MODEL.replace("[request_definition]\nr = sub, obj, act", ""),
            None,
            "[request_definition]",
        ),
        (
            MODEL.replace("some(where (p.eft == allow))", "some(where (p.eft==allow))"),
            23,
            "unsupported effect",
        ),
        (
            MODEL.replace("some(where (p.eft == allow))", "!some(where (p.eft == deny))"),
            23,
            "allows every request that no rule denies",
        ),
        (MODEL.replace("keyMatch(r.obj", "keyMatch9(r.obj"), 26, "calls keyMatch9()"),
        (MODEL.replace("p.sub in r.sub &&", "p.sub in r.sub&&"), 26, "r_suband()"),
        (MODEL.replace("(r.obj == p.obj ||", "(r.obj === p.obj ||"), 26, "not a valid expression"),
        (MODEL.replace("r.act == p.act", "r.act == p.action"), 26, "'p_action'"),
        (MODEL.replace("p = sub, obj, act", "p = sub, obj, act  # one role"), 17, "comments"),
        (MODEL.replace("r = sub, obj, act", "r = sub, obj"), 14, "'r = sub, obj, act'"),
        (MODEL.replace("g = _, _", "g = _"), 20, "at least two fields"),
        (MODEL.replace("[matchers]\n", "[matchers]\nm\n"), 26, "Casbin cannot read the model"),
    ],
)
def test_broken_models_are_reported_with_file_and_line(
    tmp_path: Path, broken: str, line: int | None, message: str
) -> None:
    assert broken != MODEL
    path = write(tmp_path, broken, "model.conf")
    policy, diagnostics = load_policy(path, [])
    assert policy is None
    assert diagnostics, broken
    assert diagnostics[0].file == str(path)
    assert diagnostics[0].line == line, diagnostics
    assert message in diagnostics[0].message, diagnostics
    with pytest.raises(PolicyError) as caught:
        load_policy_strict(path, [])
    assert caught.value.file == str(path)


def test_missing_model_file(tmp_path: Path) -> None:
    spec, diagnostics = read_model(tmp_path / "nope.conf")
    assert spec is None and "cannot read the model" in diagnostics[0].message


def test_custom_models_are_valid_but_not_indexed() -> None:
    text = MODEL.replace("e = some(where (p.eft == allow))", "e = priority(p.eft) || deny")
    spec, diagnostics = parse_model(text, "priority.conf")
    assert spec is not None and diagnostics == []
    assert spec.kind is None and "effect" in spec.not_indexed_because


# -- the holder -------------------------------------------------------------------------------


def test_a_broken_file_never_replaces_a_good_policy(tmp_path: Path) -> None:
    path = write(tmp_path, "p, users, a/*, read\n")
    holder = PolicyHolder.from_files(None, [path])
    good = holder.engine
    alice = frozenset({"any", "users", "user:alice"})
    assert good.decide(alice, "read", "a/b").allowed

    path.write_text("p, users, a/*, read\np, users, a/*, raed\n", encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        holder.reload()
    assert (caught.value.file, caught.value.line) == (str(path), 2)
    assert holder.engine is good
    assert holder.engine.decide(alice, "read", "a/b").allowed

    path.write_text("p, users, a/*, write\n", encoding="utf-8")
    fresh = holder.build()
    assert holder.engine is good  # build never swaps
    holder.replace(fresh)
    assert holder.engine is fresh
    assert not holder.engine.decide(alice, "read", "a/b").allowed
    assert holder.engine.decide(alice, "update", "a/b").allowed


def test_self_test_suites_guard_a_reload(tmp_path: Path) -> None:
    path = write(tmp_path, "p, any, buckets/public/files/*, read\n")
    suite = write(
        tmp_path,
        "tests:\n"
        "  - principal: {roles: [any, guests]}\n"
        "    resource: buckets/public/files/logo.png\n"
        "    action: read\n"
        "    expect: allow\n",
        "policy.test.yaml",
    )
    holder = PolicyHolder.from_files(None, [path], suites=[suite])
    path.write_text("p, users, buckets/public/files/*, read\n", encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        holder.reload(suites=[suite])
    assert (caught.value.file, caught.value.line) == (str(suite), 2)
    assert "expected allow" in str(caught.value)
    assert holder.engine.decide(frozenset({"any"}), "read", "buckets/public/files/x").allowed


def test_holder_from_settings_and_default(tmp_path: Path) -> None:
    class Settings:
        policy_model = str(DENY_MODEL_PATH)
        policy_files = (str(write(tmp_path, "p, users, a/*, read, allow\n")),)

    holder = PolicyHolder.for_settings(Settings())
    assert holder.engine.model.kind == "deny"
    assert holder.engine.decide(frozenset({"users"}), "read", "a/b").allowed
    empty = PolicyHolder()
    assert isinstance(empty.engine, PolicyEngine)
    assert not empty.engine.decide(frozenset({"users"}), "read", "a/b").allowed


def test_build_engine_runs_the_self_check(tmp_path: Path) -> None:
    path = write(tmp_path, "p, users, a/*, read\np, users, b, write\n")
    engine = build_engine(None, [path])
    assert engine.is_indexed and len(engine.rules) == 2
