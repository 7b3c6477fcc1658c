"""Bounce and complaint reports that arrive as mail: DSNs (RFC 3464), ARF (RFC 5965)
and the plain-text bounces some MTAs still send (parsed by flufl.bounce).

A report finds its record through the address it was sent to when that is a
VERP envelope sender (``bounces+<signed token>@<bounce domain>``, see
``POSTROOM_BOUNCE_DOMAIN``): the token names the email, the failed recipient the
record, so no part of the original need come back. Else through the returned
original message: its ``X-Postroom-Id`` header (every message Postroom sends
carries one) together with the failed recipient, else its ``Message-ID``. Reports are stored raw in
``webhook_receipts`` (type ``inbound``) and applied idempotently.
"""

from __future__ import annotations

import email
import email.policy
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parseaddr
from typing import Any, cast

from flufl.bounce import all_failures
from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.db.models import EmailRecord, WebhookReceipt
from postroom.errors import MessageError
from postroom.tracking import suppressions
from postroom.tracking.bounces import classify
from postroom.tracking.context import TrackingContext
from postroom.tracking.events import NewEvent, find_record, insert_ignore, record_event
from postroom.types import EventType

records_t = cast(Table, EmailRecord.__table__)
receipts_t = cast(Table, WebhookReceipt.__table__)

_HEADER_LINE = re.compile(r"^(X-Postroom-Id|Message-ID):[ \t]*(\S+)", re.I | re.M)
_DIAGNOSTIC = re.compile(r"^\s*((?:[45]\d\d[ -])?[45]\.\d{1,3}\.\d{1,3}\b.*|[45]\d\d[ -].*)$", re.M)


class NotAReport(MessageError):
    """The message is neither a delivery status notification nor a complaint report."""

    code = "not-a-report"


@dataclass
class ReportEvent:
    type: str
    recipient: str | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    kind: str  #: dsn | arf | plain
    postroom_id: str | None
    message_id: str | None
    events: list[ReportEvent]
    #: the email a VERP address of the report names (set by :class:`Inbound`)
    verp_email_id: uuid.UUID | None = None


def _original_ids(msg: Message) -> tuple[str | None, str | None]:
    """X-Postroom-Id and Message-ID of the returned original (headers or whole message)."""
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/rfc822", "message/global"):
            payload = part.get_payload()
            inner = payload[0] if isinstance(payload, list) and payload else None
            if isinstance(inner, Message):
                return inner.get("X-Postroom-Id"), inner.get("Message-ID")
        if ctype in ("text/rfc822-headers", "text/global-headers"):
            found = {k.lower(): v for k, v in _HEADER_LINE.findall(_text(part))}
            return found.get("x-postroom-id"), found.get("message-id")
    found = {k.lower(): v for k, v in _HEADER_LINE.findall(_all_text(msg))}
    return found.get("x-postroom-id"), found.get("message-id")


def _text(part: Message) -> str:
    payload = part.get_payload(decode=True)
    if isinstance(payload, bytes):
        return payload.decode(part.get_content_charset() or "utf-8", "replace")
    raw = part.get_payload()
    return raw if isinstance(raw, str) else ""


def _all_text(msg: Message) -> str:
    return "\n".join(_text(p) for p in msg.walk() if not p.is_multipart())


def _fields(block: str) -> list[dict[str, str]]:
    """The field groups of a message/delivery-status or feedback-report body."""
    groups: list[dict[str, str]] = []
    for chunk in re.split(r"\r?\n\s*\r?\n", block.strip()):
        parsed = email.message_from_string(chunk.strip() + "\n\n")
        if len(parsed):
            groups.append({k.lower(): " ".join(str(v).split()) for k, v in parsed.items()})
    return groups


def _status_block(part: Message) -> str:
    payload = part.get_payload()
    if isinstance(payload, list):  # the stdlib parses delivery-status into header blocks
        return "\n\n".join(
            "\n".join(f"{k}: {v}" for k, v in sub.items())
            for sub in payload
            if isinstance(sub, Message)
        )
    return _text(part)


def _address(value: str | None) -> str | None:
    if not value:
        return None
    value = value.split(";", 1)[-1].strip().strip("<>")
    return value or None


def _dsn(part: Message) -> list[ReportEvent]:
    groups = _fields(_status_block(part))
    events: list[ReportEvent] = []
    for group in groups[1:] if len(groups) > 1 else groups:
        recipient = _address(group.get("final-recipient") or group.get("original-recipient"))
        action = (group.get("action") or "").lower()
        if not recipient or not action:
            continue
        diagnostic = (group.get("diagnostic-code") or "").split(";", 1)[-1].strip()
        status = group.get("status")
        status = status if status and re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", status) else None
        if action == "failed":
            bounce = classify(diagnostic, status=status)
            events.append(ReportEvent(EventType.BOUNCED, recipient, bounce.data(diagnostic)))
        elif action == "delayed":
            events.append(
                ReportEvent(
                    EventType.DEFERRED,
                    recipient,
                    classify(diagnostic, status=status).data(diagnostic),
                )
            )
        elif action in ("delivered", "relayed", "expanded"):
            events.append(ReportEvent(EventType.DELIVERED, recipient, {"action": action}))
    return events


def _original_to(msg: Message) -> str | None:
    for sub in msg.walk():
        ctype = sub.get_content_type()
        if ctype == "message/rfc822":
            inner = sub.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return parseaddr(str(inner[0].get("To", "")))[1] or None
        if ctype == "text/rfc822-headers":
            found = re.search(r"^To:(.*)$", _text(sub), re.M | re.I)
            if found:
                return parseaddr(found.group(1))[1] or None
    return None


