"""Cost of Bastion's policy decisions: the engine alone, next to pycasbin and a peer middleware.

Three parts, run by ``./scripts/bench policy`` (``--help``):

1. ``PolicyEngine.decide`` per call (``perf_counter_ns`` around each call) on generated policies
   of 1k, 100k and 1M rules, with and without per-document permission rows, beside
   ``casbin.Enforcer`` on the same model and rules as far as it finishes within a time budget.
2. fastapi-authz's ``CasbinMiddleware`` (behind Starlette's ``AuthenticationMiddleware``) per
   request, in-process over ASGI, on a 1k-rule policy in its own RBAC + keyMatch style.
3. Bastion end to end: a session cookie on a real redis-server, a route map and a 1k-rule policy
   file; a route whose collection has no document security (the session's HMGET alone), and one
   whose document's own rows are read in the same pipeline as the session (HMGET + SMEMBERS, one
   round trip).

Every figure is checked before it is reported: the engine agrees with Casbin on every request
Casbin decides, every timed HTTP request answers 200, and Redis's own counters show the number of
commands and round trips each request makes.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import math
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import casbin
import redis.asyncio
from casbin.persist import Adapter
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    SimpleUser,
)
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.identity import user_roles
from bastion.policies.engine import PolicyEngine
from bastion.policies.modeldef import DEFAULT_MODEL_PATH, default_model
from bastion.policies.rules import Rule
from bastion.sessions import keys
from bench.sessions import (
    ASGIApp,
    Case,
    call_once,
    hmget_fields,
    hmget_middleware,
    me,
    on_redis_server,
    pin_cpus,
    timed,
    within_round,
)

ROOT = Path(__file__).resolve().parent.parent

DECISION_TARGET_US = 15.0
"""Budget: the median decision at every policy size."""
E2E_TARGET_US = 30.0
"""Budget: Bastion's overhead over bare may be one Redis round trip plus this many µs."""

SIZES = (1_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 10_000, 100_000)
DOCUMENTS = 1_000_000
QUICK_DOCUMENTS = 100_000
USER = "alice"
DOC_ROUTE = "/databases/{db}/collections/{coll}/documents/{doc}"
OPEN = "databases/main/collections/open"
"""Collection of end-to-end route (a): document security off, a policy line lets users read."""
NOTES = "databases/main/collections/notes"
"""Collection of end-to-end route (b): document security on, the documents' own rows decide."""
SLOW_US = 500.0
"""Rows slower than twice this per request get proportionally fewer requests per round, so that
their rounds last about as long as those of a row of this many µs."""
E2E_DOCUMENTS = 64
IN_FLIGHT = 8
"""Requests at a time in the loaded end-to-end rows."""
LOADED = ("bare", "hmget_middleware", "pipeline_middleware", "bastion_open", "bastion_rows")
"""The end-to-end rows measured again under load."""
"""Documents the end-to-end requests rotate over (each request names one of them)."""

# The peer's model: fastapi-authz's own example (examples/rbac_model.conf), RBAC + keyMatch.
AUTHZ_MODEL = """\
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = (p.sub == "*" || g(r.sub, p.sub)) && (r.obj == p.obj || keyMatch(r.obj, p.obj)) \
&& (p.act == "*" || r.act == p.act)
"""


# --- generated policies --------------------------------------------------------------------------


@dataclass
class World:
    """The names a generated policy talks about."""

    users: int
    teams: int
    databases: int
    collections: list[str]
    big: list[str]
    """The 1 % of collections that hold half of the document-level lines."""
    buckets: list[str]


@dataclass
class Generated:
    rules: list[Rule]
    links: list[Rule]
    world: World


Request = tuple[frozenset[str], str, str]
"""(roles, action, resource)."""


def _team_role(rng: random.Random, teams: int, role: str | None = None) -> str:
    team = f"team:t{rng.randrange(teams)}"
    return f"{team}/{role}" if role else team


