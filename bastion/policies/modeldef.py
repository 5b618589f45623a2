"""Casbin model files: parsed with Casbin itself, checked, and told indexable or not.

Bastion serves the two shipped models (``model.conf``, ``model_deny.conf``) from an index. A model
counts as one of them when its request and policy definitions, effect and matcher are the same
after whitespace normalisation (the matcher is compared token by token, so spacing and line
continuations do not matter but any other change does). Every other valid model still works,
through Casbin's own linear enforcer.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import io
import os
import re
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

from bastion.policies.casbin_compat import Model, casbin_functions, get_effector, matcher_expression
from bastion.policies.diagnostics import Diagnostic, PolicyError

__all__ = [
    "DEFAULT_MODEL_PATH",
    "DENY_MODEL_PATH",
    "ModelKind",
    "ModelSpec",
    "default_model",
    "deny_model",
    "parse_model",
    "read_model",
]

DEFAULT_MODEL_PATH: Final = Path(__file__).with_name("model.conf")
"""The shipped allow-only model."""

DENY_MODEL_PATH: Final = Path(__file__).with_name("model_deny.conf")
"""The shipped model with explicit denies (``p = sub, obj, act, eft``)."""

ModelKind = Literal["allow", "deny"]

_SECTIONS: Final = {
    "r": "request_definition",
    "p": "policy_definition",
    "g": "role_definition",
    "e": "policy_effect",
    "m": "matchers",
}
_REQUIRED: Final = ("r", "p", "e", "m")
_DENY_OVERRIDE: Final = "!some(where (p_eft == deny))"
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LINE_IN_MESSAGE = re.compile(r"line (\d+)")
_SKIPPED_TOKENS = frozenset(
    {tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT, tokenize.DEDENT}
)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A checked Casbin model: its text and what Bastion needs to know about it."""

    text: str
    file: str
    request_tokens: tuple[str, ...]
    """Casbin's names for the request fields, e.g. ``("r_sub", "r_obj", "r_act")``."""
    policy_tokens: Mapping[str, tuple[str, ...]]
    """Per policy type (``p``, ``p2``...), Casbin's names for its fields (``p_sub``...)."""
    role_arity: Mapping[str, int]
    """Per role type (``g``, ``g2``...), the number of fields of its lines."""
    matcher: str
    """The ``m`` matcher as Casbin keeps it (``p.sub`` already spelled ``p_sub``)."""
    effect: str
    kind: ModelKind | None
    """``allow`` or ``deny`` for the two shipped models (served from the index), else None."""
    not_indexed_because: str = ""
    lines: Mapping[str, int] = field(default_factory=dict)
    """The line of each definition (``r``, ``p``, ``e``, ``m``, ``g``...) in the file."""

    @property
    def has_eft(self) -> bool:
        """Whether ``p`` lines carry an effect field (explicit allow/deny)."""
        return "p_eft" in self.policy_tokens.get("p", ())

    def field_names(self, ptype: str) -> tuple[str, ...]:
        """The field names of policy type ``ptype`` without Casbin's prefix (``sub``...)."""
        return tuple(token.split("_", 1)[1] for token in self.policy_tokens[ptype])

    def casbin_model(self) -> Any:
        """A fresh ``casbin.model.Model`` of this text (Casbin keeps policies inside the model)."""
        model = Model()
        model.load_model_from_text(self.text)
        return model


def _definition_lines(text: str) -> dict[str, int]:
    """Where each ``key = value`` definition starts, read the way Casbin's config reader does."""
    lines: dict[str, int] = {}
    section = ""
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, _ = line.partition("=")
        key = key.strip()
        if sep and _IDENTIFIER.fullmatch(key) and section in _SECTIONS.values():
            lines.setdefault(key, number)
    return lines


def _matcher_tokens(matcher: str) -> tuple[tuple[int, str], ...] | None:
    """The Python tokens of Casbin's rewriting of a matcher, or None if it does not tokenize."""
    expression = rewrite_matcher(matcher)
    if expression is None:
        return None
    try:
        return tuple(
            (tok.type, tok.string)
            for tok in tokenize.generate_tokens(io.StringIO(expression).readline)
            if tok.type not in _SKIPPED_TOKENS
        )
    except (tokenize.TokenError, SyntaxError):
        return None


