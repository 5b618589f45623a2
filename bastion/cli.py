"""The ``bastion`` command: the demo server and session administration."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from bastion.errors import BastionError, ConfigError
from bastion.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    return Settings.load(args.config, **overrides)


def _demo(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        print("bastion demo needs uvicorn: pip install 'bastion[demo]'", file=sys.stderr)
        return 2
    from bastion.core import Bastion
    from bastion.demo import USAGE, create_app

    settings = _settings(args)
    bastion = Bastion(settings)
    backend = (
        f"Redis at {settings.redis_url}" if settings.redis_url else "embedded in-process Redis"
    )
    print(USAGE.format(url=f"http://{args.host}:{args.port}", backend=backend), flush=True)
    uvicorn.run(create_app(bastion), host=args.host, port=args.port, log_level="info")
    return 0


def _sessions(args: argparse.Namespace) -> int:
    from bastion.core import Bastion

    settings = _settings(args)
    if settings.redis_url is None:
        print(
            "bastion sessions needs a shared Redis: pass --redis-url or set BASTION_REDIS_URL "
            "(the embedded one lives inside each app process).",
            file=sys.stderr,
        )
        return 2
    store = Bastion(settings).sync_sessions
    if args.action == "list":
        rows = [s.to_dict() for s in store.list(args.user)]
        print(json.dumps(rows, indent=2))
        return 0
    if args.session:
        if not store.revoke(args.user, args.session):
            print(f"no live session {args.session} for user {args.user}", file=sys.stderr)
            return 1
        print(f"revoked {args.session}")
        return 0
    removed = store.revoke_all(args.user)
    print(f"revoked {len(removed)} session(s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bastion`` command."""
    parser = argparse.ArgumentParser(prog="bastion", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", metavar="FILE", help="bastion.toml with settings")
        p.add_argument("--redis-url", metavar="URL", help="Redis to use (else BASTION_REDIS_URL)")

    demo = sub.add_parser("demo", help="serve the demo app")
    common(demo)
    demo.add_argument("--host", default="127.0.0.1")
    demo.add_argument("--port", type=int, default=8000)
    demo.set_defaults(run=_demo)

    sessions = sub.add_parser("sessions", help="list or revoke a user's sessions")
    actions = sessions.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a user's live sessions, oldest first")
    listing.add_argument("user")
    common(listing)
    revoke = actions.add_parser("revoke", help="revoke one session, or all of a user's")
    revoke.add_argument("user")
    revoke.add_argument("session", nargs="?", help="session id (all sessions when omitted)")
    common(revoke)
    sessions.set_defaults(run=_sessions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bastion`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"bastion: {exc}", file=sys.stderr)
        return 2
    except BastionError as exc:
        print(f"bastion: {exc.type}: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
