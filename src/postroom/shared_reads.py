"""One read for the callers that miss a cache together.

A worker claims a batch of jobs and starts their sends at once, and an API process
takes many requests at once; on an empty or expired cache every one of them would
run the same query (the shared part of a bulk send, a template version, a domain's
DKIM key, an API key's check, the queues) and hold a pooled connection for it.
Here the first caller starts the read as a task of its own and the others await
the same task: a caller that is cancelled stops waiting, not the read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SharedReads(Generic[K, V]):
    """Reads under way, by key. The caller keeps the cache; this only joins readers."""

    def __init__(self) -> None:
        self._reading: dict[K, asyncio.Future[V]] = {}

    async def get(self, key: K, read: Callable[[], Awaitable[V]]) -> V:
        """``read()``'s result, or that of the read of ``key`` already under way; its
        exception goes to every caller waiting, and nothing is kept once it is done."""
        reading = self._reading.get(key)
        if reading is None:
            reading = self._reading[key] = asyncio.ensure_future(read())
            reading.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(reading)

    def _done(self, key: K, done: asyncio.Future[V]) -> None:
        if self._reading.get(key) is done:
            del self._reading[key]
        if not done.cancelled():
            done.exception()  # retrieved: every caller may have stopped waiting

    def forget(self, key: K) -> None:
        """The next caller reads again, even while a read of ``key`` is under way (its
        answer may be older than a change this process just made)."""
        self._reading.pop(key, None)
