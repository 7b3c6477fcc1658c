"""All SQL of the webhook outbox and deliveries; the correctness argument:

- **Nothing lost.** An event enters ``webhook_outbox`` in the transaction of the
  change it reports (``events.outbox``). ``fan_out`` deletes outbox rows and
  inserts their deliveries in one transaction: a crash leaves either the outbox
  row or the deliveries, never neither.
- **Claims** lease due deliveries of enabled endpoints (``FOR UPDATE SKIP LOCKED``
  on PostgreSQL; SQLite serializes writers with ``BEGIN IMMEDIATE``). The outbox is
  taken the same way, so several dispatchers share the work.
- **Fencing.** Each claim gets a fresh lease token; a result is written only while
  the delivery still carries it, so a dispatcher whose lease expired (it was
  stopped mid-POST, ``reap`` gave the delivery back) cannot overwrite a newer
  state. Delivery is therefore at least once: receivers deduplicate by
  ``webhook-id``.
- **Giving up.** A delivery that has used ``max_attempts`` POSTs is ``failed``;
  a manual retry gives it a fresh budget.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.db.engine import reader, write_transaction
from postroom.db.models import (
    EmailProvider,
    EmailRecord,
    WebhookDelivery,
    WebhookDeliveryAttempt,
    WebhookEndpoint,
    WebhookOutbox,
)
from postroom.events import retry
from postroom.events.catalog import wire_type
from postroom.events.subscriptions import kinds_of

outbox_t = cast(Table, WebhookOutbox.__table__)
endpoints_t = cast(Table, WebhookEndpoint.__table__)
deliveries_t = cast(Table, WebhookDelivery.__table__)
attempts_t = cast(Table, WebhookDeliveryAttempt.__table__)
records_t = cast(Table, EmailRecord.__table__)
providers_t = cast(Table, EmailProvider.__table__)

PENDING, DELIVERING, DELIVERED, FAILED = "pending", "delivering", "delivered", "failed"
#: the states a delivery can be in, as the API filters them
STATES = (PENDING, DELIVERING, DELIVERED, FAILED)


@dataclass(frozen=True, kw_only=True, slots=True)
class Claimed:
    """A delivery leased for one POST."""

    id: uuid.UUID
    endpoint_id: uuid.UUID
    payload: str
    #: this POST's number (1-based)
    attempt: int
    max_attempts: int
    locked_by: str


@dataclass(frozen=True, kw_only=True, slots=True)
class Outcome:
    """How one POST went."""

    delivery: Claimed
    started_at: datetime
    #: delivered | retry | failed
    outcome: str
    status_code: int | None
    latency_ms: float | None
    error: str | None
    next_attempt_at: datetime | None = None


def payload(row: Any, record: Any) -> str:
    """The JSON body of one event: ``{"type", "timestamp", "data"}``."""
    data: dict[str, Any] = {
        "recordId": str(row.record_id) if row.record_id else None,
        "emailId": None,
        "recipient": None,
    }
    if record is not None:
        data |= {
            "emailId": str(record.job_id) if record.job_id else None,
            "recipient": record.recipient_email,
            "recipientType": record.recipient_type,
            "from": record.sender_email,
            "subject": record.subject,
            "messageType": record.type,
            "provider": record.provider_name,
            "messageId": record.message_id,
        }
        if record.bulk_id:
            data["bulkId"] = str(record.bulk_id)
        data["metadata"] = record.metadata or {}
    details = dict(row.data or {})
    for key in ("provider", "messageId"):  # what the write-back knew wins
        if details.get(key):
            data[key] = details.pop(key)
    data["details"] = details
    stamp = row.occurred_at.isoformat().replace("+00:00", "Z")
    return json.dumps(
        {"type": wire_type(row.type), "timestamp": stamp, "data": data}, separators=(",", ":")
    )


async def pending_work(engine: AsyncEngine, *, now: datetime) -> tuple[bool, bool, bool]:
    """Whether there are outbox events, due deliveries, expired leases: one read, so an
    idle dispatcher takes no write lock."""
    d = deliveries_t.c
    stmt = select(
        select(outbox_t.c.id).limit(1).exists(),
        select(d.id).where(d.status == PENDING, d.next_attempt_at <= now).limit(1).exists(),
        select(d.id).where(d.status == DELIVERING, d.locked_until < now).limit(1).exists(),
    )
    async with reader(engine).connect() as conn:
        outbox, due, expired = (await conn.execute(stmt)).one()
    return bool(outbox), bool(due), bool(expired)


async def fan_out(engine: AsyncEngine, *, now: datetime, limit: int) -> int:
    """Turn up to ``limit`` outbox events into deliveries; returns how many events."""
    oldest = (
        select(outbox_t.c.id).order_by(outbox_t.c.id).limit(limit).with_for_update(skip_locked=True)
    )
    async with write_transaction(engine) as conn:
        taken = (
            await conn.execute(
                delete(outbox_t)
                .where(outbox_t.c.id.in_(oldest.scalar_subquery()))
                .returning(*outbox_t.c)
            )
        ).all()
        if not taken:
            return 0
        endpoints = (
            await conn.execute(
                select(endpoints_t.c.id, endpoints_t.c.event_types).where(endpoints_t.c.enabled)
            )
        ).all()
        record_ids = {row.record_id for row in taken if row.record_id is not None}
        records: dict[uuid.UUID, Any] = {}
        if record_ids:
            stmt = (
                select(records_t, providers_t.c.name.label("provider_name"))
                .select_from(
                    records_t.outerjoin(providers_t, providers_t.c.id == records_t.c.provider_id)
                )
                .where(records_t.c.id.in_(record_ids))
            )
            records = {r.id: r for r in (await conn.execute(stmt)).all()}
        rows = []
        for event in sorted(taken, key=lambda r: r.id):
            body: str | None = None
            for endpoint in endpoints:
                if event.type not in kinds_of(endpoint.event_types):
                    continue
                body = body or payload(event, records.get(event.record_id))
                rows.append(
                    {
                        "id": uuid.uuid4(),
                        "endpoint_id": endpoint.id,
                        "event_type": wire_type(event.type),
                        "payload": body,
                        "status": PENDING,
                        "attempts": 0,
                        "max_attempts": retry.MAX_ATTEMPTS,
                        "next_attempt_at": now,
                        "created_at": now,
                    }
                )
        if rows:
            await conn.execute(insert(deliveries_t), rows)
    return len(taken)


async def claim(
    engine: AsyncEngine, *, token: str, limit: int, now: datetime, lease_s: float
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries of enabled endpoints, oldest due first."""
    d = deliveries_t.c
    enabled = select(endpoints_t.c.id).where(endpoints_t.c.enabled)
    due = (
        select(d.id)
        .where(
            d.status == PENDING,
            d.next_attempt_at <= now,
            d.endpoint_id.in_(enabled.scalar_subquery()),
        )
        .order_by(d.next_attempt_at, d.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(deliveries_t)
        .where(d.id.in_(due.scalar_subquery()))
        .values(
            status=DELIVERING,
            locked_by=token,
            locked_until=now + timedelta(seconds=lease_s),
            attempts=d.attempts + 1,
        )
        .returning(d.id, d.endpoint_id, d.payload, d.attempts, d.max_attempts, d.locked_by)
    )
    async with write_transaction(engine) as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        Claimed(
            id=r.id,
            endpoint_id=r.endpoint_id,
            payload=r.payload,
            attempt=r.attempts,
            max_attempts=r.max_attempts,
            locked_by=r.locked_by,
        )
        for r in rows
    ]


