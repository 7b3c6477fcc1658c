"""The worker against scripted providers: outcomes, retries, deferrals, shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.providers.fake import FakeProvider
from postroom.queue.worker import Worker
from tests.support.payloads import email
from tests.support.providers import add_provider, disable_all
from tests.support.queues import SPEC_RETRY, set_retry


async def fake(postroom: Postroom, script: list[str], **config: Any) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="fake", type="fake", config={"script": script, **config})


def provider_of(worker: Worker) -> FakeProvider:
    [candidate] = worker.router.candidates
    assert isinstance(candidate.provider, FakeProvider)
    return candidate.provider


async def drain(worker: Worker) -> int:
    return await worker.drain()


async def test_a_transient_outage_is_retried_over_minutes_by_default(
    postroom: Postroom, clock: ManualClock
) -> None:
    """452, 421, 451 in a row: with the defaults the message is still alive a
    quarter of an hour later, and the fifth attempt goes out about 15 minutes in."""
    await fake(postroom, ["transient"] * 4)
    result = await postroom.send(email())
    worker = postroom.worker()
    started = clock.now()
    try:
        for attempt, wait in enumerate([60, 120, 240, 480], start=1):
            assert await drain(worker) == 1
            status = await postroom.status(result.id)
            assert (status.status, status.attempts, status.max_attempts) == ("queued", attempt, 5)
            clock.advance(wait - 1)
            assert await drain(worker) == 0  # not due yet
            clock.advance(wait * 0.25 + 1.01)
        assert await drain(worker) == 1
    finally:
        await worker.aclose()
    status = await postroom.status(result.id)
    assert (status.status, status.attempts) == ("sent", 5)
    assert (clock.now() - started).total_seconds() >= 15 * 60


async def test_transient_failures_retry_with_backoff_then_send(
    postroom: Postroom, clock: ManualClock
) -> None:
    """A queue may keep the spec's 1 s base: 2, 4, 8 s."""
    await set_retry(postroom, SPEC_RETRY, "transactional")
    await fake(postroom, ["transient", "transient", "transient"])
    result = await postroom.send(email())
    worker = postroom.worker()
    try:
        for attempt in range(1, 4):
            assert await drain(worker) == 1
            status = await postroom.status(result.id)
            assert (status.status, status.attempts) == ("queued", attempt)
            assert await drain(worker) == 0  # not due yet: backoff
            clock.advance(2**attempt * 1.25 + 0.01)
        assert await drain(worker) == 1
    finally:
        await worker.aclose()
    status = await postroom.status(result.id)
    assert (status.status, status.attempts) == ("sent", 4)
    assert [a.outcome for a in status.attempt_log] == ["retry", "retry", "retry", "sent"]
    assert status.attempt_log[0].error_code == "provider-transient"


async def test_out_of_attempts_fails_with_the_last_error(
    postroom: Postroom, clock: ManualClock
) -> None:
    await fake(postroom, ["transient"] * 5)
    result = await postroom.send(email(maxAttempts=2))
    worker = postroom.worker()
    try:
        await drain(worker)
        clock.advance(100)
        await drain(worker)
    finally:
        await worker.aclose()
    status = await postroom.status(result.id)
    assert (status.status, status.attempts) == ("failed", 2)
    assert status.error is not None and status.error["code"] == "provider-transient"
    assert status.recipients[0].status == "failed"


async def test_permanent_rejection_fails_after_one_attempt(postroom: Postroom) -> None:
    await fake(postroom, ["rejected"])
    result = await postroom.send(email(maxAttempts=5))
    worker = postroom.worker()
    try:
        await drain(worker)
    finally:
        await worker.aclose()
    status = await postroom.status(result.id)
    assert (status.status, status.attempts) == ("failed", 1)
    assert status.error is not None and status.error["code"] == "provider-rejected"


async def test_retry_after_is_honoured(postroom: Postroom, clock: ManualClock) -> None:
    await fake(postroom, ["transient"], retryAfter=300)
    result = await postroom.send(email())
    worker = postroom.worker()
    try:
        await drain(worker)
        clock.advance(299)
        assert await drain(worker) == 0
        clock.advance(2)
        assert await drain(worker) == 1
    finally:
        await worker.aclose()
    assert (await postroom.status(result.id)).status == "sent"


async def test_no_provider_defers_without_spending_attempts(
    postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    result = await postroom.send(email(maxAttempts=1))
    worker = postroom.worker()
    try:
        for _ in range(3):
            await drain(worker)
            clock.advance(60)
        status = await postroom.status(result.id)
        assert (status.status, status.attempts) == ("queued", 0)
        await add_provider(postroom, name="late", type="fake")
        await worker.router.refresh(force=True)
        await drain(worker)
    finally:
        await worker.aclose()
    assert (await postroom.status(result.id)).status == "sent"


async def test_message_reaches_the_provider_composed(postroom: Postroom) -> None:
    await fake(postroom, [])
    body = email(
        to=[
            {"email": "ann@example.com", "name": "Ann"},
            {"email": "bob@example.com", "type": "cc"},
            {"email": "eve@example.com", "type": "bcc"},
        ],
        replyTo={"email": "help@example.com"},
        headers={"X-Campaign": "spring"},
    )
    result = await postroom.send(body)
    worker = postroom.worker()
    try:
        await drain(worker)
        [message] = provider_of(worker).sent
    finally:
        await worker.aclose()
    assert message.envelope_to == ("ann@example.com", "bob@example.com", "eve@example.com")
    assert message.message_id == f"<{result.id}@example.com>"
    head = message.mime.split(b"\r\n\r\n", 1)[0].decode()
    assert "Bcc" not in head and "eve@example.com" not in head
    assert "Cc: bob@example.com" in head and "Reply-To: help@example.com" in head
    assert "X-Campaign: spring" in head and f"X-Postroom-Id: {result.id}" in head


async def test_run_delivers_and_stops_gracefully(postroom: Postroom) -> None:
    await fake(postroom, [])
    ids = [(await postroom.send(email())).id for _ in range(20)]
    worker = postroom.worker()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    for _ in range(200):
        statuses = [await postroom.status(i) for i in ids]
        if all(s.status == "sent" for s in statuses):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, timeout=5)
    assert all(s.status == "sent" for s in statuses)
    assert worker.stats["sent"] == 20


