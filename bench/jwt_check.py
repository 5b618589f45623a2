"""A JWT's first check: Bastion's, up to its session read, beside pyjwt's ``jwt.decode``.

A first check is the uncached one: every token of a round is new to the service (its cache of
verified tokens is emptied before each round). Bastion's row runs the JWT credential backend's
step up to the Redis read it yields (the check of the token, then the session read built); the
peer row is ``jwt.decode(token, key, algorithms=[alg], audience=..., issuer=...)`` on the same
tokens. Rounds interleave the rows; the verdict is the median of the per-round ratios. No Redis
is involved. Run with ``./scripts/bench jwt`` (``--help``).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from bastion import Bastion, Settings
from bastion.credentials.builtin import JWTBackend
from bastion.redisio import Call
from bastion.sessions import keys
from bastion.settings import JWTKey
from bastion.tokens.jwt import REQUIRED_CLAIMS, JWTService

JWT_SECRET = "x" * 40
USER = "alice"
SESSION_ID = "A" * 22
TARGET_RATIO = 1.0
"""Budget: a first check costs at most what ``jwt.decode`` costs on the same token."""


class _Stub:
    """A Redis that is never called: the backend's step is run only up to its read."""

    def register_script(self, source: str) -> Any:
        return None


@dataclass
class Row:
    key: str
    name: str
    check: Callable[[str], object]
    tokens: list[str]
    before_round: Callable[[], object] = lambda: None
    reference: bool = False
    rounds_us: list[float] = field(default_factory=list)

    def timed(self) -> float:
        """µs per token of one round over every token."""
        self.before_round()
        check, tokens = self.check, self.tokens
        gc.collect()
        start = time.perf_counter_ns()
        for token in tokens:
            check(token)
        return (time.perf_counter_ns() - start) / len(tokens) / 1000

    @property
    def median(self) -> float:
        return statistics.median(self.rounds_us)


def first_check(settings: Settings) -> tuple[JWTService, Callable[[str], object]]:
    """Bastion's JWT backend run up to the session read it yields, with a service of its own."""
    stub = _Stub()
    bastion = Bastion(settings, redis=stub, sync_redis=stub)
    service = JWTService(settings)
    backend = JWTBackend(service, bastion._sessions_core, bastion._runner, bastion._sync_runner)
    session_key = keys.sessions(settings.key_prefix, USER)

    def check(token: str) -> object:
        op = next(backend._check(token, "GET", "https", ()))
        if not (isinstance(op, Call) and op.args[0] == session_key):
            raise SystemExit(f"the JWT step yielded {op!r}, not the session read")
        return op

    return service, check


def pair(
    label: str, settings: Settings, verifying: Any, alg: str, n: int
) -> tuple[list[Row], JWTService]:
    """Bastion's first check and ``jwt.decode`` on the same ``n`` tokens of one key."""
    service, bastion_check = first_check(settings)
    tokens = [service.mint(USER, SESSION_ID) for _ in range(n)]
    audience, issuer = settings.jwt_audience, settings.jwt_issuer

    def pyjwt_decode(token: str) -> dict[str, Any]:
        return jwt.decode(token, verifying, algorithms=[alg], audience=audience, issuer=issuer)

    def pyjwt_strict(token: str) -> dict[str, Any]:
        return jwt.decode(
            token,
            verifying,
            algorithms=[alg],
            audience=audience,
            issuer=issuer,
            options={"require": REQUIRED_CLAIMS, "strict_aud": True},
        )

    # Correctness first: every token passes every check.
    for token in tokens[:50]:
        bastion_check(token)
        if pyjwt_decode(token)["sid"] != SESSION_ID or pyjwt_strict(token)["sub"] != USER:
            raise SystemExit("pyjwt decoded another token")
    rows = [
        Row(f"pyjwt_{alg}", f"pyjwt jwt.decode, {label}", pyjwt_decode, tokens),
        Row(
            f"bastion_{alg}",
            f"Bastion JWT first check, {label}",
            bastion_check,
            tokens,
            before_round=service._verified.clear,
        ),
        Row(
            f"pyjwt_strict_{alg}",
            f"pyjwt jwt.decode + Bastion's options, {label}",
            pyjwt_strict,
            tokens,
            reference=True,
        ),
    ]
    return rows, service