_FINISH = (
    update(deliveries_t)
    .where(deliveries_t.c.id == bindparam("b_id"))
    .values(
        status=bindparam("b_status"),
        locked_by=None,
        locked_until=None,
        next_attempt_at=bindparam("b_next"),
        last_status_code=bindparam("b_code"),
        last_error=bindparam("b_error"),
        finished_at=bindparam("b_finished"),
    )
)


def _finished(o: Outcome, now: datetime) -> dict[str, Any]:
    status = {"delivered": DELIVERED, "failed": FAILED}.get(o.outcome, PENDING)
    return {
        "b_id": o.delivery.id,
        "b_status": status,
        "b_next": o.next_attempt_at or now,
        "b_code": o.status_code,
        "b_error": o.error,
        "b_finished": now if status in (DELIVERED, FAILED) else None,
    }


async def finish(engine: AsyncEngine, outcomes: Sequence[Outcome], *, now: datetime) -> int:
    """Write POST outcomes back in one transaction, fenced on the lease token."""
    if not outcomes:
        return 0
    d = deliveries_t.c
    async with write_transaction(engine) as conn:
        mine = set(
            (
                await conn.execute(
                    select(d.id).where(
                        d.status == DELIVERING,
                        tuple_(d.id, d.locked_by).in_(
                            [(o.delivery.id, o.delivery.locked_by) for o in outcomes]
                        ),
                    )
                )
            ).scalars()
        )
        written = [o for o in outcomes if o.delivery.id in mine]
        if written:
            # one statement for the batch (an executemany), not one execution per row
            await conn.execute(_FINISH, [_finished(o, now) for o in written])
            await conn.execute(
                insert(attempts_t),
                [
                    {
                        "id": uuid.uuid4(),
                        "delivery_id": o.delivery.id,
                        "attempt": o.delivery.attempt,
                        "started_at": o.started_at,
                        "outcome": o.outcome,
                        "status_code": o.status_code,
                        "latency_ms": o.latency_ms,
                        "error": (o.error or "")[:2000] or None,
                    }
                    for o in written
                ],
            )
    return len(written)


