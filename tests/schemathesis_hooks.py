"""schemathesis hooks of tests/test_openapi_contract.py (loaded through SCHEMATHESIS_HOOKS).

An Idempotency-Key names one request: the same key sent again with another request is refused
(422 ``idempotency_key_reused``), a rule across requests that a schema cannot state. Generated
keys repeat (schemathesis draws ``"null"`` or ``"0"`` for many operations), so every well-formed
key is made unique before the request goes out; a malformed one (a negative case) is left as it is.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import schemathesis

WELL_FORMED = re.compile(r"[!-~]([ -~]{0,253}[!-~])?")


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    headers = case.headers
    if not headers:
        return
    for name in list(headers):
        if name.lower() == "idempotency-key" and isinstance(headers[name], str) \
                and WELL_FORMED.fullmatch(headers[name]):
            headers[name] = uuid.uuid4().hex