def rewrite_matcher(matcher: str) -> str | None:
    """Casbin's own rewriting of a matcher into Python (``&&`` → ``and``...); None if unparsable."""
    try:
        expression = matcher_expression(matcher, {})
    except (SyntaxError, ValueError):
        return None
    return str(expression.expr)


@functools.lru_cache(maxsize=64)
def _check_matcher(
    matcher: str, allowed_names: frozenset[str], functions: frozenset[str]
) -> str | None:
    """Why Casbin would fail to evaluate the matcher, or None.

    Remembered: every reload reads its model again, in the policy watcher's thread, and
    CPython 3.11's ``ast.parse`` is not safe beside another thread's (``SystemError: AST
    constructor recursion depth mismatch``, python/cpython#106905): parsing the same matcher
    once keeps reloads away from an app's own ``ast.parse``.
    """
    expression = rewrite_matcher(matcher)
    try:
        tree = ast.parse((expression or matcher).strip(), mode="eval")
    except (SyntaxError, ValueError) as exc:
        reason = exc.msg if isinstance(exc, SyntaxError) else str(exc)
        return f"the matcher is not a valid expression: {reason}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id not in functions and node.func.id != "eval":
                return f"the matcher calls {node.func.id}(), which Casbin does not define"
        elif isinstance(node, ast.Name) and node.id not in allowed_names | functions:
            if node.id in ("True", "False", "None", "eval"):
                continue
            return (
                f"the matcher uses {node.id!r}, which is neither a request or policy field "
                "nor a function"
            )
    return None


def parse_model(text: str, file: str = "<model>") -> tuple[ModelSpec | None, list[Diagnostic]]:
    """Parse and check a model text with Casbin's own reader; None when it must not be used."""
    spec, diagnostics = _parse(text, file)
    if spec is None:
        return None, diagnostics
    kind, because = _classify(spec)
    return dataclasses.replace(spec, kind=kind, not_indexed_because=because), diagnostics


def _parse(text: str, file: str) -> tuple[ModelSpec | None, list[Diagnostic]]:
    """Parse and check a model text, without comparing it with the shipped ones."""
    diagnostics: list[Diagnostic] = []
    lines = _definition_lines(text)

    def error(message: str, key: str | None = None) -> None:
        """Record an error on the line of definition ``key`` (or the whole file)."""
        diagnostics.append(Diagnostic(file, lines.get(key) if key else None, message))

    model = Model()
    try:
        model.load_model_from_text(text)
    except Exception as exc:  # Casbin raises bare RuntimeErrors (and worse) for broken files
        found = _LINE_IN_MESSAGE.search(str(exc))
        line = int(found.group(1)) if found else None
        diagnostics.append(Diagnostic(file, line, f"Casbin cannot read the model: {exc}"))
        return None, diagnostics

    for sec in _REQUIRED:
        if model[sec] is None or sec not in model[sec]:
            error(f"the model has no [{_SECTIONS[sec]}] {sec} = ... definition")
    if diagnostics:
        return None, diagnostics

    request_tokens = tuple(model["r"]["r"].tokens)
    policy_tokens = {key: tuple(a.tokens) for key, a in model["p"].items()}
    role_arity = {key: a.value.count("_") for key, a in (model["g"] or {}).items()}

    for key, tokens in [("r", request_tokens), *policy_tokens.items()]:
        for token in tokens:
            name = token.split("_", 1)[1]
            if not _IDENTIFIER.fullmatch(name):
                error(
                    f"field {name!r} in '{key} = ...' is not a name (comments go on their own "
                    "line: Casbin reads anything after '=' as the definition)",
                    key,
                )
    if sorted(t.split("_", 1)[1] for t in request_tokens) != ["act", "obj", "sub"]:
        error("the request definition must be 'r = sub, obj, act' (Bastion passes these)", "r")
    if not {"p_sub", "p_obj", "p_act"} <= set(policy_tokens["p"]):
        error("the policy definition 'p' must name sub, obj and act", "p")
    for key, arity in role_arity.items():
        if arity < 2:
            error(f"role definition {key} needs at least two fields ('{key} = _, _')", key)

    effect = str(model["e"]["e"].value)
    try:
        get_effector(effect)
    except RuntimeError:
        error(
            f"unsupported effect {model['e']['e'].value!r}: Casbin accepts only its five effect "
            "expressions, spelled exactly (e.g. 'some(where (p.eft == allow))')",
            "e",
        )
    if effect == _DENY_OVERRIDE:
        error(
            "'!some(where (p.eft == deny))' allows every request that no rule denies; "
            "use 'some(where (p.eft == allow)) && !some(where (p.eft == deny))' (deny by default)",
            "e",
        )

    matcher = str(model["m"]["m"].value)
    names = frozenset(request_tokens) | frozenset(t for ts in policy_tokens.values() for t in ts)
    problem = _check_matcher(matcher, names, frozenset(casbin_functions()) | set(role_arity))
    if problem:
        error(problem, "m")
    if diagnostics:
        return None, diagnostics

    spec = ModelSpec(
        text=text,
        file=file,
        request_tokens=request_tokens,
        policy_tokens=policy_tokens,
        role_arity=role_arity,
        matcher=matcher,
        effect=effect,
        kind=None,
        lines=lines,
    )
    return spec, diagnostics