def generate_policy(n: int, seed: int = 1, file: str = "policy.csv") -> Generated:
    """About ``n`` distinct ``p`` lines (exactly ``n``), shuffled, plus ``n / 1000`` ``g`` lines.

    Global lines (``label:admin`` on ``databases/*``, a team owning each database), per
    collection a ``…/documents/*`` read grant (to ``users``, ``any``, a team or a team role), often
    a team editor's ``write`` on the documents and a ``create`` on the collection itself, per
    bucket a read and a write on its files, and the rest document-level lines (``user:uN`` or a
    team role on one document or file), half of them in the 1 % biggest collections.
    """
    rng = random.Random(seed)
    users = max(1_000, n // 5)
    teams = max(20, n // 100)
    databases = max(2, n // 50_000)
    collections = [f"databases/db{i % databases}/collections/c{i}" for i in range(max(10, n // 25))]
    big = collections[: max(1, len(collections) // 100)]
    buckets = [f"buckets/b{i}" for i in range(max(5, n // 200))]
    world = World(users, teams, databases, collections, big, buckets)

    seen: set[tuple[str, str, str]] = set()
    lines: list[tuple[str, str, str]] = []

    def add(sub: str, obj: str, act: str) -> None:
        key = (sub, obj, act)
        if key not in seen and len(lines) < n:
            seen.add(key)
            lines.append(key)

    add("label:admin", "databases/*", "write")
    add("label:admin", "databases/*", "read")
    add("label:support", "buckets/*", "read")
    for d in range(databases):
        add(_team_role(rng, teams, "owner"), f"databases/db{d}/*", "write")
    for coll in collections:
        pick = rng.random()
        reader = (
            "users"
            if pick < 0.3
            else "any"
            if pick < 0.4
            else _team_role(rng, teams)
            if pick < 0.8
            else _team_role(rng, teams, "viewer")
        )
        add(reader, f"{coll}/documents/*", "read")
        if rng.random() < 0.6:
            add(_team_role(rng, teams, "editor"), f"{coll}/documents/*", "write")
        if rng.random() < 0.5:
            add("users" if rng.random() < 0.5 else _team_role(rng, teams), coll, "create")
    for bucket in buckets:
        add(rng.choice(("any", "users", _team_role(rng, teams))), f"{bucket}/files/*", "read")
        if rng.random() < 0.5:
            add(_team_role(rng, teams, "owner"), f"{bucket}/files/*", "write")
    while len(lines) < n:
        where = rng.random()
        if where < 0.85:
            coll = rng.choice(big) if where < 0.425 else rng.choice(collections)
            obj = f"{coll}/documents/d{rng.randrange(100_000 if coll in big else 200)}"
        else:
            obj = f"{rng.choice(buckets)}/files/f{rng.randrange(200)}"
        who = rng.random()
        if who < 0.7:
            sub = f"user:u{rng.randrange(users)}"
            act = rng.choices(("read", "write", "update", "delete"), (40, 30, 15, 15))[0]
        elif who < 0.9:
            sub, act = _team_role(rng, teams, "editor"), rng.choice(("update", "write"))
        else:
            sub, act = _team_role(rng, teams), "read"
        add(sub, obj, act)
    rng.shuffle(lines)
    rules = [Rule("p", fields, file, i + 1) for i, fields in enumerate(lines)]
    links = [
        Rule(
            "g",
            (f"user:u{rng.randrange(users)}", _team_role(rng, teams, "editor")),
            file,
            n + i + 1,
        )
        for i in range(max(1, n // 1000))
    ]
    return Generated(rules, links, world)


def user_role_set(user: int, team: int, *extra: str) -> frozenset[str]:
    """A signed-in user's roles, as Bastion computes them, with one team membership."""
    return frozenset(
        {
            "any",
            "users",
            "users/unverified",
            f"user:u{user}",
            f"user:u{user}/unverified",
            f"team:t{team}",
            f"team:t{team}/editor",
            *extra,
        }
    )


def _below(pattern: str, rng: random.Random) -> str:
    """A resource that ``PREFIX/*`` covers."""
    prefix = pattern[:-2]
    kind = prefix.rsplit("/", 1)[-1]
    tail = {
        "documents": f"d{rng.randrange(1_000_000)}",
        "files": f"f{rng.randrange(1_000_000)}",
        "databases": f"db0/collections/c{rng.randrange(50)}/documents/d{rng.randrange(1000)}",
        "buckets": f"b0/files/f{rng.randrange(1000)}",
    }.get(kind, f"collections/c{rng.randrange(50)}/documents/d{rng.randrange(1000)}")
    return f"{prefix}/{tail}"


def policy_requests(gen: Generated, count: int, seed: int = 2) -> list[Request]:
    """Random requests: half aimed at a random rule (mostly allowed), half anywhere (mostly not).

    Each request carries a real user's role set (``any``, ``users``, ``user:uN`` and a team with
    its editor role, plus the rule's label or team role when aimed at one); the resources are
    documents in big and small collections, files, and collections (for ``create``).
    """
    rng = random.Random(seed)
    world = gen.world
    requests: list[Request] = []
    for i in range(count):
        user, team = rng.randrange(world.users), rng.randrange(world.teams)
        if i % 2 == 0:
            sub, obj, act = rng.choice(gen.rules).fields
            extra: tuple[str, ...] = ()
            if sub.startswith("user:"):
                user = int(sub[len("user:u") :])
            elif sub.startswith("team:"):
                team = int(sub[len("team:t") :].split("/", 1)[0])
                extra = (sub,)
            elif sub.startswith("label:"):
                extra = (sub,)
            resource = _below(obj, rng) if obj.endswith("*") else obj
            action = rng.choice(("create", "update", "delete")) if act == "write" else act
            requests.append((user_role_set(user, team, *extra), action, resource))
            continue
        where = rng.random()
        if where < 0.3:
            coll = rng.choice(world.big)
            resource = f"{coll}/documents/d{rng.randrange(100_000)}"
        elif where < 0.7:
            coll = rng.choice(world.collections)
            resource = f"{coll}/documents/d{rng.randrange(200)}"
        elif where < 0.85:
            resource = f"{rng.choice(world.buckets)}/files/f{rng.randrange(200)}"
        else:
            resource = rng.choice(world.collections)
        action = (
            "create"
            if "/" not in resource.rsplit("collections/", 1)[-1]
            else rng.choices(("read", "update", "delete"), (60, 25, 15))[0]
        )
        requests.append((user_role_set(user, team), action, resource))
    return requests


@dataclass
class Documents:
    """Per-document permission rows, as the middleware would have read them from Redis."""

    rows: dict[str, list[tuple[str, str]]]
    count: int
    total_rows: int
    requests: list[Request]


def generate_documents(
    count: int, users: int, teams: int, requests: int, seed: int = 3
) -> Documents:
    """``count`` documents with 2-5 rows each (3 on average): the owner's read and write, often
    a team editor's update, sometimes ``users`` read or another user's read.

    Half the requests come from a holder of one of the document's rows (mostly allowed), half
    from a random user (mostly denied).
    """
    rng = random.Random(seed)
    collections = [f"databases/app/collections/k{i}" for i in range(1000)]
    big = collections[:10]
    user_names = [f"user:u{i}" for i in range(users)]
    editor_rows = [(f"team:t{i}/editor", "update") for i in range(teams)]
    users_read = ("users", "read")
    rows: dict[str, list[tuple[str, str]]] = {}
    where: list[str] = []
    owners: list[int] = []
    total = 0
    for i in range(count):
        coll = big[i % 10] if i % 2 else collections[rng.randrange(1000)]
        path = f"{coll}/documents/x{i}"
        owner = rng.randrange(users)
        role = user_names[owner]
        found = [(role, "read"), (role, "write")]
        extra = rng.choices((0, 1, 2, 3), (40, 30, 20, 10))[0]  # 2-5 rows, 3 on average
        if extra >= 1:
            found.append(editor_rows[rng.randrange(teams)])
        if extra >= 2:
            found.append(users_read if rng.random() < 0.3 else (rng.choice(user_names), "read"))
        if extra >= 3:
            found.append((rng.choice(user_names), "read"))
        rows[path] = found
        total += len(found)
        where.append(coll)
        owners.append(owner)
    asked: list[Request] = []
    for i in range(requests):
        doc = rng.randrange(count)
        team = rng.randrange(teams)
        user = owners[doc] if i % 2 == 0 else rng.randrange(users)
        action = rng.choices(("read", "update", "delete"), (60, 25, 15))[0]
        # A fresh string, as a route match makes one: its hash is computed in the timing.
        resource = f"{where[doc]}/documents/x{doc}"
        asked.append((user_role_set(user, team), action, resource))
    return Documents(rows, count, total, asked)


# --- pycasbin ------------------------------------------------------------------------------------


class ListAdapter(Adapter):  # type: ignore[misc]
    """Hands rules to a Casbin Enforcer as its file adapter would (appends to the model)."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = rules

    def load_policy(self, model: Any) -> None:
        for rule in self.rules:
            model.model[rule.ptype[0]][rule.ptype].policy.append(list(rule.fields))


# --- part 1: decisions ---------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    index = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def time_engine(
    engine: PolicyEngine,
    requests: Sequence[Request],
    rows: dict[str, list[tuple[str, str]]] | None,
    warmup: int,
    *,
    computed: bool = True,
) -> tuple[list[float], list[bool]]:
    """µs per ``decide`` call, one ``perf_counter_ns`` pair around each; the decisions too.

    With ``rows``, the call includes the look-up of the document's rows in the dict, as the
    middleware passes them: ``decide(roles, action, resource, rows.get(resource, ()))``.
    ``computed``: the engine's per-container decision table is emptied before each call
    (outside the timed pair), so every decision is computed from the index; otherwise the
    table is kept, as the middleware keeps it.
    """
    decide = engine.decide
    forget = engine.forget_decisions if computed else (lambda: None)
    clock = time.perf_counter_ns
    empty: tuple[tuple[str, str], ...] = ()
    for roles, action, resource in requests[:warmup]:
        forget()
        if rows is None:
            decide(roles, action, resource)
        else:
            decide(roles, action, resource, rows.get(resource, empty))
    samples: list[float] = []
    allowed: list[bool] = []
    gc.collect()
    gc.freeze()  # the policy's millions of objects: no full collection in the middle
    try:
        for roles, action, resource in requests[warmup:]:
            forget()
            if rows is None:
                start = clock()
                decision = decide(roles, action, resource)
                end = clock()
            else:
                start = clock()
                decision = decide(roles, action, resource, rows.get(resource, empty))
                end = clock()
            samples.append((end - start) / 1000)
            allowed.append(decision.allowed)
    finally:
        gc.unfreeze()
    return samples, allowed


@dataclass
class CasbinBudget:
    build_s: float
    calls_s: float
    max_calls: int
    min_calls: int


@dataclass
class CasbinCost:
    """What the previous size cost, to estimate the next one before trying it."""

    rules: int
    build_s: float
    call_us: float

    def estimate(self, rules: int) -> tuple[float, float]:
        """(build seconds, µs per call) at ``rules``, scaling linearly (both are linear scans)."""
        scale = rules / self.rules
        return self.build_s * scale, self.call_us * scale


def run_casbin(
    n: int,
    make_rules: Callable[[], list[Rule]],
    requests: Sequence[Request],
    engine: PolicyEngine,
    expected: Sequence[bool],
    budget: CasbinBudget,
    previous: CasbinCost,
) -> tuple[dict[str, Any], CasbinCost]:
    """casbin.Enforcer on the same rules and requests, within ``budget``.

    ``previous`` (the last size measured) estimates this size first: when the build or the
    fewest useful calls would not fit the budget, Casbin is skipped and the estimate reported.
    Every call's result must equal the engine's decision of the same request.
    """
    build_s, call_us = previous.estimate(n)
    needed = build_s + budget.min_calls * call_us / 1e6
    if build_s > budget.build_s or budget.min_calls * call_us / 1e6 > budget.calls_s:
        full = build_s + budget.max_calls * call_us / 1e6
        return {
            "status": "skipped",
            "estimated_build_s": round(build_s, 1),
            "estimated_call_us": round(call_us),
            "would_take_s": round(full),
            "reason": (
                f"estimated {build_s:.1f} s to build and {call_us / 1e6:.2f} s per call: "
                f"{budget.min_calls} calls need ~{needed:.0f} s, over the budget of "
                f"{budget.build_s:g} s build + {budget.calls_s:g} s of calls"
            ),
        }, previous
    rules = make_rules()
    gc.collect()
    start = time.perf_counter()
    enforcer = casbin.Enforcer(str(DEFAULT_MODEL_PATH), ListAdapter(rules))
    build_s = time.perf_counter() - start
    enforce = enforcer.enforce
    clock = time.perf_counter_ns
    # The subject is the frozenset of roles, already expanded through the g lines (the model's
    # matcher does not call g()): the same role set the engine decides on.
    expand = engine.expand_roles
    prepared = [(expand(roles), resource, action) for roles, action, resource in requests]
    enforce(*prepared[0])  # first call: Casbin builds and caches its matcher expression
    samples: list[float] = []
    mismatches = []
    deadline = time.perf_counter() + budget.calls_s
    for index, (subject, resource, action) in enumerate(prepared):
        if len(samples) >= budget.max_calls or time.perf_counter() > deadline:
            break
        begin = clock()
        allowed = enforce(subject, resource, action)
        end = clock()
        samples.append((end - begin) / 1000)
        if bool(allowed) != expected[index]:
            mismatches.append((sorted(subject), action, resource, bool(allowed)))
    del enforcer, rules
    gc.collect()
    if mismatches:
        raise SystemExit(
            f"PolicyEngine and casbin.Enforcer disagree at {n} rules on {len(mismatches)} "
            f"request(s), e.g. {mismatches[0]}"
        )
    ordered = sorted(samples)
    result = {
        "status": "ran",
        "build_s": round(build_s, 4),
        "calls": len(samples),
        "p50_us": round(percentile(ordered, 0.5), 1),
        "p99_us": round(percentile(ordered, 0.99), 1),
        "mean_us": round(statistics.fmean(samples), 1),
        "agrees_with_engine": True,
    }
    return result, CasbinCost(n, build_s, statistics.fmean(samples))


def served_p50(
    engine: PolicyEngine,
    requests: Sequence[Request],
    rows: dict[str, list[tuple[str, str]]] | None,
    warmup: int,
) -> float:
    """p50 µs of the same requests as the middleware serves them: the container table kept."""
    engine.forget_decisions()
    samples, _ = time_engine(engine, requests, rows, warmup, computed=False)
    return round(percentile(sorted(samples), 0.5), 2)


def latency_row(
    samples: list[float], allowed: list[bool], *, build_s: float, warmup: int
) -> dict[str, Any]:
    """The latency figures of one decision row: p50, p99, mean, share allowed, the target."""
    ordered = sorted(samples)
    p50 = percentile(ordered, 0.5)
    return {
        "build_s": round(build_s, 4),
        "calls": len(samples),
        "warmup": warmup,
        "p50_us": round(p50, 2),
        "p99_us": round(percentile(ordered, 0.99), 2),
        "mean_us": round(statistics.fmean(samples), 2),
        "allowed_fraction": round(sum(allowed) / len(allowed), 3),
        "within_target": p50 <= DECISION_TARGET_US,
    }


def bench_decisions(
    sizes: Sequence[int],
    documents: int,
    calls: int,
    warmup: int,
    budget: CasbinBudget,
    log: Callable[[str], None],
) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    total = warmup + calls
    start = time.perf_counter()
    docs = generate_documents(
        documents, users=max(1_000, documents // 5), teams=1_000, requests=total
    )
    docs_s = time.perf_counter() - start
    log(
        f"  {documents:,} documents x {docs.total_rows / documents:.1f} rows made in {docs_s:.1f} s"
    )
    # Before any size is measured: pycasbin 2.8.0 on this model costs about 2 µs per rule per call
    # and 1.5 µs per rule to build (2-vCPU VM), so even a first size that cannot fit is skipped.
    previous = CasbinCost(rules=1_000, build_s=0.0015, call_us=2_000.0)
    for n in sizes:
        start = time.perf_counter()
        gen = generate_policy(n)
        gen_s = time.perf_counter() - start
        gc.collect()
        start = time.perf_counter()
        engine = PolicyEngine(gen.rules, gen.links, model=default_model())
        build_s = time.perf_counter() - start
        if not engine.is_indexed:
            raise SystemExit("the shipped model is not served from the index")
        requests = policy_requests(gen, total)
        log(f"  {n:,} rules: generated in {gen_s:.1f} s, index built in {build_s:.2f} s")

        samples, allowed = time_engine(engine, requests, None, warmup)
        served = served_p50(engine, requests, None, warmup)
        casbin_result, previous = run_casbin(
            n,
            lambda gen=gen: [*gen.rules, *gen.links],
            requests[warmup:],
            engine,
            allowed,
            budget,
            previous,
        )
        log(f"  {n:,} rules: casbin.Enforcer {casbin_result['status']}")
        rows.append(
            {
                "key": f"rules_{n}",
                "name": f"{n:,} rules",
                "rules": n,
                "links": len(gen.links),
                "documents": 0,
                **latency_row(samples, allowed, build_s=build_s, warmup=warmup),
                "served_p50_us": served,
                "casbin": casbin_result,
            }
        )

        samples, allowed = time_engine(engine, docs.requests, docs.rows, warmup)
        served = served_p50(engine, docs.requests, docs.rows, warmup)

        # Casbin takes no rows per call: they become policy lines, one per row, after the file's.
        def with_rows(rules: list[Rule] = gen.rules, links: list[Rule] = gen.links) -> list[Rule]:
            found = [*rules, *links]
            line = len(found)
            for path, granted in docs.rows.items():
                for role, act in granted:
                    line += 1
                    found.append(Rule("p", (role, path, act), "documents.csv", line))
            return found

        casbin_docs, _ = run_casbin(
            n + docs.total_rows,
            with_rows,
            docs.requests[warmup:],
            engine,
            allowed,
            budget,
            previous,
        )
        if casbin_docs["status"] == "skipped":
            casbin_docs["reason"] = (
                f"the {docs.total_rows:,} document rows as policy lines: " + casbin_docs["reason"]
            )
        rows.append(
            {
                "key": f"rules_{n}_documents_{documents}",
                "name": f"{n:,} rules + {_short(documents)} docs' rows",
                "rules": n,
                "links": len(gen.links),
                "documents": documents,
                "document_rows": docs.total_rows,
                **latency_row(samples, allowed, build_s=build_s, warmup=warmup),
                "served_p50_us": served,
                "casbin": casbin_docs,
            }
        )
        del engine, gen, requests
        gc.collect()
    return {
        "target_p50_us": DECISION_TARGET_US,
        "documents": documents,
        "document_rows": docs.total_rows,
        "casbin_budget": {
            "build_s": budget.build_s,
            "calls_s": budget.calls_s,
            "max_calls": budget.max_calls,
            "min_calls": budget.min_calls,
        },
        "rows": rows,
    }


def _short(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1_000 and n % 1_000 == 0:
        return f"{n // 1_000}k"
    return f"{n:,}"


# --- parts 2 and 3: over ASGI --------------------------------------------------------------------


class AliceBackend(AuthenticationBackend):
    """The peer's authentication: everyone is alice (the cheapest backend there is)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser]:
        return AuthCredentials(["authenticated"]), SimpleUser(USER)


def authz_policy(count: int, seed: int = 4) -> tuple[str, list[str]]:
    """A ``count``-line policy in fastapi-authz's style, and ``E2E_DOCUMENTS`` paths alice may GET.

    Users and roles (``alice``, ``bob``, ... ``editor_k``) on URL patterns of 250 collections
    (``/databases/main/collections/cK/documents/*``) and single documents, with HTTP methods or
    ``*``; a few ``g`` lines put users in roles. alice's own lines are spread through the file, so
    her requests are matched after a scan of half the policy on average.
    """
    rng = random.Random(seed)
    people = ["bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory"]
    people += [f"user{i}" for i in range(40)]
    roles = [f"editor_{i}" for i in range(20)]
    methods = ("GET", "POST", "PATCH", "DELETE", "*")
    base = "/databases/main/collections"
    alice_colls = rng.sample(range(250), E2E_DOCUMENTS)
    alice_at = set(rng.sample(range(count - 10), E2E_DOCUMENTS))
    lines: list[str] = []
    alice_lines = iter(alice_colls)
    seen: set[str] = set()
    while len(lines) < count - 10:
        if len(lines) in alice_at:
            line = f"p, alice, {base}/c{next(alice_lines)}/documents/*, GET"
        else:
            sub = rng.choice(people if rng.random() < 0.7 else roles)
            coll = rng.choice([c for c in range(250) if c not in alice_colls[:1]])
            obj = (
                f"{base}/c{coll}/documents/*"
                if rng.random() < 0.5
                else f"{base}/c{coll}/documents/d{rng.randrange(1000)}"
            )
            line = f"p, {sub}, {obj}, {rng.choice(methods)}"
        if line not in seen:
            seen.add(line)
            lines.append(line)
    for i in range(10):
        lines.append(f"g, {rng.choice(people)}, {roles[i]}")
    paths = [f"{base}/c{c}/documents/d{rng.randrange(1000)}" for c in alice_colls]
    return "\n".join(lines) + "\n", paths


def peer_middleware(app: ASGIApp, enforcer: Any) -> ASGIApp | None:
    """fastapi-authz's CasbinMiddleware behind AuthenticationMiddleware; None if not installed.

    ``./scripts/bench`` installs it with ``pip install --no-deps fastapi-authz``: it requires the
    frozen ``casbin`` distribution, which must not sit beside pycasbin; its code only imports
    ``casbin``, which pycasbin provides.
    """
    try:
        from fastapi_authz import CasbinMiddleware
    except ImportError:
        return None
    return AuthenticationMiddleware(CasbinMiddleware(app, enforcer), backend=AliceBackend())


def authz_enforcer(policy: str) -> Any:
    """A casbin.Enforcer of the peer's model and policy, read by Casbin's own file adapter."""
    folder = Path(tempfile.mkdtemp(prefix="bastion-bench-authz-"))
    try:
        (folder / "model.conf").write_text(AUTHZ_MODEL)
        (folder / "policy.csv").write_text(policy)
        return casbin.Enforcer(str(folder / "model.conf"), str(folder / "policy.csv"))
    finally:
        for name in ("model.conf", "policy.csv"):
            (folder / name).unlink(missing_ok=True)
        folder.rmdir()


def make_scope(path: str, cookie: bytes | None = None) -> dict[str, Any]:
    raw = [(b"host", b"testserver")]
    if cookie is not None:
        raw.append((b"cookie", cookie))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 443),
        "headers": raw,
    }


def rotating_case(
    key: str,
    name: str,
    app: ASGIApp,
    scopes: Sequence[dict[str, Any]],
    *,
    expect_body: bytes,
    reference: bool = False,
) -> Case:
    """A timed loop of requests that rotate over ``scopes`` (one document each)."""
    return Case.http(key, name, app, scopes, expect_body=expect_body, reference=reference)


@dataclass
class Traffic:
    """What Redis saw per request: commands, round trips (socket reads), commands by name."""

    commands: float
    round_trips: float
    by_command: dict[str, float] = field(default_factory=dict)


async def redis_traffic(admin: Any, case: Case, n: int) -> Traffic:
    """Redis's own counters around ``n`` requests (INFO commands themselves subtracted)."""

    async def snapshot() -> tuple[int, int, dict[str, int]]:
        stats = await admin.info("stats")
        commands = await admin.info("commandstats")
        calls = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in commands.items()}
        return int(stats["total_commands_processed"]), int(stats["total_reads_processed"]), calls

    before = await snapshot()
    await case.run(n)
    after = await snapshot()
    # Between the two snapshots: the first's INFO commandstats and the second's INFO stats.
    commands = (after[0] - before[0] - 2) / n
    reads = (after[1] - before[1] - 2) / n
    by_command = {
        name: round((calls - before[2].get(name, 0)) / n, 2)
        for name, calls in after[2].items()
        if name != "info"
    }
    # Rounded like the totals: a once-a-minute session touch among the requests is not a command
    # per request.
    by_command = {name: per for name, per in by_command.items() if per}
    return Traffic(round(commands, 2), round(reads, 2), by_command)


@dataclass
class Expected:
    """The Redis traffic a request must cause: commands by name, and round trips."""

    commands: dict[str, int]
    round_trips: int

    @property
    def total(self) -> int:
        return sum(self.commands.values())


NO_REDIS = Expected({}, 0)


class ReplayingRedis:
    """Stands in for ``redis.asyncio.Redis``: answers HMGET and SMEMBERS, alone or in a
    pipeline, from a snapshot of the real Redis's hashes and sets, with no I/O. A Bastion on it
    costs only its own work (credential check, route match, decision)."""

    def __init__(self, hashes: dict[bytes, dict[bytes, bytes]], sets: dict[bytes, set[bytes]]):
        self.hashes = hashes
        self.sets = sets

    @classmethod
    async def snapshot(cls, admin: Any) -> ReplayingRedis:
        hashes: dict[bytes, dict[bytes, bytes]] = {}
        sets: dict[bytes, set[bytes]] = {}
        async for key in admin.scan_iter(count=1000):
            kind = await admin.type(key)
            if kind == b"hash":
                hashes[key] = await admin.hgetall(key)
            elif kind == b"set":
                sets[key] = await admin.smembers(key)
        return cls(hashes, sets)

    def hmget_reply(self, key: str, fields: tuple[str, ...]) -> list[bytes | None]:
        found = self.hashes.get(key.encode(), {})
        return [found.get(f.encode()) for f in fields]

    def smembers_reply(self, key: str) -> set[bytes]:
        return self.sets.get(key.encode(), set())

    async def hmget(self, key: str, *fields: str) -> list[bytes | None]:
        return self.hmget_reply(key, fields)

    async def smembers(self, key: str) -> set[bytes]:
        return self.smembers_reply(key)

    def get(self, key: str) -> None:  # the policy watcher's announced version (sync)
        return None

    def pipeline(self, transaction: bool = False) -> ReplayingPipeline:
        return ReplayingPipeline(self)

    def register_script(self, source: str) -> Callable[..., Any]:
        async def script(keys: Any = (), args: Any = (), client: Any = None) -> int:
            return 1  # the once-a-minute last-seen touch: the session is alive

        return script


class ReplayingPipeline:
    def __init__(self, redis: ReplayingRedis) -> None:
        self.redis = redis
        self.replies: list[Any] = []

    def hmget(self, key: str, *fields: str) -> None:
        self.replies.append(self.redis.hmget_reply(key, fields))

    def smembers(self, key: str) -> None:
        self.replies.append(self.redis.smembers_reply(key))

    async def execute(self) -> list[Any]:
        return self.replies


def pipeline_middleware(
    app: ASGIApp, client: Any, key: str, rows_key: bytes, fields: tuple[str, ...]
) -> ASGIApp:
    """The least a middleware can do for route (b): HMGET + SMEMBERS in one pipeline, then app."""

    async def middleware(scope: Any, receive: Any, send: Any) -> None:
        pipe = client.pipeline(transaction=False)
        pipe.hmget(key, *fields)
        pipe.smembers(rows_key)
        await pipe.execute()
        await app(scope, receive, send)

    return middleware


def loaded(case: Case, workers: int) -> Case:
    """The same requests, ``workers`` at a time on one event loop: the CPU never waits idle."""
    one_at_a_time = case.run

    async def run(n: int) -> None:
        share, extra = divmod(n, workers)
        await asyncio.gather(*(one_at_a_time(share + (i < extra)) for i in range(workers)))

    # The counts list is shared with the serial case: the same send() fills it.
    return dataclasses.replace(
        case,
        key=f"{case.key}_loaded",
        name=f"{case.name}, {workers} in flight",
        run=run,
        rounds_us=[],
    )


async def bench_e2e(
    url: str, *, warmup: int, rounds: int, requests: int, log: Callable[[str], None]
) -> dict[str, Any]:
    async def doc(request: Any) -> Any:
        return await me(request)

    app = Starlette(routes=[Route(DOC_ROUTE, doc)])
    folder = Path(tempfile.mkdtemp(prefix="bastion-bench-policy-"))
    policy_file = folder / "policy.csv"
    gen = generate_policy(1_000 - 1, seed=5)
    lines = [f"p, users, {OPEN}/documents/*, read"]
    lines += [f"p, {r.fields[0]}, {r.fields[1]}, {r.fields[2]}" for r in gen.rules]
    lines += [f"g, {r.fields[0]}, {r.fields[1]}" for r in gen.links]
    policy_file.write_text("\n".join(lines) + "\n")
    route = {
        "method": "GET",
        "path": DOC_ROUTE,
        "action": "read",
        "resource": DOC_ROUTE.lstrip("/"),
        "scope": "documents.read",
    }
    settings = Settings.from_mapping(
        {
            "redis_url": url,
            "policy_files": [str(policy_file)],
            "routes": [route],
            "resources": [{"path": NOTES, "document_security": True}],
            "policy_reload_interval": 0,
        }
    )
    bastion = Bastion(settings)
    plain = Bastion(Settings(redis_url=url))  # sessions only: no route map, no policy
    client = bastion.redis
    admin = redis.asyncio.Redis.from_url(url)
    try:
        policy_rules = len(bastion.policy.engine.rules)
        if policy_rules != 1_000:
            raise SystemExit(f"the policy file has {policy_rules} rules, expected 1000")

        new = await bastion.sessions.create(USER)
        cookie = f"{settings.cookie_name}={new.token}".encode()
        session_key = keys.sessions(settings.key_prefix, USER)
        session_fields = hmget_fields(new.session.id)
        open_docs = [f"{OPEN}/documents/o{i}" for i in range(E2E_DOCUMENTS)]
        note_docs = [f"{NOTES}/documents/n{i}" for i in range(E2E_DOCUMENTS)]
        for i, resource in enumerate(note_docs):  # 3 rows each; alice's read is what allows
            await bastion.permissions.grant(resource, f"user:{USER}", "read")
            await bastion.permissions.grant(resource, f"team:t{i % 7}/editor", "update")
            await bastion.permissions.grant(resource, "user:bob", "read")
        # The key of the first document's rows, for the reference pipeline: found, not rebuilt.
        found_keys = [k async for k in admin.scan_iter(match="*perm:*documents/n0")]
        if len(found_keys) != 1 or len(await admin.smembers(found_keys[0])) != 3:
            raise SystemExit(f"the rows of {note_docs[0]} are not in one Redis set: {found_keys}")
        first_rows_key = found_keys[0]

        # The rows must be what allows (b), and the policy what allows (a).
        engine = bastion.policy.engine
        roles = engine.expand_roles(user_roles(USER))
        rows = await bastion.permissions.list(note_docs[0])
        with_rows = engine.decide(roles, "read", note_docs[0], rows)
        without = engine.decide(roles, "read", note_docs[0])
        on_open = engine.decide(roles, "read", open_docs[0])
        if not with_rows.allowed or with_rows.rules[0].source != "document" or without.allowed:
            raise SystemExit(f"route (b) is not allowed by the document's rows: {with_rows}")
        if not on_open.allowed:
            raise SystemExit(f"route (a) is not allowed by the policy: {on_open.reason}")
        nothing = make_scope(f"/{NOTES}/documents/nothing", cookie)
        refused = await call_once(bastion.asgi(app), nothing)
        if refused.status != 403:
            raise SystemExit(f"a notes document without rows answered {refused.status}, not 403")

        authz_text, authz_paths = authz_policy(1_000)
        enforcer = authz_enforcer(authz_text)
        if len(enforcer.get_policy()) != 990:
            raise SystemExit(f"the peer's policy has {len(enforcer.get_policy())} p lines")
        authn = AuthenticationMiddleware(app, backend=AliceBackend())
        peer = peer_middleware(app, enforcer)
        if peer is None:
            log("  fastapi-authz is not installed: no CasbinMiddleware row (scripts/bench adds it)")
        else:
            nowhere = make_scope("/databases/main/collections/zz/documents/x")
            denied = await call_once(peer, nowhere)
            if denied.status != 403:
                raise SystemExit(
                    f"CasbinMiddleware answered {denied.status}, not 403, to {nowhere}"
                )

        async def hmget_loop(n: int) -> None:
            for _ in range(n):
                await client.hmget(session_key, *session_fields[:2])

        async def pipeline_loop(n: int) -> None:
            for _ in range(n):
                pipe = client.pipeline(transaction=False)
                pipe.hmget(session_key, *session_fields[:2])
                pipe.smembers(first_rows_key)
                await pipe.execute()

        stub = await ReplayingRedis.snapshot(admin)
        stubbed_app = Bastion(settings, redis=stub, sync_redis=stub).asgi(app)
        stubbed_plain = Bastion(plain.settings, redis=stub, sync_redis=stub).asgi(app)

        alice = USER.encode()
        bastion_app = bastion.asgi(app)
        open_paths = [f"/{p}" for p in open_docs]
        hmget_reference = hmget_middleware(app, client, session_key, session_fields)
        pipeline_reference = pipeline_middleware(
            app, client, session_key, first_rows_key, session_fields
        )
        # Bastion's own code run right after a real round trip: what the wait does to it.
        after_wait = hmget_middleware(stubbed_app, client, session_key, session_fields)
        scopes: dict[str, list[dict[str, Any]]] = {
            "bare": [make_scope(p) for p in open_paths],
            "starlette_auth": [make_scope(p) for p in authz_paths],
            "casbin_middleware": [make_scope(p) for p in authz_paths],
            "bastion_open": [make_scope(p, cookie) for p in open_paths],
            "bastion_rows": [make_scope(f"/{p}", cookie) for p in note_docs],
            "bastion_session_only": [make_scope(p, cookie) for p in open_paths],
            "stubbed_session_only": [make_scope(p, cookie) for p in open_paths],
            "stubbed_open": [make_scope(p, cookie) for p in open_paths],
            "stubbed_rows": [make_scope(f"/{p}", cookie) for p in note_docs],
            "hmget_middleware": [make_scope(p) for p in open_paths],
            "pipeline_middleware": [make_scope(p) for p in open_paths],
            "after_wait_open": [make_scope(p, cookie) for p in open_paths],
        }
        apps: dict[str, tuple[str, ASGIApp, bytes, bool]] = {
            "bare": ("bare Starlette", app, b"anonymous", False),
            "starlette_auth": (
                "Starlette AuthenticationMiddleware (SimpleUser)",
                authn,
                alice,
                False,
            ),
            "bastion_open": ("Bastion (a) policy, no document security", bastion_app, alice, False),
            "bastion_rows": ("Bastion (b) document's own rows", bastion_app, alice, False),
            "bastion_session_only": (
                "Bastion session cookie, no route map",
                plain.asgi(app),
                alice,
                True,
            ),
            "stubbed_session_only": (
                "Bastion session only, Redis stubbed in memory",
                stubbed_plain,
                alice,
                True,
            ),
            "stubbed_open": ("Bastion (a), Redis stubbed in memory", stubbed_app, alice, True),
            "stubbed_rows": ("Bastion (b), Redis stubbed in memory", stubbed_app, alice, True),
            "hmget_middleware": (
                "minimal middleware: 1 HMGET, then app",
                hmget_reference,
                b"anonymous",
                True,
            ),
            "pipeline_middleware": (
                "minimal middleware: HMGET+SMEMBERS pipeline",
                pipeline_reference,
                b"anonymous",
                True,
            ),
            "after_wait_open": (
                "1 HMGET, then Bastion (a) with Redis stubbed",
                after_wait,
                alice,
                True,
            ),
        }
        if peer is not None:
            apps = {
                **dict(list(apps.items())[:2]),
                "casbin_middleware": (
                    "fastapi-authz CasbinMiddleware, 1k rules",
                    peer,
                    alice,
                    False,
                ),
                **dict(list(apps.items())[2:]),
            }
        cases = [
            rotating_case(key, name, target, scopes[key], expect_body=body, reference=ref)
            for key, (name, target, body, ref) in apps.items()
        ]
        first_reference = next(i for i, case in enumerate(cases) if case.reference)
        cases[first_reference:first_reference] = [
            Case("redis_hmget", "Redis HMGET round trip", hmget_loop),
            Case("redis_pipeline", "Redis pipeline: HMGET + SMEMBERS", pipeline_loop),
        ]
        traffic: dict[str, Traffic] = {}

        # Correctness first, outside the timing: every request 200 with alice, Redis traffic.
        probe = max(E2E_DOCUMENTS, warmup // 4)
        for case in cases:
            for scope in scopes.get(case.key, []):
                assert case.app is not None
                response = await call_once(case.app, scope)
                if response.status != 200 or response.body != case.expect_body:
                    raise SystemExit(
                        f"{case.name}: {scope['path']} answered {response.status} "
                        f"{response.body!r}, expected 200 {case.expect_body!r}"
                    )
            traffic[case.key] = await redis_traffic(admin, case, probe)
            case.check_counts(probe)
            case.redis_per_request = traffic[case.key].commands
        expected = expected_traffic(traffic)
        for case in cases:
            found, want = traffic[case.key], expected.get(case.key, NO_REDIS)
            if found.by_command != want.commands or found.round_trips != want.round_trips:
                raise SystemExit(
                    f"{case.name}: {found.commands:.2f} Redis commands "
                    f"({_by_name(found.by_command)}) in {found.round_trips:.2f} round trips per "
                    f"request, expected {want.total} ({_by_name(want.commands)}) in "
                    f"{want.round_trips}"
                )

        log("  e2e: checks passed; warming up")
        for case in cases:  # warm-up
            await case.run(warmup)
            case.check_counts(warmup)
        # A slow row (the peer) gets fewer requests per round, so that its rounds take about
        # as long as a fast row's: µs per request stays comparable, and the run stays short.
        per_round: dict[str, int] = {}
        for case in cases:
            n = max(10, warmup // 10)
            probe_us = await timed(case.run, n)
            case.check_counts(n)
            if probe_us > 2 * SLOW_US:  # clearly slow, not a noisy probe of a fast row
                per_round[case.key] = max(20, int(requests * SLOW_US / probe_us))
            else:
                per_round[case.key] = requests
        for r in range(rounds):
            for case in cases:
                n = per_round[case.key]
                case.rounds_us.append(await timed(case.run, n))
                case.check_counts(n)
            log(f"  e2e: round {r + 1}/{rounds}")
        # The same apps under load: IN_FLIGHT requests at a time, so that the event loop always
        # has work while one request waits for Redis (a busy server), paired round by round.
        by_key = {case.key: case for case in cases}
        under_load = [loaded(by_key[key], IN_FLIGHT) for key in LOADED]
        for case in under_load:
            await case.run(warmup)
            case.check_counts(warmup)
        for r in range(rounds):
            for case in under_load:
                case.rounds_us.append(await timed(case.run, requests))
                case.check_counts(requests)
            log(f"  e2e, {IN_FLIGHT} in flight: round {r + 1}/{rounds}")
        for case in cases:
            if case.app is not None:
                await case.check_body()
    finally:
        await admin.aclose()
        await bastion.aclose()  # its two clients (client is the async one)
        await plain.aclose()
        policy_file.unlink(missing_ok=True)
        folder.rmdir()
    summary = summarize_e2e(cases, traffic, expected, per_round, warmup=warmup, rounds=rounds)
    summary["under_load"] = summarize_load(under_load, requests)
    return summary


def summarize_load(cases: list[Case], requests: int) -> dict[str, Any]:
    """Per-request cost with IN_FLIGHT requests at a time, and Bastion over its references."""
    by_key = {c.key: c for c in cases}
    bare = by_key["bare_loaded"]
    rows = [{**c.timing_row(bare.median), "requests_per_round": requests} for c in cases]
    over = {}
    for key, reference in (
        ("bastion_open", "hmget_middleware"),
        ("bastion_rows", "pipeline_middleware"),
    ):
        beyond = within_round(by_key[f"{key}_loaded"], by_key[f"{reference}_loaded"])
        over[key] = {
            "reference": reference,
            "over_reference_us": round(beyond, 2),
            "budget_us": E2E_TARGET_US,
            "within_target": beyond <= E2E_TARGET_US,
        }
    return {"in_flight": IN_FLIGHT, "rows": rows, "targets": over}


def _by_name(commands: dict[str, float]) -> str:
    return ", ".join(f"{n:g} {name.upper()}" for name, n in sorted(commands.items())) or "none"


def expected_traffic(traffic: dict[str, Traffic]) -> dict[str, Expected]:
    """What each row must cause in Redis (rows not named here: nothing).

    The session check is whatever a session-only Bastion makes (one HMGET when this was written),
    in one round trip. Authorization must add no command for (a), exactly one SMEMBERS for (b),
    and no round trip for either: (b)'s rows go in the session's pipeline.
    """
    session = traffic["bastion_session_only"]
    credential = {name: round(n) for name, n in session.by_command.items()}
    if not credential or session.round_trips != 1:
        raise SystemExit(
            f"the session check made {_by_name(session.by_command)} in {session.round_trips:.2f}"
            " round trips per request; expected at least one command, in one round trip"
        )
    return {
        "bastion_session_only": Expected(credential, 1),
        "bastion_open": Expected(credential, 1),
        "bastion_rows": Expected({**credential, "smembers": credential.get("smembers", 0) + 1}, 1),
        "redis_hmget": Expected({"hmget": 1}, 1),
        "redis_pipeline": Expected({"hmget": 1, "smembers": 1}, 1),
        "hmget_middleware": Expected({"hmget": 1}, 1),
        "pipeline_middleware": Expected({"hmget": 1, "smembers": 1}, 1),
        "after_wait_open": Expected({"hmget": 1}, 1),
    }


def summarize_e2e(
    cases: list[Case],
    traffic: dict[str, Traffic],
    expected: dict[str, Expected],
    per_round: dict[str, int],
    *,
    warmup: int,
    rounds: int,
) -> dict[str, Any]:
    by_key = {c.key: c for c in cases}
    bare = by_key["bare"].median
    round_trip = by_key["redis_hmget"].median
    rows = []
    for c in cases:
        http = c.app is not None
        t = traffic.get(c.key)
        rows.append(
            {
                **c.timing_row(bare),
                "overhead_minus_round_trip_us": (
                    round(c.median - bare - round_trip, 2) if http and t and t.commands else None
                ),
                "redis_commands_per_request": round(t.commands, 2) if t else None,
                "redis_round_trips_per_request": round(t.round_trips, 2) if t else None,
                "redis_commands_by_name": dict(sorted(t.by_command.items())) if t else None,
                "redis_expected_by_name": expected.get(c.key, NO_REDIS).commands,
                "requests_per_round": per_round[c.key],
            }
        )
    pipeline = by_key["redis_pipeline"].median
    targets = {}
    for key, stubbed, reference in (
        ("bastion_open", "stubbed_open", "hmget_middleware"),
        ("bastion_rows", "stubbed_rows", "pipeline_middleware"),
    ):
        beyond = within_round(by_key[key], by_key[reference])
        targets[key] = {
            "reference": reference,
            "reference_overhead_us": round(within_round(by_key[reference], by_key["bare"]), 2),
            "overhead_us": round(within_round(by_key[key], by_key["bare"]), 2),
            "over_reference_us": round(beyond, 2),
            "budget_us": E2E_TARGET_US,
            "within_target": beyond <= E2E_TARGET_US,
            "own_work_us": round(within_round(by_key[stubbed], by_key["bare"]), 2),
            "overhead_minus_round_trip_us": round(by_key[key].median - bare - round_trip, 2),
        }
    return {
        "warmup": warmup,
        "rounds": rounds,
        "redis_round_trip_us": round(round_trip, 2),
        "redis_pipeline_round_trip_us": round(pipeline, 2),
        "rows": rows,
        "targets": targets,
        "after_wait_own_work_us": round(
            within_round(by_key["after_wait_open"], by_key["hmget_middleware"]), 2
        ),
        "policy_own_work_us": round(
            within_round(by_key["stubbed_open"], by_key["stubbed_session_only"]), 2
        ),
        "policy_over_session_only_us": round(
            within_round(by_key["bastion_open"], by_key["bastion_session_only"]), 2
        ),
        "rows_over_policy_us": round(
            within_round(by_key["bastion_rows"], by_key["bastion_open"]), 2
        ),
    }


# --- report --------------------------------------------------------------------------------------


def _us(value: float) -> str:
    """µs with one decimal below 1,000, thousands separators above."""
    return f"{value:.1f}" if value < 1000 else f"{value:,.0f}"


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"Bastion policy benchmark: {summary['implementation']} {summary['python']}, "
        f"pycasbin {summary['pycasbin']}, fastapi-authz {summary['fastapi_authz']}; "
        f"CPU: {summary['cpu_pinning']}",
    ]
    if summary["decisions"] is not None:
        lines += ["", *render_decisions(summary["decisions"])]
    if summary["end_to_end"] is not None:
        lines += ["", *render_e2e(summary["end_to_end"])]
    return "\n".join(lines)


def render_decisions(d: dict[str, Any]) -> list[str]:
    budget = d["casbin_budget"]
    first = d["rows"][0]
    lines = [
        f"1. Decision latency, us per call: PolicyEngine.decide ({first['calls']:,} random "
        f"requests after {first['warmup']:,} warm-up, perf_counter_ns around each call).",
        "   p50/p99: every decision computed from the index (the per-container decision table"
        " emptied before each call); served: p50 with the table kept, as the middleware runs",
        f"   beside casbin.Enforcer on the same model and rules (budget per size: "
        f"{budget['build_s']:g} s build, then {budget['max_calls']} calls or "
        f"{budget['calls_s']:g} s of calls)",
        "",
    ]
    header = (
        f"{'policy':<34}{'index build':>12}{'p50':>7}{'p99':>7}{'served':>8}{'allowed':>9}"
        f"{'target':>8}  |  {'casbin build':>12}{'p50':>10}{'p99':>10}{'calls':>7}"
    )
    lines += [header, "-" * len(header)]
    for row in d["rows"]:
        c = row["casbin"]
        mark = "ok" if row["within_target"] else "MISSED"
        left = (
            f"{row['name']:<34}{_duration(row['build_s']):>12}{row['p50_us']:>7.1f}"
            f"{row['p99_us']:>7.1f}{row['served_p50_us']:>8.1f}{row['allowed_fraction']:>9.0%}"
            f"{mark:>8}  |  "
        )
        if c["status"] == "ran":
            right = (
                f"{_duration(c['build_s']):>12}{_us(c['p50_us']):>10}{_us(c['p99_us']):>10}"
                f"{c['calls']:>7}"
            )
        else:
            right = f"skipped (would take ~{c.get('would_take_s', '?'):,} s)"
        lines.append(left + right)
    lines.append(
        f"target: p50 decision <= {d['target_p50_us']:g} us at every size; "
        f"'docs' rows' = {_short(d['documents'])} documents x "
        f"{d['document_rows'] / d['documents']:.1f} rows in a dict, the look-up timed too"
    )
    for row in d["rows"]:
        if row["casbin"]["status"] == "skipped":
            lines.append(f"  casbin at {row['name']}: {row['casbin']['reason']}")
    return lines


def render_e2e(e: dict[str, Any]) -> list[str]:
    lines = [
        "2-3. Per request over ASGI, in-process (median of "
        f"{e['rounds']} rounds, after {e['warmup']} warm-up); Redis counted by the server",
        "",
    ]
    header = (
        f"{'case':<48}{'us/req':>9}{'x bare':>8}{'+us vs bare':>13}{'- RTT':>8}"
        f"{'cmds/req':>10}{'RTT/req':>9}{'reqs/round':>12}"
    )
    lines += [header, "-" * len(header)]

    def num(value: float | None, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    shown_reference = False
    for row in e["rows"]:
        if row["reference"] and not shown_reference:
            lines.append("reference rows:")
            shown_reference = True
        lines.append(
            f"{row['name']:<48}{row['us_per_request']:>9.1f}{num(row['ratio_to_bare'], '.2f'):>8}"
            f"{num(row['overhead_us'], '+.1f'):>13}"
            f"{num(row['overhead_minus_round_trip_us'], '+.1f'):>8}"
            f"{num(row['redis_commands_per_request'], '.2f'):>10}"
            f"{num(row['redis_round_trips_per_request'], '.2f'):>9}"
            f"{row['requests_per_round']:>12}"
        )
    lines.append("")
    what = {"hmget_middleware": "1 HMGET", "pipeline_middleware": "HMGET + SMEMBERS pipeline"}
    for key, label in (("bastion_open", "(a)"), ("bastion_rows", "(b)")):
        t = e["targets"][key]
        verdict = "WITHIN target" if t["within_target"] else "NOT within target"
        lines.append(
            f"Bastion {label} over a minimal middleware making the same round trip "
            f"({what[t['reference']]}, {t['reference_overhead_us']:.1f} us over bare): "
            f"{t['over_reference_us']:+.1f} us; target +{t['budget_us']:g} us -> {verdict}"
        )
    by_key = {row["key"]: row for row in e["rows"]}
    if "casbin_middleware" not in by_key:
        lines.append(
            "  (no CasbinMiddleware row: fastapi-authz is not installed; ./scripts/bench adds it)"
        )
    a, b = e["targets"]["bastion_open"], e["targets"]["bastion_rows"]
    lines += [
        "  (differences: median over rounds of the two rows' difference within each round)",
        f"  Bastion's own work (Redis stubbed in memory): (a) {a['own_work_us']:.1f} us, "
        f"(b) {b['own_work_us']:.1f} us; the same code for (a) run right after a real round "
        f"trip costs {e['after_wait_own_work_us']:.1f} us on this machine",
        f"  overhead minus the bare HMGET loop ({e['redis_round_trip_us']:.1f} us): "
        f"(a) {a['overhead_minus_round_trip_us']:.1f} us, (b) "
        f"{b['overhead_minus_round_trip_us']:.1f} us (the pipeline loop alone: "
        f"{e['redis_pipeline_round_trip_us']:.1f} us)",
        f"  Redis per request, checked: (a) "
        f"{_by_name(by_key['bastion_open']['redis_commands_by_name'])} in "
        f"{by_key['bastion_open']['redis_round_trips_per_request']:g} round trip, (b) "
        f"{_by_name(by_key['bastion_rows']['redis_commands_by_name'])} in "
        f"{by_key['bastion_rows']['redis_round_trips_per_request']:g} round trip (the session "
        f"check alone: {_by_name(by_key['bastion_session_only']['redis_commands_by_name'])})",
        f"  authorization (route match + decision) over a session-only Bastion: "
        f"{e['policy_over_session_only_us']:+.1f} us with Redis, "
        f"{e['policy_own_work_us']:+.1f} us with Redis stubbed; "
        f"(b) over (a): {e['rows_over_policy_us']:+.1f} us",
    ]
    load = e.get("under_load")
    if load:
        lines += [
            "",
            f"Under load: the same requests, {load['in_flight']} at a time on the one event loop "
            "(us/req = round time / requests; the CPU never waits idle for Redis)",
            "",
        ]
        lines += [header.replace("  - RTT", "       ").rstrip(), "-" * len(header)]
        for row in load["rows"]:
            lines.append(
                f"{row['name']:<48}{row['us_per_request']:>9.1f}{row['ratio_to_bare']:>8.2f}"
                f"{row['overhead_us']:>+13.1f}"
            )
        for key, label in (("bastion_open", "(a)"), ("bastion_rows", "(b)")):
            t = load["targets"][key]
            verdict = "within" if t["within_target"] else "NOT within"
            lines.append(
                f"Bastion {label} over {what[t['reference']]} middleware under load: "
                f"{t['over_reference_us']:+.1f} us ({verdict} +{t['budget_us']:g} us)"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./scripts/bench policy",
        description="Policy decisions (engine vs casbin.Enforcer) and per-request cost over ASGI.",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="small sizes, few requests")
    parser.add_argument(
        "--sizes",
        help="policy sizes in rules, comma-separated (default 1000,100000,1000000;"
        " quick 1000,10000,100000)",
    )
    parser.add_argument(
        "--documents", type=int, help="documents with their own rows (default 1M, quick 100k)"
    )
    parser.add_argument("--calls", type=int, help="timed decisions per size (default 5000)")
    parser.add_argument("--rounds", type=int, help="timed rounds per ASGI case (default 31)")
    parser.add_argument("--requests", type=int, help="requests per round (default 600)")
    parser.add_argument(
        "--pin",
        choices=("same", "split", "off"),
        default="split",
        help="CPU pinning of the benchmark and its redis-server (as in bench/sessions.py)",
    )
    parser.add_argument(
        "--only", choices=("decisions", "asgi"), help="run one part: 1 (decisions) or 2-3 (ASGI)"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    try:
        sizes = (
            tuple(int(s) for s in args.sizes.split(","))
            if args.sizes
            else (QUICK_SIZES if quick else SIZES)
        )
    except ValueError:
        parser.error("--sizes takes integers, e.g. 1000,100000")
    documents = args.documents or (QUICK_DOCUMENTS if quick else DOCUMENTS)
    calls = args.calls or (1000 if quick else 5000)
    rounds = args.rounds or (5 if quick else 31)
    requests = args.requests or (200 if quick else 600)
    warmup = 200 if quick else 1000
    if min(*sizes, documents, calls, rounds, requests) < 1 or min(sizes) < 100:
        parser.error("sizes must be at least 100, and every count positive")
    budget = (
        CasbinBudget(build_s=5, calls_s=2, max_calls=100, min_calls=5)
        if quick
        else CasbinBudget(build_s=20, calls_s=10, max_calls=100, min_calls=20)
    )

    def log(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    summary = on_redis_server(
        lambda url: run_all(
            url,
            sizes=sizes,
            documents=documents,
            calls=calls,
            warmup=warmup,
            budget=budget,
            rounds=rounds,
            requests=requests,
            pin=args.pin,
            only=args.only,
            log=log,
        )
    )
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


async def run_all(
    url: str,
    *,
    sizes: Sequence[int],
    documents: int,
    calls: int,
    warmup: int,
    budget: CasbinBudget,
    rounds: int,
    requests: int,
    pin: str,
    only: str | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Pin first (so both parts run on the same CPUs), then decisions, then over ASGI."""
    admin = redis.asyncio.Redis.from_url(url)
    try:
        pinning = await pin_cpus(admin, pin)
    finally:
        await admin.aclose()
    decisions = e2e = None
    if only in (None, "decisions"):
        log("1. decisions")
        decisions = bench_decisions(sizes, documents, calls, warmup, budget, log)
    if only in (None, "asgi"):
        log("2-3. over ASGI")
        e2e = await bench_e2e(url, warmup=warmup, rounds=rounds, requests=requests, log=log)
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "pycasbin": _version("pycasbin"),
        "fastapi_authz": _version("fastapi-authz"),
        "cpu_pinning": pinning,
        "decisions": decisions,
        "end_to_end": e2e,
    }


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
