"""Guardrails: a queue whose bounce rate crosses its threshold is paused with the
reason shown in its status; it stays paused until resumed, and is judged afresh."""

from __future__ import annotations

import httpx

from postroom.analytics import guardrails
from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.support.payloads import email as email_body
from tests.support.providers import add_provider, disable_all

SEND = "/api/system/email/send"
QUEUE = "/api/system/email/queues/transactional"
CONFIG = "/api/system/email/config"


async def drain(postroom: Postroom) -> int:
    worker = postroom.worker()
    await worker.router.refresh(force=True)
    try:
        return await worker.drain()
    finally:
        await worker.aclose()


async def test_bouncing_queue_is_paused_until_resumed(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    # 2 of 20 rejected for good: 10% > 5%
    await add_provider(postroom, name="esp", type="fake", config={"script": ["rejected"] * 2})
    guard = {"maxBounceRate": 0.05, "minSends": 10, "window": 50}
    response = await client.put(
        CONFIG, json={"queueConfig": {"queues": {"transactional": {"guardrail": guard}}}}
    )
    assert response.status_code == 200, response.text
    for _ in range(20):
        assert (await client.post(SEND, json=email_body())).status_code == 202
    assert await drain(postroom) == 20
    clock.advance(1)

    assert await guardrails.check(postroom.engine, clock.now()) == ["transactional"]
    # a second worker's check finds it paused already
    assert await guardrails.check(postroom.engine, clock.now()) == []

    status = (await client.get(QUEUE)).json()
    assert status["paused"] is True
    trip = status["guardrailTrip"]
    assert trip["sends"] == 20
    assert trip["bounceRate"] == 0.1
    assert "bounce rate 10.00% > 5.00%" in trip["reason"]
    # mail is still accepted but not sent while paused
    assert (await client.post(SEND, json=email_body())).status_code == 202
    assert await drain(postroom) == 0

    resumed = await client.post(f"{QUEUE}/resume")
    assert resumed.status_code == 200
    assert await drain(postroom) == 1
    clock.advance(1)
    # judged on sends after the trip only: one clean send is too few for a verdict
    assert await guardrails.check(postroom.engine, clock.now()) == []
    assert (await client.get(QUEUE)).json()["paused"] is False


async def test_a_healthy_queue_and_a_disabled_guardrail_stay_running(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="esp", type="fake", config={"script": ["rejected"] * 2})
    guard = {"minSends": 10, "enabled": False}
    await client.put(
        CONFIG, json={"queueConfig": {"queues": {"transactional": {"guardrail": guard}}}}
    )
    for _ in range(20):
        await client.post(SEND, json=email_body())
    await drain(postroom)
    assert await guardrails.check(postroom.engine, clock.now()) == []
    bad = await client.put(
        CONFIG,
        json={"queueConfig": {"queues": {"bulk": {"guardrail": {"maxBounceRate": 2, "x": 1}}}}},
    )
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {
        "queueConfig.queues.bulk.guardrail.maxBounceRate",
        "queueConfig.queues.bulk.guardrail.x",
    }


async def test_complaint_events_trip_the_guardrail(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    from tests.analytics.seed import Seeder, queue_ids

    guard = {"minSends": 10}
    await client.put(CONFIG, json={"queueConfig": {"queues": {"bulk": {"guardrail": guard}}}})
    bulk = (await queue_ids(postroom))["bulk"]
    sent = clock.now()
    ids = await Seeder(postroom).message(
        queue_id=bulk,
        provider_id=None,
        created=sent,
        recipients=[{"status": "delivered", "sent_at": sent}] * 20,
    )
    await Seeder(postroom).event(ids[3], "complained", sent)
    clock.advance(60)

    assert await guardrails.check(postroom.engine, clock.now()) == ["bulk"]
    trip = (await client.get("/api/system/email/queues/bulk")).json()["guardrailTrip"]
    assert trip["complaintRate"] == 0.05
    assert "complaint rate 5.00% > 0.10%" in trip["reason"]
