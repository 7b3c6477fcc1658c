"""Guardrails: pause a queue whose recent mail bounces or draws complaints too often.

Per queue, ``monitoring.guardrail`` may set ``maxBounceRate`` (default 0.05),
``maxComplaintRate`` (0.001), ``window`` (the last N sends looked at, 500),
``minSends`` (no verdict on fewer, 100) and ``enabled`` (true). A bounce is a
recipient with ``bounced_at`` (delivery tracking), a recipient a provider rejected
while accepting the message for others, or a job a provider rejected permanently;
a complaint is a ``complained`` record, or a complaint tracking event since the
window's oldest send (whichever count is larger: tracking may record both).

Workers run :func:`check` every ``PERIOD_S``. A trip pauses the queue (one UPDATE
guarded by ``paused = false``, so of several workers exactly one trips it), records
why in ``monitoring.guardrailTrip`` (shown by the queue status) and logs a warning.
Resuming is the ordinary, deliberate ``POST /queues/{queue}/resume``; the next
verdict then looks only at sends after the trip, so the queue is not paused again
for the mail that caused the first trip.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, case, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.analytics.queries import COMPLAINT_EVENTS, events, jobs, records, tracking
from postroom.db.engine import reader
from postroom.db.models import EmailJobAttempt, EmailQueue
from postroom.types import JobStatus, RecordStatus

log = logging.getLogger(__name__)
queues = cast(Table, EmailQueue.__table__)
attempts = cast(Table, EmailJobAttempt.__table__)

PERIOD_S = 30.0
DEFAULTS: dict[str, Any] = {
    "enabled": True,
    "maxBounceRate": 0.05,
    "maxComplaintRate": 0.001,
    "window": 500,
    "minSends": 100,
}
#: the bounds PUT /config checks
BOUNDS: dict[str, tuple[float, float]] = {
    "maxBounceRate": (0.0, 1.0),
    "maxComplaintRate": (0.0, 1.0),
    "window": (1, 100_000),
    "minSends": (1, 100_000),
}
REJECTED = "provider-rejected"


def settings_of(monitoring: Any) -> dict[str, Any]:
    raw = (monitoring or {}).get("guardrail") if isinstance(monitoring, dict) else None
    return {**DEFAULTS, **(raw if isinstance(raw, dict) else {})}


def _parse(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) else None


async def rates(
    conn: AsyncConnection,
    queue_id: Any,
    window: int,
    since: datetime | None,
    *,
    provider_id: Any = None,
) -> tuple[int, int, int]:
    """(sends, bounces, complaints) over the last ``window`` sends after ``since`` of a
    queue, or of a provider when ``provider_id`` is given (``queue_id`` is then None)."""
    owner = (
        records.c.provider_id == provider_id
        if provider_id is not None
        else records.c.queue_id == queue_id
    )
    bounced = or_(records.c.bounced_at.is_not(None), records.c.status == RecordStatus.FAILED)
    recent = (
        select(
            records.c.sent_at,
            case((bounced, 1), else_=0).label("bounced"),
            case((records.c.status == RecordStatus.COMPLAINED, 1), else_=0).label("complained"),
        )
        .where(owner, records.c.sent_at.is_not(None))
        .order_by(records.c.sent_at.desc())
        .limit(window)
    )
    if since is not None:
        recent = recent.where(records.c.sent_at > since)
    sub = recent.subquery()
    row = (
        await conn.execute(
            select(
                func.count(),
                func.coalesce(func.sum(sub.c.bounced), 0),
                func.coalesce(func.sum(sub.c.complained), 0),
                func.min(sub.c.sent_at),
            )
        )
    ).one()
    sends, bounces, complaints, oldest = int(row[0]), int(row[1]), int(row[2]), row[3]
    # whole messages a provider refused for good since the window began
    start = oldest if oldest is not None and sends >= window else since
    # (driven by the failed jobs' time index; for a provider, the attempt log names it)
    failed_jobs = records.join(jobs, jobs.c.id == records.c.job_id)
    if provider_id is not None:
        failed_jobs = failed_jobs.join(attempts, attempts.c.job_id == jobs.c.id)
    rejected = (
        select(func.count())
        .select_from(failed_jobs)
        .where(jobs.c.status == JobStatus.FAILED, jobs.c.last_error_code == REJECTED)
    )
    if provider_id is not None:
        rejected = rejected.where(
            attempts.c.provider_id == provider_id,
            attempts.c.outcome == JobStatus.FAILED,
            attempts.c.error_code == REJECTED,
        )
    else:
        rejected = rejected.where(jobs.c.queue_id == queue_id)
    if start is not None:
        rejected = rejected.where(jobs.c.failed_at > start)
    refused = int((await conn.execute(rejected)).scalar_one())
    # complaint events since the window began (by the events' time index, not per send)
    by_event = (
        select(func.count(func.distinct(records.c.id)))
        .select_from(
            events.join(tracking, tracking.c.id == events.c.tracking_id).join(
                records, records.c.id == tracking.c.email_id
            )
        )
        .where(events.c.type.in_(COMPLAINT_EVENTS), owner)
    )
    if oldest is not None:
        by_event = by_event.where(events.c.timestamp >= oldest)
    if since is not None:
        by_event = by_event.where(events.c.timestamp > since)
    complaints = max(complaints, int((await conn.execute(by_event)).scalar_one()))
    return sends + refused, bounces + refused, complaints


def verdict(cfg: dict[str, Any], sends: int, bounces: int, complaints: int) -> list[str]:
    """Why ``cfg``'s thresholds are crossed (empty: they are not, or too few sends)."""
    if not cfg["enabled"] or sends < int(cfg["minSends"]) or sends == 0:
        return []
    bounce_rate, complaint_rate = bounces / sends, complaints / sends
    reasons = []
    if bounce_rate > float(cfg["maxBounceRate"]):
        reasons.append(f"bounce rate {bounce_rate:.2%} > {float(cfg['maxBounceRate']):.2%}")
    if complaint_rate > float(cfg["maxComplaintRate"]):
        reasons.append(
            f"complaint rate {complaint_rate:.2%} > {float(cfg['maxComplaintRate']):.2%}"
        )
    return reasons


