"""Strict reading of Casbin ``policy.csv`` files, line by line, with diagnostics.

Casbin's own reader is lenient in ways that hurt teams editing these files: it drops lines whose
policy type the model lacks, reads ``read # note`` as the action ``"read # note"``, splits only on
commas (no quoting; brackets nest), and lets a line with the wrong number of fields through until
the first request reaches it. This reader splits lines exactly as Casbin does and reports every
such problem with its ``file:line`` instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from bastion.grammar import (
    POLICY_ACTIONS,
    is_policy_action,
    is_role,
    normalized_resource,
    resource_problem,
)
from bastion.identity import is_valid_id
from bastion.policies import pacing
from bastion.policies.diagnostics import Diagnostic, PolicyError, Severity, has_errors
from bastion.policies.modeldef import ModelSpec, parse_model, read_model
from bastion.policies.rules import Policy, Rule

__all__ = ["load_policy", "load_policy_strict", "parse_policy_text"]

_ROLE_HELP = (
    "roles are any, guests, users, users/verified, users/unverified, user:ID, user:ID/verified, "
    "team:ID, team:ID/ROLE, member:ID, label:NAME"
)
_CASBIN_SPECIAL = frozenset('"()[]')
_EFFECTS = ("allow", "deny")

Seen = dict[tuple[str, ...], Rule]
"""Rules already read, by ``(ptype, *fields)``: duplicates are found across files too."""


def _role_problem(value: str) -> str | None:
    """Why ``value`` is not a role of the grammar, with a hint for the usual slip, or None."""
    if is_role(value):
        return None
    if value == "":
        return "empty role"
    if is_valid_id(value):
        return f"unknown role {value!r}: a user is 'user:{value}' ({_ROLE_HELP})"
    return f"unknown role {value!r} ({_ROLE_HELP})"


_PIECE = 1 << 16


def _lines(text: str) -> Iterator[str]:
    """``text.split("\\n")``, a piece of about 64 KiB at a time.

    Splitting a 6 MB policy at once is one 20 ms call that holds the GIL: every request of the
    process waits for it, though the reload runs in the watcher's thread.
    """
    start = 0
    while True:
        end = text.find("\n", start + _PIECE)
        if end < 0:
            yield from text[start:].split("\n")
            return
        yield from text[start:end].split("\n")
        start = end + 1


class _FileReader:
    """Reads one policy text against a model, collecting rules, role links and diagnostics."""

    def __init__(self, model: ModelSpec, file: str, seen: Seen) -> None:
        self.model = model
        self.file = file
        self.seen = seen
        self.rules: list[Rule] = []
        self.links: list[Rule] = []
        self.diagnostics: list[Diagnostic] = []
        # (sub, obj, act) → the first allow / deny rule, to point out denies overriding allows.
        self.effects: dict[tuple[str, str, str], dict[str, Rule]] = {}

    def report(self, line: int, message: str, severity: Severity = "error") -> None:
        """Record a diagnostic on ``line`` of this file."""
        self.diagnostics.append(Diagnostic(self.file, line, message, severity))

    def read(self, text: str) -> None:
        """Read every line of ``text`` (split on ``\\n`` only, as Casbin's file adapter does)."""
        for number, raw in enumerate(_lines(text), start=1):
            self.read_line(number, raw.strip())
            pacing.step()

    def read_line(self, number: int, line: str) -> None:
        """Read one stripped line."""
        if line == "" or line.startswith("#"):
            return
        if line.startswith("\ufeff"):
            self.report(number, "the line starts with a byte-order mark; save the file as UTF-8")
            return
        special = sorted(_CASBIN_SPECIAL & set(line))
        if special:
            self.report(
                number,
                f"{' '.join(special)} in a policy line: Casbin's reader has no quoting and "
                "keeps commas inside brackets, so fields would not be what they look like",
            )
            return
        if "#" in line:
            self.report(
                number,
                "'#' starts a comment only at the beginning of a line; Casbin would read it "
                "as part of the last field",
            )
            return
        tokens = [token.strip() for token in line.split(",")]
        ptype, fields = tokens[0], tuple(tokens[1:])
        if ptype in self.model.policy_tokens:
            self.read_rule(number, ptype, fields)
        elif ptype in self.model.role_arity:
            self.read_link(number, ptype, fields)
        else:
            known = ", ".join([*self.model.policy_tokens, *self.model.role_arity])
            self.report(
                number,
                f"unknown policy type {ptype!r}: the model defines {known}; "
                "Casbin would silently ignore this line",
            )

    def read_rule(self, number: int, ptype: str, fields: tuple[str, ...]) -> None:
        """Check a policy (``p``) line field by field."""
        names = self.model.field_names(ptype)
        if len(fields) != len(names):
            if len(fields) == len(names) + 1 and "eft" not in names and fields[-1] in _EFFECTS:
                self.report(
                    number,
                    f"the effect {fields[-1]!r} needs a model with explicit effects "
                    "(p = sub, obj, act, eft, as in model_deny.conf); this model is allow-only",
                )
            else:
                self.report(
                    number,
                    f"{ptype} line has {len(fields)} field(s); the model's "
                    f"'{ptype} = {', '.join(names)}' needs {len(names)}",
                )
            return
        problems = len(self.diagnostics)
        for name, value in zip(names, fields, strict=True):
            self.check_field(number, name, value)
        if len(self.diagnostics) > problems:
            return
        rule = Rule(ptype, fields, self.file, number)
        if self.is_duplicate(number, rule):
            return
        self.rules.append(rule)
        values = dict(zip(names, fields, strict=True))
        if values.get("obj") == "*":
            self.report(number, "'*' alone grants on every resource", "warning")
        if "eft" in values and {"sub", "obj", "act"} <= values.keys():
            self.check_conflict(number, values, rule)

    def check_field(self, number: int, name: str, value: str) -> None:
        """Check one field of a policy line by its name in the model."""
        if value == "":
            self.report(number, f"empty {name} field")
        elif name == "sub":
            problem = _role_problem(value)
            if problem:
                self.report(number, problem)
        elif name == "obj":
            problem = resource_problem(value, pattern=True)
            if problem:
                canonical = normalized_resource(value, pattern=True)
                if canonical is not None:
                    problem = f"resource {value!r} is not normalised: write {canonical!r}"
                self.report(number, problem)
        elif name == "act":
            if not is_policy_action(value):
                self.report(
                    number, f"unknown action {value!r}: actions are {', '.join(POLICY_ACTIONS)}"
                )
        elif name == "eft" and value not in _EFFECTS:
            self.report(number, f"unknown effect {value!r}: effects are allow and deny")

    def check_conflict(self, number: int, values: dict[str, str], rule: Rule) -> None:
        """Warn where the same grant is both allowed and denied (the deny wins)."""
        key = (values["sub"], values["obj"], values["act"])
        by_effect = self.effects.setdefault(key, {})
        by_effect.setdefault(values["eft"], rule)
        if len(by_effect) == 2:
            other = by_effect["allow" if values["eft"] == "deny" else "deny"]
            self.report(
                number,
                f"{values['sub']} {values['act']} {values['obj']} is both allowed and denied "
                f"(also {other.source}); the deny wins",
                "warning",
            )

    def read_link(self, number: int, ptype: str, fields: tuple[str, ...]) -> None:
        """Check a role link (``g``) line."""
        arity = self.model.role_arity[ptype]
        if len(fields) != arity:
            self.report(
                number,
                f"{ptype} line has {len(fields)} field(s); the model's {ptype} needs {arity}",
            )
            return
        problems = len(self.diagnostics)
        for value in fields[:2]:
            problem = _role_problem(value)
            if problem:
                self.report(number, problem)
        for value in fields[2:]:
            if value == "":
                self.report(number, "empty domain field")
        if len(self.diagnostics) > problems:
            return
        link = Rule(ptype, fields, self.file, number)
        if self.is_duplicate(number, link):
            return
        if fields[0] == fields[1]:
            self.report(number, f"{fields[0]} is linked to itself", "warning")
        self.links.append(link)

    def is_duplicate(self, number: int, rule: Rule) -> bool:
        """Record ``rule``; warn and say True if the same line was read before."""
        key = (rule.ptype, *rule.fields)
        first = self.seen.get(key)
        if first is not None:
            self.report(number, f"duplicate of {first.source}", "warning")
            return True
        self.seen[key] = rule
        return False


def parse_policy_text(
    text: str, file: str, model: ModelSpec, *, seen: Seen | None = None
) -> tuple[list[Rule], list[Rule], list[Diagnostic]]:
    """Parse policy text: ``(p rules, g links, diagnostics)``; lines with errors are left out."""
    reader = _FileReader(model, file, {} if seen is None else seen)
    reader.read(text)
    return reader.rules, reader.links, reader.diagnostics


def _paths(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[str]:
    """One path or many, as strings."""
    if isinstance(paths, str | os.PathLike):
        return [os.fspath(paths)]
    return [os.fspath(p) for p in paths]


def load_policy(
    model_path: str | os.PathLike[str] | None,
    policy_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> tuple[Policy | None, list[Diagnostic]]:
    """Read a model (None: the shipped default) and policy files, strictly.

    The policy is None only when the model itself cannot be used. Any error-severity diagnostic
    means the policy must not be used either: its erroneous lines were left out.
    """
    model, diagnostics = read_model(model_path)
    if model is None:
        return None, diagnostics
    rules: list[Rule] = []
    links: list[Rule] = []
    seen: Seen = {}
    files = _paths(policy_paths)
    for file in files:
        try:
            text = Path(file).read_bytes().decode("utf-8")
        except OSError as exc:
            diagnostics.append(Diagnostic(file, None, f"cannot read: {exc.strerror or exc}"))
            continue
        except UnicodeDecodeError as exc:
            line = exc.object[: exc.start].count(b"\n") + 1
            diagnostics.append(Diagnostic(file, line, f"not UTF-8 text: {exc.reason}"))
            continue
        file_rules, file_links, found = parse_policy_text(text, file, model, seen=seen)
        rules.extend(file_rules)
        links.extend(file_links)
        diagnostics.extend(found)
    return Policy(model, tuple(rules), tuple(links), tuple(files)), diagnostics


def load_policy_texts(
    model: tuple[str, str] | None, policies: Iterable[tuple[str, str]]
) -> tuple[Policy | None, list[Diagnostic]]:
    """:func:`load_policy` over texts already read: ``(name, text)`` of the model (None: the
    shipped default) and of each policy file, named in diagnostics as given."""
    if model is None:
        spec, diagnostics = read_model(None)
    else:
        spec, diagnostics = parse_model(model[1], model[0])
    if spec is None:
        return None, diagnostics
    rules: list[Rule] = []
    links: list[Rule] = []
    seen: Seen = {}
    names = []
    for name, text in policies:
        names.append(name)
        file_rules, file_links, found = parse_policy_text(text, name, spec, seen=seen)
        rules.extend(file_rules)
        links.extend(file_links)
        diagnostics.extend(found)
    return Policy(spec, tuple(rules), tuple(links), tuple(names)), diagnostics


def load_policy_strict(
    model_path: str | os.PathLike[str] | None,
    policy_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> Policy:
    """Like :func:`load_policy`, but raise :class:`PolicyError` (at the first error) on errors."""
    policy, diagnostics = load_policy(model_path, policy_paths)
    if policy is None or has_errors(diagnostics):
        raise PolicyError.from_diagnostics(diagnostics)
    return policy
