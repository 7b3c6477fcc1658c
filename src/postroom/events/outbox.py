"""The hooks the send and tracking paths call: events into ``webhook_outbox``, in the
caller's transaction.

The outbox row commits or rolls back with the state change it reports (a job's
write-back, a tracking event), so no event is lost and none is reported for a
change that did not happen. Each hook first asks :mod:`subscriptions` whether any
endpoint wants the kind (a cached set: no query), and otherwise writes with one
statement per call whatever the batch size: an ``executemany`` of ``INSERT …
SELECT`` over the jobs' records, or of plain rows. Payloads are completed from the
records when the dispatcher fans the events out (``events.deliveries.fan_out``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, bindparam, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from postroom.db.models import EmailRecord, WebhookOutbox
from postroom.db.types import JSONType, UTCDateTime
from postroom.events import subscriptions

outbox_t = cast(Table, WebhookOutbox.__table__)
records_t = cast(Table, EmailRecord.__table__)

#: (job id, when, data) for an event about every recipient of a job
JobEvent = tuple[uuid.UUID, datetime, Mapping[str, Any]]


async def records_added(
    conn: AsyncConnection, rows: Callable[[], Iterable[Mapping[str, Any]]]
) -> None:
    """``queued`` (or ``suppressed``) for ``email_records`` rows just inserted."""
    kinds = await subscriptions.wanted(conn)
    if "queued" not in kinds and "suppressed" not in kinds:
        return
    values = [
        {"type": r["status"], "record_id": r["id"], "occurred_at": r["created_at"], "data": {}}
        for r in rows()
        if r["status"] in kinds and r["status"] in ("queued", "suppressed")
    ]
    if values:
        await conn.execute(insert(outbox_t), values)


async def for_jobs(
    conn: AsyncConnection, kind: str, status: str, events: Callable[[], Iterable[JobEvent]]
) -> None:
    """``kind`` for each record of the jobs in ``events`` that is now in ``status``."""
    if kind not in await subscriptions.wanted(conn):
        return
    params = [
        {"b_job_id": job_id, "b_at": at, "b_data": dict(data)} for job_id, at, data in events()
    ]
    if not params:
        return
    chosen = select(
        literal(kind).label("type"),
        records_t.c.id,
        bindparam("b_at", type_=UTCDateTime()),
        bindparam("b_data", type_=JSONType),
    ).where(records_t.c.job_id == bindparam("b_job_id"), records_t.c.status == status)
    stmt = insert(outbox_t).from_select(["type", "record_id", "occurred_at", "data"], chosen)
    await conn.execute(stmt, params)


async def bulk_queued(conn: AsyncConnection, bulk_id: uuid.UUID, at: datetime) -> None:
    """``queued`` for every record of a bulk send just stored: one ``INSERT … SELECT``."""
    if "queued" not in await subscriptions.wanted(conn):
        return
    chosen = select(
        literal("queued").label("type"),
        records_t.c.id,
        literal(at, type_=UTCDateTime()),
        literal({}, type_=JSONType),
    ).where(records_t.c.bulk_id == bulk_id)
    stmt = insert(outbox_t).from_select(["type", "record_id", "occurred_at", "data"], chosen)
    await conn.execute(stmt)


async def tracked(
    conn: AsyncConnection,
    events: Callable[[], Iterable[tuple[uuid.UUID, str, datetime, Mapping[str, Any]]]],
) -> None:
    """Tracking events (delivered, bounced, opened …) just stored, as (record id, type,
    time, data): one multi-row insert of those some endpoint wants."""
    wanted = await subscriptions.wanted(conn)
    if not wanted:
        return
    values = [
        {"type": kind, "record_id": record_id, "occurred_at": at, "data": dict(data)}
        for record_id, kind, at, data in events()
        if kind in wanted
    ]
    if values:
        await conn.execute(insert(outbox_t), values)
