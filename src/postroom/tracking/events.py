"""Delivery events: record them once, and keep each recipient's status current.

One ``email_tracking`` row per recipient record (the spec's ``DeliveryTracking``),
created by its first event; events go to ``email_tracking_events``. An event
carries a ``dedupe_key`` (the ESP's event id, else a hash of what it says), so
an ESP that delivers the same event three times stores it once. The status only
moves up the spec's ``determineDeliveryStatus`` precedence and each first time only
moves earlier, so events arriving in any order end in the same state. Opens and
clicks flagged as made by machines (privacy proxies, scanners) are stored and
counted but do not move the status.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.db.engine import reader
from postroom.db.models import EmailRecord, EmailTracking, EmailTrackingEvent
from postroom.errors import NotFound
from postroom.events import outbox
from postroom.types import EventType, RecordStatus

records_t = cast(Table, EmailRecord.__table__)
tracking_t = cast(Table, EmailTracking.__table__)
events_t = cast(Table, EmailTrackingEvent.__table__)

#: the spec's determineDeliveryStatus, strongest first
PRECEDENCE: tuple[str, ...] = (
    EventType.BOUNCED,
    EventType.COMPLAINED,
    EventType.CLICKED,
    EventType.OPENED,
    EventType.DELIVERED,
    EventType.SENT,
)
#: event type -> the email_records column holding its first time
_TIMESTAMP: dict[str, str] = {
    EventType.SENT: "sent_at",
    EventType.DELIVERED: "delivered_at",
    EventType.BOUNCED: "bounced_at",
    EventType.OPENED: "opened_at",
    EventType.CLICKED: "clicked_at",
}
#: event type -> the column holding its first time, machine-made events included
_ANY_TIMESTAMP: dict[str, str] = {
    EventType.OPENED: "opened_any_at",
    EventType.CLICKED: "clicked_any_at",
}


@dataclass(frozen=True, kw_only=True)
class NewEvent:
    """An event about one recipient record, from any source."""

    record_id: uuid.UUID
    type: str
    timestamp: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
    #: the ESP's event id; None: a hash of the event is used
    event_id: str | None = None
    user_agent: str | None = None
    ip_address: str | None = None
    machine: bool = False
    #: False: recorded without moving the status (a rejected job that may be retried)
    moves_status: bool = True

    def dedupe_key(self) -> str:
        if self.event_id:
            raw = f"{self.record_id}:{self.type}:id:{self.event_id}"
        else:
            body = json.dumps(dict(self.data), sort_keys=True, default=str)
            raw = f"{self.record_id}:{self.type}:{self.timestamp.isoformat()}:{body}"
        return hashlib.sha256(raw.encode()).hexdigest()


def insert_ignore(conn: AsyncConnection, table: Table, row: Mapping[str, Any]) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` on SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table).values(dict(row)).on_conflict_do_nothing()
    return sqlite.insert(table).values(dict(row)).on_conflict_do_nothing()


async def _tracking_id(conn: AsyncConnection, record: Any, now: datetime) -> uuid.UUID:
    found = (
        await conn.execute(select(tracking_t.c.id).where(tracking_t.c.email_id == record.id))
    ).scalar()
    if found is not None:
        return cast(uuid.UUID, found)
    row = {
        "id": uuid.uuid4(),
        "email_id": record.id,
        "delivery_id": record.delivery_id or record.message_id or str(record.id),
        "recipient_email": record.recipient_email,
        "tracking_enabled": {"bounces": True, "complaints": True},
        "status": EventType.SENT,
        "events": [],
        "created_at": now,
        "updated_at": now,
    }
    await conn.execute(insert_ignore(conn, tracking_t, row))
    return cast(
        uuid.UUID,
        (
            await conn.execute(select(tracking_t.c.id).where(tracking_t.c.email_id == record.id))
        ).scalar_one(),
    )


async def record_event(conn: AsyncConnection, event: NewEvent) -> uuid.UUID | None:
    """Store ``event`` in the caller's transaction; returns its id, or None if it was
    already stored (a duplicate) or its record does not exist."""
    record = (
        await conn.execute(select(records_t).where(records_t.c.id == event.record_id))
    ).first()
    if record is None:
        return None
    tracking_id = await _tracking_id(conn, record, event.timestamp)
    event_id = uuid.uuid4()
    inserted = await conn.execute(
        insert_ignore(
            conn,
            events_t,
            {
                "id": event_id,
                "tracking_id": tracking_id,
                "type": str(event.type),
                "timestamp": event.timestamp,
                "data": dict(event.data),
                "user_agent": event.user_agent,
                "ip_address": event.ip_address,
                "dedupe_key": event.dedupe_key(),
                "machine": event.machine,
            },
        )
    )
    if inserted.rowcount == 0:
        return None
    await _apply_status(conn, record.id, tracking_id, event)
    if event.type != EventType.SENT:  # the write-back reports sends itself
        await outbox.tracked(
            conn, record.id, str(event.type), event.timestamp, _webhook_data(event)
        )
    return event_id


def _webhook_data(event: NewEvent) -> dict[str, Any]:
    """What an event webhook says about ``event`` beside the record's fields."""
    data: dict[str, Any] = {**event.data, "machine": event.machine}
    if event.user_agent:
        data["userAgent"] = event.user_agent
    if event.ip_address:
        data["ipAddress"] = event.ip_address
    return data


