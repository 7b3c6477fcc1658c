"""``GET /analytics``: totals, rates, breakdowns and trends against hand-counted rows;
closed days from the rollups, today from the live tables; filters and bad input."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from postroom.analytics.rollups import rolled_days
from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.analytics.conftest import DAY_A, TODAY, at
from tests.analytics.seed import Seeder

ANALYTICS = "/api/system/email/analytics"


def figures(entry: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: entry[n] for n in names}


async def test_totals_rates_and_breakdowns_match_the_rows(
    client: httpx.AsyncClient, postroom: Postroom, seeded: dict[str, Any]
) -> None:
    response = await client.get(ANALYTICS, params={"from": "2026-01-08", "to": "2026-01-10"})

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["summary"] == {
        "totalSent": 8,
        "totalDelivered": 4,
        "totalBounced": 2,
        "totalComplained": 1,
        "totalOpened": 2,
        "totalClicked": 1,
        "totalUnsubscribed": 1,
        "totalFailed": 1,
        "totalHumanOpened": 2,
        "totalHumanClicked": 1,
        "deliveryRate": 0.5,
        "openRate": 0.5,
        "clickRate": 0.5,
        "bounceRate": 0.25,
        "complaintRate": 0.25,
        "unsubscribeRate": 0.25,
        "humanOpenRate": 0.5,
        "humanClickRate": 0.5,
    }
    providers = {p["name"]: p for p in body["providers"]}
    assert figures(providers["relay"], "sent", "delivered", "bounced", "opened", "complained") == {
        "sent": 6,
        "delivered": 3,
        "bounced": 1,
        "opened": 2,
        "complained": 1,
    }
    assert providers["relay"]["deliveryRate"] == 0.5
    assert providers["relay"]["openRate"] == round(2 / 3, 6)
    assert figures(providers["esp"], "sent", "delivered", "bounced", "unsubscribed") == {
        "sent": 2,
        "delivered": 1,
        "bounced": 1,
        "unsubscribed": 1,
    }
    # the recipient no provider took: counted, and its rates have zero denominators
    nobody = providers[None]
    assert (nobody["providerId"], nobody["failed"], nobody["sent"]) == (None, 1, 0)
    assert nobody["deliveryRate"] == nobody["bounceRate"] == nobody["openRate"] == 0
    queues = {q["name"]: q for q in body["queues"]}
    assert figures(queues["transactional"], "sent", "failed") == {"sent": 6, "failed": 0}
    assert figures(queues["bulk"], "sent", "failed", "bounced") == {
        "sent": 2,
        "failed": 1,
        "bounced": 1,
    }
    trends = [(t["timestamp"][:10], t["sent"], t["delivered"], t["failed"]) for t in body["trends"]]
    assert trends == [("2026-01-08", 6, 4, 0), ("2026-01-09", 0, 0, 0), ("2026-01-10", 2, 0, 1)]
    top = body["topPerformers"]
    assert [(t["key"], t["sent"], t["openRate"]) for t in top["tags"]] == [
        ("welcome", 4, round(2 / 3, 6)),
        ("promo", 2, 0.0),
    ]
    assert [t["key"] for t in top["types"]] == ["transactional", "marketing"]
    assert top["templates"] == []
    # day A was rolled up (and the empty 9th); today was not
    async with postroom.engine.connect() as conn:
        days = set((await conn.execute(select(rolled_days.c.date))).scalars())
    assert days == {DAY_A.date(), DAY_A.date() + timedelta(days=1)}


async def test_closed_days_come_from_the_rollups_until_rebuilt(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock, seeded: dict[str, Any]
) -> None:
    params = {"from": "2026-01-08", "to": "2026-01-08"}
    first = (await client.get(ANALYTICS, params=params)).json()["summary"]["totalSent"]
    # a row dated day A written after the day was rolled up: not seen...
    await Seeder(postroom).message(
        queue_id=seeded["queues"]["bulk"],
        provider_id=seeded["esp"],
        created=at(DAY_A, 15),
        recipients=[{"status": "sent", "sent_at": at(DAY_A, 15)}],
    )
    assert (await client.get(ANALYTICS, params=params)).json()["summary"]["totalSent"] == first == 6
    # ...until the day is rebuilt
    from postroom.analytics.rollups import rebuild

    assert await rebuild(postroom.engine, DAY_A.date(), TODAY.date(), clock.now()) == 2
    assert (await client.get(ANALYTICS, params=params)).json()["summary"]["totalSent"] == 7


async def test_filters_narrow_every_figure(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    window = {"from": "2026-01-08", "to": "2026-01-10"}

    async def sent(**params: str) -> int:
        response = await client.get(ANALYTICS, params={**window, **params})
        assert response.status_code == 200, response.text
        return int(response.json()["summary"]["totalSent"])

    assert await sent(provider="esp") == 2
    assert await sent(provider=str(seeded["relay"])) == 6
    assert await sent(queue="bulk") == 2
    assert await sent(type="marketing") == 2
    assert await sent(tag="welcome") == 4
    assert await sent(tag="x") == 0  # the campaign tag is the first one
    assert await sent(queue="transactional", provider="relay", tag="welcome") == 4


async def test_hourly_trends_and_zero_denominators(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    response = await client.get(
        ANALYTICS,
        params={
            "from": "2026-01-10T06:00:00Z",
            "to": "2026-01-10T10:00:00Z",
            "granularity": "hour",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    points = [
        (t["timestamp"][11:16], t["sent"], t["failed"], t["unsubscribed"]) for t in body["trends"]
    ]
    assert points == [
        ("06:00", 0, 0, 0),
        ("07:00", 0, 0, 0),
        ("08:00", 0, 1, 0),
        ("09:00", 2, 0, 1),
    ]
    # unsubscribes without deliveries in the window: a zero denominator gives 0
    assert body["summary"]["totalDelivered"] == 0
    assert body["summary"]["unsubscribeRate"] == 0
    empty = await client.get(ANALYTICS, params={"from": "2025-01-01", "to": "2025-01-02"})
    assert set(empty.json()["summary"].values()) == {0}


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"from": "yesterday"}, 422, "from"),
        ({"from": "2026-01-09", "to": "2026-01-08"}, 422, "from"),
        ({"granularity": "week"}, 422, "granularity"),
        ({"from": "2025-01-01", "granularity": "hour"}, 422, "from"),
        ({"template": "welcome"}, 404, None),
        ({"provider": "nope"}, 404, None),
        ({"queue": str(uuid.uuid4())}, 404, None),
    ],
)
async def test_bad_parameters_are_clear_problems(
    client: httpx.AsyncClient, params: dict[str, str], status: int, field: str | None
) -> None:
    response = await client.get(ANALYTICS, params=params)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    if field:
        assert field in {e["field"] for e in response.json().get("errors", [])}, response.json()


async def test_read_scope_is_enough_and_no_key_is_refused(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    key, _ = await postroom.keys.create("reader", ["read"])
    ok = await client.get(ANALYTICS, headers={"Authorization": f"Bearer {key}"})
    assert ok.status_code == 200
    refused = await client.get(ANALYTICS, headers={"Authorization": ""})
    assert refused.status_code == 401


async def test_todays_closed_hours_come_from_hourly_rollups_the_open_hours_live(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock, seeded: dict[str, Any]
) -> None:
    from postroom.analytics.rollups import rebuild, rolled_hours

    params = {"from": "2026-01-10", "to": "2026-01-10"}
    assert (await client.get(ANALYTICS, params=params)).json()["summary"]["totalSent"] == 2
    async with postroom.engine.connect() as conn:
        hours = set((await conn.execute(select(rolled_hours.c.hour))).scalars())
    # now is 12:00: hours up to 10:00 are closed (2 h grace) and rolled for good;
    # 10:00 onwards is counted live, never rolled
    assert hours == {at(TODAY, h) for h in range(10)}
    seeder = Seeder(postroom)

    async def send(when: datetime) -> None:
        await seeder.message(
            queue_id=seeded["queues"]["bulk"],
            provider_id=seeded["esp"],
            created=when,
            recipients=[{"status": "sent", "sent_at": when}],
        )

    async def total() -> int:
        return int((await client.get(ANALYTICS, params=params)).json()["summary"]["totalSent"])

    for when in (at(TODAY, 9, 30), at(TODAY, 11, 30)):
        await send(when)
    # the open hour's send shows at once, without the clock moving; the closed
    # hour's send waits for a rebuild
    assert await total() == 3
    # and so does a send in the current hour
    clock.advance(300)
    await send(clock.now() - timedelta(seconds=30))
    assert await total() == 4
    await rebuild(postroom.engine, TODAY.date(), TODAY.date() + timedelta(days=1), clock.now())
    assert await total() == 5
    hourly = await client.get(ANALYTICS, params={**params, "granularity": "hour"})
    sent = {t["timestamp"][11:13]: t["sent"] for t in hourly.json()["trends"] if t["sent"]}
    assert sent == {"09": 3, "11": 1, "12": 1}
