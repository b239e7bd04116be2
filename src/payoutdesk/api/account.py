"""The signed-in account: its name and the address that failures of the intake channels are mailed to."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import Field
from sqlalchemy import Connection

from payoutdesk.api import plumbing
from payoutdesk.api.native import Body
from payoutdesk.api.plumbing import Account
from payoutdesk.context import Actor
from payoutdesk.errors import NotFound
from payoutdesk.intake import repository as intake_repo

router = APIRouter(tags=["account"])


EMAIL_PATTERN = r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$"


class AccountPatch(Body):
    alert_email: Annotated[str, Field(max_length=320, pattern=EMAIL_PATTERN)] | None = None


def account_dict(conn: Connection, account_id: int) -> dict[str, Any]:
    row = intake_repo.account(conn, account_id)
    if row is None:
        raise NotFound("No such account.")
    return {"sid": row.sid, "name": row.name, "alert_email": row.alert_email}


@router.get("/account")
def get_account(request: Request, account: Account) -> Response:
    return plumbing.read(request, lambda conn: account_dict(conn, account.id))


@router.patch("/account")
def patch_account(request: Request, body: AccountPatch, account: Account) -> Response:
    """``alert_email``: where a failing pull, poll or intake is mailed, once per failure spell (through
    PAYOUTDESK_SMTP_RELAY); null for none."""
    data = body.model_dump(exclude_unset=True)
    email = data.get("alert_email")

    def handler(conn: Connection, actor: Actor) -> tuple[int, Any]:
        if "alert_email" in data:
            intake_repo.set_alert_email(conn, actor.account_id, email or None)
        return 200, account_dict(conn, actor.account_id)

    return plumbing.write(request, account, None, data, handler)
