"""``bastion policy check | test | explain``: the logic, writing to a stream, returning exit codes.

* ``check PATH...``: strict parsing of model (``*.conf``) and policy (``*.csv``) files, then the
  engine's self-check; prints ``file:line: error: message``; exit 1 on any error.
* ``test PATH...``: runs YAML suites (``*.test.yaml``, ``*_test.yaml``) on the same engine the
  middleware uses; prints PASSED/FAILED lines, the rules no case exercised and
  ``N passed, M failed``; exit 1 on any failure or broken suite, 2 without PyYAML (the
  ``policy-tools`` extra).
* ``explain PATH... --principal P ACTION RESOURCE``: the decision and the rule(s) behind it, or
  why nothing matched and the nearest rules; exit 0 when allowed, 1 when denied, 2 when the
  policy cannot be loaded.

Policy files are grouped by directory: the ``*.csv`` files of one directory form one policy, with
that directory's ``model.conf`` (or its only ``*.conf``), else the shipped default model.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bastion.grammar import covering_objects, is_resource
from bastion.policies.diagnostics import Diagnostic, PolicyError
from bastion.policies.engine import PolicyEngine
from bastion.policies.loader import load_policy
from bastion.policies.modeldef import read_model
from bastion.policies.rules import Policy, Rule
from bastion.policies.tools.suites import (
    INSTALL_HINT,
    is_suite_file,
    load_suite,
    parse_principal,
    run_cases,
    yaml_module,
)

__all__ = ["check", "explain", "one_policy", "test"]

PathLike = str | os.PathLike[str]
_NO_MODEL = "__default__"


@dataclass
class _PolicySet:
    """The files of one directory: its model (None: the default) and its policy files."""

    model: str | None
    policies: list[str] = field(default_factory=list)


@dataclass
class _Found:
    """What a list of paths holds."""

    models: list[str] = field(default_factory=list)
    policies: list[str] = field(default_factory=list)
    suites: list[str] = field(default_factory=list)
    problems: list[Diagnostic] = field(default_factory=list)


def _collect(paths: Iterable[PathLike]) -> _Found:
    """Model, policy and suite files under the given files and directories (recursively)."""
    found = _Found()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
        elif path.is_file():
            files = [path]
        else:
            found.problems.append(Diagnostic(str(path), None, "no such file or directory"))
            continue
        for file in files:
            name = str(file)
            if file.suffix == ".conf":
                found.models.append(name)
            elif file.suffix == ".csv":
                found.policies.append(name)
            elif is_suite_file(file):
                found.suites.append(name)
            elif not path.is_dir():
                found.problems.append(
                    Diagnostic(name, None, "not a model (.conf), policy (.csv) or suite file")
                )
    found.models = list(dict.fromkeys(found.models))
    found.policies = list(dict.fromkeys(found.policies))
    found.suites = list(dict.fromkeys(found.suites))
    return found


def _model_for(directory: Path, models: Sequence[str]) -> tuple[str | None, str | None]:
    """``(model, problem)``: the model of a directory among ``models``, or None for the default."""
    here = [m for m in models if Path(m).parent == directory]
    preferred = [m for m in here if Path(m).name == "model.conf"]
    if preferred:
        return preferred[0], None
    if len(here) == 1:
        return here[0], None
    if here:
        return None, f"several models in {directory} and none is named model.conf"
    return None, None


def _group(found: _Found) -> tuple[list[_PolicySet], list[Diagnostic]]:
    """One policy set per directory holding policy files."""
    sets: dict[Path, _PolicySet] = {}
    problems: list[Diagnostic] = []
    for policy in found.policies:
        directory = Path(policy).parent
        if directory not in sets:
            model, problem = _model_for(directory, found.models)
            if problem:
                problems.append(Diagnostic(str(directory), None, problem))
            sets[directory] = _PolicySet(model)
        sets[directory].policies.append(policy)
    return list(sets.values()), problems


def _build(
    model: str | None, policies: Sequence[str]
) -> tuple[Policy | None, PolicyEngine | None, list[Diagnostic]]:
    """Load and self-check a policy set; the engine only when it has no error."""
    policy, diagnostics = load_policy(model, policies)
    if policy is None or any(d.severity == "error" for d in diagnostics):
        return policy, None, diagnostics
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            engine = PolicyEngine.from_policy(policy)
    except PolicyError as exc:
        diagnostics.append(Diagnostic(exc.file or policy.model.file, exc.line, exc.message))
        return policy, None, diagnostics
    for warning in caught:
        diagnostics.append(Diagnostic(policy.model.file, None, str(warning.message), "warning"))
    diagnostics.extend(engine.self_check())
    return policy, engine, diagnostics


def one_policy(
    paths: Sequence[PathLike],
) -> tuple[str | None, list[str], list[str], str | None]:
    """``(model, policy files, suites, problem)``: the one policy under ``paths`` to publish.

    The problem is set (and the rest is not to be used) unless the paths hold the policy files
    of exactly one directory (with its model, or the shipped one).
    """
    found = _collect(paths)
    if found.problems:
        return None, [], [], "; ".join(str(d) for d in found.problems)
    sets, problems = _group(found)
    if problems:
        return None, [], [], "; ".join(str(d) for d in problems)
    if len(sets) != 1:
        where = "no policy (.csv) files" if not sets else f"policy files in {len(sets)} folders"
        return None, [], [], f"{where} in {', '.join(map(str, paths))}: publish one policy"
    return sets[0].model, sets[0].policies, found.suites, None


def _print_diagnostics(diagnostics: Iterable[Diagnostic], out: TextIO) -> tuple[int, int]:
    """Print each distinct diagnostic once, in file order; ``(errors, warnings)``."""
    unique = list(dict.fromkeys(diagnostics))
    unique.sort(key=lambda d: (d.file, d.line or 0))
    for diagnostic in unique:
        print(diagnostic, file=out)
    errors = sum(d.severity == "error" for d in unique)
    return errors, len(unique) - errors


def check(paths: Sequence[PathLike], out: TextIO) -> int:
    """Check model and policy files strictly; exit code 1 on any error, else 0."""
    found = _collect(paths)
    diagnostics = list(found.problems)
    if not found.models and not found.policies and not found.problems:
        print(
            f"error: no model (.conf) or policy (.csv) files in {', '.join(map(str, paths))}",
            file=out,
        )
        return 1
    for model in found.models:
        diagnostics.extend(read_model(model)[1])
    sets, problems = _group(found)
    diagnostics.extend(problems)
    rules = links = 0
    for policy_set in sets:
        policy, _, found_here = _build(policy_set.model, policy_set.policies)
        diagnostics.extend(found_here)
        if policy is not None:
            rules += len(policy.rules)
            links += len(policy.links)
    errors, warned = _print_diagnostics(diagnostics, out)
    print(
        f"checked {len(found.models)} model(s) and {len(found.policies)} policy file(s): "
        f"{rules} rule(s), {links} role link(s); {errors} error(s), {warned} warning(s)",
        file=out,
    )
    return 1 if errors else 0


def _covered(engine: PolicyEngine, exercised: set[Rule], out: TextIO) -> None:
    """Print the coverage line for one engine: the file rules no case exercised."""
    rules = [r for r in engine.rules if r.file]
    missed = [r.source for r in rules if r not in exercised]
    share = 100 * (len(rules) - len(missed)) // len(rules) if rules else 100
    line = f"coverage: {len(rules) - len(missed)}/{len(rules)} rules exercised ({share}%)"
    if missed:
        line += "; never exercised: " + ", ".join(missed)
    print(line, file=out)


def test(paths: Sequence[PathLike], out: TextIO) -> int:
    """Run the YAML suites under ``paths``; exit code 1 on any failure, 2 without PyYAML."""
    try:
        yaml_module()
    except ImportError:
        print(
            f"error: bastion policy test reads YAML suites and needs PyYAML: {INSTALL_HINT}",
            file=out,
        )
        return 2
    found = _collect(paths)
    suites = found.suites
    broken = list(found.problems)
    if not suites:
        print(
            f"error: no test suites (*.test.yaml, *_test.yaml) in {', '.join(map(str, paths))}",
            file=out,
        )
        return 1
    engines: dict[tuple[str, tuple[str, ...]], PolicyEngine | None] = {}
    exercised: dict[tuple[str, tuple[str, ...]], set[Rule]] = {}
    passed = failed = 0
    for path in suites:
        suite, problems = load_suite(path)
        if suite is None:
            broken.extend(problems)
            continue
        key = (suite.model_path or _NO_MODEL, suite.policy_paths)
        if key not in engines:
            _, engine, diagnostics = _build(suite.model_path, suite.policy_paths)
            broken.extend(d for d in diagnostics if d.severity == "error")
            engines[key] = engine
            exercised[key] = set()
        engine = engines[key]
        if engine is None:
            print(f"ERROR {suite.file}: its policy has errors (see below)", file=out)
            failed += len(suite.cases)
            continue
        for result in run_cases(engine, suite.cases):
            case = result.case
            exercised[key].update(result.decision.rules)
            if result.passed:
                passed += 1
                print(f"{case.label} PASSED", file=out)
            else:
                failed += 1
                wanted = "allow" if case.expect else "deny"
                got = "allow" if result.decision.allowed else "deny"
                where = f"{case.file}:{case.line}" if case.line else case.file
                print(
                    f"{case.label} FAILED\n  {where}: expected {wanted}, got {got}: "
                    f"{result.decision.reason}",
                    file=out,
                )
    for key, engine in engines.items():
        if engine is not None:
            _covered(engine, exercised[key], out)
    errors, _ = _print_diagnostics([d for d in broken if d.severity == "error"], out)
    summary = f"{passed} passed, {failed} failed"
    if errors:
        summary += f", {errors} error(s)"
    print(summary, file=out)
    return 1 if failed or errors else 0


def _nearest(engine: PolicyEngine, roles: frozenset[str], resource: str) -> list[str]:
    """Rules worth showing when nothing matched: on this path for others, or for these roles."""
    lines: list[str] = []
    covering = set(covering_objects(resource)) if is_resource(resource) else {resource}
    here = [r for r in engine.rules if len(r.fields) > 2 and r.obj in covering]
    for rule in here[:5]:
        who = f"these roles, but for {rule.act}" if rule.sub in roles else "another role"
        lines.append(f"{rule} ({rule.source}) - this resource or an ancestor, {who}")
    mine = [r for r in engine.rules if len(r.fields) > 2 and r.sub in roles and r not in here]

    target = resource.split("/")

    def shared(rule: Rule) -> int:
        """How many leading segments the rule's object shares with the resource."""
        count = 0
        for mine, theirs in zip(rule.obj.split("/"), target, strict=False):
            if mine != theirs:
                break
            count += 1
        return count

    mine.sort(key=shared, reverse=True)
    for rule in mine[:3]:
        lines.append(f"{rule} ({rule.source}) - these roles, another path")
    return lines


