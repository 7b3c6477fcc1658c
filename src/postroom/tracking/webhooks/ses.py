"""Amazon SES events delivered by SNS (HTTPS subscription, JSON as ``text/plain``).

The SNS message signature (version 1: RSA-SHA1, version 2: RSA-SHA256) is checked
with the certificate at ``SigningCertURL``, which must be an https URL on an SNS
host (``sns.<region>.amazonaws.com``); certificates are fetched through the SSRF
guard and cached. Anyone can create an SNS topic that AWS signs, so the topic
must be one of the provider's ``authentication.webhookTopicArn`` (comma-separated).
A ``SubscriptionConfirmation`` is confirmed by fetching its ``SubscribeURL``
(again an SNS host over https). Each SNS ``MessageId`` is accepted once.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from postroom.errors import WebhookAuthError, WebhookPayloadError
from postroom.tracking.bounces import classify
from postroom.tracking.webhooks.base import (
    ParsedEvent,
    Verified,
    WebhookForbidden,
    json_body,
    secret,
)
from postroom.types import EventType

keys = frozenset({"webhookTopicArn"})
#: SNS retries a notification for up to an hour; an older one is refused as stale
MAX_AGE_S = 3600
_SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}

Fetcher = Callable[[str], Awaitable[bytes]]


async def guarded_fetch(url: str) -> bytes:
    """GET ``url`` through the SSRF guard (public addresses only, no redirects)."""
    from postroom.providers.egress import AddressGuard, GuardedTransport

    transport = GuardedTransport(AddressGuard(provider="sns"))
    async with httpx.AsyncClient(transport=transport, timeout=10, trust_env=False) as client:
        response = await client.get(url)
    if response.status_code != 200:
        raise WebhookForbidden(f"{urlsplit(url).netloc} answered {response.status_code}")
    return response.content


#: replaced in tests by a fetcher that serves a self-made certificate
fetch: Fetcher = guarded_fetch
_certs: dict[str, rsa.RSAPublicKey] = {}


def sns_url(url: Any, what: str) -> str:
    if not isinstance(url, str):
        raise WebhookAuthError(f"the SNS message has no {what}")
    parts = urlsplit(url)
    if parts.scheme != "https" or not _SNS_HOST.match(parts.hostname or "") or parts.port:
        raise WebhookAuthError(f"{what} {url!r} is not an https URL on an SNS host")
    return url


def string_to_sign(doc: Mapping[str, Any]) -> bytes:
    fields = _FIELDS.get(str(doc.get("Type")))
    if fields is None:
        raise WebhookAuthError(f"unknown SNS message type {doc.get('Type')!r}")
    out = ""
    for name in fields:
        if name == "Subject" and doc.get(name) is None:
            continue
        value = doc.get(name)
        if not isinstance(value, str):
            raise WebhookAuthError(f"the SNS message has no {name}")
        out += f"{name}\n{value}\n"
    return out.encode()


async def _public_key(url: str) -> rsa.RSAPublicKey:
    if url not in _certs:
        try:
            cert = x509.load_pem_x509_certificate(await fetch(url))
        except ValueError:
            raise WebhookAuthError("the SNS signing certificate cannot be read") from None
        key = cert.public_key()
        if not isinstance(key, rsa.RSAPublicKey):
            raise WebhookAuthError("the SNS signing certificate has no RSA key")
        _certs[url] = key
    return _certs[url]


async def verify(
    body: bytes,
    headers: Mapping[str, str],  # noqa: ARG001 (SNS signs the body's fields)
    secrets: Mapping[str, Any],
    now: datetime,
    max_age_s: int,  # noqa: ARG001 (SNS keeps retrying for up to MAX_AGE_S)
) -> Verified:
    topics = {t.strip() for t in secret(secrets, "webhookTopicArn", "ses").split(",")}
    try:
        doc = json_body(body)
    except WebhookPayloadError:
        raise WebhookAuthError("the body is not an SNS message") from None
    if not isinstance(doc, dict):
        raise WebhookAuthError("the body is not an SNS message")
    version = doc.get("SignatureVersion")
    # version 1 is SHA-1 because SNS signs that way, not by choice
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(str(version))
    if algorithm is None:
        raise WebhookAuthError(f"unknown SNS SignatureVersion {version!r}")
    cert_url = sns_url(doc.get("SigningCertURL"), "SigningCertURL")
    try:
        signature = base64.b64decode(str(doc.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError):
        raise WebhookAuthError("the SNS signature is not base64") from None
    key = await _public_key(cert_url)
    try:
        key.verify(signature, string_to_sign(doc), padding.PKCS1v15(), algorithm)
    except InvalidSignature:
        raise WebhookAuthError("the SNS signature does not match") from None
    if doc.get("TopicArn") not in topics:
        raise WebhookForbidden(f"topic {doc.get('TopicArn')!r} is not this provider's")
    try:
        sent = datetime.fromisoformat(str(doc["Timestamp"]).replace("Z", "+00:00"))
    except ValueError:
        raise WebhookAuthError("the SNS Timestamp is not a time") from None
    if abs((now - sent).total_seconds()) > MAX_AGE_S:
        raise WebhookForbidden("the SNS message is more than an hour old: refused as stale")
    note = None
    if doc["Type"] == "SubscriptionConfirmation":
        await fetch(sns_url(doc.get("SubscribeURL"), "SubscribeURL"))
        note = "subscription confirmed"
    return Verified(nonces=(f"sns:{doc['MessageId']}",), note=note)


def _ses_events(ses: dict[str, Any]) -> list[ParsedEvent]:
    kind = ses.get("eventType") or ses.get("notificationType")
    raw_mail = ses.get("mail")
    mail: dict[str, Any] = raw_mail if isinstance(raw_mail, dict) else {}
    message_id = mail.get("messageId") if isinstance(mail.get("messageId"), str) else None
    extra: dict[str, Any] = {"provider": "ses", "event": kind}
    if kind == "Delivery":
        d = ses.get("delivery") or {}
        when = d.get("timestamp")
        return [
            _ev(EventType.DELIVERED, when, message_id, r, extra) for r in d.get("recipients", [])
        ]
    if kind == "Bounce":
        b = ses.get("bounce") or {}
        out = []
        for r in b.get("bouncedRecipients", []):
            diagnostic = str(r.get("diagnosticCode") or "")
            data = {**extra, **classify(diagnostic, status=r.get("status")).data(diagnostic)}
            if b.get("bounceType") == "Permanent" and b.get("bounceSubType") in (
                "General",
                "NoEmail",
            ):
                data["bounceType"] = data["bounceType"] if data["reason"] != "other" else "hard"
            elif b.get("bounceType") == "Transient":
                data["bounceType"] = "soft"
            data["sesType"] = f"{b.get('bounceType')}/{b.get('bounceSubType')}"
            kind_ = EventType.BOUNCED if b.get("bounceType") != "Undetermined" else EventType.FAILED
            out.append(
                _ev(
                    kind_,
                    b.get("timestamp"),
                    message_id,
                    r.get("emailAddress"),
                    data,
                    b.get("feedbackId"),
                )
            )
        return out
    if kind == "Complaint":
        c = ses.get("complaint") or {}
        data = {**extra, "feedbackType": c.get("complaintFeedbackType")}
        return [
            _ev(
                EventType.COMPLAINED,
                c.get("timestamp"),
                message_id,
                r.get("emailAddress"),
                data,
                c.get("feedbackId"),
            )
            for r in c.get("complainedRecipients", [])
        ]
    if kind == "DeliveryDelay":
        d = ses.get("deliveryDelay") or {}
        return [
            _ev(
                EventType.DEFERRED,
                d.get("timestamp"),
                message_id,
                r.get("emailAddress"),
                {**extra, "reason": d.get("delayType")},
            )
            for r in d.get("delayedRecipients", [])
        ]
    if kind in ("Open", "Click"):
        o = ses.get(kind.lower()) or {}
        data = {**extra, **({"url": o["link"]} if o.get("link") else {})}
        return [
            _ev(
                EventType.OPENED if kind == "Open" else EventType.CLICKED,
                o.get("timestamp"),
                message_id,
                r,
                data,
                None,
                o.get("userAgent"),
            )
            for r in mail.get("destination", [])[:1]
        ]
    return []  # Send, Reject, Rendering Failure, Subscription: nothing to record


def _ev(
    kind: str,
    when: Any,
    message_id: str | None,
    recipient: Any,
    data: dict[str, Any],
    event_id: Any = None,
    user_agent: Any = None,
) -> ParsedEvent:
    try:
        timestamp = datetime.fromisoformat(str(when).replace("Z", "+00:00"))
    except ValueError:
        raise WebhookPayloadError(f"bad SES timestamp {when!r}") from None
    return ParsedEvent(
        type=kind,
        timestamp=timestamp,
        message_id=message_id,
        recipient=recipient if isinstance(recipient, str) else None,
        event_id=f"{event_id}:{recipient}" if event_id else None,
        data=data,
        user_agent=user_agent if isinstance(user_agent, str) else None,
    )


def parse(body: bytes) -> list[ParsedEvent]:
    doc = json_body(body)
    if not isinstance(doc, dict) or doc.get("Type") != "Notification":
        return []  # subscription messages carry no events
    try:
        ses = json.loads(str(doc.get("Message")))
    except json.JSONDecodeError:
        raise WebhookPayloadError("the SNS Message is not an SES event") from None
    if not isinstance(ses, dict):
        raise WebhookPayloadError("the SNS Message is not an SES event")
    return _ses_events(ses)
