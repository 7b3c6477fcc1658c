"""Helpers for tracking tests: mail that has been sent, and row counts."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

import httpx
from sqlalchemy import Table, func, select

from postroom.app import Postroom
from postroom.db.models import (
    EmailRecord,
    EmailSuppression,
    EmailTracking,
    EmailTrackingEvent,
    WebhookNonce,
    WebhookReceipt,
)
from tests.support.payloads import email as email_body

SEND = "/api/system/email/send"
API = "/api/system/email"
records_t = cast(Table, EmailRecord.__table__)
#: every table a webhook may write to
WRITTEN: tuple[Table, ...] = tuple(
    cast(Table, m.__table__)
    for m in (EmailTracking, EmailTrackingEvent, EmailSuppression, WebhookReceipt, WebhookNonce)
)


@dataclass(frozen=True)
class Sent:
    email_id: str
    record_id: str
    recipient: str
    message_id: str


async def send_and_drain(
    client: httpx.AsyncClient, postroom: Postroom, **overrides: Any
) -> list[Sent]:
    """Send one email through the development outbox; its records, in address order."""
    response = await client.post(SEND, json=email_body(**overrides))
    assert response.status_code == 202, response.text
    email_id = response.json()["id"]
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()
    async with postroom.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(records_t)
                .where(records_t.c.job_id == uuid.UUID(email_id))
                .order_by(records_t.c.recipient_email)
            )
        ).all()
    return [Sent(email_id, str(r.id), r.recipient_email, r.message_id) for r in rows]


async def row_counts(postroom: Postroom) -> dict[str, int]:
    async with postroom.engine.connect() as conn:
        return {
            t.name: int((await conn.execute(select(func.count()).select_from(t))).scalar_one())
            for t in WRITTEN
        }


async def record(postroom: Postroom, record_id: str) -> Any:
    async with postroom.engine.connect() as conn:
        stmt = select(records_t).where(records_t.c.id == uuid.UUID(record_id))
        return (await conn.execute(stmt)).one()
