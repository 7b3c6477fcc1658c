"""Opens and clicks people made beside those of machines, and figures per template:
hand-counted rows on a closed day (read from the rollups) and today (live)."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.tracking.events import NewEvent, record_event
from tests.analytics.conftest import DAY_A, TODAY, at
from tests.analytics.seed import Seeder, queue_ids, records_t
from tests.support.providers import add_provider

ANALYTICS = "/api/system/email/analytics"
REPORTS = "/api/system/email/reports"
WINDOW = {"from": "2026-01-08", "to": "2026-01-10"}


@pytest.fixture
async def seeded(postroom: Postroom, clock: ManualClock) -> dict[str, Any]:
    """Day A, template 'welcome-mail': 4 sent and delivered; r1 opened and clicked
    by a proxy and a scanner first, then by its reader; r2 by machines only; r3
    opened by its reader; r4 untouched. Today, template 'promo-mail': 2 delivered,
    one opened by a proxy only; and 1 untemplated message sent, not delivered."""
    clock.set(at(TODAY, 12))
    relay = await add_provider(postroom, name="relay", type="smtp")
    queue = (await queue_ids(postroom))["transactional"]
    s = Seeder(postroom)
    welcome = await s.template("welcome-mail", DAY_A)
    promo = await s.template("promo-mail", DAY_A)
    sent, delivered = at(DAY_A, 10), at(DAY_A, 10, 5)
    proxy, scanner = at(DAY_A, 10, 6), at(DAY_A, 10, 7)
    base = {"status": "delivered", "sent_at": sent, "delivered_at": delivered}
    await s.message(
        queue_id=queue,
        provider_id=relay,
        created=sent,
        template_id=welcome,
        recipients=[
            {
                **base,
                "opened_any_at": proxy,
                "opened_at": at(DAY_A, 11),
                "clicked_any_at": scanner,
                "clicked_at": at(DAY_A, 11, 30),
            },
            {**base, "opened_any_at": proxy, "clicked_any_at": scanner},
            {**base, "opened_at": at(DAY_A, 12)},
            base,
        ],
    )
    today = {"status": "delivered", "sent_at": at(TODAY, 9), "delivered_at": at(TODAY, 9, 1)}
    await s.message(
        queue_id=queue,
        provider_id=relay,
        created=at(TODAY, 9),
        template_id=promo,
        recipients=[{**today, "opened_any_at": at(TODAY, 9, 2)}, today],
    )
    await s.message(
        queue_id=queue,
        provider_id=relay,
        created=at(TODAY, 9),
        recipients=[{"status": "sent", "sent_at": at(TODAY, 9)}],
    )
    return {"welcome": welcome, "promo": promo}


def pick(entry: dict[str, Any], *names: str) -> dict[str, Any]:
    return {n: entry[n] for n in names}


async def test_human_opens_and_clicks_beside_the_totals(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    body = (await client.get(ANALYTICS, params=WINDOW)).json()
    summary = body["summary"]
    assert pick(
        summary,
        "totalSent",
        "totalDelivered",
        "totalOpened",
        "totalHumanOpened",
        "totalClicked",
        "totalHumanClicked",
    ) == {
        "totalSent": 7,
        "totalDelivered": 6,
        "totalOpened": 4,
        "totalHumanOpened": 2,
        "totalClicked": 2,
        "totalHumanClicked": 1,
    }
    assert pick(summary, "openRate", "humanOpenRate", "clickRate", "humanClickRate") == {
        "openRate": round(4 / 6, 6),
        "humanOpenRate": round(2 / 6, 6),
        "clickRate": 0.5,
        "humanClickRate": 0.5,
    }
    # closed day A from the rollups, today live
    trends = {t["timestamp"][:10]: t for t in body["trends"]}
    assert pick(trends["2026-01-08"], "opened", "humanOpened", "clicked", "humanClicked") == {
        "opened": 3,
        "humanOpened": 2,
        "clicked": 2,
        "humanClicked": 1,
    }
    # today nobody opened by hand: zero denominators give 0, not an error
    assert pick(
        trends["2026-01-10"], "opened", "humanOpened", "humanOpenRate", "humanClickRate"
    ) == {"opened": 1, "humanOpened": 0, "humanOpenRate": 0.0, "humanClickRate": 0.0}
    assert pick(trends["2026-01-09"], "openRate", "humanOpenRate", "humanClickRate") == {
        "openRate": 0.0,
        "humanOpenRate": 0.0,
        "humanClickRate": 0.0,
    }


async def test_top_templates_and_the_template_filter(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    body = (await client.get(ANALYTICS, params=WINDOW)).json()
    templates = body["topPerformers"]["templates"]
    assert [
        (t["key"], t["name"], t["sent"], t["openRate"], t["humanOpenRate"]) for t in templates
    ] == [
        (str(seeded["welcome"]), "welcome-mail", 4, 0.75, 0.5),
        (str(seeded["promo"]), "promo-mail", 2, 0.5, 0.0),
    ]

    async def summary(template: str) -> dict[str, Any]:
        response = await client.get(ANALYTICS, params={**WINDOW, "template": template})
        assert response.status_code == 200, response.text
        return dict(response.json()["summary"])

    by_name = await summary("welcome-mail")
    assert pick(by_name, "totalSent", "totalOpened", "totalHumanOpened") == {
        "totalSent": 4,
        "totalOpened": 3,
        "totalHumanOpened": 2,
    }
    by_id = await summary(str(seeded["promo"]))
    assert pick(by_id, "totalSent", "totalHumanOpened", "humanOpenRate", "humanClickRate") == {
        "totalSent": 2,
        "totalHumanOpened": 0,
        "humanOpenRate": 0.0,
        "humanClickRate": 0.0,
    }
    missing = await client.get(ANALYTICS, params={"template": str(uuid.uuid4())})
    assert missing.status_code == 404


async def test_report_by_template(client: httpx.AsyncClient, seeded: dict[str, Any]) -> None:
    response = await client.get(REPORTS, params={**WINDOW, "groupBy": "template"})
    assert response.status_code == 200, response.text
    rows = {r["template"]: r for r in csv.DictReader(io.StringIO(response.text))}
    assert set(rows) == {"welcome-mail", "promo-mail", ""}
    welcome = rows["welcome-mail"]
    assert (welcome["sent"], welcome["opened"], welcome["humanOpened"]) == ("4", "3", "2")
    assert (welcome["humanClicked"], welcome["humanClickRate"]) == ("1", "0.5")
    assert (rows[""]["sent"], rows[""]["humanOpenRate"]) == ("1", "0.0")


async def test_tracking_records_the_first_open_of_any_kind(
    postroom: Postroom, clock: ManualClock
) -> None:
    queue = (await queue_ids(postroom))["transactional"]
    now = clock.now()
    [rid] = await Seeder(postroom).message(
        queue_id=queue, provider_id=None, created=now, recipients=[{"status": "delivered"}]
    )
    proxy = NewEvent(record_id=rid, type="opened", timestamp=now, machine=True)
    person = NewEvent(record_id=rid, type="opened", timestamp=now + timedelta(minutes=1))
    async with postroom.engine.begin() as conn:
        await record_event(conn, proxy)

    async def times() -> tuple[Any, Any]:
        async with postroom.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(records_t.c.opened_any_at, records_t.c.opened_at).where(
                        records_t.c.id == rid
                    )
                )
            ).one()
        return row.opened_any_at, row.opened_at

    assert await times() == (now, None)
    async with postroom.engine.begin() as conn:
        await record_event(conn, person)
    # a person's open later: the first open of any kind stays the proxy's
    assert await times() == (now, person.timestamp)


async def test_sending_copies_the_tag_and_template_onto_the_records(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    from tests.api.test_templates import send_body, welcome

    api = "/api/system/email"
    template = (await client.post(f"{api}/templates", json=welcome())).json()
    single = await client.post(f"{api}/send", json=send_body(tags=["spring", "b"]))
    assert single.status_code == 202, single.text
    bulk = await client.post(
        f"{api}/bulk",
        json={
            "from": {"email": "app@example.com"},
            "templateId": "welcome",
            "tags": ["autumn"],
            "recipients": [{"email": "bo@example.com", "templateData": {"name": "Bo"}}],
        },
    )
    assert bulk.status_code == 202, bulk.text
    async with postroom.engine.connect() as conn:
        rows = (await conn.execute(select(records_t.c.tag, records_t.c.template_id))).all()
    assert sorted((r.tag, r.template_id) for r in rows) == [
        ("autumn", uuid.UUID(template["id"])),
        ("spring", uuid.UUID(template["id"])),
    ]
