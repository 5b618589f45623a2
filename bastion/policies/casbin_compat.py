"""Everything Bastion uses of pycasbin, imported here and nowhere else.

Importing this module loads pycasbin, so only the modules that build a model or an engine
(``modeldef``, ``engine``) import it: an app without a policy never loads Casbin at all. The
distribution check runs here too, where ``casbin`` is first imported.

Two uses reach past pycasbin's public API. They are pinned by ``tests/test_casbin_compat.py`` and
the ``pycasbin<3`` bound in pyproject.toml; a new major release must pass that test first:

* :func:`matcher_expression` calls ``CoreEnforcer._get_expression``, Casbin's rewriting of a
  matcher into a SimpleEval expression (``&&`` → ``and``, ``!`` → ``not``), whose ``expr`` is
  the Python text and whose ``eval(names)`` is the evaluation ``enforce`` does.
* :func:`scan_policy` is a copy of the loop of ``CoreEnforcer.enforce_ex`` (its ``eval()``
  handling and its effects), for policy rows a shared Enforcer cannot take for one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from casbin import Enforcer  # type: ignore[import-untyped]
from casbin.core_enforcer import CoreEnforcer  # type: ignore[import-untyped]
from casbin.effect import Effector, effect_to_bool, get_effector  # type: ignore[import-untyped]
from casbin.model import FunctionMap, Model  # type: ignore[import-untyped]
from casbin.persist import Adapter  # type: ignore[import-untyped]
from casbin.util import generate_g_function, util  # type: ignore[import-untyped]

from bastion.policies.distribution import check_casbin

__all__ = [
    "Adapter",
    "Effector",
    "Enforcer",
    "Model",
    "casbin_functions",
    "effect_to_bool",
    "generate_g_function",
    "get_effector",
    "matcher_expression",
    "scan_policy",
]

# Both distributions install the same 'casbin' package: say so as soon as it is loaded.
check_casbin()


def casbin_functions() -> dict[str, Callable[..., Any]]:
    """A fresh copy of Casbin's built-in matcher functions (keyMatch, regexMatch...)."""
    return dict(FunctionMap.load_function_map().get_functions())


def matcher_expression(matcher: str, functions: Mapping[str, Callable[..., Any]]) -> Any:
    """Casbin's own expression for a matcher: ``.expr`` (Python text), ``.eval(names)``.

    Private in pycasbin (``CoreEnforcer._get_expression``); raises ``SyntaxError`` or
    ``ValueError`` for a matcher that does not parse.
    """
    return CoreEnforcer._get_expression(matcher, functions)


def scan_policy(
    matcher: str,
    functions: Mapping[str, Callable[..., Any]],
    effector: Any,
    request: Mapping[str, Any],
    tokens: Sequence[str],
    rows: Iterable[Sequence[str]],
) -> tuple[bool, int | None]:
    """``enforce_ex``'s loop over ``rows``: whether they allow, and the row that explains it.

    ``request`` maps Casbin's request tokens (``r_sub``...) to values, ``tokens`` are the
    policy's (``p_sub``...), ``effector`` is ``get_effector(effect)``. Like ``enforce_ex`` it
    stops as soon as the effect is settled; the index is that of the last matching row, or None.
    """
    has_eval = util.has_eval(matcher)
    expression = None if has_eval else matcher_expression(matcher, functions)
    effects: set[int] = set()
    explained: int | None = None
    for index, fields in enumerate(rows):
        names = dict(request, **dict(zip(tokens, fields, strict=True)))
        if has_eval:
            rule_names = util.get_eval_value(matcher)
            rules = [util.escape_assertion(names[name]) for name in rule_names]
            expression = matcher_expression(util.replace_eval(matcher, rules), functions)
        assert expression is not None
        if not expression.eval(names):
            effects.add(Effector.INDETERMINATE)
            continue
        eft = names.get("p_eft")
        if eft is None or eft == "allow":
            effects.add(Effector.ALLOW)
        elif eft == "deny":
            effects.add(Effector.DENY)
        else:
            effects.add(Effector.INDETERMINATE)
        explained = index
        if effector.intermediate_effect(effects) != Effector.INDETERMINATE:
            break
    return bool(effect_to_bool(effector.final_effect(effects))), explained
