"""A 100k-rule policy reload beside live requests: a cheap route's p50/p99 before and during.

One process serves requests on its event loop (in-process ASGI calls, a session cookie checked
on a real redis-server, a route the policy allows) from a few concurrent clients, while its
policy watcher builds a newly published 100k-rule version in its thread, as a worker does
when ``bastion policy publish`` runs elsewhere. Each round measures the latencies for a while
before the publication, then from the publication until the new version is in force. Build
modes, interleaved round by round:

* ``plain``: the build called as is in the watcher's thread (what a reload did before);
* ``no-gc``: the cycle collector paused during the build and the result frozen, GIL switches
  every 0.5 ms (``build_aside(..., pace=False)``);
* ``paced``: that, and the build rests 1 ms after each 1 ms of work (``build_aside``, the
  default).

The machine's load drifts (other processes share its CPUs), so the modes are interleaved round
by round, the usual p99 is the median of every round's "before" window, and each mode's p99
during its builds (median over rounds) is given over it; the per-round ratios (during / the
same round's before) show the spread. The load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from bastion import Bastion, Settings
from bastion.policies.published import Bundle, PolicyVersions
from bastion.policies.watch import build_aside
from bench.policy import generate_policy
from bench.sessions import on_redis_server

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 2.0
"""The p99 of the cheap route during a reload may be at most this many times its usual p99."""

MODES: dict[str, Callable[[Callable[[], Any]], Any]] = {
    "plain": lambda build: build(),
    "no-gc": lambda build: build_aside(build, pace=False),
    "paced": build_aside,
}
ROUTES = [{"method": "GET", "path": "/notes/{id}", "action": "read", "resource": "notes/{id}"}]


def policy_text(rules: int, seed: int) -> str:
    """``rules`` generated lines (bench.policy's generator) plus the cheap route's grant."""
    gen = generate_policy(rules - 1, seed=seed)
    lines = ["p, users, notes/*, read"]
    lines += [f"p, {r.fields[0]}, {r.fields[1]}, {r.fields[2]}" for r in gen.rules]
    lines += [f"g, {r.fields[0]}, {r.fields[1]}" for r in gen.links]
    return "\n".join(lines) + "\n"


class _Counted:
    """What PolicyVersions.publish reads of an engine: its rules (counted, never built here)."""

    def __init__(self, count: int) -> None:
        self.rules = range(count)


def _marked(
    mode: Callable[[Callable[[], Any]], Any], builds: list[float]
) -> Callable[[Callable[[], Any]], Any]:
    """``mode``, noting when each build starts."""

    def run(build: Callable[[], Any]) -> Any:
        builds.append(time.perf_counter())
        return mode(build)

    return run


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted ``values``."""
    return values[min(len(values) - 1, max(0, round(q * len(values)) - 1))]


async def note(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def scope(cookie: bytes) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "https", "path": "/notes/1", "raw_path": b"/notes/1", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"testserver"), (b"cookie", cookie)],
        "client": ("127.0.0.1", 50000), "server": ("testserver", 443),
    }  # fmt: skip


async def run(url: str, *, rules: int, rounds: int, before: float, clients: int) -> dict[str, Any]:
    load_start = os.getloadavg()[0]
    bundles = [Bundle(None, (("policy.csv", policy_text(rules, seed)),)) for seed in (1, 2)]
    counted = _Counted(rules)
    bastion = Bastion(
        Settings.from_mapping({"redis_url": url, "routes": ROUTES, "policy_reload_interval": 0.2})
    )
    versions = PolicyVersions(bastion.sync.redis, bastion.settings.key_prefix)
    watcher = bastion.policy_watcher
    app = bastion.asgi(Starlette(routes=[Route("/notes/{id}", note)]))
    token = bastion.sync.sessions.create("alice").token
    request = scope(f"{bastion.settings.cookie_name}={token}".encode())
    samples: list[tuple[float, float]] = []
    statuses: dict[int, int] = {}
    stop = False

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def client() -> None:
        answer: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer.append(message["status"])

        while not stop:
            started = time.perf_counter()
            await app(dict(request), receive, send)
            samples.append((started, time.perf_counter() - started))
            status = answer.pop()
            statuses[status] = statuses.get(status, 0) + 1

    def window(start: float, end: float) -> list[float]:
        return sorted(took for at, took in samples if start <= at < end)

    results: dict[str, list[dict[str, float]]] = {mode: [] for mode in MODES}
    published = 0
    try:
        watcher.build_aside = MODES["plain"]
        versions.publish(bundles[0], counted, by="bench")  # type: ignore[arg-type]
        published = 1
        watcher.start()  # what the first request does
        while watcher.published != published:
            await asyncio.sleep(0.05)
        running = [asyncio.ensure_future(client()) for _ in range(clients)]
        await asyncio.sleep(1.0)  # warm
        for round_number in range(rounds):
            order = list(MODES) if round_number % 2 == 0 else list(reversed(MODES))
            for mode in order:
                builds: list[float] = []
                watcher.build_aside = _marked(MODES[mode], builds)
                start = time.perf_counter()
                await asyncio.sleep(before)
                calm = window(start, time.perf_counter())
                bundle = bundles[published % 2]
                publish = versions.publish
                await asyncio.to_thread(publish, bundle, counted, by="bench")  # type: ignore[arg-type]
                published += 1
                while watcher.published != published:
                    await asyncio.sleep(0.005)
                # From the moment the watcher starts building to the swap.
                during_start, during_end = builds[0], time.perf_counter()
                busy = window(during_start, during_end)
                results[mode].append(
                    {
                        "before_p50_ms": percentile(calm, 0.5) * 1e3,
                        "before_p99_ms": percentile(calm, 0.99) * 1e3,
                        "during_p50_ms": percentile(busy, 0.5) * 1e3,
                        "during_p99_ms": percentile(busy, 0.99) * 1e3,
                        "during_max_ms": busy[-1] * 1e3,
                        "build_s": during_end - during_start,
                        "requests_before": len(calm),
                        "requests_during": len(busy),
                    }
                )
                await asyncio.sleep(0.3)  # the tail of the swap settles
        stop = True
        await asyncio.gather(*running)
    finally:
        await bastion.aclose()
    if set(statuses) != {200}:
        raise SystemExit(f"every request must answer 200, got {statuses}")
    return summarize(
        results, rules=rules, clients=clients, before=before, load=(load_start, os.getloadavg()[0])
    )