async def reap(engine: AsyncEngine, *, now: datetime) -> int:
    """Give back deliveries whose dispatcher stopped mid-POST (the lease ran out).

    The POST may have reached the receiver: it is sent again (at least once). The
    attempt stays counted; one whose budget is spent is failed.
    """
    d = deliveries_t.c
    expired = and_(d.status == DELIVERING, d.locked_until < now)
    async with write_transaction(engine) as conn:
        spent = await conn.execute(
            update(deliveries_t)
            .where(expired, d.attempts >= d.max_attempts)
            .values(
                status=FAILED,
                locked_by=None,
                locked_until=None,
                finished_at=now,
                last_error="the dispatcher stopped before the endpoint answered",
            )
        )
        back = await conn.execute(
            update(deliveries_t)
            .where(expired)
            .values(status=PENDING, locked_by=None, locked_until=None, next_attempt_at=now)
        )
    return int(spent.rowcount or 0) + int(back.rowcount or 0)


async def prune(engine: AsyncEngine, *, before: datetime, batch: int = 500) -> int:
    """Delete up to ``batch`` deliveries (and their attempts) finished before ``before``."""
    d = deliveries_t.c
    old = (
        select(d.id)
        .where(d.status.in_((DELIVERED, FAILED)), d.finished_at < before)
        .limit(batch)
        .with_for_update(skip_locked=True)
    )
    async with write_transaction(engine) as conn:
        gone = await conn.execute(delete(deliveries_t).where(d.id.in_(old.scalar_subquery())))
    return int(gone.rowcount or 0)


async def endpoint_secrets(
    engine: AsyncEngine, endpoint_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Any]:
    """URL, encrypted secret and allowed networks of each endpoint."""
    e = endpoints_t.c
    stmt = select(e.id, e.url, e.secret, e.allow_networks).where(e.id.in_(set(endpoint_ids)))
    async with reader(engine).connect() as conn:
        return {r.id: r for r in (await conn.execute(stmt)).all()}