async def test_postgres_notify_wakes_an_idle_worker(postroom: Postroom, backend: str) -> None:
    """With polling set to a minute, only NOTIFY can explain a prompt delivery."""
    if backend != "postgres":
        return  # SQLite has no NOTIFY; in-process sends wake workers directly
    await fake(postroom, [])
    postroom.settings.worker.poll_interval_s = 60
    worker = postroom.worker()
    postroom._workers.remove(worker)  # no in-process wake-up: only NOTIFY may wake it
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.sleep(0.3)  # let it go idle and LISTEN
    result = await postroom.send(email(type="system"))
    try:
        for _ in range(100):
            if (await postroom.status(result.id)).status == "sent":
                break
            await asyncio.sleep(0.05)
        assert (await postroom.status(result.id)).status == "sent"
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)


async def test_queue_concurrency_and_batch_size_bound_each_claim(postroom: Postroom) -> None:
    from sqlalchemy import Table, update

    from postroom.db.models import EmailQueue

    queues_t: Table = EmailQueue.__table__  # type: ignore[assignment]
    await fake(postroom, [])
    async with postroom.engine.begin() as conn:
        await conn.execute(
            update(queues_t).where(queues_t.c.name == "bulk").values(processor={"concurrency": 2})
        )
        await conn.execute(
            update(queues_t)
            .where(queues_t.c.name == "transactional")
            .values(processor={"batchSize": 3})
        )
    ids = [(await postroom.send(email(type="marketing"))).id for _ in range(5)]
    ids += [(await postroom.send(email())).id for _ in range(5)]
    bulk = await postroom.queues.get("bulk")
    assert bulk is not None
    worker = postroom.worker()
    try:
        first = await worker._claim_if_room(force=True)
        per_queue = {q: sum(j.queue_id == q for j in first) for q in {j.queue_id for j in first}}
        assert per_queue.get(bulk.id, 0) == 2
        assert sum(per_queue.values()) == 2 + 3  # transactional: its batch of 3
        await worker.drain()
    finally:
        await worker.aclose()
    assert [(await postroom.status(i)).status for i in ids] == ["sent"] * 10


async def test_frozen_worker_loses_its_lease_and_its_late_result_is_refused(
    postroom: Postroom, clock: ManualClock
) -> None:
    await fake(postroom, ["hang"])
    result = await postroom.send(email())
    frozen, rescuer = postroom.worker(worker_id="frozen"), postroom.worker(worker_id="rescuer")
    try:
        await frozen.router.refresh(force=True)
        frozen_task = asyncio.create_task(frozen.drain())
        await provider_of(frozen).hanging.wait()

        clock.advance(postroom.settings.worker.lease_s + 1)  # no heartbeat came
        await rescuer.router.refresh(force=True)
        provider_of(rescuer).release.set()  # its own scripted hang passes at once
        await rescuer._reap()
        assert await rescuer.drain() == 1
        assert (await postroom.status(result.id)).status == "sent"

        provider_of(frozen).release.set()  # the frozen send finally returns
        await asyncio.wait_for(frozen_task, timeout=5)
        assert frozen.stats["fenced"] == 1
    finally:
        await frozen.aclose()
        await rescuer.aclose()
    status = await postroom.status(result.id)
    assert (status.status, status.attempts) == ("sent", 2)
    assert [a.outcome for a in status.attempt_log] == ["released", "sent"]


async def test_a_failed_email_keeps_its_original_scheduled_at(
    postroom: Postroom, clock: ManualClock
) -> None:
    await fake(postroom, ["transient", "transient"])
    accepted = clock.now()
    result = await postroom.send(email(maxAttempts=2))
    worker = postroom.worker()
    try:
        clock.advance(7)
        await drain(worker)
        clock.advance(80)
        await drain(worker)
    finally:
        await worker.aclose()
    status = await postroom.status(result.id)
    assert (status.status, status.attempts) == ("failed", 2)
    assert status.scheduled_at == accepted == result.scheduled_at


async def test_shutdown_lets_a_periodic_write_finish_rather_than_cancel_it(
    postroom: Postroom,
) -> None:
    """A write cancelled half-way may leave its connection in the transaction; the
    final write-back would wait on that lock (SQLite), so shutdown waits instead."""
    await fake(postroom, [])
    worker = postroom.worker()
    started, release = asyncio.Event(), asyncio.Event()
    finished: list[str] = []
    heartbeat = worker._heartbeat

    async def slow_heartbeat() -> None:
        await heartbeat()
        started.set()
        await release.wait()
        finished.append("heartbeat")

    worker._heartbeat = slow_heartbeat  # type: ignore[method-assign]
    worker.lease_s = 0.15  # a heartbeat every 50 ms
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(started.wait(), timeout=5)
    stop.set()
    await asyncio.sleep(0.1)
    assert not task.done()  # waiting for the heartbeat under way
    release.set()
    await asyncio.wait_for(task, timeout=5)
    assert finished == ["heartbeat"]
