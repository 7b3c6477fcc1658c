"""Postmark webhooks: one JSON event per request, authenticated by HTTP basic auth.

Postmark signs nothing: the webhook URL carries credentials
(``https://user:password@host/...``) that must match the provider's
``authentication.webhookUser``/``webhookPassword``. Postmark has no timestamp to
refuse stale requests by; a repeated event is stored once (its id or a hash).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from postroom.constant_time import same_secret
from postroom.errors import WebhookAuthError, WebhookPayloadError
from postroom.tracking.bounces import classify
from postroom.tracking.webhooks.base import ParsedEvent, Verified, json_body, secret
from postroom.types import EventType

keys = frozenset({"webhookUser", "webhookPassword"})

_TYPES = {
    "Delivery": (EventType.DELIVERED, "DeliveredAt"),
    "Open": (EventType.OPENED, "ReceivedAt"),
    "Click": (EventType.CLICKED, "ReceivedAt"),
    "SpamComplaint": (EventType.COMPLAINED, "BouncedAt"),
    "Bounce": (EventType.BOUNCED, "BouncedAt"),
    "SubscriptionChange": (EventType.UNSUBSCRIBED, "ChangedAt"),
}
#: Postmark bounce types that prove the address bad
_HARD = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
#: bounce types that are not bounces at all
_NOT_BOUNCE = {"Transient": EventType.DEFERRED, "AutoResponder": None, "OpenRelayTest": None}


def verify(
    body: bytes,  # noqa: ARG001 (basic auth covers the request)
    headers: Mapping[str, str],
    secrets: Mapping[str, Any],
    now: datetime,  # noqa: ARG001 (Postmark sends no timestamp)
    max_age_s: int,  # noqa: ARG001
) -> Verified:
    user = secret(secrets, "webhookUser", "postmark")
    password = secret(secrets, "webhookPassword", "postmark")
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        raise WebhookAuthError("Postmark webhooks need basic auth credentials")
    try:
        given_user, _, given_password = (
            base64.b64decode(token, validate=True).decode().partition(":")
        )
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise WebhookAuthError("the basic auth credentials are malformed") from None
    ok_user = same_secret(given_user, user)
    ok_password = same_secret(given_password, password)
    if not (ok_user and ok_password):
        raise WebhookAuthError("the Postmark webhook credentials do not match")
    return Verified()


def _when(value: Any) -> datetime:
    if not isinstance(value, str):
        raise WebhookPayloadError("the Postmark event has no time")
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise WebhookPayloadError(f"bad time {value!r}") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse(body: bytes) -> list[ParsedEvent]:
    doc = json_body(body)
    if not isinstance(doc, dict) or doc.get("RecordType") not in _TYPES:
        raise WebhookPayloadError("not a Postmark webhook event (RecordType)")
    record_type = doc["RecordType"]
    kind, time_key = _TYPES[record_type]
    extra: dict[str, Any] = {"provider": "postmark", "event": record_type}
    if record_type == "SubscriptionChange" and not doc.get("SuppressSending"):
        return []  # a reactivation: nothing to record
    if record_type == "Bounce":
        bounce_type = str(doc.get("Type") or "")
        if bounce_type in _NOT_BOUNCE:
            mapped = _NOT_BOUNCE[bounce_type]
            if mapped is None:
                return []
            kind = mapped
        diagnostic = str(doc.get("Details") or doc.get("Description") or "")
        extra.update(classify(diagnostic).data(diagnostic))
        extra["bounceType"] = "hard" if bounce_type in _HARD else "soft"
        extra["postmarkType"] = bounce_type
    if isinstance(doc.get("OriginalLink"), str):
        extra["url"] = doc["OriginalLink"]
    recipient = doc.get("Recipient") or doc.get("Email")
    event_id = doc.get("ID")
    return [
        ParsedEvent(
            type=kind,
            timestamp=_when(doc.get(time_key) or doc.get("ReceivedAt")),
            message_id=doc.get("MessageID") if isinstance(doc.get("MessageID"), str) else None,
            recipient=recipient if isinstance(recipient, str) else None,
            event_id=f"{record_type}:{event_id}" if event_id else None,
            data=extra,
            user_agent=doc.get("UserAgent") if isinstance(doc.get("UserAgent"), str) else None,
        )
    ]
