"""Schemathesis hooks for the contract test: values whose validity is state, not schema.

``provider`` and ``queue`` in ``POST /send`` and ``providerId`` in ``POST /test``
name rows that exist; no schema can say which. A generated string there is
replaced by a real name. An ``Idempotency-Key`` may be reused only with the same
body, so each generated key is made unique. Each recipient address may appear once
in `to` (letter case aside), which JSON Schema's ``uniqueItems`` cannot say of one
field of an object: repeated valid addresses get a distinct prefix. Invalid values
(a number, an overlong or blank string) are left alone, so that negative tests still
see them refused.
"""

from __future__ import annotations

import itertools
from typing import Any

import schemathesis

#: field -> an existing row's name, per operation path
EXISTING = {
    "/api/system/email/send": {"provider": "Development outbox", "queue": "transactional"},
    "/api/system/email/test": {"providerId": "Development outbox"},
}


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    names = EXISTING.get(context.operation.path) if context.operation else None
    if names and isinstance(body, dict):
        for field, existing in names.items():
            value = body.get(field)
            if isinstance(value, str) and len(value) <= 255:
                body[field] = existing
    if isinstance(body, dict) and isinstance(body.get("to"), list):
        _distinct_recipients(body["to"])
    return body


def _distinct_recipients(recipients: list[Any]) -> None:
    seen: set[str] = set()
    for n, recipient in enumerate(recipients):
        email = recipient.get("email") if isinstance(recipient, dict) else None
        if not isinstance(email, str) or "@" not in email:
            continue
        if email.casefold() in seen:
            email = f"r{n}.{email}"
            recipient["email"] = email
        seen.add(email.casefold())


_serial = itertools.count()


@schemathesis.hook
def map_headers(context: Any, headers: Any) -> Any:
    if not isinstance(headers, dict):
        return headers
    for name, value in headers.items():
        if name.lower() == "idempotency-key" and isinstance(value, str):
            if value.strip() and len(value) <= 190 and value.isascii():
                headers[name] = f"{value}-{next(_serial)}"
    return headers
