"""The database's clock: the one time base of every process that shares a database.

Leases, reaping and due times compare times that different processes wrote, often
on different hosts. A host whose clock runs 90 s ahead would reap the live leases
of the others and send their messages again; one running behind would hold back
scheduled mail. So no process trusts its own clock: each reads the time as its
local clock corrected by its measured offset to the database server's clock
(PostgreSQL ``clock_timestamp()``), the one clock every process shares.

SQLite has no server: every process runs on the one host that holds the file, and
"the database's clock" is that host's OS clock (what SQLite's ``'now'`` reads), so
the offset is zero there.

The offset is measured at start and again before every reap (the step that acts
on other processes' leases), so a stepped host clock is corrected within seconds.
Keeping the local clock between measurements, rather than asking the database on
every ``now()``, keeps time injectable: in tests a ``ManualClock`` stands in for
the database's clock and workers get deliberately skewed local clocks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.db.engine import reader

#: readings per measurement; the one with the shortest round trip is kept
SAMPLES = 3

#: reads the reference time (the database server's clock, or a test's clock)
Reference = Callable[[], Awaitable[datetime]]


async def server_now(engine: AsyncEngine) -> datetime:
    """The database's current time: PostgreSQL's clock; on SQLite the host's OS clock,
    which is what SQLite's ``'now'`` reads too (read here at full precision)."""
    if engine.dialect.name != "postgresql":
        return datetime.now(UTC)
    async with reader(engine).connect() as conn:
        value = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()
    return value.astimezone(UTC)  # type: ignore[no-any-return]


def reading(clock: Clock) -> Reference:
    """A clock used as the reference (tests: the manual clock plays the database)."""

    async def read() -> datetime:
        return clock.now()

    return read


class DatabaseClock:
    """``local`` corrected by its offset to ``reference``; ``sync`` measures it."""

    def __init__(self, local: Clock, reference: Reference) -> None:
        self.local = local
        self.reference = reference
        self.offset = timedelta(0)

    async def sync(self, samples: int = SAMPLES) -> timedelta:
        """Measure the offset again.

        A reading is taken as made halfway through its round trip, so its error is
        at most half of it; the sample with the shortest round trip wins (the first
        may include opening a connection). Processes that share rate-limit windows
        must agree to well within a window, hence the care.
        """
        best: tuple[timedelta, timedelta] | None = None
        for _ in range(max(1, samples)):
            before = self.local.now()
            remote = await self.reference()
            after = self.local.now()
            trip = after - before
            if best is None or trip < best[0]:
                best = (trip, remote - (before + trip / 2))
        assert best is not None
        self.offset = best[1]
        return self.offset

    def now(self) -> datetime:
        return self.local.now() + self.offset
