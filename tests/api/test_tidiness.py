"""API tidiness: /test takes /send's address shapes, times to 0.1 ms, attempts numbered for life."""

from __future__ import annotations

import httpx

from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.support.payloads import email as email_body
from tests.support.providers import add_provider, disable_all

API = "/api/system/email"


async def test_test_email_takes_to_and_from_as_send_does(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="fake", type="fake")
    body = {
        "to": [{"email": "ops@example.com", "name": "Ops"}, {"email": "dev@example.com"}],
        "from": {"email": "app@example.com", "name": "App"},
    }
    response = await client.post(f"{API}/test", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True

    old_shape = await client.post(f"{API}/test", json={**body, "to": "ops@example.com"})
    assert old_shape.status_code == 422


async def test_durations_are_rounded_to_a_tenth_of_a_millisecond(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="fake", type="fake")
    ids = [(await client.post(f"{API}/send", json=email_body())).json()["id"] for _ in range(5)]
    worker = postroom.worker()
    try:
        assert await worker.drain() == 5
    finally:
        await worker.aclose()

    durations = []
    for ident in ids:
        status = (await client.get(f"{API}/status/{ident}")).json()
        durations += [a["durationMs"] for a in status["attemptLog"]]
    test = (
        await client.post(
            f"{API}/test",
            json={"to": [{"email": "a@example.com"}], "from": {"email": "app@example.com"}},
        )
    ).json()
    providers = (await client.get(f"{API}/providers")).json()["providers"]
    durations += [test["latencyMs"]] + [p["health"].get("latencyMs") for p in providers]
    values = [d for d in durations if d is not None]
    assert len(values) >= 6
    assert all(round(d, 1) == d for d in values), values


async def test_the_attempt_log_numbers_attempts_across_a_retry_of_failed_mail(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    await add_provider(
        postroom, name="fake", type="fake", config={"script": ["transient", "transient"]}
    )
    sent = (await client.post(f"{API}/send", json=email_body(maxAttempts=2))).json()
    worker = postroom.worker()
    try:
        assert await worker.drain() == 1
        clock.advance(120)  # past the queue's first backoff
        assert await worker.drain() == 1  # out of attempts: failed
        retried = await client.post(f"{API}/queues/transactional/retry")
        assert retried.json()["retried"] == 1
        clock.advance(60)
        assert await worker.drain() == 1
    finally:
        await worker.aclose()

    status = (await client.get(f"{API}/status/{sent['id']}")).json()
    assert status["status"] == "sent"
    log = [(a["attempt"], a["outcome"]) for a in status["attemptLog"]]
    assert log == [(1, "retry"), (2, "failed"), (3, "sent")]
