"""The notes demo in a real browser: headless Chromium (Debian's) driven by Playwright.

One browser and one demo app (the notes example on uvicorn, as ``bastion demo`` builds it, on a
real redis-server) serve every test here; each test uses fresh browser contexts (profiles).
Screenshots of the main states go to ``test-output/browser/`` at the repository's root.

Without Playwright or Chromium these tests skip, unless ``CI`` is set: then they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from bastion.demo import demo_settings, notes_app, notes_settings, uvicorn_options
from tests.redis_server import RedisServer
from tests.servers import Served

pytestmark = pytest.mark.redis_server

CHROMIUM = os.environ.get("BASTION_TEST_CHROMIUM", "/usr/bin/chromium")
OUTPUT = Path(__file__).resolve().parents[1] / "test-output" / "browser"
PASSWORD = "correct horse battery staple"
LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
# A name Chromium resolves to 127.0.0.1 but does not treat as a secure context (it is neither
# https nor localhost): there it refuses the Secure __Host- cookie, as it would on a LAN address.
INSECURE_HOST = "notes.test"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    f"--host-resolver-rules=MAP {INSECURE_HOST} 127.0.0.1",
]


def _unavailable() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    if shutil.which(CHROMIUM) is None:
        return f"{CHROMIUM} is not installed (apt-get install -y chromium)"
    return None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless Chromium for the module (Playwright starts it on a fresh user-data folder)."""
    reason = _unavailable()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def demo(redis_server: RedisServer) -> Iterator[Served]:
    """The notes demo as ``bastion demo --framework starlette --redis-url URL`` serves it.

    The log-in limits are raised (BASTION_* as a user would) for the many log-ins of one email.
    """
    env = {
        "BASTION_RATE_LIMIT_PER_EMAIL": "1000",
        "BASTION_RATE_LIMIT_PER_ACCOUNT": "1000",
        "BASTION_POLICY_RELOAD_INTERVAL": "0",  # no watcher outliving the redis-server
    }
    settings = demo_settings(notes_settings(redis_url=redis_server.url, env=env))
    served = Served(notes_app(settings, "starlette"), wsgi=False, **uvicorn_options(settings))
    yield served
    served.stop()


@pytest.fixture
def site(demo: Served, real_redis: str) -> str:
    """The demo's address, on an emptied Redis."""
    return f"http://127.0.0.1:{demo.port}"


@pytest.fixture(scope="module")
def attacker() -> Iterator[Served]:
    """Another origin's page with forms that post to the demo (its address in the query)."""

    async def forms(request: Request) -> HTMLResponse:
        target = request.query_params["target"]
        return HTMLResponse(
            f"""<!doctype html><title>Win a prize</title>
            <form id="note" method="post" action="{target}/notes" enctype="text/plain">
              <input name='{{"title": "pwned", "x": "' value='"}}'><button>Note</button></form>
            <form id="login" method="post" action="{target}/account/sessions"
                  enctype="text/plain">
              <input name='{{"email": "eve@example.com", "password": "' value='x"}}'>
              <button>Log in</button></form>"""
        )

    served = Served(Starlette(routes=[Route("/", forms)]), wsgi=False)
    yield served
    served.stop()


