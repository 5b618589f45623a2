"""A Flask app with Bastion, run by tests/test_flask_only_install.py in a ``.[flask]``-only venv.

Sign-up, log-in (the session cookie) and ``GET /account`` over Werkzeug's test client, on the
Redis named by ``BASTION_REDIS_URL``; prints one JSON line with what happened. Nothing here
may need more than ``pip install 'bastion[flask]'``.
"""

from __future__ import annotations

import importlib.util
import json
import sys

from flask import Flask

from bastion import Bastion, Settings
from bastion.adapters.flask import current_identity, init_app


def main() -> None:
    """Run the three requests and report them."""
    bastion = Bastion(Settings.load())
    app = Flask("flask-only")
    init_app(app, bastion)

    @app.get("/whoami")
    def who() -> dict[str, str]:
        return {"kind": current_identity().kind}

    client = app.test_client()
    https = {"base_url": "https://localhost"}  # the __Host- cookie is Secure
    person = {"email": "ada@example.com", "password": "correct horse battery staple"}
    signed_up = client.post("/account", json=person, **https)
    logged_in = client.post("/account/sessions", json=person, **https)
    account = client.get("/account", **https)
    identity = client.get("/whoami", **https)
    print(
        json.dumps(
            {
                "statuses": [r.status_code for r in (signed_up, logged_in, account, identity)],
                "email": account.get_json().get("email"),
                "kind": identity.get_json().get("kind"),
                "starlette_installed": importlib.util.find_spec("starlette") is not None,
                "loaded": sorted(
                    name
                    for name in ("starlette", "yaml", "casbin", "fakeredis")
                    if name in sys.modules
                ),
            }
        )
    )


if __name__ == "__main__":
    main()