def summarize(
    results: dict[str, list[dict[str, float]]],
    *,
    rules: int,
    clients: int,
    before: float,
    load: tuple[float, float],
) -> dict[str, Any]:
    # The usual p99: every round's "before" window, whatever mode was to follow (they are alike).
    usual = statistics.median(r["before_p99_ms"] for rows in results.values() for r in rows)
    modes = {}
    for mode, rows in results.items():
        median = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        ratios = [r["during_p99_ms"] / r["before_p99_ms"] for r in rows]
        modes[mode] = {
            **median,
            "p99_over_usual": median["during_p99_ms"] / usual,
            "p99_ratio_median": statistics.median(ratios),
            "p99_ratios": ratios,
            "rounds": len(rows),
        }
    return {
        "rules": rules,
        "clients": clients,
        "before_s": before,
        "usual_p99_ms": usual,
        "target_ratio": TARGET_RATIO,
        "modes": modes,
        "load_average": {"start": load[0], "end": load[1]},
        "python": platform.python_version(),
    }


def render(summary: dict[str, Any]) -> str:
    load = summary["load_average"]
    lines = [
        f"Cheap route (session cookie, policy allows) under {summary['clients']} concurrent "
        f"in-process clients, while the watcher builds a published {summary['rules']:,}-rule "
        f"policy; medians over rounds, ms (load average {load['start']:.1f} -> {load['end']:.1f})",
        "",
        f"{'mode':<7} {'before p50':>10} {'p99':>7} {'during p50':>11} {'p99':>7} "
        f"{'max':>7} {'build s':>8} {'p99/usual':>10} {'per round (during/before)':>26}",
    ]
    for mode, m in summary["modes"].items():
        ratios = ", ".join(f"{r:.1f}" for r in m["p99_ratios"])
        lines.append(
            f"{mode:<7} {m['before_p50_ms']:>10.2f} {m['before_p99_ms']:>7.2f} "
            f"{m['during_p50_ms']:>11.2f} {m['during_p99_ms']:>7.2f} {m['during_max_ms']:>7.1f} "
            f"{m['build_s']:>8.2f} {m['p99_over_usual']:>10.1f}   {ratios}"
        )
    paced = summary["modes"]["paced"]["p99_over_usual"]
    verdict = "within" if paced <= summary["target_ratio"] else "OVER"
    lines += [
        "",
        f"usual p99 (every round's before window): {summary['usual_p99_ms']:.2f} ms",
        f"target: p99 during a reload <= {summary['target_ratio']:.0f} x the usual p99; "
        f"paced (the default): {paced:.1f} x, {verdict} target",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./scripts/bench reload",
        description="a cheap route's p50/p99 before and during a 100k-rule policy reload",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="10k rules, 1 round: a smoke test")
    parser.add_argument("--rules", type=int, help="policy size (default 100000)")
    parser.add_argument("--rounds", type=int, help="rounds of every mode (default 7)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    args = parser.parse_args(argv)
    rules = args.rules or (10_000 if args.quick else 100_000)
    rounds = args.rounds or (1 if args.quick else 7)
    before = 0.5 if args.quick else 2.0
    summary = on_redis_server(
        lambda url: run(url, rules=rules, rounds=rounds, before=before, clients=args.clients)
    )
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
