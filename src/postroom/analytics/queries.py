"""Counting the figures from the live tables and reading the daily rollups.

Each figure is counted on the UTC period its own timestamp falls in (event-time
attribution): a message sent on Monday and opened on Tuesday adds to Monday's
``sent`` and Tuesday's ``opened``, so a closed period never changes as events land.

- sent: ``email_records.sent_at`` (a provider accepted the message for the recipient);
- delivered: ``delivered_at`` (first event per recipient, written by delivery tracking);
- opened, clicked: ``opened_any_at``, ``clicked_any_at`` (first open or click of any
  kind, machine-made ones included: privacy proxies, link scanners);
- human_opened, human_clicked: ``opened_at``, ``clicked_at`` (first open or click a
  person made: tracking sets them only for events not flagged ``machine``);
- bounced: ``bounced_at``, plus recipients a provider rejected while accepting the
  message for others (``failed`` with ``sent_at`` but no ``bounced_at``);
- complained, unsubscribed: ``email_tracking_events`` of those types;
- failed: recipients of jobs that failed for good, at the job's ``failed_at``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time
from typing import Any, Literal, cast

from sqlalchemy import ColumnElement, FromClause, Select, Table, and_, func, literal, select
from sqlalchemy.ext.asyncio import AsyncConnection

from postroom.analytics.figures import DIMS, FIGURES, Counts, Filters, Key
from postroom.analytics.figures import Table as Groups
from postroom.db.models import (
    EmailAnalyticsDaily,
    EmailAnalyticsHourly,
    EmailBulk,
    EmailJob,
    EmailRecord,
    EmailTracking,
    EmailTrackingEvent,
)
from postroom.types import RecordStatus

Granularity = Literal["hour", "day"]

records = cast(Table, EmailRecord.__table__)
jobs = cast(Table, EmailJob.__table__)
tracking = cast(Table, EmailTracking.__table__)
events = cast(Table, EmailTrackingEvent.__table__)
daily = cast(Table, EmailAnalyticsDaily.__table__)
hourly = cast(Table, EmailAnalyticsHourly.__table__)
bulks = cast(Table, EmailBulk.__table__)

#: tracking event types counted as complaints and unsubscribes
COMPLAINT_EVENTS = ("complained", "complaint")
UNSUBSCRIBE_EVENTS = ("unsubscribed", "unsubscribe")

#: a message's campaign tag: its first tag (a bulk send's are in its shared part)
TAG = func.coalesce(
    jobs.c.data[("request", "tags", 0)].as_string(),
    bulks.c.request[("tags", 0)].as_string(),
)
#: the id of the template a message was rendered from (pinned when it was queued)
TEMPLATE = func.coalesce(
    jobs.c.data[("request", "templatePin", "id")].as_string(),
    bulks.c.request[("templatePin", "id")].as_string(),
)


def _with_job(source: FromClause) -> FromClause:
    return source.outerjoin(jobs, jobs.c.id == records.c.job_id).outerjoin(
        bulks, bulks.c.id == records.c.bulk_id
    )


def _sources() -> Iterator[tuple[str, Any, FromClause, ColumnElement[bool] | None]]:
    """(figure, timestamp column, from clause, extra condition) per counted figure."""
    with_job = _with_job(records)
    yield "sent", records.c.sent_at, with_job, None
    yield "delivered", records.c.delivered_at, with_job, None
    yield "bounced", records.c.bounced_at, with_job, None
    rejected = and_(records.c.status == RecordStatus.FAILED, records.c.bounced_at.is_(None))
    yield "bounced", records.c.sent_at, with_job, rejected
    yield "opened", records.c.opened_any_at, with_job, None
    yield "clicked", records.c.clicked_any_at, with_job, None
    yield "human_opened", records.c.opened_at, with_job, None
    yield "human_clicked", records.c.clicked_at, with_job, None
    failed_job = records.join(jobs, jobs.c.id == records.c.job_id).outerjoin(
        bulks, bulks.c.id == records.c.bulk_id
    )
    yield "failed", jobs.c.failed_at, failed_job, records.c.status == RecordStatus.FAILED
    via_tracking = _with_job(
        events.join(tracking, tracking.c.id == events.c.tracking_id).join(
            records, records.c.id == tracking.c.email_id
        )
    )
    yield "complained", events.c.timestamp, via_tracking, events.c.type.in_(COMPLAINT_EVENTS)
    yield "unsubscribed", events.c.timestamp, via_tracking, events.c.type.in_(UNSUBSCRIBE_EVENTS)


def bucket_expr(dialect: str, ts: Any, granularity: Granularity | None) -> Any:
    """The start of the UTC hour or day ``ts`` falls in (NULL when not split by time)."""
    if granularity is None:
        return literal(None)
    if dialect == "postgresql":
        return func.date_trunc(granularity, func.timezone("UTC", ts))
    fmt = "%Y-%m-%d 00:00:00" if granularity == "day" else "%Y-%m-%d %H:00:00"
    return func.strftime(fmt, ts)


def as_bucket(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time())
    if value.tzinfo is None:
        return cast(datetime, value.replace(tzinfo=UTC))
    return cast(datetime, value.astimezone(UTC))


def _uuid(value: Any) -> uuid.UUID | None:
    """A template id as stored in a job (a string); None if it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _filtered(stmt: Select[Any], filters: Filters, table: Table) -> Select[Any]:
    """``filters`` on the live tables (``table`` is ``records``) or a rollup table."""
    live = table is records
    provider_col, queue_col = table.c.provider_id, table.c.queue_id
    tag = TAG if live else table.c.tag
    if filters.template_id is not None:
        if live:
            stmt = stmt.where(TEMPLATE == str(filters.template_id))
        else:
            stmt = stmt.where(table.c.template_id == filters.template_id)
    type_ = table.c.type
    if filters.provider_id is not None:
        stmt = stmt.where(provider_col == filters.provider_id)
    if filters.queue_id is not None:
        stmt = stmt.where(queue_col == filters.queue_id)
    if filters.type is not None:
        stmt = stmt.where(type_ == filters.type)
    if filters.tag is not None:
        stmt = stmt.where(tag == filters.tag)
    return stmt