def eddsa_settings(directory: Path) -> tuple[Settings, Any] | None:
    """Settings with one EdDSA key, and its public key (None without cryptography)."""
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        return None
    private = ed25519.Ed25519PrivateKey.generate()
    path = directory / "ed.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key = JWTKey(kid="ed", alg="EdDSA", private_key_file=str(path))
    return Settings(jwt_keys=(key,)), private.public_key()


def within_round_ratio(row: Row, peer: Row) -> float:
    """Median over rounds of ``row / peer`` in the same round (drift cancels)."""
    return statistics.median(a / b for a, b in zip(row.rounds_us, peer.rounds_us, strict=True))


def run(*, rounds: int, requests: int) -> dict[str, Any]:
    """Every row, ``rounds`` interleaved rounds of ``requests`` first checks each."""
    hs = Settings(jwt_secret=JWT_SECRET)
    rows, _ = pair("HS256", hs, JWT_SECRET, "HS256", requests)
    # The cached check, for scale: what a repeat client's token costs.
    cached_service, cached_check = first_check(hs)
    cached_token = cached_service.mint(USER, SESSION_ID)
    cached_check(cached_token)
    rows.append(
        Row(
            "bastion_cached",
            "Bastion JWT repeat check (cached), HS256",
            cached_check,
            [cached_token] * requests,
            reference=True,
        )
    )
    with tempfile.TemporaryDirectory() as directory:
        ed = eddsa_settings(Path(directory))
        if ed is not None:
            rows += pair("EdDSA", ed[0], ed[1], "EdDSA", requests)[0]
        for row in rows:  # warm-up
            row.timed()
        for _ in range(rounds):
            for row in rows:
                row.rounds_us.append(row.timed())
    by_key = {row.key: row for row in rows}
    comparisons = {}
    for alg in ("HS256", "EdDSA"):
        if f"bastion_{alg}" not in by_key:
            continue
        bastion, peer = by_key[f"bastion_{alg}"], by_key[f"pyjwt_{alg}"]
        ratio = within_round_ratio(bastion, peer)
        comparisons[alg] = {
            "bastion_first_check_us": round(bastion.median, 2),
            "pyjwt_decode_us": round(peer.median, 2),
            "ratio": round(ratio, 3),
            "within_target": ratio <= TARGET_RATIO,
        }
    return {
        "python": platform.python_version(),
        "pyjwt": jwt.__version__,
        "rounds": rounds,
        "tokens_per_round": requests,
        "rows": [
            {
                "key": row.key,
                "name": row.name,
                "reference": row.reference,
                "us_per_check": round(row.median, 2),
                "min_us": round(min(row.rounds_us), 2),
                "max_us": round(max(row.rounds_us), 2),
            }
            for row in rows
        ],
        "target": f"Bastion's first check <= {TARGET_RATIO:g} x jwt.decode on the same tokens",
        "comparisons": comparisons,
    }


def render(summary: dict[str, Any]) -> str:
    lines = [
        f"JWT first checks: CPython {summary['python']}, pyjwt {summary['pyjwt']}; median of"
        f" {summary['rounds']} rounds x {summary['tokens_per_round']} tokens, each new to the"
        " checker",
        "",
        f"{'check':<52}{'us/check':>10}{'rounds min..max':>18}",
    ]
    for row in summary["rows"]:
        mark = " (ref)" if row["reference"] else ""
        spread = f"{row['min_us']:.1f}..{row['max_us']:.1f}"
        lines.append(f"{row['name'] + mark:<52}{row['us_per_check']:>10.1f}{spread:>18}")
    lines.append("")
    for alg, c in summary["comparisons"].items():
        verdict = "WITHIN target" if c["within_target"] else "NOT within target"
        lines.append(
            f"{alg}: Bastion {c['bastion_first_check_us']:.1f} us vs jwt.decode"
            f" {c['pyjwt_decode_us']:.1f} us: {c['ratio']:.2f} x (median of per-round ratios)"
            f" -> {verdict}"
        )
    lines.append(f"target: {summary['target']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./scripts/bench jwt",
        description="Bastion's uncached JWT check beside pyjwt's jwt.decode, same tokens.",
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--quick", action="store_true", help="few tokens: a smoke test")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 21, quick 3)")
    parser.add_argument("--requests", type=int, help="tokens per round (default 2000, quick 200)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (3 if args.quick else 21)
    requests = args.requests or (200 if args.quick else 2000)
    if rounds < 1 or requests < 1:
        parser.error("--rounds and --requests must be positive")
    summary = run(rounds=rounds, requests=requests)
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0 if all(c["within_target"] for c in summary["comparisons"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
