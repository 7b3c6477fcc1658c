"""Schemathesis hooks for the contract test: values whose validity is state, not schema.

``provider`` and ``queue`` in ``POST /send`` and ``providerId`` in ``POST /test``
name rows that exist; no schema can say which. A generated string there is
replaced by a real name. An ``Idempotency-Key`` may be reused only with the same
body, so each generated key is made unique. Each recipient address may appear once
in `to` (letter case aside), which JSON Schema's ``uniqueItems`` cannot say of one
field of an object: repeated valid addresses get a distinct prefix. A named template
must exist (the test stores one, ``contract``, with no variables). Invalid values
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
    "/api/system/email/template": {"provider": "Development outbox", "queue": "transactional"},
    "/api/system/email/bulk": {"provider": "Development outbox", "queue": "bulk"},
}


@schemathesis.hook
def map_body(context: Any, body: Any) -> Any:
    names = EXISTING.get(context.operation.path) if context.operation else None
    if names and isinstance(body, dict):
        for field, existing in names.items():
            value = body.get(field)
            if isinstance(value, str) and len(value) <= 255:
                body[field] = existing
    for field in ("to", "recipients"):
        if isinstance(body, dict) and isinstance(body.get(field), list):
            _distinct_recipients(body[field])
    if isinstance(body, dict) and isinstance(body.get("variables"), list):
        _distinct_names(body["variables"])
    if isinstance(body, dict):
        _existing_template(body)
        content = body.get("content")
        if isinstance(content, dict) and isinstance(content.get("template"), dict):
            _existing_template(content["template"], id_field="id", data_field="data")
        for recipient in body.get("recipients") or []:
            if isinstance(recipient, dict) and isinstance(recipient.get("templateData"), dict):
                recipient["templateData"] = {}
    return body


#: the template the contract test stores first: no variables
TEMPLATE = "contract"


def _existing_template(
    body: dict[str, Any], *, id_field: str = "templateId", data_field: str = "templateData"
) -> None:
    """A named template must exist, its version too, and its data declare no variable."""
    if isinstance(body.get(id_field), str) and 0 < len(body[id_field]) <= 255:
        body[id_field] = TEMPLATE
    field = "version" if id_field == "id" else "templateVersion"
    version = body.get(field)
    if isinstance(version, int | float) and not isinstance(version, bool) and version >= 1:
        body[field] = 1
    if isinstance(body.get(data_field), dict):
        body[data_field] = {}


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


def _distinct_names(variables: list[Any]) -> None:
    """Each template variable is declared once; a repeated name gets a suffix."""
    seen: set[str] = set()
    for n, variable in enumerate(variables):
        name = variable.get("name") if isinstance(variable, dict) else None
        if isinstance(name, str) and name in seen and len(name) < 90:
            variable["name"] = name = f"{name}_{n}"
        if isinstance(name, str):
            seen.add(name)
