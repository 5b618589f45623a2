"""``bastion policy check | test | explain`` on the shipped examples and on broken copies."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import pytest

from bastion.policies.tools import commands

EXAMPLES = Path(__file__).resolve().parent / "data" / "policy"
MODEL = Path(__file__).resolve().parents[1] / "bastion" / "policies" / "model.conf"


def run(command: str, *args: object) -> tuple[int, str]:
    """Run a policy command; ``(exit code, output)``."""
    out = io.StringIO()
    code = getattr(commands, command)(*args, out)
    return code, out.getvalue()


@pytest.fixture
def examples(tmp_path: Path) -> Path:
    """A copy of the examples to break."""
    target = tmp_path / "examples"
    shutil.copytree(EXAMPLES, target)
    return target


def replace_line(path: Path, old: str, new: str) -> int:
    """Replace the line starting with ``old``; return its line number."""
    lines = path.read_text(encoding="utf-8").split("\n")
    number = next(i for i, line in enumerate(lines) if line.startswith(old))
    lines[number] = new
    path.write_text("\n".join(lines), encoding="utf-8")
    return number + 1


# -- check ------------------------------------------------------------------------------------


def test_check_passes_on_the_examples() -> None:
    code, out = run("check", [EXAMPLES])
    assert code == 0, out
    assert out.strip().splitlines()[-1] == (
        "checked 0 model(s) and 1 policy file(s): 8 rule(s), 5 role link(s); "
        "0 error(s), 0 warning(s)"
    )


def test_check_reports_file_line_errors(examples: Path) -> None:
    policy = examples / "policy.csv"
    bad = replace_line(policy, "p, any, buckets/public", "p, anyone, buckets/public/files/*, read")
    code, out = run("check", [examples])
    assert code == 1
    assert f"{policy}:{bad}: error: unknown role 'anyone'" in out
    assert "1 error(s)" in out.splitlines()[-1]


def test_check_reports_broken_models_and_warnings(examples: Path) -> None:
    (examples / "model.conf").write_text(
        MODEL.read_text().replace("keyMatch(", "keyMatch7("),
        encoding="utf-8",
    )
    policy = examples / "policy.csv"
    with policy.open("a", encoding="utf-8") as f:
        f.write("p, users, databases/main/collections/notes, create\n")
    code, out = run("check", [examples / "model.conf", policy])
    assert code == 1
    assert f"{examples / 'model.conf'}:26: error: the matcher calls keyMatch7()" in out


def test_check_warns_about_unindexed_models(examples: Path) -> None:
    (examples / "model.conf").write_text(
        MODEL.read_text().replace(
            "m = p.sub in r.sub && (r.obj == p.obj || keyMatch(r.obj, p.obj))",
            "m = (r.obj == p.obj || keyMatch(r.obj, p.obj)) && p.sub in r.sub",
        ),
        encoding="utf-8",
    )
    code, out = run("check", [examples])
    assert code == 0, out
    assert "warning: policy model" in out and "scans all 8 rules" in out


def test_check_without_files() -> None:
    code, out = run("check", [EXAMPLES / "policy.test.yaml"])
    assert code == 1 and "no model (.conf) or policy (.csv) files" in out
    code, out = run("check", [EXAMPLES / "nope.csv"])
    assert code == 1 and "nope.csv: error: no such file or directory" in out


# -- test -------------------------------------------------------------------------------------


def test_test_passes_on_the_examples() -> None:
    code, out = run("test", [EXAMPLES])
    assert code == 0, out
    lines = out.strip().splitlines()
    assert lines[-1] == "27 passed, 0 failed"
    assert lines[-2] == "coverage: 8/8 rules exercised (100%)"
    assert sum(line.endswith(" PASSED") for line in lines) == 27


def test_test_reports_failures_and_uncovered_rules(examples: Path) -> None:
    policy = examples / "policy.csv"
    # Guests can no longer read the public bucket; the avatar rule for the team is now unused.
    bad = replace_line(policy, "p, any, buckets/public", "p, users, buckets/public/files/*, read")
    avatars = replace_line(
        policy, "p, team:editors, buckets/avatars", "p, team:editors, buckets/other/*, read"
    )
    code, out = run("test", [examples])
    assert code == 1
    assert (
        "policy.test.yaml::guests read public files, and nothing else "
        "[guest read buckets/public/files/logo.png] FAILED"
    ) in out
    assert "expected allow, got deny" in out
    assert "team members see avatars [alice read buckets/avatars/files/alice.png] FAILED" in out
    assert (
        f"coverage: 6/8 rules exercised (75%); never exercised: {policy}:{bad}, {policy}:{avatars}"
        in out
    )
    assert out.strip().splitlines()[-1] == "25 passed, 2 failed"


def test_test_with_a_broken_policy_or_suite(examples: Path) -> None:
    policy = examples / "policy.csv"
    bad = replace_line(policy, "p, any, buckets/public", "p, any, buckets/public/files/*, reed")
    code, out = run("test", [examples])
    assert code == 1
    assert f"{policy}:{bad}: error: unknown action 'reed'" in out
    assert out.strip().splitlines()[-1] == "0 passed, 27 failed, 1 error(s)"

    suite = examples / "broken_test.yaml"
    suite.write_text("tests:\n  - principal: alice\n    resource: a\n    action: fly\n")
    code, out = run("test", [suite])
    assert code == 1
    assert f"{suite}:2: error: unknown action 'fly'" in out


def test_test_needs_suites(tmp_path: Path) -> None:
    code, out = run("test", [tmp_path])
    assert code == 1 and "no test suites" in out


def test_suites_can_name_the_deny_model(tmp_path: Path) -> None:
    (tmp_path / "rules.csv").write_text(
        "p, users, a/*, write, allow\np, label:banned, a/*, write, deny\n", encoding="utf-8"
    )
    (tmp_path / "rules_test.yaml").write_text(
        "model: deny\n"
        "tests:\n"
        "  - {principal: alice, resource: a/b, expect: {update: allow, read: deny}}\n"
        "  - principal: {user: bad, roles: ['label:banned']}\n"
        "    resource: a/b\n"
        "    action: update\n"
        "    expect: deny\n",
        encoding="utf-8",
    )
    code, out = run("test", [tmp_path])
    assert code == 0, out
    assert "3 passed, 0 failed" in out and "coverage: 2/2" in out


# -- explain ----------------------------------------------------------------------------------


def test_explain_an_allow_through_g_lines() -> None:
    code, out = run("explain", [EXAMPLES], "alice", "delete", "databases/main/collections/notes")
    assert code == 0
    assert "principal: any, user:alice, users" in out
    assert "+ through g lines: team:editors, team:editors/editor, team:editors/owner" in out
    assert "decision:  ALLOW" in out
    assert "by p, team:editors/owner, databases/main/collections/notes, write" in out
    assert "policy.csv:17)" in out


def test_explain_a_deny_with_the_nearest_rules() -> None:
    code, out = run(
        "explain", [EXAMPLES], "carol", "update", "databases/main/collections/notes/documents/n1"
    )
    assert code == 1
    assert "decision:  DENY" in out
    assert "no rule grants this action" in out
    assert "nearest:" in out
    assert "p, users, databases/main/collections/notes/documents/*, read" in out
    assert "these roles, but for read" in out


def test_explain_roles_and_refused_paths() -> None:
    code, out = run("explain", [EXAMPLES], "any,guests", "read", "buckets/public/files/x")
    assert code == 0 and "principal: any, guests" in out
    code, out = run("explain", [EXAMPLES], ["any"], "read", "buckets/public/files/../x")
    assert code == 1 and "refused: '..' segments" in out


def test_explain_a_broken_policy(examples: Path) -> None:
    replace_line(
        examples / "policy.csv", "p, any, buckets/public", "p, any, buckets/public/*/x, read"
    )
    code, out = run("explain", [examples], "alice", "read", "buckets/public/files/x")
    assert code == 2 and "error: '*' is allowed only as a whole trailing segment" in out
