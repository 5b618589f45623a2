"""The current policy engine, and the only way to change it: build aside, check, swap.

Readers take ``holder.engine`` once per request and use that engine to the end; a reload builds,
lints and self-tests a whole new engine aside and swaps it in with one attribute assignment, so
no request ever sees half a policy and a broken file never replaces a good policy.

This module is on every app's start-up path, policy or not, so the loader and the engine (and
with them pycasbin) are imported when a policy is first built, and the YAML suites' reader only
when suites sit beside the policy.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from bastion.policies.diagnostics import Diagnostic, PolicyError

if TYPE_CHECKING:
    from bastion.policies.engine import PolicyEngine
    from bastion.policies.rules import Policy

__all__ = ["PolicyHolder", "build_engine", "check_engine"]

logger = logging.getLogger("bastion.policy")

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
    all pass on the new engine (their own model/policy entries are ignored here). Without
    PyYAML the suites are skipped with a warning naming them (the rest of the checks still run).
    """
    from bastion.policies.loader import load_policy

    policy, diagnostics = load_policy(model_path, policy_paths)
    return check_engine(policy, diagnostics, self_test=self_test, suites=suites)


def check_engine(
    policy: Policy | None,
    diagnostics: list[Diagnostic],
    *,
    self_test: bool = True,
    suites: Sequence[PathLike] = (),
) -> PolicyEngine:
    """The engine of a policy the loader read, linted and self-tested as :func:`build_engine`."""
    from bastion.policies.engine import PolicyEngine

    if policy is None or any(d.severity == "error" for d in diagnostics):
        raise PolicyError.from_diagnostics(diagnostics)
    engine = PolicyEngine.from_policy(policy)
    problems: list[Diagnostic] = engine.self_check() if self_test else []
    problems.extend(_suite_problems(engine, suites))
    if problems:
        raise PolicyError.from_diagnostics(problems)
    return engine


def _suite_problems(engine: PolicyEngine, suites: Sequence[PathLike]) -> list[Diagnostic]:
    """The failures of the YAML suites on ``engine``; none, with a warning, without PyYAML.

    Skipping rather than refusing: the policy was parsed, linted and self-checked, and an app
    must not stop starting because a dev-time extra is missing where it runs. The warning says
    which suites did not run and how to make them run.
    """
    if not suites:
        return []
    try:
        from bastion.policies.tools.suites import load_suite, run_cases, yaml_module

        yaml_module()
    except ImportError as exc:
        if exc.name != "yaml":
            raise
        logger.warning(
            "policy test suites not run (%s): %s",
            ", ".join(os.fspath(path) for path in suites),
            exc,
        )
        return []
    problems: list[Diagnostic] = []
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
    return problems


class PolicyHolder:
    """Holds the engine requests use; swapped whole, never changed in place."""

    def __init__(
        self,
        engine: PolicyEngine | None = None,
        *,
        model_path: PathLike | None = None,
        policy_paths: Sequence[PathLike] = (),
    ) -> None:
        # No policy at all means an engine without rules (every request is denied), built at
        # its first use: an app that configures no policy never loads pycasbin.
        self._engine = engine
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
        engine = self._engine
        if engine is None:
            # Two threads may both build it: equal empty engines, and either one will do.
            from bastion.policies.engine import PolicyEngine

            engine = self._engine = PolicyEngine()
        return engine

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
