"""YAML policy test suites (``*.test.yaml``, ``*_test.yaml``): principals, resources, actions.

A suite sits beside the policy it tests::

    name: notes app                # optional
    model: default                 # optional: default, deny (the shipped models) or a path
                                   # relative to this file; else model.conf beside it, else default
    policies: [policy.csv]         # optional: else every *.csv beside this file
    principals:                    # optional named principals
      guest: {roles: [any, guests]}
      alice: {user: alice}         # any, users, user:alice (+ what g lines grant)
      erin: {user: erin, roles: [team:t1, team:t1/editor]}
    tests:
      - name: guests read public files
        principal: guest           # a name above, a user id, a list of roles, or a mapping
        resource: buckets/public/files/logo.png    # or resources: [...]
        expect: {read: allow, update: deny}        # or action: read + expect: allow
      - name: alice's own document row
        principal: alice
        resource: databases/db1/collections/notes/documents/n1
        extra: [[user:alice, write]]               # the resource's own permission rows
        action: update
        expect: allow

A user id ``alice`` stands for the roles ``any``, ``users`` and ``user:alice``; the engine adds
whatever the policy's ``g`` lines grant them.

Reading a suite needs PyYAML (the ``policy-tools`` extra); it is imported when a suite is read,
so the names and principals here (which ``check`` and ``explain`` use) work without it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, cast

from bastion.grammar import ACTIONS, is_role
from bastion.identity import is_valid_id
from bastion.policies.diagnostics import Diagnostic
from bastion.policies.engine import Decision, PolicyEngine
from bastion.policies.modeldef import DEFAULT_MODEL_PATH, DENY_MODEL_PATH

__all__ = [
    "INSTALL_HINT",
    "Case",
    "CaseResult",
    "Suite",
    "is_suite_file",
    "load_suite",
    "parse_principal",
    "run_cases",
    "user_principal",
    "yaml_module",
]

INSTALL_HINT = "pip install 'bastion[policy-tools]'"
"""How to get PyYAML, which reading suites needs."""

_LINE = "__line__"
_EXPECT = {"allow": True, "deny": False}
_SUITE_KEYS = frozenset({"name", "model", "policies", "principals", "tests", _LINE})
_CASE_KEYS = frozenset(
    {"name", "principal", "resource", "resources", "action", "expect", "extra", _LINE}
)


def is_suite_file(path: Path) -> bool:
    """Whether ``path`` is named like a policy test suite."""
    name = path.name
    return name.endswith((".test.yaml", ".test.yml", "_test.yaml", "_test.yml"))


def user_principal(user_id: str) -> frozenset[str]:
    """The roles a signed-in user ``user_id`` has before ``g`` lines: any, users, user:ID."""
    return frozenset({"any", "users", f"user:{user_id}"})


def parse_principal(text: str) -> frozenset[str]:
    """``alice`` → a user's roles; ``any,guests`` or ``team:t1/owner`` → exactly those roles."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if len(parts) == 1 and is_valid_id(parts[0]) and not is_role(parts[0]):
        return user_principal(parts[0])
    return frozenset(parts)


@dataclass(frozen=True, slots=True)
class Case:
    """One expectation: these roles doing this action on this resource are allowed or not."""

    name: str
    principal: str
    roles: frozenset[str]
    resource: str
    action: str
    expect: bool
    extra: tuple[tuple[str, str], ...]
    file: str
    line: int | None

    @property
    def label(self) -> str:
        """``file::name [action resource]``, as the runner prints it."""
        return f"{self.file}::{self.name} [{self.principal} {self.action} {self.resource}]"


@dataclass(frozen=True, slots=True)
class Suite:
    """A suite file: which model and policy files it tests, and its cases."""

    file: str
    name: str
    model_path: str | None
    policy_paths: tuple[str, ...]
    cases: tuple[Case, ...]


@dataclass(frozen=True, slots=True)
class CaseResult:
    """A case and the decision the engine made for it."""

    case: Case
    decision: Decision

    @property
    def passed(self) -> bool:
        """Whether the decision is what the case expects."""
        return self.decision.allowed == self.case.expect


