"""SendGrid Event Webhook: a JSON array of events, signed with ECDSA.

The signature (``X-Twilio-Email-Event-Webhook-Signature``, base64 DER) is ECDSA
P-256 with SHA-256 over the timestamp header followed by the raw body, checked
with the webhook's verification key (``authentication.webhookPublicKey``, base64
DER or PEM). The timestamp must be recent; a signature is accepted once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from postroom.errors import WebhookAuthError, WebhookPayloadError
from postroom.tracking.bounces import classify
from postroom.tracking.webhooks.base import (
    ParsedEvent,
    Verified,
    WebhookForbidden,
    check_age,
    from_unix,
    json_body,
    secret,
)
from postroom.types import EventType

keys = frozenset({"webhookPublicKey"})
SIGNATURE = "x-twilio-email-event-webhook-signature"
TIMESTAMP = "x-twilio-email-event-webhook-timestamp"

_TYPES = {
    "processed": EventType.SENT,
    "delivered": EventType.DELIVERED,
    "deferred": EventType.DEFERRED,
    "dropped": EventType.FAILED,
    "open": EventType.OPENED,
    "click": EventType.CLICKED,
    "spamreport": EventType.COMPLAINED,
    "unsubscribe": EventType.UNSUBSCRIBED,
    "group_unsubscribe": EventType.UNSUBSCRIBED,
    "bounce": EventType.BOUNCED,
}


def _public_key(text: str) -> ec.EllipticCurvePublicKey:
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text))
    except (ValueError, binascii.Error, TypeError):
        raise WebhookForbidden("authentication.webhookPublicKey is not a public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WebhookForbidden("authentication.webhookPublicKey is not an ECDSA key")
    return key


def verify(
    body: bytes,
    headers: Mapping[str, str],
    secrets: Mapping[str, Any],
    now: datetime,
    max_age_s: int,
) -> Verified:
    key = _public_key(secret(secrets, "webhookPublicKey", "sendgrid"))
    given, stamp = headers.get(SIGNATURE), headers.get(TIMESTAMP)
    if not given or not stamp:
        raise WebhookAuthError("the SendGrid signature or timestamp header is missing")
    try:
        signature = base64.b64decode(given, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookAuthError("the SendGrid signature is not base64") from None
    try:
        key.verify(signature, stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise WebhookAuthError("the SendGrid signature does not match") from None
    check_age(stamp, now, max_age_s)
    return Verified(nonces=("sendgrid:" + hashlib.sha256(signature).hexdigest(),))


def _event(item: Any) -> ParsedEvent:
    if not isinstance(item, dict) or not isinstance(item.get("event"), str):
        raise WebhookPayloadError("a SendGrid event has no 'event'")
    name = item["event"]
    if name not in _TYPES:
        raise WebhookPayloadError(f"unknown SendGrid event {name!r}")
    kind: str = _TYPES[name]
    extra: dict[str, Any] = {"provider": "sendgrid", "event": name}
    if name in ("bounce", "deferred"):
        diagnostic = str(item.get("reason") or item.get("response") or "")
        status = item.get("status") if isinstance(item.get("status"), str) else None
        bounce = classify(diagnostic, status=status if status and status.count(".") == 2 else None)
        extra.update(bounce.data(diagnostic))
        if item.get("type") == "blocked" and bounce.bounce_type == "hard":
            extra["bounceType"] = "soft"  # SendGrid's "blocked": the receiver refused the sender
    elif name == "dropped":
        extra["reason"] = str(item.get("reason") or "")
    if isinstance(item.get("url"), str):
        extra["url"] = item["url"]
    sg_id = item.get("sg_message_id")
    # sg_message_id is "<X-Message-Id>.filter…": the send answer gave the first part
    message_id = sg_id.split(".")[0] if isinstance(sg_id, str) else None
    return ParsedEvent(
        type=kind,
        timestamp=from_unix(item.get("timestamp")),
        message_id=message_id,
        recipient=item.get("email") if isinstance(item.get("email"), str) else None,
        event_id=str(item["sg_event_id"]) if item.get("sg_event_id") else None,
        data=extra,
        user_agent=item.get("useragent") if isinstance(item.get("useragent"), str) else None,
        ip_address=item.get("ip") if isinstance(item.get("ip"), str) else None,
        machine=bool(item.get("sg_machine_open")),
    )


def parse(body: bytes) -> list[ParsedEvent]:
    doc = json_body(body)
    if not isinstance(doc, list):
        raise WebhookPayloadError("a SendGrid webhook body is a JSON array of events")
    return [_event(item) for item in doc]