def explain(
    paths: Sequence[PathLike],
    principal: str | Iterable[str],
    action: str,
    resource: str,
    out: TextIO,
) -> int:
    """Explain one decision; exit code 0 allowed, 1 denied, 2 when the policy cannot be used.

    ``principal`` is a user id (``alice`` → any, users, user:alice), a comma-separated list of
    roles (``any,guests``), or an iterable of roles.
    """
    found = _collect(paths)
    models = list(dict.fromkeys(found.models))
    model, problem = (None, None) if not models else _model_for(Path(models[0]).parent, models)
    if len({str(Path(m).parent) for m in models}) > 1:
        problem = "several directories hold models; name the one to use"
    if problem or found.problems or not found.policies:
        for diagnostic in found.problems:
            print(diagnostic, file=out)
        print(f"error: {problem or 'no policy (.csv) files given'}", file=out)
        return 2
    _, engine, diagnostics = _build(model, found.policies)
    if engine is None:
        _print_diagnostics(diagnostics, out)
        return 2
    base = parse_principal(principal) if isinstance(principal, str) else frozenset(principal)
    roles = engine.expand_roles(base)
    decision = engine.decide(base, action, resource)
    granted = sorted(roles - base)
    print(f"principal: {', '.join(sorted(base))}", file=out)
    if granted:
        print(f"  + through g lines: {', '.join(granted)}", file=out)
    print(f"request:   {action} {resource}", file=out)
    print(f"decision:  {'ALLOW' if decision.allowed else 'DENY'}", file=out)
    if decision.rules:
        for rule in decision.rules:
            print(f"  by {rule}   ({rule.source})", file=out)
    else:
        print(f"  {decision.reason}", file=out)
        nearest = _nearest(engine, roles, resource)
        if nearest:
            print("  nearest:", file=out)
            for line in nearest:
                print(f"    {line}", file=out)
    return 0 if decision.allowed else 1
