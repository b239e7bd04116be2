"""The browser tests' plumbing: Debian's Chromium driven by Playwright, a served payoutdesk with a tenant of
its own and its three users, sign-in, and the accessibility check.

``site`` serves ``create_app`` on the session's database (each backend) behind a real uvicorn server,
with a worker thread that runs queued submissions as ``serve`` would; ``browser`` is one Chromium for the
whole session (Playwright cannot download a browser here: it drives /usr/bin/chromium, which
``make test`` installs when missing). ``sign_in(browser, site, "manager")`` gives a page signed in as that
role. ``assert_accessible(page)`` runs axe-core and fails on any serious or critical violation.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from payoutdesk.accounts.service import add_user
from payoutdesk.api.app import create_app
from payoutdesk.config import Settings
from payoutdesk.kit import db
from tests.helpers import World, make_world, serving

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
PASSWORD = "correct horse battery"  # every test user's password
ROLES = ("admin", "manager", "viewer")


@dataclass
class Site:
    """A served payoutdesk: its address, the tenant (``world``) and its users' e-mail addresses by role."""

    url: str
    world: World
    users: dict[str, str]
    settings: Settings

    def at(self, path: str) -> str:
        return self.url + path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _work(engine: Engine, stop: threading.Event) -> None:
    from payoutdesk.worker.runner import run_once

    while not stop.is_set():
        try:
            if run_once(engine, "browser-test-worker", stop) is None:
                stop.wait(0.1)
        except Exception:
            stop.wait(0.1)


@pytest.fixture
def site(engine: Engine, tmp_path: Path) -> Iterator[Site]:
    world = make_world(engine)
    users: dict[str, str] = {}
    with db.write(engine) as conn:
        for role in ROLES:
            email = f"{role}-{world.account_id}@brand.test"
            add_user(conn, world.sid, email, role, PASSWORD)
            users[role] = email
    settings = Settings.from_env({"PAYOUTDESK_DATA_DIR": str(tmp_path), "PAYOUTDESK_API_RATE_LIMIT": "0",
                                  "PAYOUTDESK_SECRET_KEY": "test-secret", "PAYOUTDESK_LOGIN_RATE_LIMIT": "100"})
    stop = threading.Event()
    worker = threading.Thread(target=_work, args=(engine, stop), daemon=True)
    worker.start()
    try:
        with serving(create_app(settings, engine)) as port:
            yield Site(f"http://127.0.0.1:{port}", world, users, settings)
    finally:
        stop.set()
        worker.join(30)


def sign_in(browser: Any, site: Site, role: str = "manager", **context: Any) -> Any:
    """A new browser context signed in as ``role``; its page, on Pending Payouts."""
    ctx = browser.new_context(accept_downloads=True, **context)
    ctx.set_default_timeout(15_000)
    page = ctx.new_page()
    page.goto(site.at("/login"))
    page.get_by_label("E-mail address").fill(site.users[role])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/pending-payouts/actions**")
    return page


def page_client(world: World, tmp_path: Path, role: str, **env: str) -> tuple[Any, str]:
    """A TestClient signed in to the pages as a new user of ``world`` with ``role``, and its form token (for
    the checks that need no browser)."""
    from payoutdesk.accounts.sessions import open_session
    from tests.helpers import client_for

    email = f"{role}-{secrets.token_hex(4)}-{world.account_id}@pages.test"
    with db.write(world.engine) as conn:
        add_user(conn, world.sid, email, role, PASSWORD)
        opened = open_session(conn, email, PASSWORD)
    client = client_for(world.engine, tmp_path, **env)
    client.cookies.set("pd_session", opened.token)
    return client, opened.user.csrf_token


def assert_accessible(page: Any) -> None:
    """axe-core finds no serious or critical violation on the page as it is now."""
    from axe_playwright_python.sync_playwright import Axe

    found = Axe().run(page).response["violations"]
    bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3]) for v in found
           if v.get("impact") in ("serious", "critical")]
    assert not bad, f"accessibility violations on {page.url}: {bad}"


def screenshot(page: Any, name: str) -> None:
    """With ``PAYOUTDESK_SCREENSHOTS=1`` (``make screenshots``), save the page as docs/screenshots/<name>.png
    (the pages as a partnership manager sees them); otherwise nothing, so that a test run leaves the
    working tree as it was."""
    if not os.environ.get("PAYOUTDESK_SCREENSHOTS"):
        return
    folder = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def wait_until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
