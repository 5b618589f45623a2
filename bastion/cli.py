"""The ``bastion`` command: the demo server, and session, user, key and policy administration."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bastion.errors import BastionError, ConfigError, UserNotFound
from bastion.settings import Settings

if TYPE_CHECKING:
    from bastion.core import Bastion


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
    from bastion.demo import banner, demo_settings, notes_app, notes_settings, uvicorn_options

    settings = demo_settings(notes_settings(args.config, redis_url=args.redis_url))
    url = f"http://{args.host}:{args.port}"
    try:
        app = notes_app(settings, args.framework)
    except ImportError as exc:  # each framework is an extra of its own
        missing = (exc.name or args.framework).split(".")[0]
        print(
            f"bastion demo --framework {args.framework} needs {missing}: "
            f"pip install 'bastion[demo,{args.framework}]'",
            file=sys.stderr,
        )
        return 2
    except RuntimeError as exc:  # no examples/ beside the package
        print(f"bastion demo: {exc}", file=sys.stderr)
        return 2
    print(banner(settings, url, args.framework), flush=True)
    if args.framework == "flask":
        from werkzeug.serving import run_simple

        run_simple(args.host, args.port, app, threaded=True)
    else:
        uvicorn.run(
            app, host=args.host, port=args.port, log_level="info", **uvicorn_options(settings)
        )
    return 0


def _sessions(args: argparse.Namespace) -> int:
    bastion = _shared_bastion(args, "sessions")
    if bastion is None:
        return 2
    store = bastion.sync.sessions
    if args.action == "list":
        rows = [s.to_dict() for s in store.list(args.user)]
        print(json.dumps(rows, indent=2))
        return 0
    if getattr(args, "all_users", False):
        if args.user or args.session:
            print("bastion sessions revoke: --all-users takes no USER or SESSION", file=sys.stderr)
            return 2
        started = time.monotonic()
        ended = store.revoke_everyone()
        took = time.monotonic() - started
        print(
            f"revoked {ended} session(s) of every user in {took:.1f} s (one SCAN pass; a "
            "session created during the walk may have survived: run it again to be sure)"
        )
        return 0
    if not args.user:
        print("bastion sessions revoke: give a USER, or --all-users", file=sys.stderr)
        return 2
    if args.session:
        if not store.revoke(args.user, args.session):
            print(f"no live session {args.session} for user {args.user}", file=sys.stderr)
            return 1
        print(f"revoked {args.session}")
        return 0
    removed = store.revoke_all(args.user)
    print(f"revoked {len(removed)} session(s)")
    return 0


def _label(args: argparse.Namespace) -> int:
    bastion = _shared_bastion(args, "users label")
    if bastion is None:
        return 2
    users = bastion.sync.users
    user = users.get_by_email(args.user) if "@" in args.user else users.get(args.user)
    if user is None:
        print(f"bastion users label: no user {args.user}", file=sys.stderr)
        return 1
    labels = dict.fromkeys(user.labels)
    for label in args.labels:
        if args.remove:
            labels.pop(label, None)
        else:
            labels[label] = None
    try:
        users.update(user.id, labels=tuple(labels))
    except ValueError as exc:
        print(f"bastion users label: {exc}", file=sys.stderr)
        return 2
    shown = ", ".join(f"label:{label}" for label in labels) or "none"
    print(f"user {user.id} now has the labels: {shown} (their sessions have them at once)")
    return 0


def _users(args: argparse.Namespace) -> int:
    if args.action == "label":
        return _label(args)
    if (args.user is None) == (args.email is None):
        print(f"bastion users {args.action}: give a USER id or --email EMAIL", file=sys.stderr)
        return 2
    bastion = _shared_bastion(args, "users")
    if bastion is None:
        return 2
    users = bastion.sync.users
    if args.email is not None:
        found = users.get_by_email(args.email)
        if found is None:
            print(f"bastion users {args.action}: no user with that email", file=sys.stderr)
            return 1
        user_id = found.id
    else:
        user_id = args.user
    try:
        if args.action == "disable":
            ended = users.disable(user_id)
            print(
                f"disabled user {user_id}: ended {len(ended)} session(s); log-ins are refused "
                "(user_blocked) until 'bastion users enable'"
            )
        elif args.action == "enable":
            if users.enable(user_id):
                print(f"enabled user {user_id}: log-ins are allowed again")
            else:
                print(f"user {user_id} was not disabled: nothing to do")
        else:
            ended = users.delete(user_id)
            print(
                f"deleted user {user_id}: ended {len(ended)} session(s); the email is free, the "
                "id is never used again"
            )
    except UserNotFound:
        print(f"bastion users {args.action}: no user {user_id}", file=sys.stderr)
        return 1
    return 0


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int | None:
    """Seconds in ``30d``, ``12h``, ``90m``, ``3600s`` or ``3600``; None for ``never``."""
    text = text.strip().lower()
    if text == "never":
        return None
    unit = _UNITS.get(text[-1:]) if text[-1:].isalpha() else 1
    number = text[:-1] if text[-1:].isalpha() else text
    if unit is None or not number.isdigit():
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a duration like 30d, 12h, 90m or never"
        )
    return int(number) * unit


def _shared_bastion(args: argparse.Namespace, what: str) -> Bastion | None:
    """A Bastion on the shared Redis the command names; None (with a message) without one.

    It is closed (its connections) when the command returns: :func:`main` holds ``args.opened``.
    """
    from bastion.core import Bastion

    settings = _shared_redis(args, what)
    if settings is None:
        return None
    bastion = Bastion(settings)
    args.opened.callback(bastion.close)
    return bastion


def _shared_redis(args: argparse.Namespace, what: str) -> Settings | None:
    settings = _settings(args)
    if settings.redis_url is None:
        print(
            f"bastion {what} needs a shared Redis: pass --redis-url or set BASTION_REDIS_URL "
            "(the embedded one lives inside each app process).",
            file=sys.stderr,
        )
        return None
    return settings


def _keys(args: argparse.Namespace) -> int:
    bastion = _shared_bastion(args, "keys")
    if bastion is None:
        return 2
    store = bastion.sync.api_keys
    if args.action == "create":
        try:
            new = store.create(args.name, args.scope, expires_in=args.expire)
        except ValueError as exc:
            print(f"bastion keys create: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(new.info.to_dict(), indent=2))
        print("The key is shown once; store it now:")
        print(new.key)
        return 0
    if args.action == "list":
        print(json.dumps([k.to_dict() for k in store.list()], indent=2))
        return 0
    if not store.revoke(args.key_id):
        print(f"no API key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked {args.key_id}")
    return 0


def _policy_paths(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(policy paths, config files): the PATHS given, else those of the settings, else '.'."""
    paths = [p for p in args.paths if not p.endswith(".toml")]
    configs = [p for p in args.paths if p.endswith(".toml")]
    config = args.config or os.environ.get("BASTION_CONFIG")
    if config and config not in configs:
        configs.append(config)
    if not paths:
        for toml in configs:
            try:
                settings = Settings.load(toml, env={})
            except ConfigError:
                continue  # reported by the config check below
            paths += list(settings.policy_files)
            if settings.policy_model:
                paths.append(settings.policy_model)
    return (paths or (["."] if not configs else [])), configs


