"""Signing in to the pages: sessions, roles, the sign-in form's protection, rate limits, security headers.

Most checks talk HTTP to the application (FastAPI's TestClient); one drives Chromium through the sign-in
and sign-out as a person does.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from payoutdesk.accounts.service import add_user
from payoutdesk.kit import db
from payoutdesk.models import web_sessions
from tests.browser import PASSWORD, Site, assert_accessible, screenshot, sign_in
from tests.helpers import World, client_for

TOKEN = re.compile(r'name="login_token" value="([^"]+)"')


def _user(world: World, role: str = "manager") -> str:
    email = f"{role}-{world.account_id}@login.test"
    with db.write(world.engine) as conn:
        add_user(conn, world.sid, email, role, PASSWORD)
    return email


def _sign_in(client: TestClient, email: str, password: str = PASSWORD, next_url: str = "/") -> Any:
    form = client.get("/login")
    token = TOKEN.search(form.text)
    assert token, form.text
    return client.post("/login", data={"email": email, "password": password, "login_token": token.group(1),
                                       "next": next_url}, follow_redirects=False)


def test_signing_in_and_out(engine: Engine, world: World, tmp_path: Path) -> None:
    client = client_for(engine, tmp_path)
    email = _user(world)
    # signed out: / and every page lead to the sign-in page, back to where one was going
    r = client.get("/", follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    r = client.get("/pending-payouts/actions?order_id=A-1", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=/pending-payouts/actions%3Forder_id%3DA-1"
    # a wrong password: the form again with the message, no session
    r = _sign_in(client, email, "wrong password")
    assert r.status_code == 401 and "The e-mail address or the password is wrong." in r.text
    assert "pd_session" not in client.cookies
    # the right one: a session cookie (HttpOnly, SameSite=Lax), then where one was going
    r = _sign_in(client, email.upper(), next_url="/pending-payouts/actions?order_id=A-1")
    assert (r.status_code, r.headers["location"]) == (303, "/pending-payouts/actions?order_id=A-1")
    cookie = r.headers["set-cookie"]
    assert "pd_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    token = client.cookies["pd_session"]
    with db.read(engine) as conn:  # the database keeps the token's hash only
        stored = [row.token_hash for row in conn.execute(select(web_sessions.c.token_hash))]
    assert token not in stored and len(stored) >= 1
    r = client.get("/", follow_redirects=False)
    assert r.headers["location"] == "/pending-payouts/actions"
    # the pages' session does not sign anyone in to the API, which wants the account's token
    assert client.get("/api/v1/actions").status_code == 401
    # signing out needs the form token too
    signed_in_page = client.get("/pending-payouts/actions")  # every page of a signed-in user carries it
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', signed_in_page.text)
    assert client.post("/logout", data={}, follow_redirects=False).status_code == 403
    assert client.get("/", follow_redirects=False).headers["location"] == "/pending-payouts/actions"
    assert csrf, signed_in_page.text
    r = client.post("/logout", data={"csrf_token": csrf.group(1)}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    # the old cookie no longer works, even sent again by hand
    client.cookies.set("pd_session", token)
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"


def test_the_sign_in_form_is_protected_and_rate_limited(engine: Engine, world: World, tmp_path: Path) -> None:
    client = client_for(engine, tmp_path, PAYOUTDESK_LOGIN_RATE_LIMIT="3")
    email = _user(world)
    # a post without the form's token (a form on another site) is refused, and signs nobody in
    r = client.post("/login", data={"email": email, "password": PASSWORD, "login_token": "forged"},
                    follow_redirects=False)
    assert r.status_code == 403 and "pd_session" not in r.headers.get("set-cookie", "")
    # nor with the right token from another site's page
    client.get("/login")
    token = TOKEN.search(client.get("/login").text)
    assert token
    r = client.post("/login", data={"email": email, "password": PASSWORD, "login_token": token.group(1)},
                    headers={"Origin": "https://evil.example"}, follow_redirects=False)
    assert r.status_code == 403
    # a next address elsewhere is not followed
    r = _sign_in(client, email, next_url="//evil.example/x")
    assert r.headers["location"] == "/pending-payouts/actions"
    client.cookies.clear()
    # three failures, then 429 with Retry-After, even for the right password
    for _ in range(3):
        assert _sign_in(client, email, "wrong").status_code == 401
    r = _sign_in(client, email)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "Too many failed sign-ins" in r.text


def test_pages_carry_security_headers_and_the_apis_do_not_change(engine: Engine, world: World,
                                                                   tmp_path: Path) -> None:
    client = client_for(engine, tmp_path)
    r = client.get("/login")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
    assert "<script" not in r.text.replace('<script src="/static/app.js" defer></script>', "")  # no inline script
    assert 'style="' not in r.text
    assert client.get("/static/app.css").status_code == 200
    api = client.get("/api/v1/actions", headers=world.auth)
    assert api.status_code == 200 and "content-security-policy" not in api.headers
    # an unknown address is a page for a browser (which asks for HTML), problem+json for the rest
    r = client.get("/no-such-page", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "There is no page /no-such-page here." in r.text
    r = client.get("/no-such-page")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")
    r = client.get("/api/v1/no-such-thing")
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/problem+json")


def test_a_person_signs_in_and_out_in_the_browser(browser: Any, site: Site) -> None:
    page = browser.new_page()
    page.goto(site.at("/"))
    assert page.url.endswith("/login")
    assert_accessible(page)
    screenshot(page, "sign-in")
    page.get_by_label("E-mail address").fill(site.users["viewer"])
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "The e-mail address or the password is wrong."
    page.close()
    page = sign_in(browser, site, "viewer")
    assert site.world.sid not in page.content()  # the account's SID is no page's business
    assert page.get_by_text(site.users["viewer"]).is_visible()
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/login")
    assert page.get_by_role("status").inner_text() == "You are signed out."
    page.goto(site.at("/pending-payouts/actions"))
    assert "/login?next=" in page.url
    page.context.close()
