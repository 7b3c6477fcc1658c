"""Guardrails: a queue whose bounce rate crosses its threshold is paused with the
reason shown in its status; it stays paused until resumed, and is judged afresh."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import select

from postroom.analytics import guardrails
from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.support.payloads import email as email_body
from tests.support.providers import add_provider, disable_all

SEND = "/api/system/email/send"
QUEUE = "/api/system/email/queues/transactional"
CONFIG = "/api/system/email/config"
PROVIDERS = "/api/system/email/providers"


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


async def test_bouncing_provider_is_disabled_until_enabled_again(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    from postroom.analytics import provider_guardrails
    from tests.analytics.seed import records_t

    await disable_all(postroom)
    guard = {"maxBounceRate": 0.05, "minSends": 10, "window": 50}
    # first in line: 2 of 20 refused for good, 10% > 5%
    await add_provider(
        postroom,
        name="bad",
        type="fake",
        priority=200,
        config={"script": ["rejected"] * 2},
        monitoring={"guardrail": guard},
    )
    good = await add_provider(postroom, name="good", type="fake", priority=100)
    for _ in range(20):
        assert (await client.post(SEND, json=email_body())).status_code == 202
    assert await drain(postroom) == 20
    clock.advance(1)

    assert await provider_guardrails.check(postroom.engine, clock.now()) == ["bad"]
    assert await provider_guardrails.check(postroom.engine, clock.now()) == []  # once
    shown = (await client.get(f"{PROVIDERS}/bad")).json()
    assert shown["enabled"] is False
    trip = shown["guardrailTrip"]
    assert (trip["sends"], trip["bounceRate"]) == (20, 0.1)
    assert "bounce rate 10.00% > 5.00%" in trip["reason"]
    assert trip["at"] == clock.now().isoformat()
    listed = {p["name"]: p for p in (await client.get(PROVIDERS)).json()["providers"]}
    assert listed["bad"]["guardrailTrip"] == trip

    # the router no longer chooses it: the next message goes through 'good'
    worker = postroom.worker()
    try:
        await worker.router.refresh(force=True)
        assert [c.spec.name for c in worker.router.candidates] == ["good"]
    finally:
        await worker.aclose()
    accepted = (await client.post(SEND, json=email_body())).json()
    assert await drain(postroom) == 1
    async with postroom.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(records_t.c.provider_id).where(
                    records_t.c.job_id == uuid.UUID(accepted["id"])
                )
            )
        ).all()
    assert [r.provider_id for r in rows] == [good]

    # enabling is deliberate; then only sends after the trip are judged
    enabled = await client.put(f"{PROVIDERS}/bad", json={"enabled": True})
    assert enabled.status_code == 200, enabled.text
    assert enabled.json()["enabled"] is True
    clock.advance(1)
    assert await provider_guardrails.check(postroom.engine, clock.now()) == []
    worker = postroom.worker()
    try:
        await worker.router.refresh(force=True)
        assert [c.spec.name for c in worker.router.candidates] == ["bad", "good"]
    finally:
        await worker.aclose()


async def test_provider_guardrail_settings_are_checked(client: httpx.AsyncClient) -> None:
    body = {
        "name": "relay",
        "type": "smtp",
        "config": {"host": "smtp.example.com", "port": 587},
        "monitoring": {"guardrail": {"maxBounceRate": 2}},
    }
    response = await client.post(PROVIDERS, json=body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "monitoring.guardrail.maxBounceRate"
