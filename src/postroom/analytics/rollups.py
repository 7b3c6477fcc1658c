"""Rollups: each closed UTC day (``email_analytics_daily``) and hour
(``email_analytics_hourly``) summed once from the live tables.

A period is *closed* once ``GRACE`` has passed after its end (late provider events
dated in it have arrived by then). Only closed periods are rolled: the hours still
within ``GRACE`` are counted from the live tables on every read, so a figure is
right the moment its row is written. Rolling periods replaces their rows in one
transaction and records them (``email_analytics_days`` / ``_hours``); rolling is a
pure function of the raw rows, so it is idempotent and cannot drift the way
counters bumped by each worker can (a lost or doubled increment stays wrong
forever). Concurrent rollers are serialised: a transaction-level advisory lock on
PostgreSQL, the single writer on SQLite; each re-checks inside the lock which
periods are missing.

The worker rolls the periods that closed recently ahead of any read
(``roll_closed``, every ``ROLL_PERIOD_S``), so a request normally only reads
rollups; a query or report still rolls the closed periods it needs that are not
rolled yet (no worker running, an old window) before reading them. ``rebuild``
re-rolls a range (after a restore, late events, or data corrected by hand).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.analytics.figures import Filters
from postroom.analytics.queries import Granularity, count_live, daily, hourly
from postroom.db.engine import reader
from postroom.db.models import EmailAnalyticsDay, EmailAnalyticsHour

rolled_days = cast(Table, EmailAnalyticsDay.__table__)
rolled_hours = cast(Table, EmailAnalyticsHour.__table__)

#: how long after a period's end its figures may still change
GRACE = timedelta(hours=2)
#: how often the worker rolls the periods that closed since (``roll_closed``)
ROLL_PERIOD_S = 60.0
#: how far back ``roll_closed`` looks for closed days and hours not rolled yet
ROLL_AHEAD_DAYS = 7
ROLL_AHEAD_HOURS = 48
#: rollup rows written by one roll after which PostgreSQL's statistics are refreshed
ANALYZE_AFTER = 10_000
#: arbitrary constant: the advisory lock key of rollup writers
_LOCK_KEY = 7_210_101


@dataclass(frozen=True)
class Grain:
    name: Granularity
    table: Table
    marker: Table
    column: str
    step: timedelta

    def start_of(self, period: Any) -> datetime:
        return midnight(period) if self.name == "day" else cast(datetime, period)

    def period_of(self, bucket: datetime) -> Any:
        return bucket.date() if self.name == "day" else bucket


DAY = Grain("day", daily, rolled_days, "date", timedelta(days=1))
HOUR = Grain("hour", hourly, rolled_hours, "hour", timedelta(hours=1))


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def floor_hour(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def closed_until(now: datetime) -> date:
    """Days before the returned one are closed."""
    return (now - GRACE).astimezone(UTC).date()


def closed_hours_until(now: datetime) -> datetime:
    """Hours starting before the returned instant are closed."""
    return floor_hour(now - GRACE)


def periods(grain: Grain, first: Any, last: Any) -> list[Any]:
    """The periods from ``first`` to ``last`` (exclusive)."""
    out, at = [], first
    while at < last:
        out.append(at)
        at = at + grain.step
    return out


async def _lock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


async def _missing(
    conn: AsyncConnection, grain: Grain, wanted: Sequence[Any], now: datetime
) -> list[Any]:
    """The periods of ``wanted`` to roll: never rolled, or rolled before they closed
    (by an older version that rolled open hours provisionally) and closed since."""
    col = grain.marker.c[grain.column]
    stmt = select(col, grain.marker.c.rolled_at).where(
        col >= wanted[0], col < wanted[-1] + grain.step
    )
    rolled = {r[0]: r[1] for r in await conn.execute(stmt)}
    out = []
    for p in wanted:
        at = rolled.get(p)
        closes = grain.start_of(p) + grain.step + GRACE
        if at is None or at < closes <= now:
            out.append(p)
    return out


async def _roll(conn: AsyncConnection, grain: Grain, todo: list[Any], now: datetime) -> None:
    """Replace the rollup rows of the periods ``todo`` (in the caller's locked transaction)."""
    if not todo:
        return
    start, end = grain.start_of(min(todo)), grain.start_of(max(todo)) + grain.step
    groups = await count_live(conn, start, end, grain.name, Filters())
    wanted = set(todo)
    col = grain.column
    await conn.execute(delete(grain.table).where(grain.table.c[col].in_(todo)))
    await conn.execute(delete(grain.marker).where(grain.marker.c[col].in_(todo)))
    rows: list[dict[str, Any]] = []
    for key, counts in groups.groups.items():
        assert key.bucket is not None
        period = grain.period_of(key.bucket)
        if period not in wanted:
            continue
        rows.append(
            {
                "id": uuid.uuid4(),
                col: period,
                "provider_id": key.provider_id,
                "queue_id": key.queue_id,
                "type": key.type,
                "tag": key.tag,
                "template_id": key.template_id,
                "created_at": now,
                **{f"total_{name}": n for name, n in counts.as_dict().items()},
            }
        )
    if rows:
        await conn.execute(insert(grain.table), rows)
    await conn.execute(insert(grain.marker), [{col: p, "rolled_at": now} for p in todo])
    if len(rows) >= ANALYZE_AFTER and conn.dialect.name == "postgresql":
        # a large roll (a month's hours on first use) is read at once: plan those
        # reads with its rows counted, not after autovacuum gets round to it
        await conn.execute(text(f"ANALYZE {grain.table.name}"))
        await conn.execute(text(f"ANALYZE {grain.marker.name}"))


async def _ensure(engine: AsyncEngine, grain: Grain, wanted: list[Any], now: datetime) -> None:
    if not wanted:
        return
    async with reader(engine).connect() as conn:
        if not await _missing(conn, grain, wanted, now):
            return
    async with engine.begin() as conn:
        await _lock(conn)
        await _roll(conn, grain, await _missing(conn, grain, wanted, now), now)


async def ensure_rolled(engine: AsyncEngine, first: date, last: date, now: datetime) -> None:
    """Roll the closed days in ``[first, last)`` that are not rolled up yet."""
    await _ensure(engine, DAY, periods(DAY, first, min(last, closed_until(now))), now)


async def ensure_hours_rolled(
    engine: AsyncEngine, first: datetime, last: datetime, now: datetime
) -> None:
    """Roll the closed hours in ``[first, last)`` that are not rolled up yet."""
    await _ensure(engine, HOUR, periods(HOUR, first, min(last, closed_hours_until(now))), now)


async def roll_closed(engine: AsyncEngine, now: datetime) -> None:
    """Roll the days and hours that closed in the last ``ROLL_AHEAD_DAYS`` /
    ``ROLL_AHEAD_HOURS`` and are not rolled yet (the worker's periodic step): the
    reads that follow find them rolled. One cheap look-up each when nothing is due."""
    last_day = closed_until(now)
    await ensure_rolled(engine, last_day - timedelta(days=ROLL_AHEAD_DAYS), last_day, now)
    last_hour = closed_hours_until(now)
    await ensure_hours_rolled(engine, last_hour - timedelta(hours=ROLL_AHEAD_HOURS), last_hour, now)


async def rebuild(engine: AsyncEngine, first: date, last: date, now: datetime) -> int:
    """Re-roll every closed day in ``[first, last)``, and its closed hours; returns how
    many days."""
    days = periods(DAY, first, min(last, closed_until(now)))
    # a day at a time: bounded transactions on large ranges
    for day in days:
        hours = periods(HOUR, midnight(day), midnight(day) + DAY.step)
        async with engine.begin() as conn:
            await _lock(conn)
            await _roll(conn, DAY, [day], now)
            await _roll(conn, HOUR, hours, now)
    # today's closed hours too
    end = midnight(min(last, closed_until(now) + DAY.step))
    hours = periods(
        HOUR, max(midnight(closed_until(now)), midnight(first)), min(end, closed_hours_until(now))
    )
    if hours:
        async with engine.begin() as conn:
            await _lock(conn)
            await _roll(conn, HOUR, hours, now)
    return len(days)


async def rolled_count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(rolled_days))).scalar_one())
