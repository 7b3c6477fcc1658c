"""The queue store's SQL: claim order, scheduling, leases, fencing, reaping, concurrency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, select, update

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.db.engine import create_engine
from postroom.db.models import EmailJob, EmailJobAttempt, EmailQueue, EmailRecord
from postroom.queue import store
from postroom.queue.jobs import Job, Result
from tests.support.payloads import email

jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)
attempts_t = cast(Table, EmailJobAttempt.__table__)
queues_t = cast(Table, EmailQueue.__table__)


async def enqueue(postroom: Postroom, n: int = 1, **overrides: Any) -> list[str]:
    return [(await postroom.send(email(**overrides))).id for _ in range(n)]


async def claim(postroom: Postroom, token: str = "w#1", limit: int = 10) -> list[Job]:
    return await store.claim(
        postroom.engine, token=token, limit=limit, now=postroom.clock.now(), lease_s=30
    )


async def job_row(postroom: Postroom, job_id: uuid.UUID | str) -> Any:
    async with postroom.engine.connect() as conn:
        return (
            await conn.execute(select(jobs_t).where(jobs_t.c.id == uuid.UUID(str(job_id))))
        ).one()


def sent(job: Job, clock: ManualClock) -> Result:
    return Result(job=job, outcome="sent", finished_at=clock.now(), message_id="<m@x>")


async def test_claim_order_is_priority_then_time(postroom: Postroom, clock: ManualClock) -> None:
    low = await enqueue(postroom, priority=1)
    clock.advance(1)
    urgent = await enqueue(postroom, priority=5)
    clock.advance(1)
    normal = await enqueue(postroom)
    clock.advance(1)
    urgent_later = await enqueue(postroom, priority=5)

    claimed = await claim(postroom)

    assert [str(j.id) for j in claimed] == urgent + urgent_later + normal + low
    assert all(j.attempts == 1 and j.locked_by == "w#1" for j in claimed)


async def test_a_job_is_not_claimed_before_it_is_due(
    postroom: Postroom, clock: ManualClock
) -> None:
    later = clock.now() + timedelta(hours=1)
    [job_id] = await enqueue(postroom, scheduledAt=later.isoformat())

    assert await claim(postroom) == []
    clock.advance(3600)
    assert [str(j.id) for j in await claim(postroom)] == [job_id]


async def test_claimed_jobs_are_not_claimed_again(postroom: Postroom) -> None:
    await enqueue(postroom, 3)
    first = await claim(postroom, "a#1", limit=2)
    second = await claim(postroom, "b#1", limit=10)
    assert len(first) == 2 and len(second) == 1
    assert {j.id for j in first}.isdisjoint({j.id for j in second})


async def test_paused_queue_keeps_its_jobs(postroom: Postroom, clock: ManualClock) -> None:
    await enqueue(postroom, type="marketing")
    [transactional] = await enqueue(postroom)
    bulk = await postroom.queues.get("bulk")
    assert bulk is not None
    await store.set_paused(postroom.engine, bulk.id, True, clock.now())

    assert [str(j.id) for j in await claim(postroom)] == [transactional]
    await store.set_paused(postroom.engine, bulk.id, False, clock.now())
    assert len(await claim(postroom)) == 1


async def test_finish_marks_job_and_records(postroom: Postroom, clock: ManualClock) -> None:
    await enqueue(postroom, to=[{"email": "a@example.com"}, {"email": "b@example.com"}])
    [job] = await claim(postroom)
    written = await store.finish(postroom.engine, [sent(job, clock)])

    assert written == {job.id}
    row = await job_row(postroom, job.id)
    assert (row.status, row.locked_by, row.completed_at) == ("completed", None, clock.now())
    async with postroom.engine.connect() as conn:
        recs = (await conn.execute(select(records_t))).all()
        attempts = (await conn.execute(select(attempts_t))).all()
    assert {(r.status, r.message_id, r.attempts) for r in recs} == {("sent", "<m@x>", 1)}
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "sent")]


async def test_expired_lease_returns_to_pending_and_fences_the_zombie(
    postroom: Postroom, clock: ManualClock
) -> None:
    await enqueue(postroom)
    [zombie_job] = await claim(postroom, "zombie#1")
    clock.advance(31)

    assert await store.reap(postroom.engine, now=clock.now()) == 1
    row = await job_row(postroom, zombie_job.id)
    assert (row.status, row.attempts, row.locked_by) == ("pending", 1, None)

    [fresh] = await claim(postroom, "fresh#1")
    assert fresh.id == zombie_job.id and fresh.attempts == 2
    # the frozen worker wakes up and reports: refused
    assert await store.finish(postroom.engine, [sent(zombie_job, clock)]) == set()
    assert (await job_row(postroom, fresh.id)).status == "processing"
    assert await store.finish(postroom.engine, [sent(fresh, clock)]) == {fresh.id}


async def test_heartbeat_keeps_a_long_send_leased(postroom: Postroom, clock: ManualClock) -> None:
    await enqueue(postroom)
    [job] = await claim(postroom, "slow#1")
    for _ in range(5):
        clock.advance(20)
        assert await store.heartbeat(postroom.engine, ["slow#1"], now=clock.now(), lease_s=30) == 1
        assert await store.reap(postroom.engine, now=clock.now()) == 0
    assert await store.finish(postroom.engine, [sent(job, clock)]) == {job.id}


async def test_crash_looping_job_fails_after_its_allowance(
    postroom: Postroom, clock: ManualClock
) -> None:
    [job_id] = await enqueue(postroom, maxAttempts=1)
    for n in range(1 + store.CRASH_ALLOWANCE):
        assert len(await claim(postroom, f"w#{n}")) == 1
        clock.advance(31)
        await store.reap(postroom.engine, now=clock.now())
    row = await job_row(postroom, job_id)
    assert row.status == "failed" and row.last_error_code == "lease-expired"


async def test_retry_and_deferred_outcomes(postroom: Postroom, clock: ManualClock) -> None:
    await enqueue(postroom, 2)
    a, b = await claim(postroom)
    later = clock.now() + timedelta(seconds=60)
    await store.finish(
        postroom.engine,
        [
            Result(job=a, outcome="retry", finished_at=clock.now(), retry_at=later,
                   error_code="provider-transient", error_message="451"),
            Result(job=b, outcome="deferred", finished_at=clock.now(), retry_at=later,
                   error_code="no-provider"),
        ],
    )  # fmt: skip
    row_a, row_b = await job_row(postroom, a.id), await job_row(postroom, b.id)
    assert (row_a.status, row_a.attempts, row_a.scheduled_at) == ("pending", 1, later)
    assert row_a.error["code"] == "provider-transient"
    assert (row_b.status, row_b.attempts) == ("pending", 0)  # a deferral costs no attempt


async def test_release_gives_the_attempt_back(postroom: Postroom, clock: ManualClock) -> None:
    await enqueue(postroom)
    [job] = await claim(postroom)
    assert await store.release(postroom.engine, [job], now=clock.now()) == 1
    row = await job_row(postroom, job.id)
    assert (row.status, row.attempts) == ("pending", 0)


async def test_retry_failed_gives_a_fresh_budget(postroom: Postroom, clock: ManualClock) -> None:
    await enqueue(postroom)
    [job] = await claim(postroom)
    await store.finish(
        postroom.engine,
        [Result(job=job, outcome="failed", finished_at=clock.now(), error_code="x")],
    )
    assert job.queue_id is not None
    assert await store.retry_failed(postroom.engine, job.queue_id, now=clock.now()) == 1
    row = await job_row(postroom, job.id)
    assert (row.status, row.attempts) == ("pending", 0)


async def test_concurrent_claimers_never_share_a_job(
    postroom: Postroom, clock: ManualClock
) -> None:
    """Four claimers with their own connections race over the same jobs."""
    await enqueue(postroom, 60)
    engines = [create_engine(postroom.settings) for _ in range(4)]

    async def claimer(n: int, engine: Any) -> list[uuid.UUID]:
        got: list[uuid.UUID] = []
        for round_ in range(20):
            jobs = await store.claim(
                engine, token=f"c{n}#{round_}", limit=3, now=clock.now(), lease_s=30
            )
            got.extend(j.id for j in jobs)
            await asyncio.sleep(0)
        return got

    try:
        results = await asyncio.gather(*(claimer(n, e) for n, e in enumerate(engines)))
    finally:
        for engine in engines:
            await engine.dispose()
    claimed = [job_id for batch in results for job_id in batch]
    assert len(claimed) == len(set(claimed)) == 60
    async with postroom.engine.connect() as conn:
        leased = (
            (await conn.execute(select(jobs_t.c.locked_by).where(jobs_t.c.status == "processing")))
            .scalars()
            .all()
        )
    assert len(leased) == 60


async def test_disabled_queue_refuses_new_mail(postroom: Postroom) -> None:
    async with postroom.engine.begin() as conn:
        await conn.execute(
            update(queues_t).where(queues_t.c.name == "transactional").values(enabled=False)
        )
    postroom.queues.invalidate()
    from postroom.errors import MessageError

    try:
        await postroom.send(email())
    except MessageError as exc:
        assert "disabled" in exc.message
    else:
        raise AssertionError("a disabled queue accepted mail")