def _policy(args: argparse.Namespace) -> int:
    # The team tooling (and pycasbin with it) loads only for this command.
    from bastion.policies.tools import commands

    if args.action in ("publish", "history", "rollback"):
        return _published(args)
    paths, configs = _policy_paths(args)
    if args.action == "reload":
        bastion = _shared_bastion(args, "policy reload")
        if bastion is None:
            return 2
        from bastion.policies.published import PolicyVersions
        from bastion.policies.watch import announce

        version = announce(bastion.settings, bastion.sync.redis)
        print(f"announced policy version {version}: every worker reloads at its next check")
        current = PolicyVersions(bastion.sync.redis, bastion.settings.key_prefix).current()
        if current is not None:
            print(
                f"note: published version {current} is in force and wins over the local files; "
                "publish to change it (bastion policy publish)"
            )
        return 0
    if args.action == "check":
        status = 0
        for toml in configs:
            try:
                Settings.load(toml, env={})
                print(f"{toml}: ok")
            except ConfigError as exc:
                print(f"{toml}: error: {exc}")
                status = 1
        if paths:
            status = max(status, commands.check(paths, sys.stdout))
        return status
    if args.action == "test":
        return commands.test(paths, sys.stdout)
    return commands.explain(paths, args.principal, args.act, args.resource, sys.stdout)


