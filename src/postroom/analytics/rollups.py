"""``email_analytics_daily``: each closed UTC day summed once from the live tables.

A day is *closed* once ``GRACE`` has passed after its end (late provider events
dated that day have arrived by then). Rolling a day replaces its rows in one
transaction and records it in ``email_analytics_days``; rolling is a pure function
of the raw rows, so it is idempotent and cannot drift the way counters bumped by
each worker can (a lost or doubled increment stays wrong forever). Concurrent
rollers are serialised: a transaction-level advisory lock on PostgreSQL, the
single writer on SQLite; each re-checks inside the lock which days are missing.

Days are rolled on demand: an analytics query or report over closed days rolls
those not rolled yet before reading them. ``rebuild`` re-rolls a range (after a
restore, or data corrected by hand).
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.analytics.figures import Filters
from postroom.analytics.queries import count_live, daily
from postroom.db.engine import reader
from postroom.db.models import EmailAnalyticsDay

rolled_days = cast(Table, EmailAnalyticsDay.__table__)

#: how long after midnight UTC a day's figures may still change
GRACE = timedelta(hours=2)
#: arbitrary constant: the advisory lock key of rollup writers
_LOCK_KEY = 7_210_101


def midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def closed_until(now: datetime) -> date:
    """Days before the returned one are closed."""
    return (now - GRACE).astimezone(UTC).date()


async def _lock(conn: AsyncConnection) -> None:
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})


async def _missing(conn: AsyncConnection, first: date, last: date) -> list[date]:
    stmt = select(rolled_days.c.date).where(rolled_days.c.date >= first, rolled_days.c.date < last)
    have = set((await conn.execute(stmt)).scalars())
    days = [first + timedelta(days=i) for i in range((last - first).days)]
    return [d for d in days if d not in have]


async def _roll(conn: AsyncConnection, days: list[date], now: datetime) -> None:
    """Replace the rollup rows of ``days`` (inside the caller's locked transaction)."""
    if not days:
        return
    groups = await count_live(
        conn, midnight(min(days)), midnight(max(days) + timedelta(days=1)), "day", Filters()
    )
    wanted = set(days)
    await conn.execute(delete(daily).where(daily.c.date.in_(days)))
    await conn.execute(delete(rolled_days).where(rolled_days.c.date.in_(days)))
    rows: list[dict[str, Any]] = []
    for key, counts in groups.groups.items():
        assert key.bucket is not None
        day = key.bucket.date()
        if day not in wanted:
            continue
        rows.append(
            {
                "id": uuid.uuid4(),
                "date": day,
                "provider_id": key.provider_id,
                "queue_id": key.queue_id,
                "type": key.type,
                "tag": key.tag,
                "created_at": now,
                **{f"total_{name}": n for name, n in counts.as_dict().items()},
            }
        )
    if rows:
        await conn.execute(insert(daily), rows)
    await conn.execute(insert(rolled_days), [{"date": d, "rolled_at": now} for d in days])


async def ensure_rolled(engine: AsyncEngine, first: date, last: date, now: datetime) -> None:
    """Roll the closed days in ``[first, last)`` that are not rolled up yet."""
    last = min(last, closed_until(now))
    if first >= last:
        return
    async with reader(engine).connect() as conn:
        if not await _missing(conn, first, last):
            return
    async with engine.begin() as conn:
        await _lock(conn)
        await _roll(conn, await _missing(conn, first, last), now)


async def rebuild(engine: AsyncEngine, first: date, last: date, now: datetime) -> int:
    """Re-roll every closed day in ``[first, last)``; returns how many days."""
    last = min(last, closed_until(now))
    if first >= last:
        return 0
    days = [first + timedelta(days=i) for i in range((last - first).days)]
    # a day at a time: bounded transactions on large ranges
    for day in days:
        async with engine.begin() as conn:
            await _lock(conn)
            await _roll(conn, [day], now)
    return len(days)


async def rolled_count(conn: AsyncConnection) -> int:
    return int((await conn.execute(select(func.count()).select_from(rolled_days))).scalar_one())
