"""``bastion demo``: the notes example (``examples/``) on the chosen framework, with its page.

The example lives beside the package in a source checkout (``examples/``, not installed with
the package): the demo imports it from there. Its settings are the example's
``examples/notes/bastion.toml``, then ``--config``'s file, then ``BASTION_*`` variables, then
``--redis-url``.
"""

import dataclasses
import importlib
import ipaddress
import logging
import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bastion.core import Bastion
from bastion.secret import mask_url, reveal
from bastion.settings import Settings, _read_env, _read_toml

CHECKOUT = Path(__file__).resolve().parent.parent
"""The source checkout the package runs from: the example is its ``examples/`` folder."""
NOTES_CONFIG = CHECKOUT / "examples" / "notes" / "bastion.toml"

logger = logging.getLogger("bastion.demo")

FRAMEWORKS = ("starlette", "fastapi", "flask")
DEMO_IDLE_TIMEOUT = 1800

JWT_KEY_WARNING = (
    "The demo signs JWTs with a random key made for this process, because no JWT key is set "
    "(jwt_secret / BASTION_JWT_SECRET, or jwt_keys): its JWTs die with the process and no other "
    "process accepts them. This is for the demo only; configure a key of your own elsewhere."
)

USAGE = """\
Bastion demo: the notes example on {url}  ({framework}, {backend})

  Open {url}/ in a browser: sign up, log in, write notes, share them, see your sessions.

  Or from a shell (X-Bastion-Fallback asks for the session token in a response header):
  curl -s -X POST {url}/account -H 'Content-Type: application/json' \\
       -d '{{"email": "ada@example.com", "password": "correct horse battery staple"}}'
  curl -si -X POST {url}/account/sessions -H 'X-Bastion-Fallback: true' \\
       -H 'Content-Type: application/json' \\
       -d '{{"email": "ada@example.com", "password": "correct horse battery staple"}}'
  TOKEN=...   # the X-Bastion-Session header of that response
  curl -s -X POST {url}/notes -H "X-Bastion-Session: $TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"title": "First note", "body": "Mine only."}}'
  curl -s {url}/notes -H "X-Bastion-Session: $TOKEN"
  curl -s {url}/account/sessions -H "X-Bastion-Session: $TOKEN"
  curl -s -X POST {url}/account/jwts -H "X-Bastion-Session: $TOKEN"
  curl -si -X DELETE {url}/account/sessions/current -H "X-Bastion-Session: $TOKEN"
{admin}"""

ADMIN_USAGE = """
  From another shell, on the same Redis:
  bastion users label ada@example.com admin --redis-url {redis_url}   # ada reads every note
  bastion keys create --name reader --scope documents.read --redis-url {redis_url}
"""


def banner(settings: Settings, url: str, framework: str) -> str:
    """What ``bastion demo`` prints first: where it serves, on which Redis, what to try.

    The Redis URL is shown with its password masked: the banner lands in terminals and logs.
    """
    if settings.redis_url is None:
        backend = "embedded in-process Redis: development only, data lives in this process"
        admin = ""
    else:
        masked = mask_url(reveal(settings.redis_url))
        backend = f"Redis at {masked}"
        admin = ADMIN_USAGE.format(redis_url=masked)
    return USAGE.format(url=url, framework=framework, backend=backend, admin=admin)


def demo_settings(settings: Settings) -> Settings:
    """``settings`` as the demo runs them: a 30-minute idle timeout and a JWT key by default,
    and the session cache on a real Redis.

    The idle timeout is NIST SP 800-63B's at AAL2, unless the file or the environment sets one.
    The demo prints ``POST /account/jwts`` among the commands to try, so it must work on a real
    Redis too (a plain app without a key answers it with 501 ``general_jwt_disabled``): without
    a configured key it signs with a random per-process one.
    """
    if settings.session_idle_timeout is None:
        settings = dataclasses.replace(settings, session_idle_timeout=DEMO_IDLE_TIMEOUT)
    if settings.redis_url is not None:
        # On a shared Redis the demo shows the session cache; the embedded fakeredis has no
        # client-side tracking, so there it would only say so.
        settings = dataclasses.replace(settings, session_cache="tracking")
    if settings.jwt_keyset:
        return settings
    logger.warning(JWT_KEY_WARNING)
    return dataclasses.replace(settings, jwt_secret=secrets.token_urlsafe(48))


def demo_bastion(settings: Settings) -> Bastion:
    """The ``Bastion`` the demo serves (see :func:`demo_settings`)."""
    return Bastion(demo_settings(settings))


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How the demo runs uvicorn: proxy headers only from ``trusted_proxies``, else off.

    uvicorn's defaults believe X-Forwarded-For from 127.0.0.1; Bastion reads the socket itself
    either way, but the app's ``request.client`` should not name whatever a local client wrote.
    """
    if not settings.trusted_proxies:
        return {"proxy_headers": False}
    # uvicorn parses networks strictly: 10.1.2.3/8 must reach it as 10.0.0.0/8.
    proxies = [str(ipaddress.ip_network(p, strict=False)) for p in settings.trusted_proxies]
    return {"proxy_headers": True, "forwarded_allow_ips": proxies}


def notes_settings(
    config: str | os.PathLike[str] | None = None,
    *,
    redis_url: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """The notes example's settings, overridden by ``config``, ``BASTION_*`` and ``redis_url``.

    Later layers win: the example's ``bastion.toml``, the ``config`` file (``--config``, else
    ``BASTION_CONFIG``), the environment, then ``redis_url`` (``--redis-url``).
    """
    env = os.environ if env is None else env
    values = _read_toml(NOTES_CONFIG)
    config = config or env.get("BASTION_CONFIG") or None
    if config is not None:
        values.update(_read_toml(Path(config)))
    values.update(_read_env(env))
    if redis_url:
        values["redis_url"] = redis_url
    return Settings.from_mapping(values)


def notes_app(settings: Settings, framework: str = "starlette") -> Any:
    """The notes example's app on ``framework`` (ASGI for Starlette and FastAPI, WSGI for Flask).

    ``ImportError`` names a missing framework; ``RuntimeError`` says when no example is there
    (an installed package without the source checkout).
    """
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}: one of {', '.join(FRAMEWORKS)}")
    if not NOTES_CONFIG.is_file():
        raise RuntimeError(
            f"bastion demo serves the notes example of a source checkout, and {CHECKOUT} has no "
            "examples/notes/: run it from a clone of the repository (./scripts/demo)."
        )
    if str(CHECKOUT) not in sys.path:
        sys.path.insert(0, str(CHECKOUT))
    module = importlib.import_module(f"examples.{framework}_notes")
    return module.create_app(settings)