def _published(args: argparse.Namespace) -> int:
    """``bastion policy publish | history | rollback``: the versions kept in Redis."""
    from bastion.policies.diagnostics import PolicyError
    from bastion.policies.published import KEEP, PolicyVersions
    from bastion.redis_clients import make_clients

    settings = _shared_redis(args, f"policy {args.action}")
    if settings is None:
        return 2
    _, client = make_clients(settings)
    args.opened.callback(client.close)
    versions = PolicyVersions(client, settings.key_prefix)
    if args.action == "history":
        found, current = versions.history(), versions.current()
        if args.json:
            rows = [{**v.to_dict(), "current": v.number == current} for v in found]
            print(json.dumps(rows, indent=2))
            return 0
        if not found:
            print("no policy published yet: every host uses its local policy files")
        for v in found:
            row = v.to_dict()
            mark = "*" if v.number == current else " "
            print(
                f"{mark} {v.number:>4}  {row['at']}  {v.by}  sha256 {v.sha256[:12]}  "
                f"{v.rules} rules  {', '.join(v.files)}{'  (' + v.note + ')' if v.note else ''}"
            )
        return 0
    if args.action == "rollback":
        bundle = versions.bundle(args.version)
        if bundle is None:
            known = any(v.number == args.version for v in versions.history())
            why = (
                f"version {args.version} is not kept (the last {KEEP} versions keep their text)"
                if known
                else f"no version {args.version}"
            )
            print(f"bastion policy rollback: {why}; see bastion policy history", file=sys.stderr)
            return 1
        try:
            engine = bundle.engine()
        except PolicyError as exc:
            print(f"not rolled back: version {args.version} no longer checks: {exc}")
            return 1
        note = f"rollback to version {args.version}"
    else:
        checked = _checked_bundle(args)
        if checked is None:
            return 1
        bundle, engine = checked
        note = args.note or ""
    version = versions.publish(bundle, engine, by=args.by, note=note)
    print(
        f"published policy version {version.number}: {version.rules} rules, sha256 "
        f"{version.sha256[:12]}{' (' + note + ')' if note else ''}; every worker swaps to it "
        "at its next check (policy_reload_interval)"
    )
    return 0


def _checked_bundle(args: argparse.Namespace) -> tuple[Any, Any] | None:
    """The files to publish, checked and tested (their output printed); None if refused."""
    from bastion.policies.diagnostics import PolicyError
    from bastion.policies.published import Bundle
    from bastion.policies.tools import commands
    from bastion.policies.watch import suites_beside

    paths, _ = _policy_paths(args)
    model, policies, suites, problem = commands.one_policy(paths)
    if problem is not None:
        print(f"not published: {problem}")
        return None
    if commands.check([*([model] if model else []), *policies], sys.stdout) != 0:
        print("not published: the check found errors")
        return None
    suites = suites or suites_beside(tuple(policies))
    if suites and commands.test(suites, sys.stdout) != 0:
        print("not published: the test suites did not pass")
        return None
    try:
        # What is stored is checked, not only the files: the bundle is parsed and run again.
        bundle = Bundle.read(model, policies)
        return bundle, bundle.engine(suites=suites)
    except PolicyError as exc:
        print(f"not published: {exc}")
        return None


