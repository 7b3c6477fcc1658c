"""From a job's stored request to an ``OutgoingMessage``.

The request was validated and normalized when it was accepted, so this reads
the stored JSON directly instead of validating it again on the hot path.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from postroom.compose import mime
from postroom.providers.base import Address, Attachment, OutgoingMessage


def _address(raw: Mapping[str, Any]) -> Address:
    return Address(email=raw["email"], name=raw.get("name") or None)


def message_id_for(email_id: str, sender: str, fallback_domain: str) -> str:
    """A Message-ID that is stable across retries: ``<email id@sender domain>``."""
    domain = sender.rpartition("@")[2] or fallback_domain
    if not domain.isascii():
        domain = domain.encode("idna").decode("ascii")
    return f"<{email_id}@{domain}>"


def compose(
    email_id: str,
    request: Mapping[str, Any],
    *,
    now: datetime,
    message_id_domain: str,
) -> OutgoingMessage:
    """Compose the message a stored request describes, MIME bytes included."""
    sender = _address(request["from"])
    to: list[Address] = []
    cc: list[Address] = []
    bcc: list[Address] = []
    for raw in request["to"]:
        kind = raw.get("type", "to")
        (cc if kind == "cc" else bcc if kind == "bcc" else to).append(_address(raw))
    reply_to = (_address(request["replyTo"]),) if request.get("replyTo") else ()
    content = request.get("content") or {}
    text, html = content.get("text"), content.get("html")
    attachments = tuple(
        Attachment(
            filename=a["filename"],
            content=base64.b64decode(a["content"]),
            content_type=a.get("contentType", "application/octet-stream"),
            disposition=a.get("disposition", "attachment"),
            cid=a.get("cid"),
        )
        for a in request.get("attachments") or ()
    )
    headers = dict(request.get("headers") or {})
    headers.setdefault("X-Postroom-Id", email_id)
    message_id = message_id_for(email_id, sender.email, message_id_domain)
    raw = mime.build_message(
        message_id=message_id,
        date=now,
        from_=sender,
        to=to,
        cc=cc,
        reply_to=reply_to,
        subject=request.get("subject", ""),
        text=text,
        html=html,
        headers=headers.items(),
        attachments=attachments,
    )
    return OutgoingMessage(
        email_id=email_id,
        message_id=message_id,
        from_=sender,
        to=tuple(to),
        cc=tuple(cc),
        bcc=tuple(bcc),
        reply_to=reply_to,
        subject=request.get("subject", ""),
        text=text,
        html=html,
        headers=headers,
        attachments=attachments,
        tags=tuple(request.get("tags") or ()),
        metadata=request.get("metadata") or {},
        mime=raw,
    )
