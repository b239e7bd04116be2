"""Pending Payouts → Modify Item Details: reject items, modify the sales amount, with a reason.

The page shows each item with "Reject item" (its quantity to 0) and the order with "Modify Sales Amount";
"Modify" applies ``wf.Modify`` through ``ledger.change``. While the person types, the page's script asks
``…/modify/preview`` for the payout before and after, which the server computes under the contract in
force (``ledger.preview``: nothing is locked or written) and refuses as the change itself would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import Row
from starlette.concurrency import run_in_threadpool

from payoutdesk.errors import ValidationFailed
from payoutdesk.kit.money import parse_amount
from payoutdesk.ledger import service as ledger
from payoutdesk.ledger import workflow as wf
from payoutdesk.web import render
from payoutdesk.web.actions import (
    BASE,
    action_id_of,
    action_with_reasons,
    back_of,
    done_message,
    note_of,
    reason_of,
)
from payoutdesk.web.session import Manager, actor, check_token, posted, read, write

router = APIRouter(include_in_schema=False)
MAX_AMOUNT_TEXT = 40


def modify_command(amount: Any, rejected: list[str], reason: str | None) -> Callable[[Row[Any]], wf.Command]:
    """The command of the form, its amounts read in the action's currency once the action is loaded."""
    text = amount.strip() if isinstance(amount, str) else amount
    if isinstance(text, str) and len(text) > MAX_AMOUNT_TEXT:
        raise ValidationFailed("Modify Sales Amount is too long for an amount.")
    if (text is None or text == "") and not rejected:
        raise ValidationFailed("Give a new sales amount, reject an item, or both.")

    def command(row: Row[Any]) -> wf.Command:
        new_amount = parse_amount(text, row.currency, what="Modify Sales Amount") if text not in (None, "") else None
        return wf.Modify(new_amount, tuple(wf.ItemChange(sku, 0) for sku in rejected), reason)

    return command


@router.get(BASE + "/actions/{action_id}/modify")
def modify_page(request: Request, action_id: str, user: Manager) -> Response:
    number = action_id_of(action_id)
    data = read(request, lambda conn: action_with_reasons(conn, user.account.id, number))
    return render.page(request, "modify.html", title="Modify Item Details", user=user, section="actions",
                       back=back_of(request.query_params.get("back")), **data)


@router.post(BASE + "/actions/{action_id}/modify")
async def modify(request: Request, action_id: str, user: Manager) -> Response:
    form = await posted(request, user)
    number = action_id_of(action_id)
    rejected = [v for v in form.getlist("reject") if isinstance(v, str)][:1000]
    command = modify_command(form.get("amount"), rejected, reason_of(form))
    note = note_of(form)
    answer = await run_in_threadpool(write, request, user, lambda conn, actor: ledger.change(
        conn, actor, number, command, note=note, commit=True))
    return render.redirect(back_of(form.get("back")), done_message(number, answer))


@router.post(BASE + "/actions/{action_id}/modify/preview")
async def modify_preview(request: Request, action_id: str, user: Manager) -> Response:
    check_token(request, user)
    number = action_id_of(action_id)
    try:
        body = await request.json()
    except ValueError:
        raise ValidationFailed("Send the form as JSON.") from None
    if not isinstance(body, dict):
        raise ValidationFailed("Send the form as a JSON object.")
    rejected = body.get("reject") or []
    if not isinstance(rejected, list) or not all(isinstance(s, str) for s in rejected) or len(rejected) > 1000:
        raise ValidationFailed("reject must be a list of SKUs.")
    reason = body.get("reason")
    reason = reason.strip() if isinstance(reason, str) and reason.strip() else None
    command = modify_command(body.get("amount"), rejected, reason)
    answer = await run_in_threadpool(
        read, request, lambda conn: ledger.preview(conn, actor(user), number, command))
    return JSONResponse(answer)