async def _apply_status(
    conn: AsyncConnection, record_id: uuid.UUID, tracking_id: uuid.UUID, event: NewEvent
) -> None:
    """Move the status up to the event's, if it is stronger, and keep each first time.

    Events are only ever added, so the strongest event and the earliest time of each
    kind do not depend on arrival order. Each update is conditional in SQL, so two
    events applied at once cannot overwrite a stronger status with a weaker one.
    """
    kind = str(event.type)
    any_column = _ANY_TIMESTAMP.get(kind)
    if any_column is not None:  # machine-made too: analytics counts both
        col = records_t.c[any_column]
        await conn.execute(
            update(records_t)
            .where(records_t.c.id == record_id, or_(col.is_(None), col > event.timestamp))
            .values({any_column: event.timestamp})
        )
    if event.machine or not event.moves_status or kind not in PRECEDENCE:
        return
    weaker = PRECEDENCE[PRECEDENCE.index(kind) + 1 :]
    await conn.execute(
        update(tracking_t)
        .where(tracking_t.c.id == tracking_id, tracking_t.c.status.in_(weaker))
        .values(status=kind, updated_at=event.timestamp)
    )
    replaceable = {*weaker, RecordStatus.QUEUED, RecordStatus.FAILED}
    await conn.execute(
        update(records_t)
        .where(records_t.c.id == record_id, records_t.c.status.in_(replaceable))
        .values(status=kind)
    )
    column = _TIMESTAMP.get(kind)
    if column is not None:
        col = records_t.c[column]
        await conn.execute(
            update(records_t)
            .where(records_t.c.id == record_id, or_(col.is_(None), col > event.timestamp))
            .values({column: event.timestamp})
        )


async def find_record(
    conn: AsyncConnection, message_id: str, recipient: str | None
) -> uuid.UUID | None:
    """The record an ESP event is about: by provider message id (with or without
    angle brackets) and, when one email went to several recipients, the address."""
    bare = message_id.strip().strip("<>")
    ids = {bare, f"<{bare}>"}
    cond: Any = records_t.c.message_id.in_(ids)
    if recipient:
        cond = and_(cond, func.lower(records_t.c.recipient_email) == recipient.strip().lower())
    rows = (await conn.execute(select(records_t.c.id).where(cond).limit(2))).scalars().all()
    return rows[0] if len(rows) == 1 else None


# -- reading -----------------------------------------------------------------------------


async def _resolve(conn: AsyncConnection, ident: str) -> Any:
    """A recipient record by its id, its email's id (single recipient) or its delivery id."""
    key: uuid.UUID | None
    try:
        key = uuid.UUID(ident)
    except ValueError:
        key = None
    if key is not None:
        rec = (await conn.execute(select(records_t).where(records_t.c.id == key))).first()
        if rec is not None:
            return rec
        recs = (await conn.execute(select(records_t).where(records_t.c.job_id == key))).all()
        if len(recs) == 1:
            return recs[0]
        if recs:
            raise NotFound(
                f"email {ident!r} has {len(recs)} recipients: ask for one by its record id "
                "(see GET /status/{id})"
            )
    bare = ident.strip().strip("<>")
    rec = (
        await conn.execute(
            select(records_t).where(
                records_t.c.delivery_id.in_({bare, f"<{bare}>"})
                | records_t.c.message_id.in_({bare, f"<{bare}>"})
            )
        )
    ).first()
    if rec is None:
        raise NotFound(f"no tracking for {ident!r}")
    return rec


def event_json(row: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": str(row.id),
        "type": row.type,
        "timestamp": row.timestamp.isoformat(),
        "data": row.data or {},
        "machine": bool(row.machine),
    }
    if row.user_agent:
        out["userAgent"] = row.user_agent
    if row.ip_address:
        out["ipAddress"] = str(row.ip_address)
    return out


def summarize(rows: list[Any]) -> dict[str, Any]:
    """Counts per event type; opens and clicks also as human-only counts."""
    total = Counter(r.type for r in rows)
    human = Counter(r.type for r in rows if not r.machine)
    summary: dict[str, Any] = {str(k): total[k] for k in sorted(total)}
    for kind in (EventType.OPENED, EventType.CLICKED):
        summary[f"{kind}Human"] = human[kind]
        summary[f"{kind}Total"] = total[kind]
    return summary


async def events_of(
    conn: AsyncConnection, record_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[Any]]:
    """Events per record id, oldest first."""
    out: dict[uuid.UUID, list[Any]] = {r: [] for r in record_ids}
    if not record_ids:
        return out
    rows = (
        await conn.execute(
            select(events_t, tracking_t.c.email_id)
            .join(tracking_t, tracking_t.c.id == events_t.c.tracking_id)
            .where(tracking_t.c.email_id.in_(record_ids))
            .order_by(events_t.c.timestamp, events_t.c.id)
        )
    ).all()
    for row in rows:
        out[row.email_id].append(row)
    return out


async def delivery_status(engine: AsyncEngine, ident: str) -> dict[str, Any]:
    """The spec's ``getDeliveryStatus``: status, events, summary and timeline."""
    async with reader(engine).connect() as conn:
        rec = await _resolve(conn, ident)
        rows = (await events_of(conn, [rec.id]))[rec.id]
        tracking = (
            await conn.execute(select(tracking_t).where(tracking_t.c.email_id == rec.id))
        ).first()
    events = [event_json(r) for r in rows]
    return {
        "deliveryId": (tracking.delivery_id if tracking else None)
        or rec.delivery_id
        or str(rec.id),
        "recordId": str(rec.id),
        "emailId": str(rec.job_id) if rec.job_id else None,
        "recipient": rec.recipient_email,
        "status": rec.status,
        "events": events,
        "summary": summarize(rows),
        "timeline": [
            {"type": e["type"], "timestamp": e["timestamp"], "machine": e["machine"]}
            for e in events
        ],
    }