def _classify(spec: ModelSpec) -> tuple[ModelKind | None, str]:
    """Which shipped model this one is (``allow``/``deny``), or None and the first difference."""
    model = spec.casbin_model()
    for sec in ("r", "p", "e", "m"):
        extra = sorted(set(model[sec].keys()) - {sec})
        if extra:
            return None, f"it defines {', '.join(extra)} besides {sec}"
    if set(spec.role_arity) - {"g"} or spec.role_arity.get("g", 2) != 2:
        return None, "its role definitions are not just 'g = _, _'"
    shipped = _shipped()
    if spec.request_tokens != shipped["allow"].request_tokens:
        return None, "its request definition is not 'r = sub, obj, act'"
    if _matcher_tokens(spec.matcher) != _matcher_tokens(shipped["allow"].matcher):
        return None, "its matcher is not the shipped one"
    for kind, reference in shipped.items():
        if (
            spec.policy_tokens["p"] == reference.policy_tokens["p"]
            and spec.effect == reference.effect
        ):
            return kind, ""
    return None, "its policy definition and effect are not those of model.conf or model_deny.conf"


@functools.cache
def _shipped() -> dict[ModelKind, ModelSpec]:
    """The two shipped models, parsed once: the reference the others are compared with."""
    found: dict[ModelKind, ModelSpec] = {}
    kinds: tuple[tuple[ModelKind, Path], ...] = (
        ("allow", DEFAULT_MODEL_PATH),
        ("deny", DENY_MODEL_PATH),
    )
    for kind, path in kinds:
        spec, diagnostics = _parse(path.read_text(encoding="utf-8"), str(path))
        if spec is None:  # a packaging bug, not a user error
            raise PolicyError.from_diagnostics(diagnostics)
        found[kind] = dataclasses.replace(spec, kind=kind)
    return found


def read_model(path: str | os.PathLike[str] | None) -> tuple[ModelSpec | None, list[Diagnostic]]:
    """Read and check a model file; ``None`` means the shipped default model."""
    target = Path(path) if path is not None else DEFAULT_MODEL_PATH
    name = str(path) if path is not None else str(DEFAULT_MODEL_PATH)
    try:
        text = target.read_bytes().decode("utf-8")
    except OSError as exc:
        return None, [Diagnostic(name, None, f"cannot read the model: {exc.strerror or exc}")]
    except UnicodeDecodeError as exc:
        return None, [Diagnostic(name, None, f"the model is not UTF-8 text: {exc.reason}")]
    return parse_model(text, name)


def _load_shipped(path: Path) -> ModelSpec:
    """A shipped model, which must parse (a failure here is a packaging bug)."""
    spec, diagnostics = read_model(path)
    if spec is None:
        raise PolicyError.from_diagnostics(diagnostics)
    return spec


@functools.cache
def default_model() -> ModelSpec:
    """The shipped allow-only model (``model.conf``)."""
    return _load_shipped(DEFAULT_MODEL_PATH)


@functools.cache
def deny_model() -> ModelSpec:
    """The shipped model with explicit denies (``model_deny.conf``)."""
    return _load_shipped(DENY_MODEL_PATH)
