"""The queue endpoints: list, show, pause, resume, retry failed; windows, health and auth."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import Table, select, update

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.db.models import EmailJob, EmailJobAttempt, EmailQueue, EmailRecord
from postroom.queue.worker import Worker
from tests.support.payloads import email as email_body
from tests.support.providers import add_provider, disable_all

QUEUES = "/api/system/email/queues"
SEND = "/api/system/email/send"
jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)
attempts_t = cast(Table, EmailJobAttempt.__table__)
queues_t = cast(Table, EmailQueue.__table__)


async def send(client: httpx.AsyncClient, n: int = 1, **overrides: Any) -> list[str]:
    ids = []
    for _ in range(n):
        response = await client.post(SEND, json=email_body(**overrides))
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    return ids


async def new_worker(postroom: Postroom) -> Worker:
    worker = postroom.worker()
    # load the providers before the first batch of concurrent sends asks for them
    await worker.router.refresh(force=True)
    return worker


async def drain(postroom: Postroom, worker: Worker | None = None) -> int:
    """Process every due job with ``worker`` (a fresh one when not given); returns how
    many jobs it claimed."""
    w = worker or await new_worker(postroom)
    before = w.stats["claimed"]
    try:
        await w.drain()
    finally:
        if worker is None:
            await w.aclose()
    return w.stats["claimed"] - before


async def queues_by_name(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get(QUEUES)
    assert response.status_code == 200, response.text
    return {q["name"]: q for q in response.json()["queues"]}


async def test_list_shows_the_default_queues_with_their_counts(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    await send(client, 2)
    await send(client, 1, type="system")
    await send(client, 3, type="marketing")
    later = (clock.now() + timedelta(days=1)).isoformat()
    await send(client, 1, queue="scheduled", scheduledAt=later)
    assert await drain(postroom) == 6
    await send(client, 1)  # left pending

    response = await client.get(QUEUES)

    assert response.status_code == 200
    listed = response.json()["queues"]
    assert [q["name"] for q in listed] == ["immediate", "transactional", "scheduled", "bulk"]
    queues = {q["name"]: q for q in listed}
    counts = {
        name: {k: q["stats"][k] for k in ("pending", "processing", "completed", "failed")}
        for name, q in queues.items()
    }
    assert counts == {
        "immediate": {"pending": 0, "processing": 0, "completed": 1, "failed": 0},
        "transactional": {"pending": 1, "processing": 0, "completed": 2, "failed": 0},
        "scheduled": {"pending": 1, "processing": 0, "completed": 0, "failed": 0},
        "bulk": {"pending": 0, "processing": 0, "completed": 3, "failed": 0},
    }
    bulk = queues["bulk"]
    assert bulk["type"] == "bulk"
    assert bulk["priority"] == "low"
    assert bulk["enabled"] is True
    assert bulk["paused"] is False
    assert bulk["health"] == "healthy"
    assert bulk["stats"]["totalProcessed"] == 3
    assert bulk["stats"]["throughput"] == 0.05  # 3 in the last hour, per minute
    assert bulk["processor"] == {
        "queueId": bulk["id"],
        "status": "idle",
        "concurrency": postroom.settings.worker.concurrency,
        "activeJobs": 0,
        "processedJobs": 3,
        "failedJobs": 0,
        "errorRate": 0.0,
        "lastProcessedAt": "2026-01-01T12:00:00Z",
    }
    assert queues["immediate"]["processor"]["concurrency"] == postroom.settings.worker.concurrency
    # a job scheduled for tomorrow is not a backlog
    assert queues["scheduled"]["health"] == "healthy"
    assert queues["scheduled"]["processor"]["lastProcessedAt"] is None


async def test_statistics_windows_follow_the_clock(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    await send(client, 3, type="marketing")
    await drain(postroom)
    async with postroom.engine.begin() as conn:
        await conn.execute(update(attempts_t).values(duration_ms=250.0))

    bulk = (await client.get(f"{QUEUES}/bulk")).json()
    assert bulk["stats"]["averageProcessingTime"] == 250.0
    assert bulk["stats"]["throughput"] == 0.05

    clock.advance(61 * 60)  # out of the throughput hour, still within the day
    bulk = (await client.get(f"{QUEUES}/bulk")).json()
    assert bulk["stats"]["throughput"] == 0.0
    assert bulk["stats"]["completed"] == 3
    assert bulk["stats"]["averageProcessingTime"] == 250.0

    clock.advance(24 * 3600)  # out of the day
    bulk = (await client.get(f"{QUEUES}/bulk")).json()
    assert bulk["stats"]["completed"] == bulk["stats"]["totalProcessed"] == 0
    assert bulk["stats"]["averageProcessingTime"] == 0.0
    assert bulk["processor"]["lastProcessedAt"] is None


async def test_a_due_job_waiting_too_long_is_a_backlog(
    client: httpx.AsyncClient, clock: ManualClock
) -> None:
    await send(client, 1)
    assert (await client.get(f"{QUEUES}/transactional")).json()["health"] == "healthy"

    clock.advance(6 * 60)

    assert (await client.get(f"{QUEUES}/transactional")).json()["health"] == "backlogged"


async def test_show_by_name_and_by_id(client: httpx.AsyncClient) -> None:
    by_name = await client.get(f"{QUEUES}/bulk")
    assert by_name.status_code == 200
    queue = by_name.json()
    assert queue["name"] == "bulk"

    by_id = await client.get(f"{QUEUES}/{queue['id']}")
    assert by_id.status_code == 200
    assert by_id.json() == queue
    upper = await client.get(f"{QUEUES}/{queue['id'].upper()}")
    assert upper.json()["name"] == "bulk"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/nope"),
        ("GET", "/00000000-0000-0000-0000-000000000000"),
        ("POST", "/nope/pause"),
        ("POST", "/nope/resume"),
        ("POST", "/nope/retry"),
    ],
)
async def test_unknown_queue_is_404_problem_json(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    response = await client.request(method, QUEUES + path)

    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "urn:postroom:problem:not-found"
    assert path.split("/")[1] in problem["detail"]


async def test_a_paused_queue_is_skipped_while_others_are_delivered(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    [receipt] = await send(client, 1)
    [newsletter] = await send(client, 1, type="marketing")

    paused = await client.post(f"{QUEUES}/bulk/pause")

    assert paused.status_code == 200
    assert paused.json()["paused"] is True
    assert paused.json()["processor"]["status"] == "paused"
    assert await drain(postroom) == 1
    assert (await client.get(f"/api/system/email/status/{receipt}")).json()["status"] == "sent"
    assert (await client.get(f"/api/system/email/status/{newsletter}")).json()["status"] == "queued"
    queues = await queues_by_name(client)
    assert queues["bulk"]["stats"]["pending"] == 1
    assert queues["bulk"]["processor"]["status"] == "paused"
    assert queues["transactional"]["paused"] is False
    # pausing accepts new mail all the same, and pausing twice changes nothing
    await send(client, 1, type="marketing")
    assert (await client.post(f"{QUEUES}/bulk/pause")).json()["stats"]["pending"] == 2

    resumed = await client.post(f"{QUEUES}/bulk/resume")

    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    assert resumed.json()["processor"]["status"] == "idle"
    assert await drain(postroom) == 2
    assert (await client.get(f"/api/system/email/status/{newsletter}")).json()["status"] == "sent"
    assert (await client.get(f"{QUEUES}/bulk")).json()["stats"]["completed"] == 2


async def test_retry_moves_failed_jobs_back_and_they_are_delivered(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="Scripted", type="fake", config={"script": ["rejected"] * 3})
    ids = await send(client, 3)
    worker = await new_worker(postroom)  # one worker: its provider keeps the script's place
    try:
        assert await drain(postroom, worker) == 3
        failing = (await client.get(f"{QUEUES}/transactional")).json()
        assert failing["stats"]["failed"] == 3
        assert failing["health"] == "failing"
        assert failing["processor"]["errorRate"] == 1.0

        response = await client.post(f"{QUEUES}/transactional/retry")

        assert response.status_code == 200
        assert response.json() == {"queueId": failing["id"], "retried": 3}
        async with postroom.engine.connect() as conn:
            jobs = (await conn.execute(select(jobs_t.c.status, jobs_t.c.attempts))).all()
            recs = (await conn.execute(select(records_t.c.status))).scalars().all()
        assert sorted(jobs) == [("pending", 0)] * 3
        assert recs == ["queued"] * 3
        queue = (await client.get(f"{QUEUES}/transactional")).json()
        assert queue["stats"]["pending"] == 3
        assert queue["stats"]["failed"] == 0

        assert await drain(postroom, worker) == 3  # the script is used up: all succeed
    finally:
        await worker.aclose()
    for email_id in ids:
        status = (await client.get(f"/api/system/email/status/{email_id}")).json()
        assert status["status"] == "sent"
        assert status["attempts"] == 1
    queue = (await client.get(f"{QUEUES}/transactional")).json()
    assert (queue["stats"]["completed"], queue["stats"]["failed"]) == (3, 0)
    assert queue["health"] == "healthy"
    again = await client.post(f"{QUEUES}/transactional/retry")
    assert again.json()["retried"] == 0


async def test_a_disabled_queue_is_stopped(client: httpx.AsyncClient, postroom: Postroom) -> None:
    async with postroom.engine.begin() as conn:
        await conn.execute(update(queues_t).where(queues_t.c.name == "bulk").values(enabled=False))

    bulk = (await client.get(f"{QUEUES}/bulk")).json()

    assert bulk["enabled"] is False
    assert bulk["processor"]["status"] == "stopped"


@pytest.mark.parametrize(
    ("scopes", "method", "path", "expected"),
    [
        (["send"], "POST", "/bulk/pause", 403),
        (["send"], "POST", "/bulk/retry", 403),
        (["send"], "GET", "", 403),
        (["read"], "GET", "", 200),
        (["read"], "GET", "/bulk", 200),
        (["read"], "POST", "/bulk/resume", 403),
        (["manage"], "GET", "/bulk", 200),
        (["manage"], "POST", "/bulk/pause", 200),
    ],
)
async def test_scopes(
    client: httpx.AsyncClient,
    postroom: Postroom,
    scopes: list[str],
    method: str,
    path: str,
    expected: int,
) -> None:
    key, _ = await postroom.keys.create("limited", scopes)

    response = await client.request(
        method, QUEUES + path, headers={"Authorization": f"Bearer {key}"}
    )

    assert response.status_code == expected
    if expected == 403:
        assert response.headers["content-type"] == "application/problem+json"
        paused = (await client.get(f"{QUEUES}/bulk")).json()["paused"]
        assert paused is False  # nothing changed


async def test_without_a_key_401(client: httpx.AsyncClient) -> None:
    client.headers.pop("Authorization")
    assert (await client.get(QUEUES)).status_code == 401


async def test_openapi_documents_the_queue_endpoints(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    for path in ("", "/{queue}", "/{queue}/pause", "/{queue}/resume", "/{queue}/retry"):
        assert QUEUES + path in schema["paths"]
    throughput = schema["components"]["schemas"]["QueueStats"]["properties"]["throughput"]
    assert "per minute" in throughput["description"]


async def test_a_queue_shows_its_retry_config_and_schedule(client: httpx.AsyncClient) -> None:
    body = (await client.get(f"{QUEUES}/transactional")).json()
    assert body["retry"] == {
        "maxAttempts": 5,
        "backoff": "exponential",
        "baseDelaySeconds": 30.0,
        "maxDelaySeconds": 3600.0,
        "schedule": [60.0, 180.0, 420.0, 900.0],
    }
