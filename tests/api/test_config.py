"""``GET /config`` / ``PUT /config``: masked secrets, round trip, all-or-nothing 422
listing each problem, and a change a running worker follows without restart."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.analytics.seed import records_t
from tests.support.payloads import email as email_body
from tests.support.providers import add_provider, disable_all

CONFIG = "/api/system/email/config"
SEND = "/api/system/email/send"


async def test_get_shows_every_section_with_secrets_masked(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await add_provider(
        postroom, name="relay", type="smtp", authentication={"user": "u", "password": "hunter2"}
    )
    response = await client.get(CONFIG)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {
        "enabled", "providers", "defaultProvider", "fallbackProviders", "queueConfig",
        "deliveryConfig", "trackingConfig", "templateConfig", "securityConfig",
    }  # fmt: skip
    assert "hunter2" not in response.text
    relay = next(p for p in body["providers"] if p["name"] == "relay")
    assert relay["authentication"]["password"] == "****"
    assert set(body["queueConfig"]["queues"]) == {"bulk", "immediate", "scheduled", "transactional"}
    assert body["securityConfig"]["secretKey"] in ("****", None)


async def test_put_round_trip(client: httpx.AsyncClient, postroom: Postroom) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="a", type="fake", priority=1)
    await add_provider(postroom, name="b", type="fake", priority=2)
    await add_provider(postroom, name="c", type="fake", priority=3)
    change: dict[str, Any] = {
        "defaultProvider": "c",
        "fallbackProviders": ["a"],
        "queueConfig": {
            "queues": {
                "bulk": {"concurrency": 3, "retry": {"maxAttempts": 7, "baseDelaySeconds": 2}},
                "scheduled": {"enabled": False},
            }
        },
    }
    response = await client.put(CONFIG, json=change)
    assert response.status_code == 200, response.text
    again = (await client.get(CONFIG)).json()
    assert again == response.json()
    assert (again["defaultProvider"], again["fallbackProviders"]) == ("c", ["a", "b"])
    bulk = again["queueConfig"]["queues"]["bulk"]
    assert bulk["concurrency"] == 3
    assert (bulk["retry"]["maxAttempts"], bulk["retry"]["baseDelaySeconds"]) == (7, 2)
    assert again["queueConfig"]["queues"]["scheduled"]["enabled"] is False
    # the queue API shows the same
    queue = (await client.get("/api/system/email/queues/bulk")).json()
    assert queue["processor"]["concurrency"] == 3


async def test_invalid_put_lists_each_problem_and_writes_nothing(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await add_provider(postroom, name="a", type="fake", priority=1)
    before = (await client.get(CONFIG)).json()
    response = await client.put(
        CONFIG,
        json={
            "defaultProvider": "nope",
            "deliveryConfig": {"defaultFrom": "x@example.com"},
            "colour": "blue",
            "queueConfig": {
                "queues": {
                    "bulk": {"concurrency": 0, "retry": {"maxAttempts": 1000}},
                    "transactional": {"concurrency": 2},
                    "missing": {},
                }
            },
        },
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {
        "defaultProvider",
        "deliveryConfig",
        "colour",
        "queueConfig.queues.bulk.concurrency",
        "queueConfig.queues.bulk.retry.maxAttempts",
        "queueConfig.queues.missing",
    }
    assert (await client.get(CONFIG)).json() == before  # transactional unchanged too


async def test_put_needs_an_admin_key(client: httpx.AsyncClient, postroom: Postroom) -> None:
    key, _ = await postroom.keys.create("reader", ["read"])
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get(CONFIG, headers=headers)).status_code == 200
    assert (await client.put(CONFIG, json={}, headers=headers)).status_code == 403


async def test_a_running_worker_follows_a_new_default_provider(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    a = await add_provider(postroom, name="a", type="fake", priority=2)  # first
    b = await add_provider(postroom, name="b", type="fake", priority=1)
    worker = postroom.worker()
    await worker.router.refresh(force=True)
    try:
        assert (await client.post(SEND, json=email_body())).status_code == 202
        await worker.drain()
        response = await client.put(CONFIG, json={"defaultProvider": "b"})
        assert response.status_code == 200, response.text
        clock.advance(10)  # past the router's reload interval; no restart
        assert (await client.post(SEND, json=email_body())).status_code == 202
        await worker.drain()
    finally:
        await worker.aclose()
    async with postroom.engine.connect() as conn:
        used = (
            (await conn.execute(select(records_t.c.provider_id).order_by(records_t.c.created_at)))
            .scalars()
            .all()
        )
    assert used == [a, b]
