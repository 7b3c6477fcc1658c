"""Daily rollups after concurrent workers equal a recount of the raw rows, and
concurrent rollers neither double nor lose a day."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
from sqlalchemy import func, select, update

from postroom.analytics.figures import DIMS, Counts, Filters, Key
from postroom.analytics.figures import Table as Groups
from postroom.analytics.queries import (
    as_bucket,
    count_live,
    daily,
    hourly,
    live_statement,
    read_rollups,
    records,
)
from postroom.analytics.rollups import (
    GRACE,
    HOUR,
    _roll,
    ensure_rolled,
    roll_closed,
    rolled_days,
    rolled_hours,
)
from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.analytics.conftest import DAY_A, TODAY, at
from tests.analytics.seed import Seeder
from tests.support.payloads import email as email_body
from tests.support.providers import add_provider, disable_all

SEND = "/api/system/email/send"
ANALYTICS = "/api/system/email/analytics"
DAY = datetime(2026, 3, 2, tzinfo=UTC)


async def test_rollups_equal_a_recount_after_concurrent_workers(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    await add_provider(
        postroom, name="a", type="fake", priority=1, config={"script": ["rejected"] * 5}
    )
    await add_provider(postroom, name="b", type="fake", priority=2)
    clock.set(DAY + timedelta(hours=9))
    bodies = [
        email_body(
            type=t, tags=[tag], to=[{"email": f"u{i}@example.com"}, {"email": f"v{i}@example.com"}]
        )
        for i, (t, tag) in enumerate(
            [("transactional", "welcome"), ("marketing", "promo"), ("notification", "alerts")] * 10
        )
    ]
    for body in bodies:
        response = await client.post(SEND, json=body)
        assert response.status_code == 202, response.text
    workers = [postroom.worker(), postroom.worker()]
    for w in workers:
        await w.router.refresh(force=True)
    try:
        await asyncio.gather(*(w.drain() for w in workers))
    finally:
        for w in workers:
            await w.aclose()
    assert sum(w.stats["claimed"] for w in workers) >= len(bodies)

    # the day closes; several readers roll it at once
    clock.set(DAY + timedelta(days=1) + GRACE)
    first, last = DAY.date(), DAY.date() + timedelta(days=1)
    await asyncio.gather(
        *(ensure_rolled(postroom.engine, first, last, clock.now()) for _ in range(4))
    )

    async with postroom.engine.connect() as conn:
        rolled = await read_rollups(conn, first, last, frozenset(DIMS), Filters())
        recount = await count_live(conn, DAY, DAY + timedelta(days=1), "day", Filters())
        n_days = (await conn.execute(select(func.count()).select_from(rolled_days))).scalar_one()
        n_rows = (await conn.execute(select(func.count()).select_from(daily))).scalar_one()
    assert rolled.groups == recount.groups
    assert n_days == 1
    assert n_rows == len(recount.groups)
    total_sent = sum(c.sent for c in recount.groups.values())
    assert total_sent == 2 * len(bodies)
    assert {k.tag for k in recount.groups} == {"welcome", "promo", "alerts"}


async def _markers(postroom: Postroom) -> dict[datetime, datetime]:
    async with postroom.engine.connect() as conn:
        rows = await conn.execute(select(rolled_hours.c.hour, rolled_hours.c.rolled_at))
        return {r.hour: r.rolled_at for r in rows}


async def test_an_open_hour_is_right_after_new_events_without_a_roll(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock, seeded: dict[str, Any]
) -> None:
    """Hours within the grace period are counted live on every read: a send, its
    delivery and open, and a complaint show at once, with the clock standing still
    and nothing rolled; once the hour closes the worker's roll matches a recount and
    later reads roll nothing."""
    params = {"from": "2026-01-10", "to": "2026-01-10"}

    async def summary() -> dict[str, int]:
        response = await client.get(ANALYTICS, params=params)
        assert response.status_code == 200, response.text
        return cast(dict[str, int], response.json()["summary"])

    before = await summary()
    assert max(await _markers(postroom)) == at(TODAY, 9)  # 10:00 onwards is open
    seeder = Seeder(postroom)
    (rid,) = await seeder.message(
        queue_id=seeded["queues"]["transactional"],
        provider_id=seeded["relay"],
        created=at(TODAY, 11, 10),
        recipients=[{"status": "sent", "sent_at": at(TODAY, 11, 10)}],
    )
    assert (await summary())["totalSent"] == before["totalSent"] + 1
    async with postroom.engine.begin() as conn:
        await conn.execute(
            update(records)
            .where(records.c.id == rid)
            .values(
                status="opened",
                delivered_at=at(TODAY, 11, 11),
                opened_any_at=at(TODAY, 11, 20),
                opened_at=at(TODAY, 11, 20),
            )
        )
    await seeder.event(rid, "complained", at(TODAY, 11, 40))
    after = await summary()
    for name, more in (
        ("totalSent", 1),
        ("totalDelivered", 1),
        ("totalOpened", 1),
        ("totalHumanOpened", 1),
        ("totalComplained", 1),
    ):
        assert after[name] == before[name] + more, name
    assert max(await _markers(postroom)) == at(TODAY, 9)  # reading rolled nothing open

    # 14:00: 11:00 has closed; the worker's step rolls 10:00 and 11:00 (and the
    # closed hours of the 48 before), not 12:00 or 13:00
    clock.set(at(TODAY, 14))
    await roll_closed(postroom.engine, clock.now())
    markers = await _markers(postroom)
    assert {h for h in markers if h >= TODAY} == {at(TODAY, h) for h in range(12)}
    assert min(markers) == at(TODAY, 12) - timedelta(hours=48)
    # ... and the days that closed in the week before (the 8th, the 9th)
    async with postroom.engine.connect() as conn:
        days = set((await conn.execute(select(rolled_days.c.date))).scalars())
        recount = await count_live(conn, TODAY, at(TODAY, 12), "hour", Filters())
        rolled = await read_rollups(
            conn, TODAY, at(TODAY, 12), frozenset(DIMS), Filters(), table=hourly, by_day=False
        )
    assert days >= {DAY_A.date(), DAY_A.date() + timedelta(days=1)}
    assert rolled.groups == recount.groups
    assert await summary() == after
    clock.advance(3600)
    await summary()
    assert {h: t for h, t in (await _markers(postroom)).items() if h in markers} == markers


async def test_an_hour_rolled_before_it_closed_is_rolled_again_once_closed(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock, seeded: dict[str, Any]
) -> None:
    """An open hour rolled early (as an older version did, provisionally) is read
    live while open and rolled again when it closes, so events after that roll count."""
    hour = at(TODAY, 11)
    async with postroom.engine.begin() as conn:
        await _roll(conn, HOUR, [hour], clock.now())
    await Seeder(postroom).message(
        queue_id=seeded["queues"]["transactional"],
        provider_id=seeded["relay"],
        created=at(TODAY, 11, 30),
        recipients=[{"status": "sent", "sent_at": at(TODAY, 11, 30)}] * 3,
    )
    params = {"from": "2026-01-10", "to": "2026-01-10", "granularity": "hour"}

    async def sent_at_11() -> int:
        response = await client.get(ANALYTICS, params=params)
        assert response.status_code == 200, response.text
        return int(response.json()["trends"][11]["sent"])

    assert await sent_at_11() == 3
    clock.set(hour + timedelta(hours=1) + GRACE)
    assert await sent_at_11() == 3
    assert (await _markers(postroom))[hour] == clock.now()


async def test_the_workers_periodic_step_rolls_what_closed(
    postroom: Postroom, clock: ManualClock, seeded: dict[str, Any]
) -> None:
    """The step the worker runs every ``ROLL_PERIOD_S`` rolls the closed days and
    hours, so the next read finds them rolled."""
    worker = postroom.worker()
    try:
        await worker._roll_closed()
    finally:
        await worker.aclose()
    async with postroom.engine.connect() as conn:
        days = set((await conn.execute(select(rolled_days.c.date))).scalars())
    hours = await _markers(postroom)
    # now is the 10th, 12:00: the 8th and 9th are closed, today's hours up to 10:00
    assert {DAY_A.date(), DAY_A.date() + timedelta(days=1)} <= days
    assert TODAY.date() not in days
    assert {h for h in hours if h >= TODAY} == {at(TODAY, h) for h in range(10)}


async def test_counting_a_period_at_a_time_agrees_with_one_statement(
    postroom: Postroom, seeded: dict[str, Any]
) -> None:
    """``count_live`` counts short spans a period at a time (each record read once);
    its figures equal those of the single statement over the whole span."""
    spans = [
        (DAY_A, DAY_A + timedelta(days=1)),
        (at(DAY_A, 9), at(DAY_A, 12, 30)),
        (at(DAY_A, 10, 5), at(DAY_A, 10, 6)),
        (DAY_A, TODAY + timedelta(days=1)),
        (at(TODAY, 7, 30), at(TODAY, 10)),
    ]
    filters = [
        Filters(),
        Filters(provider_id=seeded["relay"]),
        Filters(type="marketing"),
        Filters(queue_id=seeded["queues"]["bulk"], tag="promo"),
    ]
    async with postroom.engine.connect() as conn:
        dialect = conn.dialect.name
        for start, end in spans:
            for granularity in (None, "day", "hour"):
                for f in filters:
                    whole = Groups()
                    stmt = live_statement(dialect, start, end, granularity, f)
                    for row in await conn.execute(stmt):
                        whole.groups[Key(as_bucket(row[0]), *row[1:6])] = Counts(*row[6:])
                    counted = await count_live(conn, start, end, granularity, f)
                    assert counted.groups == whole.groups, (start, end, granularity, f)
                    if f == Filters() and end - start >= timedelta(hours=1):
                        assert whole.groups  # the span holds figures: nothing vacuous
