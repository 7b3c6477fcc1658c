"""A primary that accepts connections and never answers must not hold its messages.

Both servers are real (aiosmtpd in-process): the primary hangs at the greeting or
after DATA, the secondary is healthy. The provider timeouts and the wait for a
connection slot are configured in fractions of a second, so these tests run on the
system clock and finish within a few seconds; nothing sleeps.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postroom.app import Postroom
from postroom.clock import SystemClock
from postroom.config import Settings, WorkerSettings
from tests.providers.smtp_server import HANG, SMTPServer
from tests.support.payloads import email
from tests.support.providers import add_provider, disable_all

MESSAGES = 40
POOL = 5


@pytest.fixture
def clock() -> SystemClock:
    return SystemClock()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    # many sends at once, as a production worker runs them: most wait for a connection
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        worker=WorkerSettings(concurrency=50, batch_size=50, poll_interval_s=0.05, lease_s=30),
    )


@pytest.fixture
async def servers(postroom: Postroom) -> AsyncIterator[tuple[SMTPServer, SMTPServer]]:
    async with SMTPServer() as primary, SMTPServer() as secondary:
        await disable_all(postroom)
        await add_provider(
            postroom,
            name="secondary",
            type="smtp",
            priority=100,
            config={"host": secondary.host, "port": secondary.port},
        )
        yield primary, secondary


async def add_primary(postroom: Postroom, server: SMTPServer, slot_wait_ms: int) -> None:
    await add_provider(
        postroom,
        name="primary",
        type="smtp",
        priority=200,
        config={
            "host": server.host,
            "port": server.port,
            "maxConnections": POOL,
            "greetingTimeout": 500,
            "socketTimeout": 500,
        },
        monitoring={"slotWaitMs": slot_wait_ms},
    )


async def send_and_drain(postroom: Postroom) -> tuple[list[str], float]:
    ids = [(await postroom.send(email(maxAttempts=3))).id for _ in range(MESSAGES)]
    worker = postroom.worker()
    start = time.monotonic()
    try:
        await worker.drain()
    finally:
        await worker.aclose()
    return ids, time.monotonic() - start


async def test_no_greeting_sends_every_waiting_message_elsewhere_at_once(
    postroom: Postroom, servers: tuple[SMTPServer, SMTPServer]
) -> None:
    primary, secondary = servers
    primary.script("GREETING", HANG, times=None)
    # a long slot wait: only the breaker opening can send the waiters elsewhere soon
    await add_primary(postroom, primary, slot_wait_ms=60_000)

    ids, elapsed = await send_and_drain(postroom)

    assert len(secondary.received) == MESSAGES
    assert primary.connections <= POOL  # one pool's worth found out; nobody else tried
    for email_id in ids:
        status = await postroom.status(email_id)
        assert (status.status, status.provider, status.attempts) == ("sent", "secondary", 1)
        assert [a.outcome for a in status.attempt_log] == ["sent"]
    assert elapsed < 5, f"{elapsed:.1f}s: messages waited for the hung provider"


async def test_no_reply_after_data_holds_only_the_messages_it_took(
    postroom: Postroom, servers: tuple[SMTPServer, SMTPServer]
) -> None:
    primary, secondary = servers
    primary.script("DATA", HANG, times=None)
    await add_primary(postroom, primary, slot_wait_ms=200)

    ids, elapsed = await send_and_drain(postroom)

    statuses = [await postroom.status(email_id) for email_id in ids]
    # the five it took may have been delivered: they spent their attempt, as they should
    outcomes = Counter((s.status, s.provider, s.attempts) for s in statuses)
    assert outcomes == {("sent", "secondary", 1): MESSAGES - POOL, ("queued", None, 1): POOL}
    assert len(secondary.received) == MESSAGES - POOL
    assert elapsed < 5, f"{elapsed:.1f}s: messages waited for the hung provider"
    # an attempt's duration is its own send, not the time spent waiting for a connection
    durations = [a.duration_ms or 0 for s in statuses for a in s.attempt_log if a.outcome == "sent"]
    assert max(durations) < 200
