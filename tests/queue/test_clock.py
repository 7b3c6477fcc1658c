"""Leases and due times use the database's clock, whatever each host's clock says."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from postroom.app import Postroom
from postroom.clock import Clock, ManualClock, SystemClock
from postroom.db.clock import DatabaseClock, server_now
from tests.queue.test_worker import drain, fake, provider_of
from tests.support.payloads import email

SKEW_S = 90


class Skewed:
    """A host clock that is ``seconds`` off the database's (the manual clock)."""

    def __init__(self, base: Clock, seconds: float) -> None:
        self.base, self.seconds = base, seconds

    def now(self) -> datetime:
        return self.base.now() + timedelta(seconds=self.seconds)


async def test_a_clock_ahead_does_not_reap_the_live_lease_of_a_clock_behind(
    postroom: Postroom, clock: ManualClock
) -> None:
    await fake(postroom, ["hang"])
    result = await postroom.send(email())
    behind = postroom.worker(worker_id="behind", clock=Skewed(clock, -SKEW_S))
    ahead = postroom.worker(worker_id="ahead", clock=Skewed(clock, +SKEW_S))
    try:
        await behind.router.refresh(force=True)
        await ahead.router.refresh(force=True)
        ahead_fake, behind_fake = provider_of(ahead), provider_of(behind)
        ahead_fake.release.set()  # were it to send, it would not hang
        clock.advance(SKEW_S + 1)  # due by every clock: only the lease is at stake
        sending = asyncio.create_task(behind.drain())
        await asyncio.wait_for(behind_fake.hanging.wait(), timeout=5)
        clock.advance(5)  # the lease (30 s) is young by the database's clock

        await ahead._reap()
        assert await asyncio.wait_for(ahead.drain(), timeout=5) == 0
        behind_fake.release.set()
        await asyncio.wait_for(sending, timeout=5)
    finally:
        await behind.aclose()
        await ahead.aclose()
    assert ahead_fake.sent == [] and len(behind_fake.sent) == 1
    status = await postroom.status(result.id)
    assert (status.status, [a.outcome for a in status.attempt_log]) == ("sent", ["sent"])


async def test_scheduled_mail_is_sent_on_time_by_a_clock_behind_and_not_early_by_one_ahead(
    postroom: Postroom, clock: ManualClock
) -> None:
    await fake(postroom, [])
    due = clock.now() + timedelta(seconds=60)
    result = await postroom.send(email(scheduledAt=due.isoformat()))
    behind = postroom.worker(worker_id="behind", clock=Skewed(clock, -SKEW_S))
    ahead = postroom.worker(worker_id="ahead", clock=Skewed(clock, +SKEW_S))
    try:
        clock.advance(30)
        assert await drain(ahead) == 0  # 30 s early by the database's clock
        clock.advance(30)
        assert await drain(behind) == 1  # due now by the database's clock
    finally:
        await behind.aclose()
        await ahead.aclose()
    assert (await postroom.status(result.id)).status == "sent"


async def test_the_database_clock_corrects_a_skewed_host_clock(postroom: Postroom) -> None:
    """Against the real server clock (PostgreSQL ``clock_timestamp()``; SQLite: the host's)."""
    host_now = datetime.now(UTC)
    assert abs((await server_now(postroom.engine) - host_now).total_seconds()) < 5
    for skew in (-SKEW_S, SKEW_S):
        corrected = DatabaseClock(Skewed(SystemClock(), skew), lambda: server_now(postroom.engine))
        offset = await corrected.sync()
        assert abs(offset.total_seconds() + skew) < 5
        assert abs((corrected.now() - datetime.now(UTC)).total_seconds()) < 5