def shot(page: Any, name: str) -> None:
    """A full-page screenshot of the page's current state, for people to look at."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(OUTPUT / f"{name}.png"), full_page=True)


def new_page(browser: Any, viewport: dict[str, int] = LAPTOP) -> Any:
    context = browser.new_context(viewport=viewport)
    context.set_default_timeout(20_000)
    return context.new_page()


def sign_up(page: Any, url: str, email: str, name: str = "") -> None:
    page.goto(url + "/")
    form = page.locator("#signup-form")
    form.locator("[name=name]").fill(name)
    form.locator("[name=email]").fill(email)
    form.locator("[name=password]").fill(PASSWORD)
    form.locator("button").click()
    page.locator("#signed-in").wait_for(state="visible")


def log_in(page: Any, url: str, email: str) -> None:
    page.goto(url + "/")
    form = page.locator("#login-form")
    form.locator("[name=email]").fill(email)
    form.locator("[name=password]").fill(PASSWORD)
    form.locator("button").click()
    page.locator("#signed-in").wait_for(state="visible")


def add_note(page: Any, title: str, body: str) -> None:
    form = page.locator("#note-form")
    form.locator("[name=title]").fill(title)
    form.locator("[name=body]").fill(body)
    form.locator("button").click()
    page.locator("#notes li", has_text=title).wait_for()


def test_sign_up_log_in_and_reload_on_the_cookie(browser: Any, site: str) -> None:
    page = new_page(browser)
    page.goto(site + "/")
    page.locator("#signed-out").wait_for(state="visible")
    form = page.locator("#signup-form")
    form.locator("[name=email]").fill("ada@example.com")
    form.locator("[name=password]").fill("password123")
    form.locator("button").click()
    page.locator("#message", has_text="This password is too common").wait_for()
    shot(page, "signed-out-error")

    form.locator("[name=name]").fill("Ada")
    form.locator("[name=password]").fill(PASSWORD)
    form.locator("button").click()
    page.locator("#signed-in").wait_for(state="visible")
    assert page.locator("#mode").get_attribute("data-mode") == "cookie"
    add_note(page, "Groceries", "eggs, flour, milk")
    add_note(page, "Talk outline", "1. sessions\n2. permissions\n3. questions")
    page.locator("#jwt").click()
    page.locator("#jwt-claims", has_text='"sid"').wait_for()
    shot(page, "signed-in")

    page.reload()
    page.locator("#signed-in").wait_for(state="visible")
    assert "ada@example.com" in page.locator("#who").inner_text()
    assert page.locator("#notes li").count() == 2
    assert "bastion_session" not in page.evaluate("document.cookie")
    cookies = {c["name"]: c for c in page.context.cookies()}
    cookie = cookies["__Host-bastion_session"]
    assert cookie["secure"] and cookie["httpOnly"]
    assert cookie["sameSite"] == "Lax" and cookie["path"] == "/"
    assert page.evaluate("localStorage.length") == 0  # no token kept by the page

    phone = page.context.new_page()
    phone.set_viewport_size(PHONE)
    phone.goto(site + "/")
    phone.locator("#signed-in").wait_for(state="visible")
    shot(phone, "signed-in-phone")
    page.context.close()


def test_the_eleventh_log_in_signs_the_first_browser_out(browser: Any, site: str) -> None:
    first = new_page(browser)
    sign_up(first, site, "ada@example.com")
    pages = [first]
    for _ in range(10):
        page = new_page(browser)
        log_in(page, site, "ada@example.com")
        pages.append(page)
    # The first browser's next request (adding a note) finds its session ended.
    first.locator("#note-form [name=title]").fill("Too late")
    first.locator("#note-form button").click()
    first.locator("#signed-out").wait_for(state="visible")
    assert "Your session has ended" in first.locator("#message").inner_text()
    for page in pages[1:]:
        page.reload()
        page.locator("#signed-in").wait_for(state="visible")
    last = pages[-1]
    assert last.locator("#sessions li").count() == 10
    assert last.locator("#sessions li.current").count() == 1
    shot(last, "sessions")
    # End one other session from the page; that browser is signed out at its next request.
    last.locator("#sessions li:not(.current) button").first.click()
    last.locator("#message", has_text="Session ended").wait_for()
    assert last.locator("#sessions li").count() == 9
    for page in pages:
        page.context.close()


def test_refused_cookies_fall_back_to_the_header(browser: Any, site: str) -> None:
    insecure = site.replace("127.0.0.1", INSECURE_HOST)
    page = new_page(browser)
    sign_up(page, insecure, "bob@example.com")
    assert page.locator("#mode").get_attribute("data-mode") == "header"
    assert "X-Bastion-Session header" in page.locator("#mode").inner_text()
    assert not [c for c in page.context.cookies() if "bastion" in c["name"]]
    token = page.evaluate("localStorage.getItem('bastion-notes-session')")
    assert token
    add_note(page, "Kept by header", "no cookie here")
    page.reload()
    page.locator("#signed-in").wait_for(state="visible")
    assert page.locator("#notes li", has_text="Kept by header").count() == 1
    shot(page, "header-mode")
    page.locator("#logout").click()
    page.locator("#signed-out").wait_for(state="visible")
    assert page.evaluate("localStorage.getItem('bastion-notes-session')") is None
    page.reload()
    page.locator("#signed-out").wait_for(state="visible")
    page.context.close()


def test_forms_on_other_origins_are_refused(
    browser: Any, site: str, attacker: Served, demo: Served
) -> None:
    victim = new_page(browser)
    sign_up(victim, site, "ada@example.com")
    # Another origin of the same site (another port): the browser sends the Lax cookie.
    evil = victim.context.new_page()
    for origin in (f"http://127.0.0.1:{attacker.port}", f"http://localhost:{attacker.port}"):
        evil.goto(f"{origin}/?target={site}")
        with evil.expect_response(lambda r: r.url == f"{site}/notes") as posted:
            evil.locator("#note button").click()
        refused = posted.value
        # Same site: the cookie came and was refused; another site: no cookie reached it.
        expected = (403, "general_cross_site_request") if "127.0.0.1" in origin else (401, None)
        assert refused.status == expected[0], refused.text()
        if expected[1]:
            assert refused.json()["type"] == expected[1]
        evil.goto(f"{origin}/?target={site}")
        with evil.expect_response(lambda r: r.url == f"{site}/account/sessions") as posted:
            evil.locator("#login button").click()
        assert posted.value.status == 403
        assert posted.value.json()["type"] == "general_cross_site_request"
    victim.reload()
    victim.locator("#signed-in").wait_for(state="visible")
    assert victim.locator("#notes li").count() == 0
    status, notes, _ = demo.request("GET", "/notes")
    assert status == 401 and notes["type"] == "user_unauthorized"
    victim.context.close()


def test_a_note_shared_with_bob_appears_on_his_page(browser: Any, site: str) -> None:
    bob = new_page(browser)
    sign_up(bob, site, "bob@example.com", name="Bob")
    bob_id = bob.locator("#who").get_attribute("data-user-id")
    assert bob.locator("#notes li").count() == 0

    alice = new_page(browser)
    sign_up(alice, site, "alice@example.com", name="Alice")
    add_note(alice, "Plan for Bob", "Meet on Friday")
    add_note(alice, "Private", "not for Bob")
    note = alice.locator("#notes li", has_text="Plan for Bob")
    note.get_by_role("button", name="Share").click()
    share = note.locator("form.share")
    share.locator("[name=role]").fill(f"user:{bob_id}")
    share.locator("input[value=update]").check()
    shot(alice, "share")
    share.get_by_role("button", name="Share").click()
    alice.locator("#message", has_text="Shared").wait_for()

    bob.reload()
    shared = bob.locator("#notes li", has_text="Plan for Bob")
    shared.wait_for()
    assert bob.locator("#notes li").count() == 1
    assert "shared by" in shared.inner_text()
    # Bob may change it (update was shared), and Alice sees his change.
    shared.get_by_role("button", name="Edit").click()
    editing = bob.locator("#notes form.edit")
    editing.locator("[name=body]").fill("Meet on Friday at noon")
    editing.get_by_role("button", name="Save").click()
    bob.locator("#message", has_text="Note saved").wait_for()
    alice.reload()
    alice.locator("#notes li", has_text="at noon").wait_for()
    # He may not delete it: the page says so in words.
    bob.locator("#notes li", has_text="Plan for Bob").get_by_role("button", name="Delete").click()
    bob.locator("#message", has_text="not allowed").wait_for()
    shot(bob, "shared-with-bob")
    bob.context.close()
    alice.context.close()