def trip_record(
    now: datetime, reasons: list[str], sends: int, bounces: int, complaints: int
) -> dict[str, Any]:
    return {
        "at": now.isoformat(),
        "reason": f"{'; '.join(reasons)} over the last {sends} sends",
        "bounceRate": round(bounces / sends, 6),
        "complaintRate": round(complaints / sends, 6),
        "sends": sends,
    }


async def tripped(
    rows: Sequence[Any],
    now: datetime,
    count: Callable[[Any, int, datetime | None], Awaitable[tuple[int, int, int]]],
) -> list[tuple[Any, dict[str, Any]]]:
    """The ``rows`` (queues or providers, with their ``monitoring``) whose guardrail
    trips now, each with its trip record. ``count(row, window, since)`` gives
    (sends, bounces, complaints) over the last ``window`` sends after ``since`` (the
    last trip: what came before it was judged already)."""
    found = []
    for row in rows:
        cfg = settings_of(row.monitoring)
        if not cfg["enabled"]:
            continue
        trip = (row.monitoring or {}).get("guardrailTrip") or {}
        sends, bounces, complaints = await count(row, int(cfg["window"]), _parse(trip.get("at")))
        reasons = verdict(cfg, sends, bounces, complaints)
        if reasons:
            found.append((row, trip_record(now, reasons, sends, bounces, complaints)))
    return found


async def check(engine: AsyncEngine, now: datetime) -> list[str]:
    """Pause every unpaused queue over its thresholds; returns the names paused."""
    async with reader(engine).connect() as conn:
        rows = (
            await conn.execute(
                select(queues.c.id, queues.c.name, queues.c.monitoring).where(
                    queues.c.paused.is_(False)
                )
            )
        ).all()
        verdicts = await tripped(
            rows, now, lambda row, window, since: rates(conn, row.id, window, since)
        )
    paused = []
    for row, record in verdicts:
        monitoring = {**(row.monitoring or {}), "guardrailTrip": record}
        async with engine.begin() as conn:
            result = await conn.execute(
                update(queues)
                .where(and_(queues.c.id == row.id, queues.c.paused.is_(False)))
                .values(paused=True, monitoring=monitoring, updated_at=now)
            )
        if result.rowcount:
            log.warning("queue %s paused by its guardrail: %s", row.name, record["reason"])
            paused.append(row.name)
    return paused