def _live_statements(
    dialect: str,
    start: datetime,
    end: datetime,
    granularity: Granularity | None,
    filters: Filters,
) -> list[tuple[str, Select[Any]]]:
    out = []
    for figure, ts, source, extra in _sources():
        bucket = bucket_expr(dialect, ts, granularity).label("bucket")
        dims = (
            records.c.provider_id,
            records.c.queue_id,
            records.c.type,
            TAG.label("tag"),
            TEMPLATE.label("template_id"),
        )
        stmt = (
            select(bucket, *dims, func.count().label("n"))
            .select_from(source)
            .where(ts >= start, ts < end)
            .group_by(bucket, *dims)
        )
        if extra is not None:
            stmt = stmt.where(extra)
        out.append((figure, _filtered(stmt, filters, records)))
    return out


def _add_rows(out: Groups, figure: str, rows: Any) -> None:
    for row in rows:
        template = row.template_id
        key = Key(
            as_bucket(row.bucket),
            row.provider_id,
            row.queue_id,
            row.type,
            row.tag,
            _uuid(template) if template is not None else None,
        )
        out.bump(key, figure, int(row.n))


async def count_live(
    conn: AsyncConnection,
    start: datetime,
    end: datetime,
    granularity: Granularity | None,
    filters: Filters,
) -> Groups:
    """Every figure in ``[start, end)`` from the live tables, grouped by period and
    dimensions."""
    out = Groups()
    for figure, stmt in _live_statements(conn.dialect.name, start, end, granularity, filters):
        _add_rows(out, figure, await conn.execute(stmt))
    return out


async def read_rollups(
    conn: AsyncConnection,
    first: date | datetime,
    last: date | datetime,
    dims: frozenset[str],
    filters: Filters,
    *,
    table: Table = daily,
    by_day: bool = True,
) -> Groups:
    """The rolled-up figures of the periods ``first`` to ``last`` (exclusive) of a
    rollup ``table`` (``daily`` or ``hourly``), summed in SQL per ``dims`` (a subset
    of ``DIMS``); an hourly "bucket" is the hour, or its day when ``by_day``."""
    out = Groups()
    period = table.c.date if table is daily else table.c.hour
    cols = [period.label("period") if d == "bucket" else table.c[d] for d in DIMS if d in dims]
    sums = [func.sum(table.c[f"total_{name}"]).label(name) for name in FIGURES]
    stmt = select(*cols, *sums).where(period >= first, period < last)
    if cols:
        stmt = stmt.group_by(*cols)
    stmt = _filtered(stmt, filters, table)
    for row in await conn.execute(stmt):
        m = row._mapping
        counts = Counts(*(int(m[name] or 0) for name in FIGURES))
        if not cols and not any(counts.as_dict().values()):
            continue  # no rows at all: SUM over nothing
        bucket = as_bucket(m["period"]) if "bucket" in dims else None
        if bucket is not None and by_day:
            bucket = bucket.replace(hour=0)
        key = Key(
            bucket,
            m["provider_id"] if "provider_id" in dims else None,
            m["queue_id"] if "queue_id" in dims else None,
            m["type"] if "type" in dims else None,
            m["tag"] if "tag" in dims else None,
            m["template_id"] if "template_id" in dims else None,
        )
        out.groups.setdefault(key, Counts()).add(counts)
    return out