def _arf(part: Message, msg: Message) -> list[ReportEvent]:
    groups = _fields(_status_block(part))
    fields = {k: v for g in groups for k, v in g.items()}
    recipient = _address(fields.get("original-rcpt-to") or fields.get("removal-recipient"))
    if recipient is None:  # the returned original says whom it went to
        recipient = _original_to(msg)
    data = {
        "feedbackType": fields.get("feedback-type", "abuse"),
        "reporter": fields.get("user-agent", ""),
    }
    return [ReportEvent(EventType.COMPLAINED, recipient, data)]


def parse_report(raw: bytes) -> Report:
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    postroom_id, message_id = _original_ids(msg)
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype in ("message/feedback-report",):
            return Report("arf", postroom_id, message_id, _arf(part, msg))
        if ctype in ("message/delivery-status", "message/global-delivery-status"):
            events = _dsn(part)
            if events:
                return Report("dsn", postroom_id, message_id, events)
    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector choking on an odd message: it is no bounce we know
        raise NotAReport() from None
    if not temporary and not permanent:
        raise NotAReport()
    found = _DIAGNOSTIC.search(_all_text(msg))
    diagnostic = found.group(1).strip() if found else ""
    events = [
        ReportEvent(
            EventType.BOUNCED if address in permanent else EventType.DEFERRED,
            address.decode("utf-8", "replace"),
            classify(diagnostic or None).data(diagnostic or None),
        )
        for address in sorted(permanent | temporary)
    ]
    return Report("plain", postroom_id, message_id, events)


#: headers in which the receiving MTA says which address a message was delivered to
_DELIVERED_TO = ("X-Original-To", "Delivered-To", "Envelope-To", "X-Envelope-To", "To")


def delivered_to(raw: bytes) -> list[str]:
    """The addresses a report was sent to, as its own headers tell."""
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    found: list[str] = []
    for name in _DELIVERED_TO:
        for value in msg.get_all(name) or ():
            found += [addr for _, addr in getaddresses([str(value)]) if addr]
    return found


class Inbound:
    """Applies reports to records: ``POST /inbound/raw`` and ``postroom inbound``."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        *,
        soft_limit: int,
        tracking: TrackingContext | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.soft_limit = soft_limit
        #: reads VERP addresses; None: they are not looked for
        self.tracking = tracking

    def _verp_email(self, raw: bytes, envelope_to: str | None) -> uuid.UUID | None:
        if self.tracking is None or not self.tracking.bounce_domain:
            return None
        for address in ([envelope_to] if envelope_to else []) + delivered_to(raw):
            if (found := self.tracking.email_of_return_path(address)) is not None:
                return found
        return None

    async def receive(self, raw: bytes, *, envelope_to: str | None = None) -> dict[str, Any]:
        """Apply the report ``raw``; ``envelope_to``: the address the MTA delivered
        it to, when the message's headers may not say (an MTA pipe)."""
        report = parse_report(raw)
        report.verp_email_id = self._verp_email(raw, envelope_to)
        now = self.clock.now()
        counts = {"recorded": 0, "duplicates": 0, "unmatched": 0}
        digest = hashlib.sha256(raw).hexdigest()
        async with self.engine.begin() as conn:
            await conn.execute(
                insert_ignore(
                    conn,
                    receipts_t,
                    {
                        "id": uuid.uuid4(),
                        "provider_type": "inbound",
                        "provider_event_id": f"sha256:{digest}",
                        "payload": raw.decode("utf-8", "replace"),
                        "received_at": now,
                        "processed_at": now,
                    },
                )
            )
            for ev in report.events:
                record_id = await self._record(conn, report, ev.recipient)
                if record_id is None:
                    counts["unmatched"] += 1
                    continue
                data = {**ev.data, "source": report.kind}
                event_id = await record_event(
                    conn,
                    NewEvent(
                        record_id=record_id,
                        type=ev.type,
                        timestamp=now,
                        data=data,
                        event_id=f"{report.kind}:{digest}:{ev.recipient}",
                    ),
                )
                if event_id is None:
                    counts["duplicates"] += 1
                    continue
                counts["recorded"] += 1
                if ev.recipient:
                    await suppressions.after_event(
                        conn,
                        recipient=ev.recipient,
                        event_type=ev.type,
                        event_id=event_id,
                        data=data,
                        now=now,
                        soft_limit=self.soft_limit,
                    )
        return {
            "kind": report.kind,
            "events": [{"type": e.type, "recipient": e.recipient, **e.data} for e in report.events],
            **counts,
        }

    async def _record(self, conn: Any, report: Report, recipient: str | None) -> uuid.UUID | None:
        if report.verp_email_id is not None:
            found = await self._of_email(conn, report.verp_email_id, recipient)
            if found is not None:
                return found
        if report.postroom_id:
            try:
                job_id = uuid.UUID(report.postroom_id.strip())
            except ValueError:
                job_id = None
            if job_id is not None:
                found = await self._of_email(conn, job_id, recipient)
                if found is not None:
                    return found
        if report.message_id:
            return await find_record(conn, report.message_id, recipient)
        return None

    @staticmethod
    async def _of_email(conn: Any, job_id: uuid.UUID, recipient: str | None) -> uuid.UUID | None:
        """The one record of email ``job_id`` (for ``recipient``, when given)."""
        stmt = select(records_t.c.id).where(records_t.c.job_id == job_id)
        if recipient:
            stmt = stmt.where(func.lower(records_t.c.recipient_email) == recipient.lower())
        rows = (await conn.execute(stmt.limit(2))).scalars().all()
        return cast(uuid.UUID, rows[0]) if len(rows) == 1 else None