def yaml_module() -> ModuleType:
    """PyYAML, or an ``ImportError`` (``name="yaml"``) that says how to install it."""
    try:
        import yaml  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise ImportError(
            f"YAML policy test suites need PyYAML: {INSTALL_HINT}", name="yaml"
        ) from exc
    return cast(ModuleType, yaml)


@functools.cache
def _line_loader() -> type[Any]:
    """A safe YAML loader that records each mapping's line under ``__line__``."""
    yaml = yaml_module()

    class LineLoader(yaml.SafeLoader):  # type: ignore[misc, name-defined]
        """PyYAML's SafeLoader, plus the line each mapping starts on."""

        def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
            """Build a mapping as usual, plus the line it starts on."""
            mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
            mapping[_LINE] = node.start_mark.line + 1
            return mapping

    return LineLoader


class _SuiteError(Exception):
    """A malformed suite: the message and the line it is about."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def _line(value: object) -> int | None:
    """The line a mapping started on, if it is a mapping from the suite."""
    return value.get(_LINE) if isinstance(value, dict) else None


def _strings(value: object, what: str, line: int | None) -> list[str]:
    """A string or a list of strings."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise _SuiteError(f"{what} must be a string or a list of strings", line)


def _principal(
    value: object, named: Mapping[str, tuple[str, frozenset[str]]], line: int | None
) -> tuple[str, frozenset[str]]:
    """A principal as written in a case: ``(label, roles)``."""
    if isinstance(value, str):
        return named.get(value) or (value, parse_principal(value))
    if isinstance(value, list):
        roles = _strings(value, "principal", line)
        return ",".join(sorted(roles)), frozenset(roles)
    if isinstance(value, dict):
        unknown = set(value) - {"user", "roles", _LINE}
        if unknown:
            raise _SuiteError(f"unknown principal key(s): {', '.join(sorted(unknown))}", line)
        roles_list = _strings(value.get("roles", []), "principal roles", line)
        user = value.get("user")
        if user is not None and (not isinstance(user, str) or not is_valid_id(user)):
            raise _SuiteError(f"invalid user id {user!r}", line)
        granted = frozenset(roles_list) | (user_principal(user) if user else frozenset())
        if not granted:
            raise _SuiteError("a principal needs a user or roles", line)
        return (user or ",".join(sorted(granted))), granted
    raise _SuiteError("principal must be a name, a user id, a list of roles or a mapping", line)


def _expectations(entry: dict[str, Any], line: int | None) -> list[tuple[str, bool]]:
    """``[(action, allowed?)]`` from ``action`` + ``expect``, or from an ``expect`` mapping."""
    expect = entry.get("expect")
    if isinstance(expect, dict):
        if "action" in entry:
            raise _SuiteError(
                "give either 'action' with 'expect: allow|deny' or 'expect: "
                "{action: allow|deny}', not both",
                line,
            )
        pairs = [(str(k), v) for k, v in expect.items() if k != _LINE]
    else:
        action = entry.get("action")
        if not isinstance(action, str):
            raise _SuiteError("a case needs 'action' (or an 'expect' mapping)", line)
        pairs = [(action, expect)]
    found: list[tuple[str, bool]] = []
    for action, outcome in pairs:
        if action not in ACTIONS:
            raise _SuiteError(f"unknown action {action!r}: actions are {', '.join(ACTIONS)}", line)
        if outcome not in _EXPECT:
            raise _SuiteError(f"expect must be allow or deny, not {outcome!r}", line)
        found.append((action, _EXPECT[outcome]))
    if not found:
        raise _SuiteError("a case needs at least one expectation", line)
    return found


def _extra(value: object, line: int | None) -> tuple[tuple[str, str], ...]:
    """Document rows ``[[role, action], ...]``."""
    rows: list[tuple[str, str]] = []
    for row in value if isinstance(value, list) else [value]:
        if not (isinstance(row, list) and len(row) == 2 and all(isinstance(v, str) for v in row)):
            raise _SuiteError("extra must be a list of [role, action] pairs", line)
        rows.append((row[0], row[1]))
    return tuple(rows)


