"""Daily rollups after concurrent workers equal a recount of the raw rows, and
concurrent rollers neither double nor lose a day."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import func, select

from postroom.analytics.figures import DIMS, Filters
from postroom.analytics.queries import count_live, daily, read_rollups
from postroom.analytics.rollups import GRACE, ensure_rolled, rolled_days
from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.support.payloads import email as email_body
from tests.support.providers import add_provider, disable_all

SEND = "/api/system/email/send"
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
