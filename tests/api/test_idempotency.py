"""Idempotency-Key: the first response again, per API key, the same body, for 24 hours."""

from __future__ import annotations

from datetime import timedelta
from typing import cast

import httpx
from sqlalchemy import Table, func, select

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.db.models import EmailJob
from tests.support.payloads import email as email_body

SEND = "/api/system/email/send"
jobs_t = cast(Table, EmailJob.__table__)


async def job_count(postroom: Postroom) -> int:
    async with postroom.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(jobs_t))).scalar_one())


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_a_repeat_after_delivery_returns_the_first_response_not_the_job_state(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    headers = {"Idempotency-Key": "receipt-1"}
    first = await client.post(SEND, json=email_body(), headers=headers)
    worker = postroom.worker()
    try:
        assert await worker.drain() == 1
    finally:
        await worker.aclose()

    again = await client.post(SEND, json=email_body(), headers=headers)

    assert again.status_code == 202
    assert again.json() == first.json()
    assert again.json()["status"] == "queued" and again.json()["attempts"] == 0
    status = (await client.get(f"/api/system/email/status/{first.json()['id']}")).json()
    assert status["status"] == "sent"  # the job moved on; the replay did not
    assert await job_count(postroom) == 1


async def test_key_order_and_spacing_do_not_make_another_request(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    headers = {"Idempotency-Key": "k", "Content-Type": "application/json"}
    first = await client.post(SEND, json=email_body(), headers=headers)
    body = email_body()
    reordered = "{\n" + ",\n".join(f'"{k}": {v!r}' for k, v in reversed(body.items())) + "}"
    again = await client.post(SEND, content=reordered.replace("'", '"'), headers=headers)

    assert again.status_code == 202, again.text
    assert again.json() == first.json()


async def test_the_same_key_with_another_body_is_refused(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    await client.post(SEND, json=email_body(), headers=headers)

    other = await client.post(SEND, json=email_body(subject="Changed"), headers=headers)

    assert other.status_code == 422
    assert other.headers["content-type"] == "application/problem+json"
    problem = other.json()
    assert problem["type"] == "urn:postroom:problem:idempotency-key-reused"
    assert "different request" in problem["detail"]
    assert await job_count(postroom) == 1


async def test_keys_are_scoped_per_api_key(client: httpx.AsyncClient, postroom: Postroom) -> None:
    alice, _ = await postroom.keys.create("alice", ["send"])
    bob, _ = await postroom.keys.create("bob", ["send"])
    headers = {"Idempotency-Key": "welcome"}

    a = await client.post(SEND, json=email_body(), headers={**headers, **auth(alice)})
    b = await client.post(SEND, json=email_body(subject="Bob's"), headers={**headers, **auth(bob)})

    assert a.status_code == b.status_code == 202, b.text
    assert a.json()["id"] != b.json()["id"]
    assert await job_count(postroom) == 2
    # and the facade, which has no API key, has its own scope
    local = await postroom.send(email_body(), idempotency_key="welcome")
    assert str(local.id) not in (a.json()["id"], b.json()["id"])


async def test_a_key_expires_after_24_hours(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    headers = {"Idempotency-Key": "daily-report"}
    first = await client.post(SEND, json=email_body(), headers=headers)
    clock.advance(timedelta(hours=23, minutes=59).total_seconds())
    within = await client.post(SEND, json=email_body(), headers=headers)
    clock.advance(120)

    after = await client.post(SEND, json=email_body(subject="Next day"), headers=headers)

    assert within.json() == first.json()
    assert after.status_code == 202, after.text
    assert after.json()["id"] != first.json()["id"]
    assert await job_count(postroom) == 2


async def test_a_scheduled_email_replays_its_first_schedule(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    when = (clock.now() + timedelta(hours=2)).isoformat()
    headers = {"Idempotency-Key": "later"}
    first = await client.post(SEND, json=email_body(scheduledAt=when), headers=headers)
    clock.advance(300)

    again = await client.post(SEND, json=email_body(scheduledAt=when), headers=headers)

    assert again.json() == first.json()


async def test_an_overlong_or_empty_key_is_422(client: httpx.AsyncClient) -> None:
    for key in ("x" * 201, " "):
        response = await client.post(SEND, json=email_body(), headers={"Idempotency-Key": key})
        assert response.status_code == 422, key
        assert response.json()["errors"][0]["field"] == "Idempotency-Key"
