"""Settings → Users (admins only): the account's users and their roles, add a user, change a role."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection
from starlette.concurrency import run_in_threadpool

from payoutdesk.accounts import service as accounts
from payoutdesk.context import Actor
from payoutdesk.errors import NotFound, PayoutdeskError
from payoutdesk.kit.ids import MAX_ID32, parse_id
from payoutdesk.web import render
from payoutdesk.web.session import Admin, posted, read, write

router = APIRouter(include_in_schema=False)
ROLE_HELP = {"admin": "everything, settings and users included", "manager": "actions and submissions, not settings",
             "viewer": "sees everything, changes nothing"}


def _page(request: Request, user: Any, error: str = "", values: dict[str, str] | None = None,
          status: int = 200) -> HTMLResponse:
    items = read(request, lambda conn: accounts.list_users(conn, user.account.id))
    return render.page(request, "users.html", title="Users", user=user, section="users", items=items,
                       roles=accounts.ROLES, role_help=ROLE_HELP, error=error, values=values or {}, status=status)


@router.get("/settings/users", response_class=HTMLResponse)
def users_page(request: Request, user: Admin) -> Response:
    return _page(request, user)


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


@router.post("/settings/users")
async def add_user(request: Request, user: Admin) -> Response:
    form = await posted(request, user)
    email, role, password = _text(form.get("email"))[:320], _text(form.get("role")), _text(form.get("password"))

    def add(conn: Connection, actor: Actor) -> tuple[str, str]:
        return accounts.add_user(conn, user.account.sid, email, role, password[:1000])

    try:
        added, _ = await run_in_threadpool(write, request, user, add)
    except PayoutdeskError as exc:
        return await run_in_threadpool(_page, request, user, exc.detail, {"email": email, "role": role}, exc.status)
    return render.redirect("/settings/users", f"{added} was added as {role}.")


@router.post("/settings/users/{user_id}/role")
async def change_role(request: Request, user_id: str, user: Admin) -> Response:
    form = await posted(request, user)
    target = parse_id(user_id)
    if target is None or target > MAX_ID32:
        raise NotFound(f"No user with id {user_id[:40]!r}.")
    role = _text(form.get("role"))

    def change(conn: Connection, actor: Actor) -> accounts.UserRow:
        return accounts.set_role(conn, user.account.id, target, role, by_user_id=user.user_id)

    try:
        changed = await run_in_threadpool(write, request, user, change)
    except NotFound:
        raise
    except PayoutdeskError as exc:
        return await run_in_threadpool(_page, request, user, exc.detail, None, exc.status)
    return render.redirect("/settings/users", f"{changed.email} is now {changed.role}.")