def _model_path(value: object, base: Path, line: int | None) -> str | None:
    """The model a suite names: the shipped ones by keyword, else a path beside the suite."""
    if value is None:
        beside = base / "model.conf"
        return str(beside) if beside.is_file() else None
    if value == "default":
        return str(DEFAULT_MODEL_PATH)
    if value == "deny":
        return str(DENY_MODEL_PATH)
    if not isinstance(value, str):
        raise _SuiteError("model must be default, deny or a path", line)
    return os.path.normpath(base / value)


def _parse(data: object, file: str) -> Suite:
    """A suite from its YAML data."""
    if not isinstance(data, dict):
        raise _SuiteError("a suite is a mapping with a 'tests' list", 1)
    unknown = set(data) - _SUITE_KEYS
    if unknown:
        raise _SuiteError(f"unknown suite key(s): {', '.join(sorted(unknown))}", _line(data))
    base = Path(file).parent
    model = _model_path(data.get("model"), base, _line(data))
    if "policies" in data:
        policies = [
            os.path.normpath(base / p) for p in _strings(data["policies"], "policies", _line(data))
        ]
    else:
        policies = [str(p) for p in sorted(base.glob("*.csv"))]
    named: dict[str, tuple[str, frozenset[str]]] = {}
    principals = data.get("principals") or {}
    if not isinstance(principals, dict):
        raise _SuiteError("principals must be a mapping of names", _line(data))
    for key, value in principals.items():
        if key != _LINE:
            named[str(key)] = (str(key), _principal(value, {}, _line(value) or _line(data))[1])
    tests = data.get("tests")
    if not isinstance(tests, list) or not tests:
        raise _SuiteError("a suite needs a non-empty 'tests' list", _line(data))
    cases: list[Case] = []
    for number, entry in enumerate(tests, start=1):
        line = _line(entry)
        if not isinstance(entry, dict):
            raise _SuiteError(f"test {number} is not a mapping", _line(data))
        unknown = set(entry) - _CASE_KEYS
        if unknown:
            raise _SuiteError(f"unknown test key(s): {', '.join(sorted(unknown))}", line)
        name = str(entry.get("name") or f"test {number}")
        label, roles = _principal(entry.get("principal"), named, line)
        if "resource" in entry and "resources" in entry:
            raise _SuiteError("give either 'resource' or 'resources'", line)
        resources = _strings(entry.get("resource", entry.get("resources")), "resource", line)
        extra = _extra(entry["extra"], line) if "extra" in entry else ()
        for resource in resources:
            for action, allowed in _expectations(entry, line):
                cases.append(Case(name, label, roles, resource, action, allowed, extra, file, line))
    title = data.get("name")
    return Suite(file, str(title) if title else file, model, tuple(policies), tuple(cases))


def load_suite(path: str | os.PathLike[str]) -> tuple[Suite | None, list[Diagnostic]]:
    """Read a suite file; None and a diagnostic (with its line) when it is malformed.

    Raises ``ImportError`` (see :func:`yaml_module`) when PyYAML is not installed.
    """
    yaml = yaml_module()
    file = os.fspath(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Diagnostic(file, None, f"cannot read the suite: {exc}")]
    try:
        data = yaml.load(text, Loader=_line_loader())  # a SafeLoader: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return None, [Diagnostic(file, line, f"invalid YAML: {exc}")]
    try:
        return _parse(data, file), []
    except _SuiteError as exc:
        return None, [Diagnostic(file, exc.line, str(exc))]


def run_cases(engine: PolicyEngine, cases: Iterable[Case]) -> list[CaseResult]:
    """Decide every case on ``engine`` (the same engine the middleware uses)."""
    return [
        CaseResult(case, engine.decide(case.roles, case.action, case.resource, case.extra))
        for case in cases
    ]
