"""A report's cursor batches are asked for one ahead, and a reader that stops stops it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from postroom.analytics.reports import _read_ahead


async def batches(asked: list[int], gone: asyncio.Event, n: int = 5) -> AsyncIterator[int]:
    try:
        for i in range(n):
            asked.append(i)
            await asyncio.sleep(0)  # a fetch: a round trip
            yield i
    finally:
        gone.set()


async def test_every_batch_comes_in_order_and_the_next_is_asked_for_ahead() -> None:
    asked: list[int] = []
    seen = []
    async for batch in _read_ahead(batches(asked, asyncio.Event())):
        seen.append(batch)
        # while the caller handles a batch, the next one is already on its way
        assert asked[-1] == min(batch + 1, 4)
    assert seen == [0, 1, 2, 3, 4]


async def test_a_reader_that_stops_early_cancels_the_batch_asked_for_ahead() -> None:
    asked: list[int] = []
    gone = asyncio.Event()
    reader = _read_ahead(batches(asked, gone))
    async for _ in reader:
        break
    await reader.aclose()
    assert asked == [0, 1]
    await asyncio.wait_for(gone.wait(), 1)  # the source was closed, not left hanging
