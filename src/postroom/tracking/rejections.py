"""Synchronous rejections (an SMTP ``550`` at RCPT, an ESP refusing a recipient)
become bounce events, classified like any other bounce, in the write-back's
transaction: a dead address is suppressed before the next send."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from postroom.config import Settings
from postroom.db.models import EmailRecord
from postroom.tracking import suppressions
from postroom.tracking.bounces import classify
from postroom.tracking.events import NewEvent, record_event
from postroom.types import EventType

records_t = cast(Table, EmailRecord.__table__)
#: the write-back has no settings at hand: soft bounces count against the default
SOFT_LIMIT = int(Settings.model_fields["suppress_after_soft_bounces"].default)

#: (job id, recipient or None for every recipient of the job, the server's reply, when)
Rejection = tuple[uuid.UUID, str | None, str, datetime]


async def record(
    conn: AsyncConnection, rejections: Sequence[Rejection], *, moves_status: bool = True
) -> None:
    """``moves_status=False`` for a job that failed as a whole: its records stay
    ``failed``, so retrying the job (``POST /queues/{q}/retry``) sends them again."""
    for job_id, address, diagnostic, when in rejections:
        stmt = select(records_t.c.id, records_t.c.recipient_email).where(
            records_t.c.job_id == job_id
        )
        if address is not None:
            stmt = stmt.where(func.lower(records_t.c.recipient_email) == address.lower())
        bounce = classify(diagnostic)
        data = {**bounce.data(diagnostic), "synchronous": True}
        for rec in (await conn.execute(stmt)).all():
            event_id = await record_event(
                conn,
                NewEvent(
                    record_id=rec.id,
                    type=EventType.BOUNCED,
                    timestamp=when,
                    data=data,
                    moves_status=moves_status,
                ),
            )
            if event_id is not None:
                await suppressions.after_event(
                    conn,
                    recipient=rec.recipient_email,
                    event_type=EventType.BOUNCED,
                    event_id=event_id,
                    data=data,
                    now=when,
                    soft_limit=SOFT_LIMIT,
                )
