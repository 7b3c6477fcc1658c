"""Mailgun webhooks: JSON ``{"signature": {...}, "event-data": {...}}``.

The signature is HMAC-SHA256 over ``timestamp + token`` with the account's HTTP
webhook signing key (``authentication.webhookSigningKey``). The timestamp must be
recent and each token is accepted once.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from postroom.constant_time import same_secret
from postroom.errors import WebhookAuthError, WebhookPayloadError
from postroom.tracking.bounces import classify
from postroom.tracking.webhooks.base import (
    ParsedEvent,
    Verified,
    check_age,
    from_unix,
    json_body,
    secret,
)
from postroom.types import EventType

keys = frozenset({"webhookSigningKey"})

_TYPES = {
    "delivered": EventType.DELIVERED,
    "opened": EventType.OPENED,
    "clicked": EventType.CLICKED,
    "complained": EventType.COMPLAINED,
    "unsubscribed": EventType.UNSUBSCRIBED,
}


def verify(
    body: bytes,
    headers: Mapping[str, str],  # noqa: ARG001 (the signature is in the body)
    secrets: Mapping[str, Any],
    now: datetime,
    max_age_s: int,
) -> Verified:
    key = secret(secrets, "webhookSigningKey", "mailgun")
    try:
        doc = json_body(body)
    except WebhookPayloadError:
        raise WebhookAuthError("the body is not a signed Mailgun webhook") from None
    sig = doc.get("signature") if isinstance(doc, dict) else None
    if not isinstance(sig, dict):
        raise WebhookAuthError("the body carries no Mailgun signature")
    stamp, token, given = sig.get("timestamp"), sig.get("token"), sig.get("signature")
    if not all(isinstance(v, str | int) and str(v) for v in (stamp, token, given)):
        raise WebhookAuthError("the Mailgun signature lacks timestamp, token or signature")
    expected = hmac.new(key.encode(), f"{stamp}{token}".encode(), hashlib.sha256).hexdigest()
    if not same_secret(str(given).lower(), expected):
        raise WebhookAuthError("the Mailgun signature does not match")
    check_age(stamp, now, max_age_s)
    return Verified(nonces=(f"mailgun:{token}",))


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def parse(body: bytes) -> list[ParsedEvent]:
    doc = json_body(body)
    data = doc.get("event-data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("event"), str):
        raise WebhookPayloadError("the Mailgun webhook has no event-data.event")
    name = data["event"]
    headers = _obj(_obj(data.get("message")).get("headers"))
    status = _obj(data.get("delivery-status"))
    client = _obj(data.get("client-info"))
    extra: dict[str, Any] = {"provider": "mailgun", "event": name}
    kind: str
    if name in _TYPES:
        kind = _TYPES[name]
    elif name == "failed":
        diagnostic = str(status.get("description") or status.get("message") or "")
        bounce = classify(
            diagnostic or data.get("reason"),
            status=status.get("enhanced-code") or None,
            code=status.get("code") if isinstance(status.get("code"), int) else None,
        )
        if data.get("severity") == "temporary":
            kind = EventType.DEFERRED
            extra.update(bounce.data(diagnostic))
        elif data.get("reason") in (
            "suppress-bounce",
            "suppress-complaint",
            "suppress-unsubscribe",
        ):
            kind = EventType.FAILED  # Mailgun's own suppression list dropped it: not a bounce
            extra["reason"] = data.get("reason")
        else:
            kind = EventType.BOUNCED
            extra.update(bounce.data(diagnostic))
    elif name in ("accepted", "rejected", "stored"):
        kind = EventType.SENT if name == "accepted" else EventType.FAILED
    else:
        raise WebhookPayloadError(f"unknown Mailgun event {name!r}")
    if isinstance(data.get("url"), str):
        extra["url"] = data["url"]
    return [
        ParsedEvent(
            type=kind,
            timestamp=from_unix(data.get("timestamp")),
            message_id=_str(headers.get("message-id")),
            recipient=_str(data.get("recipient")),
            event_id=str(data["id"]) if data.get("id") else None,
            data=extra,
            user_agent=_str(client.get("user-agent")),
            ip_address=_str(data.get("ip")),
        )
    ]
