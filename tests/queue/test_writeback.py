"""Write-back under trouble: a database that refuses writes, a result that cannot be
written, a provider deleted while its message was being sent."""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.exc import OperationalError

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.queue import store, writeback
from postroom.queue.jobs import Result
from postroom.queue.worker import Worker
from tests.queue.test_worker import fake, provider_of
from tests.support.payloads import email
from tests.support.providers import add_provider, disable_all, providers_t


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_full_disk_is_retried_with_backoff_logged_once_per_interval_and_loses_nothing(
    postroom: Postroom, clock: ManualClock, caplog: pytest.LogCaptureFixture, monkeypatch: Any
) -> None:
    await fake(postroom, [])
    ids = [(await postroom.send(email())).id for _ in range(3)]
    mono = FakeMonotonic()
    worker = Worker(
        postroom.engine, postroom.settings, postroom.provider_router(), clock=clock, monotonic=mono
    )
    real_finish = store.finish
    tries: list[float] = []

    async def disk_full(engine: Any, results: Any) -> set[Any]:
        tries.append(mono.now)
        raise OperationalError("INSERT ...", {}, Exception("database or disk is full"))

    monkeypatch.setattr(store, "finish", disk_full)
    caplog.set_level(logging.INFO, logger="postroom.queue.worker")
    try:
        await worker.drain()
        # the worker's flush loop runs every 20 ms: drive it for three minutes
        for _ in range(int(180 / 0.02)):
            mono.now += 0.02
            await worker.flush()
        rounds = sorted(set(tries))  # a round tries the batch, then each result alone
        gaps = [b - a for a, b in itertools.pairwise(rounds)]
        assert len(rounds) < 40, f"{len(rounds)} write-back rounds in 180 s"
        assert all(later >= earlier - 0.03 for earlier, later in itertools.pairwise(gaps))
        assert gaps[0] < 0.5 and gaps[-1] >= writeback.RETRY_CAP_S - 0.03
        lines = [r for r in caplog.records if "writing results back" in r.getMessage()]
        # the first failure with its traceback, then one line with a count per minute
        assert 3 <= len(lines) <= 4, [r.getMessage() for r in lines]
        assert lines[0].exc_info is not None
        assert all("more times in the last" in r.getMessage() for r in lines[1:])
        assert all(r.exc_info is None for r in lines[1:])
        assert [(await postroom.status(i)).status for i in ids] == ["sending"] * 3

        monkeypatch.setattr(store, "finish", real_finish)  # space is freed
        mono.now += writeback.RETRY_CAP_S
        await worker.flush()
    finally:
        await worker.aclose()
    assert [(await postroom.status(i)).status for i in ids] == ["sent"] * 3
    assert any("works again" in r.getMessage() for r in caplog.records)


async def test_one_result_that_cannot_be_written_blocks_no_other(
    postroom: Postroom, clock: ManualClock, monkeypatch: Any
) -> None:
    await fake(postroom, [])
    ids = [(await postroom.send(email())).id for _ in range(4)]
    poisoned = ids[1]
    real_attempt_row = store._attempt_row

    def attempt_row(r: Result) -> dict[str, Any]:
        if str(r.job.id) == poisoned:
            raise ValueError("cannot be written")
        return real_attempt_row(r)

    monkeypatch.setattr(store, "_attempt_row", attempt_row)
    worker = postroom.worker()
    try:
        await worker.drain()
        for _ in range(writeback.MAX_STRIKES + 1):
            await worker.flush()
    finally:
        await worker.aclose()
    statuses = [(await postroom.status(i)).status for i in ids]
    assert statuses == ["sent", "sending", "sent", "sent"]
    # the dropped result's lease is no longer held: it runs out and the job is sent again
    assert len(worker.writeback) == 0 and worker.stats["dropped"] == 1
    assert not worker.writeback.tokens


async def test_deleting_a_provider_during_a_send_keeps_the_attempt_and_blocks_nothing(
    postroom: Postroom, clock: ManualClock
) -> None:
    await disable_all(postroom)
    doomed = await add_provider(postroom, name="doomed", type="fake", config={"script": ["hang"]})
    first = await postroom.send(email())
    worker = postroom.worker()
    try:
        await worker.router.refresh(force=True)
        task = asyncio.create_task(worker.drain())
        await provider_of(worker).hanging.wait()
        async with postroom.engine.begin() as conn:
            await conn.execute(delete(providers_t).where(providers_t.c.id == doomed))
        provider_of(worker).release.set()
        await asyncio.wait_for(task, timeout=5)

        await add_provider(postroom, name="next", type="fake")
        await worker.router.refresh(force=True)
        second = await postroom.send(email())
        await worker.drain()
    finally:
        await worker.aclose()
    status = await postroom.status(first.id)
    assert status.status == "sent"
    assert [(a.outcome, a.provider) for a in status.attempt_log] == [("sent", "doomed")]
    assert status.recipients[0].status == "sent"
    assert (await postroom.status(second.id)).status == "sent"


async def test_a_flush_cancelled_mid_write_keeps_its_results_for_the_next(
    postroom: Postroom, clock: ManualClock, monkeypatch: Any
) -> None:
    await fake(postroom, [])
    ids = [(await postroom.send(email())).id for _ in range(3)]
    worker = postroom.worker()
    real_finish = store.finish
    writing = asyncio.Event()

    async def slow_finish(engine: Any, results: Any) -> set[Any]:
        writing.set()
        await asyncio.Event().wait()  # until cancelled
        raise AssertionError("not reached")

    try:
        monkeypatch.setattr(store, "finish", slow_finish)
        # sends all three, then writes their results back; stopped mid-write, as the
        # worker's shutdown cancels its periodic flush
        drain = asyncio.create_task(worker.drain())
        await asyncio.wait_for(writing.wait(), 30)
        drain.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drain
        assert len(worker.writeback) == 3 and sum(worker.writeback.tokens.values()) == 3
        monkeypatch.setattr(store, "finish", real_finish)
        await worker.flush(force=True)
    finally:
        await worker.aclose()
    assert [(await postroom.status(i)).status for i in ids] == ["sent"] * 3
