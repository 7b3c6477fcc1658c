"""Schemathesis hooks for the contract test: names that must refer to existing rows.

``provider`` and ``queue`` in ``POST /send`` and ``providerId`` in ``POST /test``
name rows that exist; no schema can say which. A generated string there is
replaced by a real name (an invalid value, e.g. a number or an overlong string,
is left alone so that negative tests still see it refused).
"""

from __future__ import annotations

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
    return body
