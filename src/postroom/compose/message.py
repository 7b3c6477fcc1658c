"""From a job's stored request to an ``OutgoingMessage``.

The request was validated and normalized when it was accepted, so this reads
the stored JSON directly instead of validating it again on the hot path; only
the cheap header-policy checks run again, so that a job queued before a rule
existed cannot slip past it.

Whatever goes wrong here goes wrong on every attempt (the stored request does
not change), so every failure is a :class:`ComposeError`, which the worker
treats as permanent: the job fails at once with the reason instead of retrying.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from postroom.compose import headers as header_policy
from postroom.compose import mime, tracking_rewrite, unsubscribe
from postroom.errors import ComposeError
from postroom.providers.base import Address, Attachment, OutgoingMessage
from postroom.tracking.context import TrackingContext

log = logging.getLogger(__name__)


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
    tracking: TrackingContext | None = None,
) -> OutgoingMessage:
    """Compose the message a stored request describes, MIME bytes included.

    Raises ComposeError, and nothing else, when the request cannot become a message.
    """
    try:
        return _compose(
            email_id, request, now=now, message_id_domain=message_id_domain, tracking=tracking
        )
    except ComposeError:
        raise
    except Exception as exc:
        log.warning("email %s cannot be composed", email_id, exc_info=exc)
        reason = f"{type(exc).__name__}: {exc}".encode("utf-8", "backslashreplace").decode()
        raise ComposeError(f"the message cannot be composed: {reason}") from exc


def _compose(
    email_id: str,
    request: Mapping[str, Any],
    *,
    now: datetime,
    message_id_domain: str,
    tracking: TrackingContext | None = None,
) -> OutgoingMessage:
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
    problems = header_policy.problems(headers)
    for a in attachments:
        problems += header_policy.attachment_problems(a.content_type, a.cid)
    if problems:
        raise ComposeError("; ".join(problems).encode("utf-8", "backslashreplace").decode())
    headers["X-Postroom-Id"] = email_id
    if tracking is not None:  # open/click tracking and one-click unsubscribe
        if html:
            html = tracking_rewrite.rewrite(html, email_id, request, tracking, now)
        headers.update(unsubscribe.headers(email_id, request, headers, tracking, now))
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
        return_path=tracking.return_path(email_id) if tracking is not None else None,
    )
