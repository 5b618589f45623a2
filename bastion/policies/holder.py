"""The current policy engine, and the only way to change it: build aside, check, swap.

Readers take ``holder.engine`` once per request and use that engine to the end; a reload builds,
lints and self-tests a whole new engine aside and swaps it in with one attribute assignment, so
no request ever sees half a policy and a broken file never replaces a good policy.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Protocol

from bastion.policies.diagnostics import Diagnostic, PolicyError
from bastion.policies.engine import PolicyEngine
from bastion.policies.loader import load_policy
from bastion.policies.suites import load_suite, run_cases

__all__ = ["PolicyHolder", "build_engine"]

PathLike = str | os.PathLike[str]


class _PolicySettings(Protocol):
    """The settings a holder is built from (``bastion.settings.Settings`` has them)."""

    @property
    def policy_model(self) -> str | None:
        """The model file, or None for the shipped default."""
        ...

    @property
    def policy_files(self) -> tuple[str, ...]:
        """The policy CSV files."""
        ...


def build_engine(
    model_path: PathLike | None,
    policy_paths: PathLike | Iterable[PathLike],
    *,
    self_test: bool = True,
    suites: Sequence[PathLike] = (),
) -> PolicyEngine:
    """Load, lint and self-test a policy aside; raise :class:`PolicyError` (file:line) on any error.

    ``self_test`` decides a sample of the rules' own requests (and, for small policies, checks
    them against a fresh ``casbin.Enforcer``); ``suites`` are YAML test suites whose cases must
    all pass on the new engine (their own model/policy entries are ignored here).
    """
    policy, diagnostics = load_policy(model_path, policy_paths)
    if policy is None or any(d.severity == "error" for d in diagnostics):
        raise PolicyError.from_diagnostics(diagnostics)
    engine = PolicyEngine.from_policy(policy)
    problems: list[Diagnostic] = engine.self_check() if self_test else []
    for path in suites:
        suite, found = load_suite(path)
        problems.extend(found)
        if suite is None:
            continue
        for result in run_cases(engine, suite.cases):
            if not result.passed:
                case = result.case
                wanted = "allow" if case.expect else "deny"
                problems.append(
                    Diagnostic(
                        case.file,
                        case.line,
                        f"{case.name}: expected {wanted} for {case.principal} {case.action} "
                        f"{case.resource}, got {'allow' if result.decision.allowed else 'deny'} "
                        f"({result.decision.reason})",
                    )
                )
    if problems:
        raise PolicyError.from_diagnostics(problems)
    return engine


class PolicyHolder:
    """Holds the engine requests use; swapped whole, never changed in place."""

    def __init__(
        self,
        engine: PolicyEngine | None = None,
        *,
        model_path: PathLike | None = None,
        policy_paths: Sequence[PathLike] = (),
    ) -> None:
        # No policy at all means an engine without rules: every request is denied.
        self._engine = engine if engine is not None else PolicyEngine()
        self.model_path = model_path
        self.policy_paths = tuple(policy_paths)

    @classmethod
    def for_settings(cls, settings: _PolicySettings) -> PolicyHolder:
        """A holder built from ``policy_model`` and ``policy_files``; PolicyError if broken."""
        return cls.from_files(settings.policy_model, settings.policy_files)

    @classmethod
    def from_files(
        cls,
        model_path: PathLike | None,
        policy_paths: Sequence[PathLike],
        *,
        self_test: bool = True,
        suites: Sequence[PathLike] = (),
    ) -> PolicyHolder:
        """A holder whose first engine is built (and checked) from these files."""
        engine = build_engine(model_path, policy_paths, self_test=self_test, suites=suites)
        return cls(engine, model_path=model_path, policy_paths=policy_paths)

    @property
    def engine(self) -> PolicyEngine:
        """The current engine: take it once per request."""
        return self._engine

    def replace(self, engine: PolicyEngine) -> None:
        """Make ``engine`` the current one (one assignment: atomic for readers)."""
        self._engine = engine

    def build(
        self,
        model_path: PathLike | None = None,
        policy_paths: Sequence[PathLike] | None = None,
        *,
        self_test: bool = True,
        suites: Sequence[PathLike] = (),
    ) -> PolicyEngine:
        """Build and check a new engine aside (default: this holder's files); does not swap it."""
        if policy_paths is None:
            model_path, policy_paths = self.model_path, self.policy_paths
        return build_engine(model_path, policy_paths, self_test=self_test, suites=suites)

    def reload(self, *, self_test: bool = True, suites: Sequence[PathLike] = ()) -> PolicyEngine:
        """Rebuild from this holder's files and swap; on PolicyError the old engine stays."""
        engine = self.build(self_test=self_test, suites=suites)
        self.replace(engine)
        return engine
