"""Connection slots: how many sends one provider takes at once in this process.

A provider keeps a small pool of connections (SMTP ``maxConnections``, HTTP
``maxConnections``) while a worker runs many sends at once, so most sends wait for
a slot. Without a bound on that wait, a provider that accepts connections and then
never answers holds every message routed to it for as long as its own timeouts
allow, a pool's worth at a time, while other providers sit idle. So:

- a wait for a slot has its own deadline (``slotWaitMs``); when it passes, the
  message goes back to routing, which picks another provider;
- :meth:`Slots.abandon` (called when the provider's breaker opens) sends every
  waiting message back to routing at once;
- neither was an attempt: nothing reached the provider, so both raise
  :class:`~postroom.errors.ProviderUnavailable` and the worker does not spend the
  message's attempt; the time spent here is not part of the attempt's duration.

Slots are handed over first come, first served; a waiter that times out just as a
slot was handed to it keeps the slot.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from postroom.errors import ProviderUnavailable

__all__ = ["Slots"]


class Slots:
    """At most ``size`` holders at once; waiters give up after ``wait_s``."""

    def __init__(self, *, provider: str, size: int, wait_s: float) -> None:
        self.provider = provider
        self.size = max(1, size)
        self.wait_s = wait_s
        self.busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold one slot for the block.

        Raises:
            ProviderUnavailable: no slot within ``wait_s``, or the provider was given
                up on (:meth:`abandon`) while waiting.
        """
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        """Take a slot (see :meth:`hold`); give it back with :meth:`release`."""
        if self.busy < self.size and not self._waiters:
            self.busy += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.wait_s):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                return  # handed a slot as the deadline passed: keep it
            raise ProviderUnavailable(
                f"every connection to {self.provider} stayed busy for {self.wait_s:g}s",
                provider=self.provider,
                busy=True,
            ) from None
        except BaseException:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.release()  # cancelled after being handed a slot: pass it on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on; ``busy`` stays
                return
        self.busy -= 1

    def abandon(self, reason: str) -> int:
        """Send every waiter back to routing now; returns how many there were."""
        waiters, self._waiters = self._waiters, deque()
        count = 0
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(
                    ProviderUnavailable(
                        f"{self.provider} was taken out of rotation: {reason}",
                        provider=self.provider,
                    )
                )
                count += 1
        return count
