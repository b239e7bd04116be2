"""Salesforce Outbound Messages (DESIGN §3, "Salesforce"; intake/salesforce.py says what is taken and what
is answered).

``POST /salesforce/outbound/{token}``: the address an event type's ``outbound_url`` names. No HTTP Basic:
the unguessable token is the credential, as Salesforce's Outbound Messages carry no credentials of ours.
The answer is SOAP (``text/xml``): ``<Ack>true</Ack>`` once the message is queued, else a SOAP fault (404
for an unknown token, 500 otherwise). Not in the OpenAPI document: it is not part of the JSON API (no
HTTP Basic, no problem+json); docs/CHANNELS.md describes it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from payoutdesk.intake import salesforce

router = APIRouter()


@router.post("/salesforce/outbound/{token}", include_in_schema=False)
async def outbound_message(request: Request, token: str) -> Response:
    body = await request.body()  # at most 1 MiB (api/limits.py): Salesforce sends at most 100 notifications
    answer = await run_in_threadpool(salesforce.receive_outbound, request.app.state.intake, token, body)
    return Response(answer.body, status_code=answer.status, media_type=answer.media_type)
