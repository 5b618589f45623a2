"""The decision engine: Casbin's meaning, served from an index.

For the two shipped models a decision gathers only the rules that can match: under the grammar,
``keyMatch(r.obj, p.obj)`` can only be true for ``p.obj`` equal to the path, to one of its
ancestors followed by ``/*``, or to ``*``; ``p.sub in r.sub`` only for subjects in the role set;
and the action clause only for ``p.act`` equal to the action or ``write``. The rules are indexed
``obj → sub → act``, so gathering is a few dict look-ups whatever the policy size. Casbin's own
matcher (its rewritten expression over its function map, compiled once to a Python function)
then decides on those few rules plus the resource's own permission rows, and Casbin's effector
combines the results.

A resource that no policy line names has its container's decision (every candidate is then a
wildcard on an ancestor, which keyMatch accepts for all the container's children alike), so the
engine keeps decisions per role set, action and container, in a bounded table.

Any other model is served by ``casbin.Enforcer`` itself (a linear scan per decision).
"""

from __future__ import annotations

import functools
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from bastion.grammar import ACTIONS, is_resource, resource_problem
from bastion.policies import pacing
from bastion.policies.casbin_compat import (
    Adapter,
    Effector,
    Enforcer,
    casbin_functions,
    effect_to_bool,
    generate_g_function,
    get_effector,
    scan_policy,
)
from bastion.policies.diagnostics import Diagnostic, PolicyError
from bastion.policies.loader import load_policy_strict
from bastion.policies.modeldef import ModelSpec, default_model, rewrite_matcher
from bastion.policies.rules import DOCUMENT, Policy, Rule

__all__ = ["Decision", "PolicyEngine"]

_REQUEST_ACTIONS: Final = frozenset(ACTIONS)
_NO_RULE: Final = "no rule grants this action on this resource or its ancestors to these roles"
_OTHER_EFFECT: Final = "the only matching rules have an effect other than allow or deny"
_EXPAND_CACHE: Final = 4096
_CONTAINER_DECISIONS: Final = 65536
# The measured cost of pycasbin 2.8.0's enforce() on this model (research/casbin.md §3).
_SCAN_FLOOR_US: Final = 35.0
_SCAN_PER_RULE_US: Final = 2.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one request: allowed or not, the rules that decided, and why in words."""

    allowed: bool
    rules: tuple[Rule, ...] = ()
    """The rule(s) that decided, each with its ``source`` (``file:line`` or ``document``)."""
    note: str = ""
    """Why, when no rule decided (a refused request, or no rule matched)."""

    @property
    def reason(self) -> str:
        """Human text: the rule(s) that allowed or denied, or why nothing matched."""
        return _describe(self.allowed, self.rules) if self.rules else self.note


class _RowsAdapter(Adapter):  # type: ignore[misc]
    """Hands rules already read (and checked) to a Casbin Enforcer, as its file adapter would."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._rules = list(rules)

    def load_policy(self, model: Any) -> None:
        """Append every rule to its section, exactly like Casbin's ``load_policy_line``."""
        for rule in self._rules:
            section = model.model.get(rule.ptype[0])
            if section is not None and rule.ptype in section:
                section[rule.ptype].policy.append(list(rule.fields))


def _compiled_matcher(
    matcher: str, functions: dict[str, Any], names: Sequence[str]
) -> Callable[..., Any]:
    """A shipped model's matcher as a Python function of the request and policy fields.

    The expression is Casbin's own rewriting of the matcher, with Casbin's function map; only
    the calling convention differs: positional fields instead of SimpleEval's names dict.
    """
    expression = rewrite_matcher(matcher)
    if expression is None:  # pragma: no cover - shipped models always rewrite
        raise PolicyError(f"cannot compile the matcher {matcher!r}")
    source = f"lambda {', '.join(names)}: ({expression.strip()})"
    code = compile(source, "<casbin matcher>", "eval")
    # A shipped, fixed expression over Casbin's own functions; no builtins reachable.
    match: Callable[..., Any] = eval(code, {"__builtins__": {}, **functions})  # noqa: S307
    return match


