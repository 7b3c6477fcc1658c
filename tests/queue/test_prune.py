"""Retention: ``prune`` deletes old finished mail and nothing else, also while workers run."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, func, select

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.db.models import EmailJob, EmailJobAttempt, EmailRecord
from postroom.queue import store
from postroom.queue.prune import PruneResult, parse_window, prune
from postroom.queue.worker import Worker
from tests.support.payloads import email
from tests.support.providers import add_provider, disable_all

jobs = cast(Table, EmailJob.__table__)
records = cast(Table, EmailRecord.__table__)
attempts = cast(Table, EmailJobAttempt.__table__)

DAY = 86400


async def fake(postroom: Postroom, script: list[str]) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="fake", type="fake", config={"script": script})


async def send(postroom: Postroom, **overrides: Any) -> uuid.UUID:
    return uuid.UUID((await postroom.send(email(**overrides))).id)


async def drain(worker: Worker) -> None:
    await worker.drain()
    await worker.flush(force=True)


async def job_states(postroom: Postroom) -> dict[uuid.UUID, str]:
    async with postroom.engine.connect() as conn:
        return {row.id: row.status for row in await conn.execute(select(jobs.c.id, jobs.c.status))}


async def count(postroom: Postroom, table: Table, job_ids: list[uuid.UUID]) -> int:
    async with postroom.engine.connect() as conn:
        n = await conn.scalar(
            select(func.count()).select_from(table).where(table.c.job_id.in_(job_ids))
        )
    return int(n or 0)


async def test_prune_deletes_only_old_finished_mail(postroom: Postroom, clock: ManualClock) -> None:
    await fake(postroom, ["ok", "rejected", "transient", "rejected"])
    worker = postroom.worker()
    try:
        two = [{"email": "ann@example.com"}, {"email": "bo@example.com"}]
        old_sent = await send(postroom, to=two)
        await drain(worker)
        old_failed = await send(postroom, maxAttempts=5)
        await drain(worker)
        old_retrying = await send(postroom, maxAttempts=5)  # transient: back to pending
        await drain(worker)
        scheduled = await send(postroom, scheduledAt=(clock.now() + timedelta(days=90)).isoformat())
        processing = await send(postroom)
        [claimed] = await store.claim(
            postroom.engine, token="elsewhere#1", limit=1, now=clock.now(), lease_s=10 * 86400
        )
        assert claimed.id == processing
        clock.advance(31 * DAY)
        recent_failed = await send(postroom, maxAttempts=5)
        await drain(worker)  # old_retrying is due again: it goes to the next script entry
    finally:
        await worker.aclose()
    before = await job_states(postroom)
    assert before[old_sent] == "completed"
    assert before[old_failed] == "failed"
    assert before[recent_failed] in ("failed", "completed")
    assert before[scheduled] == "pending"
    assert before[processing] == "processing"
    # old_retrying failed now (after the window began) or was sent now: either way recent
    assert before[old_retrying] in ("failed", "completed")

    cutoff = clock.now() - timedelta(days=30)
    planned = await prune(postroom.engine, cutoff=cutoff, dry_run=True)
    assert await job_states(postroom) == before  # a dry run deletes nothing
    done = await prune(postroom.engine, cutoff=cutoff, batch=1)

    assert done == planned == PruneResult(jobs=2, records=3, attempts=2)
    after = await job_states(postroom)
    assert set(before) - set(after) == {old_sent, old_failed}
    assert {k: before[k] for k in after} == after
    gone = [old_sent, old_failed]
    assert await count(postroom, records, gone) == 0
    assert await count(postroom, attempts, gone) == 0
    kept = [scheduled, processing, recent_failed, old_retrying]
    assert await count(postroom, records, kept) == 4
    # nothing left to do
    assert await prune(postroom.engine, cutoff=cutoff) == PruneResult()


async def test_prune_runs_beside_working_workers(postroom: Postroom, clock: ManualClock) -> None:
    """Old mail is pruned in small batches while a worker delivers new mail: every new
    message is delivered and kept, every old one is gone."""
    await fake(postroom, [])
    worker = postroom.worker()
    try:
        old = [await send(postroom) for _ in range(120)]
        await drain(worker)
    finally:
        await worker.aclose()
    clock.advance(31 * DAY)
    assert set((await job_states(postroom)).values()) == {"completed"}

    running = postroom.worker()
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    try:
        new: list[uuid.UUID] = []
        pruned = PruneResult()
        for round_ in range(6):
            new += [await send(postroom) for _ in range(10)]
            pruned += await prune(postroom.engine, cutoff=clock.now() - timedelta(days=30), batch=7)
            if round_ == 2:
                await asyncio.sleep(0.2)  # let the worker take some before the next batch
        for _ in range(200):
            states = await job_states(postroom)
            if all(states.get(j) == "completed" for j in new):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    states = await job_states(postroom)
    assert pruned.jobs == 120
    assert not set(old) & set(states)
    assert {states[j] for j in new} == {"completed"}
    assert await count(postroom, records, new) == len(new)
    assert await count(postroom, records, old) == 0


async def test_worker_prunes_on_schedule_only_when_configured(
    postroom: Postroom, clock: ManualClock
) -> None:
    await fake(postroom, [])
    worker = postroom.worker()
    try:
        sent = await send(postroom)
        await drain(worker)
        clock.advance(8 * DAY)
        await worker.prune()  # off by default: nothing happens
        assert sent in await job_states(postroom)
        postroom.settings.worker.prune_after_days = 7
        await worker.prune()
        assert sent not in await job_states(postroom)
    finally:
        postroom.settings.worker.prune_after_days = None
        await worker.aclose()


@pytest.mark.parametrize(
    ("text", "days"), [("30d", 30), ("2w", 14), ("36h", 1.5), ("1440m", 1), (" 7D ", 7)]
)
def test_windows_parse(text: str, days: float) -> None:
    assert parse_window(text) == timedelta(days=days)


@pytest.mark.parametrize("text", ["", "30", "d", "-3d", "1.5d", "3y", "23h", "0d"])
def test_bad_or_too_short_windows_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|minimum"):
        parse_window(text)