def _security(args: argparse.Namespace) -> int:
    bastion = _shared_bastion(args, "security")
    if bastion is None:
        return 2
    if args.action == "set":
        values = bastion.sync.security.set(args.key, args.value)
        print(
            f"{args.key} = {values.to_dict()[args.key]} (every worker applies it within a second)"
        )
    else:
        values = bastion.sync.security.current()
    print(json.dumps(values.to_dict(), indent=2))
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
    demo.add_argument("--framework", choices=("starlette", "fastapi", "flask"), default="starlette")
    demo.set_defaults(run=_demo)

    sessions = sub.add_parser("sessions", help="list or revoke a user's sessions")
    actions = sessions.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="a user's live sessions, oldest first")
    listing.add_argument("user")
    common(listing)
    revoke = actions.add_parser(
        "revoke", help="revoke one session, all of a user's, or everyone's (--all-users)"
    )
    revoke.add_argument("user", nargs="?", help="the user whose sessions end")
    revoke.add_argument(
        "session",
        nargs="?",
        help="session id (all sessions when omitted); one starting with '-' goes last, after "
        "'--', with the options before the user",
    )
    revoke.add_argument(
        "--all-users",
        action="store_true",
        help="end every session of every user (incident response): one SCAN pass over the "
        "keyspace, O(number of keys); sessions created during the walk may survive",
    )
    common(revoke)
    sessions.set_defaults(run=_sessions)

    users = sub.add_parser("users", help="disable, enable, delete or label a user")
    user_actions = users.add_subparsers(dest="action", required=True)
    for action, text in (
        ("disable", "end every session of the user and refuse their log-ins (user_blocked)"),
        ("enable", "allow a disabled user to log in again"),
        ("delete", "end every session, drop the record, free the email; the id never returns"),
    ):
        user_action = user_actions.add_parser(action, help=text)
        user_action.add_argument("user", nargs="?", help="the user id (or give --email)")
        user_action.add_argument("--email", help="find the user by email instead of by id")
        common(user_action)
    label = user_actions.add_parser(
        "label", help="give a user labels (roles label:NAME in the policy); --remove takes them"
    )
    label.add_argument("user", help="the user's email (with an @) or id")
    label.add_argument("labels", nargs="+", metavar="LABEL", help="1-36 letters and digits")
    label.add_argument("--remove", action="store_true", help="take these labels away instead")
    common(label)
    users.set_defaults(run=_users)

    keys = sub.add_parser("keys", help="create, list or revoke API keys")
    key_actions = keys.add_subparsers(dest="action", required=True)
    create = key_actions.add_parser("create", help="create a key; prints it once, on the last line")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scope", action="append", required=True, help="a scope the key holds (repeatable)"
    )
    create.add_argument(
        "--expire", type=parse_duration, default=None, help="30d, 12h, 90m, 3600s or never"
    )
    common(create)
    common(key_actions.add_parser("list", help="every key, without secrets"))
    revoke_key = key_actions.add_parser("revoke", help="revoke a key by id")
    revoke_key.add_argument("key_id")
    common(revoke_key)
    keys.set_defaults(run=_keys)

    policy = sub.add_parser(
        "policy", help="check, test or explain policy files; publish them to every host"
    )
    policy_actions = policy.add_subparsers(dest="action", required=True)
    paths_help = "policy files, folders or bastion.toml (default: those of --config, else .)"
    check = policy_actions.add_parser("check", help="strict parsing with file:line errors")
    check.add_argument("paths", nargs="*", help=paths_help)
    check.add_argument("--config", metavar="FILE", help="bastion.toml to check with its routes")
    test = policy_actions.add_parser("test", help="run the YAML test suites beside the policy")
    test.add_argument("paths", nargs="*", help=paths_help)
    test.add_argument("--config", metavar="FILE", help="bastion.toml naming the policy files")
    explain = policy_actions.add_parser("explain", help="allow or deny, and the rule(s) why")
    explain.add_argument("paths", nargs="*", help=paths_help)
    explain.add_argument("--config", metavar="FILE", help="bastion.toml naming the policy files")
    explain.add_argument(
        "--as", dest="principal", required=True, help="a user id, or roles joined by commas"
    )
    explain.add_argument("--action", dest="act", required=True)
    explain.add_argument("--resource", required=True)
    reload = policy_actions.add_parser("reload", help="tell every worker to reload its policy")
    reload.add_argument("paths", nargs="*", help=argparse.SUPPRESS)
    common(reload)
    publish = policy_actions.add_parser(
        "publish",
        help="check and test the policy files, then make them every host's policy (via Redis)",
    )
    publish.add_argument("paths", nargs="*", help=paths_help)
    publish.add_argument("--note", help="why, for the history")
    common(publish)
    history = policy_actions.add_parser("history", help="the published versions, * in force")
    history.add_argument("--json", action="store_true", help="as JSON")
    common(history)
    rollback = policy_actions.add_parser(
        "rollback", help="publish an earlier version again (a new version in the history)"
    )
    rollback.add_argument("version", type=int, help="the version to return to")
    common(rollback)
    for published in (publish, rollback):
        published.add_argument(
            "--by", default=_who(), help="who publishes, for the history (default: user@host)"
        )
    policy.set_defaults(run=_policy)

    security = sub.add_parser("security", help="show or change the run-time security settings")
    security_actions = security.add_subparsers(dest="action", required=True)
    common(security_actions.add_parser("show", help="the values in force"))
    setter = security_actions.add_parser(
        "set", help="session_limit 1..100, password_history 0..20, password_dictionary and "
        "password_personal_data true/false"
    )  # fmt: skip
    setter.add_argument("key")
    setter.add_argument("value")
    common(setter)
    security.set_defaults(run=_security)
    return parser


def _who() -> str:
    """``user@host`` of this process, for the policy history."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name in this environment (a container without one)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bastion`` console script."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    # pycasbin logs every model and policy line at INFO: noise here, and not ours to print.
    logging.getLogger("casbin").setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        with contextlib.ExitStack() as opened:
            args.opened = opened
            return int(args.run(args))
    except ConfigError as exc:
        print(f"bastion: {exc}", file=sys.stderr)
        return 2
    except BastionError as exc:
        print(f"bastion: {exc.type}: {exc.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
