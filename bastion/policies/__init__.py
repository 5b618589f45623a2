"""Policies: the Casbin model, strict policy loading, the indexed decision engine and its tools.

The middleware needs three names: :class:`PolicyHolder` (``holder.engine`` once per request),
:meth:`PolicyEngine.decide` → :class:`Decision`, and :class:`PolicyError` for broken files.
"""

from bastion.policies.diagnostics import Diagnostic, PolicyError
from bastion.policies.distribution import check_casbin
from bastion.policies.engine import Decision, PolicyEngine
from bastion.policies.holder import PolicyHolder, build_engine
from bastion.policies.loader import load_policy, load_policy_strict
from bastion.policies.modeldef import DEFAULT_MODEL_PATH, DENY_MODEL_PATH, ModelSpec
from bastion.policies.rules import Policy, Rule

check_casbin()

__all__ = [
    "DEFAULT_MODEL_PATH",
    "DENY_MODEL_PATH",
    "Decision",
    "Diagnostic",
    "ModelSpec",
    "Policy",
    "PolicyEngine",
    "PolicyError",
    "PolicyHolder",
    "Rule",
    "build_engine",
    "load_policy",
    "load_policy_strict",
]