def _unindexed(*_: Any) -> Any:
    raise RuntimeError("this model is decided by casbin.Enforcer, not by the index")


def _describe(allowed: bool, rules: Sequence[Rule]) -> str:
    """The human reason for a decision that rules made."""
    verb = "allowed" if allowed else "denied"
    more = f" (and {len(rules) - 1} more rule(s))" if len(rules) > 1 else ""
    return f"{verb} by '{rules[0]}' ({rules[0].source}){more}"


# The matcher's action clause is true only for p.act == r.act, or p.act == "write" when r.act
# is not "read": the only action buckets worth looking in.
_WANTED: Final = {act: (act,) if act == "read" else (act, "write") for act in ACTIONS}


def _expand(graph: dict[str, tuple[str, ...]], roles: frozenset[str]) -> frozenset[str]:
    """The transitive closure of ``roles`` through the role links (cycles are harmless)."""
    found = set(roles)
    pending = [role for role in roles if role in graph]
    while pending:
        for granted in graph.get(pending.pop(), ()):
            if granted not in found:
                found.add(granted)
                pending.append(granted)
    return frozenset(found) if len(found) != len(roles) else roles


class PolicyEngine:
    """Decides requests for one model and policy; immutable after construction, so thread-safe."""

    def __init__(
        self,
        rules: Iterable[Rule] = (),
        links: Iterable[Rule] = (),
        *,
        model: ModelSpec | None = None,
    ) -> None:
        self._model = model if model is not None else default_model()
        self._rules = tuple(rules)
        self._links = tuple(links)
        self._p_tokens = self._model.policy_tokens["p"]
        self._has_eft = "p_eft" in self._p_tokens
        self._graph = self._role_graph()
        # Over the graph, not a bound method: an engine holds no reference cycle, so a replaced
        # one is freed at once, by reference counting (see bastion.policies.watch on the GC).
        self._expand_cached = functools.lru_cache(maxsize=_EXPAND_CACHE)(
            functools.partial(_expand, self._graph)
        )
        self._files = {file: i for i, file in enumerate(dict.fromkeys(r.file for r in self._rules))}
        self._index: dict[str, dict[str, dict[str, list[Rule]]]] | None = None
        self._depths: tuple[int, ...] = ()
        self._subjects: dict[str, frozenset[str]] = {}
        self._by_container: dict[tuple[frozenset[str], str, str], Decision] = {}
        self._enforcer: Any = None
        self._lock = threading.Lock()
        self._functions = casbin_functions()
        self._effector = get_effector(self._model.effect)
        self._match: Callable[..., Any] = _unindexed
        if self._model.kind is not None:
            self._index = self._build_index()
            # Shipped models only (so r = sub, obj, act): compiled once, shared by all threads.
            self._match = _compiled_matcher(
                self._model.matcher,
                self._functions,
                (*self._model.request_tokens, *self._p_tokens),
            )
        else:
            self._enforcer = self._build_enforcer()

    @classmethod
    def from_policy(cls, policy: Policy) -> PolicyEngine:
        """The engine for a policy read by the loader."""
        return cls(policy.rules, policy.links, model=policy.model)

    @classmethod
    def from_files(
        cls,
        model_path: str | os.PathLike[str] | None,
        policy_paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    ) -> PolicyEngine:
        """Read, check and build; raises :class:`PolicyError` (file:line) on any error."""
        return cls.from_policy(load_policy_strict(model_path, policy_paths))

    @property
    def is_indexed(self) -> bool:
        """Whether decisions come from the index (True) or from Casbin's linear Enforcer."""
        return self._index is not None

    @property
    def model(self) -> ModelSpec:
        """The model this engine serves."""
        return self._model

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The policy rules, in file order."""
        return self._rules

    @property
    def links(self) -> tuple[Rule, ...]:
        """The role links (``g`` lines), in file order."""
        return self._links

    # -- building -------------------------------------------------------------------------

    def _role_graph(self) -> dict[str, tuple[str, ...]]:
        """``member → roles`` from the two-field ``g`` lines."""
        graph: dict[str, list[str]] = {}
        for link in self._links:
            if link.ptype != "g":
                continue
            if len(link.fields) != self._model.role_arity.get("g", 2):
                raise PolicyError(
                    f"'{link}' has {len(link.fields)} fields; the model's g needs "
                    f"{self._model.role_arity.get('g', 2)}",
                    file=link.file or None,
                    line=link.line or None,
                )
            if len(link.fields) == 2:
                graph.setdefault(link.fields[0], []).append(link.fields[1])
        return {member: tuple(roles) for member, roles in graph.items()}

    def _check_rule(self, rule: Rule) -> None:
        """Refuse a rule Casbin would choke on, or one the index could not serve faithfully."""
        tokens = self._model.policy_tokens.get(rule.ptype)
        if tokens is None:
            raise PolicyError(
                f"'{rule}': the model has no policy type {rule.ptype!r}",
                file=rule.file or None,
                line=rule.line or None,
            )
        if len(rule.fields) != len(tokens):
            raise PolicyError(
                f"'{rule}' has {len(rule.fields)} fields; the model's {rule.ptype} needs "
                f"{len(tokens)} (Casbin would fail every request with 'invalid policy size')",
                file=rule.file or None,
                line=rule.line or None,
            )

    def _build_index(self) -> dict[str, dict[str, dict[str, list[Rule]]]]:
        """``obj → sub → act → rules`` over every rule (file order kept within a bucket)."""
        index: dict[str, dict[str, dict[str, list[Rule]]]] = {}
        for rule in self._rules:
            self._check_rule(rule)
            sub, obj, act = rule.fields[0], rule.fields[1], rule.fields[2]
            # keyMatch treats any '*' as "any suffix from here"; only a whole trailing '*'
            # segment keeps the candidate set to the ancestors of the requested path.
            if "*" in obj and obj != "*" and not (obj.endswith("/*") and obj.count("*") == 1):
                raise PolicyError(
                    f"'{rule}': '*' is allowed only as a whole trailing segment",
                    file=rule.file or None,
                    line=rule.line or None,
                )
            index.setdefault(obj, {}).setdefault(sub, {}).setdefault(act, []).append(rule)
            pacing.step()
        # Ancestor look-ups only at the depths some "PREFIX/*" rule has (0 for "*" alone): a
        # request then costs one look-up per depth in use, not one per segment.
        depths = {0 if obj == "*" else obj.count("/") for obj in index if obj.endswith("*")}
        self._depths = tuple(sorted(depths))
        self._subjects = {obj: frozenset(by_sub) for obj, by_sub in index.items()}
        return index

    def _build_enforcer(self) -> Any:
        """Casbin's own Enforcer for a model the index cannot serve, built once."""
        for rule in self._rules:
            self._check_rule(rule)
        cost = _SCAN_FLOOR_US + _SCAN_PER_RULE_US * len(self._rules)
        warnings.warn(
            f"policy model {self._model.file} is not one Bastion can index "
            f"({self._model.not_indexed_because}): every decision scans all "
            f"{len(self._rules)} rules with casbin.Enforcer, about {_SCAN_FLOOR_US:.0f} µs + "
            f"{_SCAN_PER_RULE_US:.0f} µs per rule (~{cost:,.0f} µs here)",
            RuntimeWarning,
            stacklevel=3,
        )
        enforcer = Enforcer(self._model.casbin_model(), _RowsAdapter((*self._rules, *self._links)))
        functions = dict(self._functions)
        for key, assertion in (enforcer.model["g"] or {}).items():
            functions[key] = generate_g_function(assertion.rm)
        self._functions = functions
        return enforcer

    # -- deciding -------------------------------------------------------------------------

    def forget_decisions(self) -> None:
        """Empty the per-container decision table, so the next decisions are computed afresh.

        Never needed for correctness (the engine is immutable); benchmarks use it to time the
        computed decision rather than the remembered one.
        """
        self._by_container.clear()

    def expand_roles(self, roles: frozenset[str]) -> frozenset[str]:
        """``roles`` plus every role granted to them through ``g`` lines, transitively."""
        if not self._graph:
            return roles
        return self._expand_cached(frozenset(roles))

    def decide(
        self,
        roles: frozenset[str],
        action: str,
        resource: str,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Decision:
        """Decide whether ``roles`` may do ``action`` on ``resource``.

        ``extra`` are the resource's own permission rows ``(role, action)``: they count as
        allow rules on exactly this resource. Invalid actions or paths are denied, never raised.
        """
        if action not in _REQUEST_ACTIONS:
            return Decision(False, (), f"refused: unknown action {action!r}")
        if not is_resource(resource):
            return Decision(False, (), f"refused: {resource_problem(resource)}")
        return self.decide_valid(roles, action, resource, extra)

    def decide_valid(
        self,
        roles: frozenset[str],
        action: str,
        resource: str,
        extra: Sequence[tuple[str, str]] = (),
    ) -> Decision:
        """:meth:`decide` for an action and resource already checked against the grammar.

        The route map builds its resources from checked segments, so the request path does not
        pay for a second check; anything else calls :meth:`decide`.
        """
        if type(roles) is not frozenset:  # a set or list from a caller: the table needs a key
            roles = frozenset(roles)
        index = self._index
        if index is None:
            return self._decide_with_enforcer(self.expand_roles(roles), action, resource, extra)
        if resource in index:
            return self._decide_indexed(self.expand_roles(roles), action, resource, extra)
        # No line names the resource itself: every file candidate is a wildcard on an ancestor,
        # which keyMatch accepts for all the container's children alike. That part of the
        # decision is the container's, so it is kept per role set and action (the engine is
        # immutable; a reload brings a new engine and an empty table).
        key = (roles, action, resource.rpartition("/")[0])
        decision = self._by_container.get(key)
        if decision is None:
            decision = self._decide_indexed(self.expand_roles(roles), action, resource, ())
            if len(self._by_container) >= _CONTAINER_DECISIONS:
                self._by_container.clear()  # bounded; refilling is one miss per container
            self._by_container[key] = decision
        if not extra:
            return decision
        if self._model.kind != "allow":  # with denies, every allow and deny must be weighed
            return self._decide_indexed(self.expand_roles(roles), action, resource, extra)
        if decision.allowed:
            return decision  # file lines come before rows in policy order: a line allowed first
        # Allow-only and no line matched: only the rows can allow, and the first row the
        # matcher accepts settles it (as Casbin's effector would, rows being last in order).
        expanded = self.expand_roles(roles)
        for row in self._row_rules(expanded, action, resource, extra):
            if self._match(expanded, resource, action, *row.fields):
                return Decision(True, (row,))
        return decision

    def _decide_indexed(
        self, roles: frozenset[str], action: str, resource: str, extra: Sequence[tuple[str, str]]
    ) -> Decision:
        """Gather the candidates from the index (and the rows) and run the matcher on them."""
        candidates = self._candidates(self._index or {}, roles, action, resource)
        if extra:
            candidates += self._row_rules(roles, action, resource, extra)
        if not candidates:
            return Decision(False, (), _NO_RULE)
        return self._evaluate(candidates, roles, action, resource)

    def _row_rules(
        self, roles: frozenset[str], action: str, resource: str, extra: Sequence[tuple[str, str]]
    ) -> list[Rule]:
        """The resource's rows that can match, as allow rules on exactly the resource."""
        found = []
        for role, granted in extra:
            if role in roles and (granted == action or (granted == "write" and action != "read")):
                fields = (
                    (role, resource, granted, "allow")
                    if self._has_eft
                    else (role, resource, granted)
                )
                found.append(Rule("p", fields))
        return found

    def _candidates(
        self,
        index: dict[str, dict[str, dict[str, list[Rule]]]],
        roles: frozenset[str],
        action: str,
        resource: str,
    ) -> list[Rule]:
        """The only rules the matcher can accept for this request: a few dict look-ups.

        The objects looked up are those of :func:`covering_objects`: the path itself, then
        ``PREFIX/*`` at each indexed depth below the path's own (``*`` for depth 0).
        """
        wanted = _WANTED[action]
        found: list[Rule] = []
        objects = [resource]
        end = 0  # resource[:end] ends with "/" and holds `depth` segments
        depth = 0
        for want in self._depths:
            if not want:
                objects.append("*")
                continue
            while depth < want:
                end = resource.find("/", end) + 1
                if not end:
                    break
                depth += 1
            else:
                objects.append(resource[:end] + "*")
                continue
            break  # the path is not that deep, so no deeper ancestor either
        subjects = self._subjects
        for obj in objects:
            subs = subjects.get(obj)
            # One C-level test rejects most ancestors: their rules name none of these roles.
            if subs is None or roles.isdisjoint(subs):
                continue
            by_sub = index[obj]
            for sub in roles & subs:  # iterates the smaller set, in C
                acts = by_sub[sub]
                for act in wanted:
                    if act in acts:
                        found.extend(acts[act])
        return found

    def _evaluate(
        self, candidates: list[Rule], roles: frozenset[str], action: str, resource: str
    ) -> Decision:
        """Casbin's matcher on the candidates in policy order, combined by Casbin's effector.

        Like ``enforce_ex``, it stops as soon as the effect is settled (the first allow for the
        allow-only model, the first deny for the deny model), so ``rules`` are the rules Casbin
        itself would name.
        """
        if len(candidates) > 1:
            candidates.sort(key=self._position)
        match = self._match
        effector = self._effector
        effects: set[int] = set()
        allowing: list[Rule] = []
        denying: list[Rule] = []
        for rule in candidates:
            # The arguments enforce_ex would name r_sub, r_obj, r_act, then the rule's fields.
            if not match(roles, resource, action, *rule.fields):
                continue
            # The effect of a matching rule, as enforce_ex assigns it.
            eft = rule.fields[3] if self._has_eft else "allow"
            if eft == "allow":
                effects.add(Effector.ALLOW)
                allowing.append(rule)
            elif eft == "deny":
                effects.add(Effector.DENY)
                denying.append(rule)
            else:
                effects.add(Effector.INDETERMINATE)
            if effector.intermediate_effect(effects) != Effector.INDETERMINATE:
                break
        allowed = bool(effect_to_bool(effector.final_effect(effects)))
        deciding = allowing if allowed else denying
        if deciding:
            return Decision(allowed, tuple(deciding))
        return Decision(allowed, (), _OTHER_EFFECT if effects else _NO_RULE)

    def _position(self, rule: Rule) -> tuple[int, int]:
        """Where a rule stands in the policy: file order, then line; document rows last."""
        return (
            self._files.get(rule.file, len(self._files)) if rule.file else len(self._files),
            rule.line,
        )

    def _decide_with_enforcer(
        self, roles: frozenset[str], action: str, resource: str, extra: Sequence[tuple[str, str]]
    ) -> Decision:
        """Casbin's Enforcer (under a lock: its role manager grows on unknown names)."""
        values = {"sub": roles, "obj": resource, "act": action}
        rvals = [values[token.split("_", 1)[1]] for token in self._model.request_tokens]
        with self._lock:
            if extra:
                allowed, explained = self._scan_with_extra(rvals, resource, extra)
            else:
                allowed, row = self._enforcer.enforce_ex(*rvals)
                explained = self._rule_for(row)
        allowed = bool(allowed)
        if explained is not None:
            return Decision(allowed, (explained,))
        return Decision(allowed, (), "no rule matched (casbin.Enforcer)")

    def _rule_for(self, row: Sequence[str]) -> Rule | None:
        """The policy rule behind the row Casbin's enforce_ex names as its explanation."""
        if not row:
            return None
        fields = tuple(row)
        return next((r for r in self._rules if r.ptype == "p" and r.fields == fields), None)

    def _scan_with_extra(
        self, rvals: list[Any], resource: str, extra: Sequence[tuple[str, str]]
    ) -> tuple[bool, Rule | None]:
        """enforce_ex's loop over the policy plus the document rows, with Casbin's own pieces.

        A Casbin Enforcer cannot take extra rows for one call without mutating shared state, so
        the file rules and the rows are walked by :func:`scan_policy`, as ``enforce_ex`` walks
        its policy.
        """
        tokens = self._p_tokens
        rows: list[tuple[list[str], Rule | None]] = [
            (list(p), None) for p in self._enforcer.model["p"]["p"].policy
        ]
        for role, granted in extra:
            values = {"sub": role, "obj": resource, "act": granted, "eft": "allow"}
            fields = tuple(values.get(t.split("_", 1)[1], "") for t in tokens)
            rows.append((list(fields), Rule("p", fields)))
        allowed, index = scan_policy(
            self._model.matcher,
            self._functions,
            self._effector,
            dict(zip(self._model.request_tokens, rvals, strict=True)),
            tokens,
            (fields for fields, _ in rows),
        )
        if index is None:
            return allowed, None
        fields_list, document_rule = rows[index]
        return allowed, document_rule or self._rule_for(fields_list)

    # -- self-check -----------------------------------------------------------------------

    def self_check(self, sample: int = 64, cross_check_up_to: int = 2000) -> list[Diagnostic]:
        """Problems found by deciding a sample of the rules' own requests (empty when sound).

        Each sampled rule must decide its own request (allow rules allow unless a deny wins,
        deny rules deny); for policies up to ``cross_check_up_to`` rules the same requests are
        also decided by a fresh ``casbin.Enforcer`` and must agree.
        """
        problems: list[Diagnostic] = []

        def problem(rule: Rule, message: str) -> None:
            """Record a problem at the rule's file:line."""
            problems.append(Diagnostic(rule.file or DOCUMENT, rule.line or None, message))

        rules = [r for r in self._rules if r.ptype == "p" and len(r.fields) >= 3]
        step = max(1, len(rules) // max(1, sample))
        decided: list[tuple[Rule, frozenset[str], str, str, Decision]] = []
        for rule in rules[::step][:sample]:
            sub, obj, act = rule.fields[0], rule.fields[1], rule.fields[2]
            resource = obj[:-1] + "x" if obj.endswith("*") else obj
            action = "update" if act == "write" else act
            roles = frozenset({sub})
            try:
                decision = self.decide(roles, action, resource)
            except Exception as exc:  # a matcher that raises is exactly what this looks for
                problem(rule, f"deciding the rule's own request raised {exc!r}")
                continue
            decided.append((rule, roles, action, resource, decision))
            if not self.is_indexed:
                continue  # what a rule's own request should get depends on the custom model
            if rule.eft == "allow" and not decision.allowed and not decision.rules:
                problem(rule, f"'{rule}' does not allow its own request ({decision.reason})")
            elif rule.eft == "deny" and decision.allowed:
                problem(rule, f"'{rule}' does not deny its own request")
        if self.is_indexed and decided and len(self._rules) <= cross_check_up_to:
            enforcer = Enforcer(
                self._model.casbin_model(), _RowsAdapter((*self._rules, *self._links))
            )
            for rule, roles, action, resource, decision in decided:
                if not is_resource(resource) or action not in _REQUEST_ACTIONS:
                    continue
                expected = bool(enforcer.enforce(self.expand_roles(roles), resource, action))
                if expected != decision.allowed:
                    problem(
                        rule,
                        f"the index decides {decision.allowed} where casbin.Enforcer decides "
                        f"{expected} for {sorted(roles)} {action} {resource}",
                    )
        return problems
