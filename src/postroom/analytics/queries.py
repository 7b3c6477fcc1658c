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

import functools
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal, cast

from sqlalchemy import (
    ColumnElement,
    FromClause,
    Select,
    Table,
    and_,
    bindparam,
    func,
    literal,
    literal_column,
    or_,
    select,
    text,
    tuple_,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from postroom.analytics.figures import DIMS, FIGURES, Counts, Filters, Key
from postroom.analytics.figures import Table as Groups
from postroom.db.models import (
    EmailAnalyticsDaily,
    EmailAnalyticsHourly,
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

#: spans counted live without parallel workers (the open hours: the 2 hours of
#: ``rollups.GRACE`` and the current one; partial hours)
SMALL_SPAN = timedelta(hours=4)
#: spans across at most this many periods are counted a period at a time
SPLIT_PERIODS = 4
#: tracking event types counted as complaints and unsubscribes
COMPLAINT_EVENTS = ("complained", "complaint")
UNSUBSCRIBE_EVENTS = ("unsubscribed", "unsubscribe")


#: a message's campaign tag (its first tag) and the template it was rendered from,
#: copied onto each recipient record when queued
TAG = records.c.tag
TEMPLATE = records.c.template_id


def _sources() -> Iterator[tuple[str, Any, FromClause, ColumnElement[bool] | None]]:
    """(figure, timestamp column, from clause, extra condition) per counted figure."""
    yield "sent", records.c.sent_at, records, None
    yield "delivered", records.c.delivered_at, records, None
    yield "bounced", records.c.bounced_at, records, None
    rejected = and_(records.c.status == RecordStatus.FAILED, records.c.bounced_at.is_(None))
    yield "bounced", records.c.sent_at, records, rejected
    yield "opened", records.c.opened_any_at, records, None
    yield "clicked", records.c.clicked_any_at, records, None
    yield "human_opened", records.c.opened_at, records, None
    yield "human_clicked", records.c.clicked_at, records, None
    failed_job = records.join(jobs, jobs.c.id == records.c.job_id)
    yield "failed", jobs.c.failed_at, failed_job, records.c.status == RecordStatus.FAILED
    via_tracking = events.join(tracking, tracking.c.id == events.c.tracking_id).join(
        records, records.c.id == tracking.c.email_id
    )
    yield "complained", events.c.timestamp, via_tracking, events.c.type.in_(COMPLAINT_EVENTS)
    yield "unsubscribed", events.c.timestamp, via_tracking, events.c.type.in_(UNSUBSCRIBE_EVENTS)


def bucket_expr(dialect: str, ts: Any, granularity: Granularity | None) -> Any:
    """The start of the UTC hour or day ``ts`` falls in (NULL when not split by time)."""
    if granularity is None:
        return literal(None)
    if dialect == "postgresql":
        # constants as literals: GROUP BY must see the same expression as the SELECT
        return func.date_trunc(
            literal_column(f"'{granularity}'"), func.timezone(literal_column("'UTC'"), ts)
        )
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


def filtered(stmt: Select[Any], filters: Filters, table: Table) -> Select[Any]:
    """``filters`` on the live tables (``table`` is ``records``) or a rollup table."""
    live = table is records
    provider_col, queue_col = table.c.provider_id, table.c.queue_id
    tag = TAG if live else table.c.tag
    if filters.template_id is not None:
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


def live_statement(
    dialect: str,
    start: datetime,
    end: datetime,
    granularity: Granularity | None,
    filters: Filters,
) -> Select[Any]:
    """One statement counting every figure in ``[start, end)``: a branch per figure
    (each driven by its timestamp's index) under UNION ALL, grouped once by period
    and dimensions with a column per figure (``FIGURES`` order), so a group is one
    row, not one per figure."""
    branches = []
    for figure, ts, source, extra in _sources():
        stmt = (
            select(
                literal(FIGURES.index(figure)).label("figure"),
                bucket_expr(dialect, ts, granularity).label("bucket"),
                records.c.provider_id,
                records.c.queue_id,
                records.c.type,
                TAG.label("tag"),
                TEMPLATE.label("template_id"),
            )
            .select_from(source)
            .where(ts >= start, ts < end)
        )
        if extra is not None:
            stmt = stmt.where(extra)
        branches.append(filtered(stmt, filters, records))
    u = union_all(*branches).subquery()
    cols = [u.c.bucket, u.c.provider_id, u.c.queue_id, u.c.type, u.c.tag, u.c.template_id]
    counts = [func.count().filter(u.c.figure == i).label(f) for i, f in enumerate(FIGURES)]
    return select(*cols, *counts).group_by(*cols)


@functools.lru_cache(maxsize=64)
def one_bucket_statement(filters: Filters) -> Select[Any]:
    """Every figure in ``[start, end)``, for a span inside one period (or not split by
    time), grouped by the dimensions with a column per figure (``FIGURES`` order):
    the recipient records with a timestamp in the span are read once (the timestamp
    indexes ORed) and each of their figures counted with a filter; the figures of
    jobs and tracking events are a branch each. The span is bound at execution
    (``span_start``, ``span_end``), so the statement is built once per ``filters``."""
    start = bindparam("span_start", type_=records.c.sent_at.type)
    end = bindparam("span_end", type_=records.c.sent_at.type)
    dims = [
        records.c.provider_id,
        records.c.queue_id,
        records.c.type,
        TAG.label("tag"),
        TEMPLATE.label("template_id"),
    ]
    on_records: dict[str, list[Any]] = {}
    ranges: list[Any] = []
    others: list[tuple[str, Any, FromClause, ColumnElement[bool] | None]] = []
    for figure, ts, source, extra in _sources():
        in_span = and_(ts >= start, ts < end)
        if source is records:
            cond = in_span if extra is None else and_(in_span, extra)
            on_records.setdefault(figure, []).append(func.count().filter(cond))
            ranges.append(in_span)
        else:
            others.append((figure, ts, source, extra))

    def column(figure: str, counts: list[Any]) -> Any:
        total = counts[0]
        for more in counts[1:]:
            total = total + more
        return total.label(figure)

    zero = literal(0)
    branches = [
        filtered(
            select(
                *dims,
                *(column(f, on_records[f]) if f in on_records else zero.label(f) for f in FIGURES),
            )
            .where(or_(*ranges))
            .group_by(*dims),
            filters,
            records,
        )
    ]
    for figure, ts, source, extra in others:
        stmt = (
            select(*dims, *((func.count() if f == figure else zero).label(f) for f in FIGURES))
            .select_from(source)
            .where(ts >= start, ts < end)
            .group_by(*dims)
        )
        if extra is not None:
            stmt = stmt.where(extra)
        branches.append(filtered(stmt, filters, records))
    u = union_all(*branches).subquery()
    cols = [u.c.provider_id, u.c.queue_id, u.c.type, u.c.tag, u.c.template_id]
    return select(*cols, *(func.sum(u.c[f]).label(f) for f in FIGURES)).group_by(*cols)


def _floor(at: datetime, granularity: Granularity) -> datetime:
    at = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return at.replace(hour=0) if granularity == "day" else at


async def count_live(
    conn: AsyncConnection,
    start: datetime,
    end: datetime,
    granularity: Granularity | None,
    filters: Filters,
) -> Groups:
    """Every figure in ``[start, end)`` from the live tables, grouped by period and
    dimensions. A span inside one period (the open hours of today, by day; any span
    not split by time) or across at most ``SPLIT_PERIODS`` is counted period by
    period with ``one_bucket_statement``; longer ones (rolling many periods at once)
    with ``live_statement``."""
    out = Groups()
    if conn.dialect.name == "postgresql" and end - start <= SMALL_SPAN:
        # a few thousand rows: starting parallel workers costs more than it saves
        await conn.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    groups = out.groups
    if granularity is None:
        pieces: list[tuple[datetime, datetime, datetime | None]] = [(start, end, None)]
    else:
        step = timedelta(days=1) if granularity == "day" else timedelta(hours=1)
        first = _floor(start, granularity)
        pieces = []
        at = first
        while at < end and len(pieces) <= SPLIT_PERIODS:
            pieces.append((max(at, start), min(at + step, end), at))
            at += step
    if len(pieces) <= SPLIT_PERIODS:
        for a, b, bucket in pieces:
            stmt = one_bucket_statement(filters)
            for row in await conn.execute(stmt, {"span_start": a, "span_end": b}):
                groups[Key(bucket, *row[:5])] = Counts(*map(int, row[5:]))
        return out
    stmt = live_statement(conn.dialect.name, start, end, granularity, filters)
    for row in await conn.execute(stmt):
        key = Key(as_bucket(row[0]), *row[1:6])
        groups[key] = Counts(*row[6:])  # one row per group: grouped by the whole key
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
    (out,) = await read_rollup_sets(conn, first, last, [dims], filters, table=table, by_day=by_day)
    return out


async def read_rollup_sets(
    conn: AsyncConnection,
    first: date | datetime,
    last: date | datetime,
    dimsets: Sequence[frozenset[str]],
    filters: Filters,
    *,
    table: Table = daily,
    by_day: bool = True,
) -> list[Groups]:
    """``read_rollups`` once per set of ``dimsets``: on PostgreSQL in one statement
    (``GROUPING SETS``), elsewhere one statement per set."""
    dialect = conn.dialect.name
    period = table.c.date if table is daily else table.c.hour
    if table is hourly and by_day:  # summed per day in SQL, not per hour in Python
        period = bucket_expr(dialect, period, "day")
    exprs = {d: period if d == "bucket" else table.c[d] for d in DIMS}
    sums = [func.coalesce(func.sum(table.c[f"total_{n}"]), 0).label(n) for n in FIGURES]
    where = (
        (table.c.date if table is daily else table.c.hour) >= first,
        (table.c.date if table is daily else table.c.hour) < last,
    )
    if dialect == "postgresql" and len(dimsets) > 1 and all(dimsets):
        used = [d for d in DIMS if any(d in ds for ds in dimsets)]
        flags = [func.grouping(exprs[d]).label(f"g_{d}") for d in used]
        sets = [tuple_(*(exprs[d] for d in DIMS if d in ds)) for ds in dimsets]
        stmt = (
            select(*(exprs[d].label(d) for d in used), *flags, *sums)
            .where(*where)
            .group_by(func.grouping_sets(*sets))
        )
        outs = {ds: Groups() for ds in dimsets}
        for row in await conn.execute(filtered(stmt, filters, table)):
            m = row._mapping
            ds = frozenset(d for d in used if m[f"g_{d}"] == 0)
            _add_rollup_row(outs[ds], m, ds)
        return [outs[ds] for ds in dimsets]
    out = []
    for dims in dimsets:
        cols = [exprs[d].label(d) for d in DIMS if d in dims]
        stmt = select(*cols, *sums).where(*where)
        if cols:
            stmt = stmt.group_by(*cols)
        groups = Groups()
        for row in await conn.execute(filtered(stmt, filters, table)):
            m = row._mapping
            if not cols and not any(m[n] for n in FIGURES):
                continue  # no rows at all: SUM over nothing
            _add_rollup_row(groups, m, dims)
        out.append(groups)
    return out


def _add_rollup_row(out: Groups, m: Any, dims: frozenset[str]) -> None:
    counts = Counts(*(int(m[name] or 0) for name in FIGURES))
    key = Key(
        as_bucket(m["bucket"]) if "bucket" in dims else None,
        m["provider_id"] if "provider_id" in dims else None,
        m["queue_id"] if "queue_id" in dims else None,
        m["type"] if "type" in dims else None,
        m["tag"] if "tag" in dims else None,
        m["template_id"] if "template_id" in dims else None,
    )
    out.groups.setdefault(key, Counts()).add(counts)
