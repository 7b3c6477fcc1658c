"""SharedReads: one read for callers that miss together, whatever happens to them."""

from __future__ import annotations

import asyncio

from postroom.shared_reads import SharedReads


class Reader:
    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(self) -> int:
        self.calls += 1
        await self.release.wait()
        if self.fail is not None:
            raise self.fail
        return self.calls


async def test_callers_that_miss_together_share_one_read() -> None:
    reads: SharedReads[str, int] = SharedReads()
    reader = Reader()
    waiting = [asyncio.create_task(reads.get("k", reader)) for _ in range(20)]
    await asyncio.sleep(0)
    reader.release.set()
    assert await asyncio.gather(*waiting) == [1] * 20 and reader.calls == 1
    assert await reads.get("k", reader) == 2  # done: nothing is kept


async def test_a_cancelled_caller_does_not_stop_the_read_of_the_others() -> None:
    reads: SharedReads[str, int] = SharedReads()
    reader = Reader()
    first = asyncio.create_task(reads.get("k", reader))
    second = asyncio.create_task(reads.get("k", reader))
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    reader.release.set()
    assert await second == 1 and first.cancelled() and reader.calls == 1


async def test_a_failed_read_fails_every_caller_and_is_not_kept() -> None:
    reads: SharedReads[str, int] = SharedReads()
    reader = Reader()
    reader.fail = ConnectionError("database down")
    waiting = [asyncio.create_task(reads.get("k", reader)) for _ in range(5)]
    await asyncio.sleep(0)
    reader.release.set()
    outcomes = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes) and reader.calls == 1
    reader.fail = None
    assert await reads.get("k", reader) == 2


async def test_forget_starts_a_new_read_that_the_old_one_does_not_remove() -> None:
    reads: SharedReads[str, int] = SharedReads()
    old, new = Reader(), Reader()
    before = asyncio.create_task(reads.get("k", old))
    await asyncio.sleep(0)
    reads.forget("k")
    after = asyncio.create_task(reads.get("k", new))
    await asyncio.sleep(0)
    old.release.set()
    assert await before == 1
    joined = asyncio.create_task(reads.get("k", Reader()))  # still the new read's
    await asyncio.sleep(0)
    new.release.set()
    assert await after == 1 and await joined == 1 and new.calls == 1
