"""The spec's ``getEmailStatus``: one email, its recipients and its attempts."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.db.engine import reader
from postroom.db.models import EmailJob, EmailJobAttempt, EmailProvider, EmailRecord
from postroom.errors import NotFound
from postroom.schemas.results import AttemptPublic, EmailStatus, RecipientStatus
from postroom.tracking import events as tracking_events
from postroom.types import JobStatus, RecordStatus

jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)
attempts_t = cast(Table, EmailJobAttempt.__table__)
providers_t = cast(Table, EmailProvider.__table__)

#: job status -> the email's status as clients see it
EMAIL_STATUS = {
    JobStatus.PENDING: "queued",
    JobStatus.PROCESSING: "sending",
    JobStatus.COMPLETED: "sent",
    JobStatus.FAILED: "failed",
    JobStatus.CANCELLED: "cancelled",
}

#: the spec's determineDeliveryStatus order, strongest first
DELIVERY_ORDER = (
    RecordStatus.BOUNCED,
    RecordStatus.COMPLAINED,
    RecordStatus.CLICKED,
    RecordStatus.OPENED,
    RecordStatus.DELIVERED,
    RecordStatus.SENT,
)


def _not_found(ident: str) -> NotFound:
    return NotFound(f"no email with id {ident!r}")


#: ``owner`` value that sees every email (the facade, ``read`` keys)
ANY_OWNER = "any"


async def get_status(
    engine: AsyncEngine, ident: str, *, owner: uuid.UUID | str | None = ANY_OWNER
) -> EmailStatus:
    """Status by email (job) id, or by the id of one of its recipient records.

    ``owner`` limits it to the mail one API key sent (``None``: mail sent through
    the facade); another's email is "not found", so its existence does not leak.
    """
    try:
        key = uuid.UUID(ident)
    except ValueError:
        raise _not_found(ident) from None
    async with reader(engine).connect() as conn:
        job = (await conn.execute(select(jobs_t).where(jobs_t.c.id == key))).first()
        if job is None:
            job_id = (
                await conn.execute(select(records_t.c.job_id).where(records_t.c.id == key))
            ).scalar()
            if job_id is not None:
                job = (await conn.execute(select(jobs_t).where(jobs_t.c.id == job_id))).first()
        if job is None or (owner != ANY_OWNER and job.api_key_id != owner):
            raise _not_found(ident)
        recs = (
            await conn.execute(
                select(records_t, providers_t.c.name.label("provider_name"))
                .outerjoin(providers_t, providers_t.c.id == records_t.c.provider_id)
                .where(records_t.c.job_id == job.id)
                .order_by(records_t.c.created_at, records_t.c.recipient_email)
            )
        ).all()
        attempts = (
            await conn.execute(
                select(attempts_t)
                .where(attempts_t.c.job_id == job.id)
                .order_by(attempts_t.c.finished_at, attempts_t.c.attempt)
            )
        ).all()
        events = await tracking_events.events_of(conn, [r.id for r in recs])
    return _status(job, recs, attempts, events)


def _scheduled_for(job: Any, request: dict[str, Any]) -> datetime:
    """When the email was scheduled for: its ``scheduledAt`` (never before acceptance),
    else its acceptance. Retries move the job's due time, not this."""
    wanted = request.get("scheduledAt")
    if not wanted:
        return job.created_at  # type: ignore[no-any-return]
    try:
        when = datetime.fromisoformat(wanted)
    except (TypeError, ValueError):
        return job.created_at  # type: ignore[no-any-return]
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(job.created_at, when)  # type: ignore[no-any-return]


def _status(
    job: Any,
    recs: Sequence[Any],
    attempts: Sequence[Any],
    events: dict[uuid.UUID, list[Any]],
) -> EmailStatus:
    provider = next((r.provider_name for r in recs if r.provider_name), None)
    sent_at = max((r.sent_at for r in recs if r.sent_at), default=None)
    statuses = {r.status for r in recs}
    delivery = next((s.value for s in DELIVERY_ORDER if s in statuses), None)
    request = (job.data or {}).get("request", {})
    status = EMAIL_STATUS.get(job.status, job.status)
    if recs and statuses == {RecordStatus.SUPPRESSED}:
        status = "suppressed"  # every recipient was on the suppression list
    return EmailStatus(
        id=str(job.id),
        status=status,
        job_status=job.status,
        queue_id=str(job.queue_id) if job.queue_id else None,
        provider=provider,
        attempts=job.attempts,
        max_attempts=job.max_attempts,
        # the records hold the rendered subject of templated and bulk mail
        subject=next((r.subject for r in recs if r.subject), request.get("subject", "")),
        created_at=job.created_at,
        scheduled_at=_scheduled_for(job, request),
        sent_at=sent_at,
        failed_at=job.failed_at,
        error=job.error,
        delivery_status=delivery,
        recipients=[
            RecipientStatus(
                id=str(r.id),
                email=r.recipient_email,
                type=r.recipient_type,
                status=r.status,
                message_id=r.message_id,
                provider=r.provider_name,
                sent_at=r.sent_at,
                suppressed=(r.metadata or {}).get("suppressed")
                if r.status == RecordStatus.SUPPRESSED
                else None,
                delivered_at=r.delivered_at,
                bounced_at=r.bounced_at,
                opened_at=r.opened_at,
                clicked_at=r.clicked_at,
                summary=tracking_events.summarize(events.get(r.id, []))
                if events.get(r.id)
                else None,
            )
            for r in recs
        ],
        tracking_events=[
            {**tracking_events.event_json(e), "recordId": str(r.id), "recipient": r.recipient_email}
            for r in recs
            for e in events.get(r.id, [])
        ],
        attempt_log=_attempt_log(attempts),
    )


#: outcomes that spent an attempt; ``deferred`` and ``released`` gave theirs back
TRIED = frozenset({"sent", "retry", "failed"})


def _attempt_log(attempts: Sequence[Any]) -> list[AttemptPublic]:
    """The log in time order, attempts numbered 1, 2, ... over the email's whole life.

    The stored number restarts when failed jobs are retried with a fresh budget, so
    it is not shown; an attempt given back (``deferred``, ``released``) carries the
    number of the attempt that will be made instead.
    """
    log = []
    tried = 0
    for a in attempts:
        log.append(
            AttemptPublic(
                attempt=tried + 1,
                provider=a.provider_name,
                outcome=a.outcome,
                error_code=a.error_code,
                error=a.error_message,
                started_at=a.started_at,
                finished_at=a.finished_at,
                duration_ms=None if a.duration_ms is None else round(a.duration_ms, 1),
            )
        )
        tried += a.outcome in TRIED
    return log
