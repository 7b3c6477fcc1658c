"""Group commit: many concurrent writers, one transaction per batch.

A request that must not be answered before its row is committed (an open pixel,
a click) hands its item to :class:`GroupCommit` and awaits it. One flusher takes
everything waiting, writes it in one transaction and only then resolves each
caller; whatever arrives during a flush waits for the next one. So a burst of
requests costs one commit, not one each, and no caller is answered before its
row is durable. A failed flush fails every caller of its batch with
:class:`NotRecorded`: none of them is told its event was recorded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from postroom.errors import NotRecorded

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: one batch's writer: a result (or the exception to raise) per item, in order
Writer = Callable[[Sequence[T]], Awaitable[Sequence[R | Exception]]]


class GroupCommit(Generic[T, R]):
    def __init__(self, write: Writer[T, R], *, max_batch: int = 500) -> None:
        self._write = write
        self.max_batch = max_batch
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._flusher: asyncio.Task[None] | None = None
        #: batches written, for tests and the benchmark
        self.batches = 0

    async def submit(self, item: T) -> R:
        """Returns once ``item`` is committed (its writer's result); raises what the
        writer said of it, or :class:`NotRecorded` when its batch failed."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_all())
        return await future

    async def _flush_all(self) -> None:
        while self._waiting:
            batch = self._waiting[: self.max_batch]
            del self._waiting[: self.max_batch]
            await self._flush(batch)

    async def _flush(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{len(results)} results for a batch of {len(batch)}")
        except BaseException as exc:  # cancelled too: nobody may wait forever
            log.warning("a batch of %d events was not recorded: %r", len(batch), exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(NotRecorded())
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self.batches += 1
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():  # the caller went away; its row is committed all the same
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def aclose(self) -> None:
        """Wait for the batches under way (on shutdown: their callers get answers),
        then close the writer if it has an ``aclose`` (one that keeps a connection)."""
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        close = getattr(self._write, "aclose", None)
        if close is not None:
            await close()
