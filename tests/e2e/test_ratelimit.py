"""A provider's rate limit holds across worker processes sharing one database.

Two ``postroom worker`` processes send through one SMTP provider limited to 4
messages per second. The test's SMTP server (aiosmtpd, on the test's own loop)
stamps each message as it arrives. The limiter counts reservations per epoch-aligned
second; a send reserved late in one window may arrive early in the next (on a loaded
machine it does), so arrivals in one second are bounded by twice the limit, as the
README documents for fixed windows, and the pacing must spread twelve messages over
at least three windows. Without the limit all twelve arrive in one burst.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from postroom.app import Postroom
from postroom.config import Settings
from tests.providers.smtp_server import Received, SMTPServer
from tests.support.payloads import email
from tests.support.processes import POSTROOM, env_for
from tests.support.providers import add_provider, disable_all

LIMIT = 4
MESSAGES = 12


class Stamped(list[Received]):
    """The server's received list, noting the wall-clock time of each arrival."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: Received) -> None:
        self.times.append(time.time())
        super().append(item)


async def start_worker(env: dict[str, str], log: IO[bytes]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *POSTROOM, "worker", "--concurrency", "8", env=env, stdout=log, stderr=log
    )


async def wait_until(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_two_worker_processes_never_exceed_the_limit_together(
    postroom: Postroom, settings: Settings, tmp_path: Path
) -> None:
    env = env_for(settings.data_dir, settings.effective_database_url)
    logs = [tmp_path / f"worker-{n}.log" for n in range(2)]
    async with SMTPServer() as server:
        server.received = stamped = Stamped()
        await disable_all(postroom)
        await add_provider(
            postroom,
            name="relay",
            type="smtp",
            config={"host": server.host, "port": server.port},
            limits={"rateLimit": LIMIT, "rateDelta": 1000},
        )
        files = [log.open("wb") for log in logs]
        workers = [await start_worker(env, f) for f in files]
        try:
            await wait_until(
                lambda: all(b"running" in log.read_bytes() for log in logs), 20, "the workers"
            )
            start = math.floor(time.time()) + 1.05  # just inside the next window
            due = datetime.fromtimestamp(start, UTC).isoformat()
            for _ in range(MESSAGES):
                await postroom.send(email(scheduledAt=due))
            await wait_until(lambda: len(stamped) == MESSAGES, 15, "every message")
        finally:
            for proc in workers:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            codes = [await asyncio.wait_for(proc.wait(), 15) for proc in workers]
            for f in files:
                f.close()
    output = "\n".join(log.read_text() for log in logs)
    assert codes == [0, 0], output

    per_window = Counter(math.floor(t) for t in stamped.times)
    assert max(per_window.values()) <= 2 * LIMIT, sorted(per_window.items())
    windows = sorted(per_window)
    for first, second in itertools.pairwise(windows):
        if second == first + 1:  # two adjacent windows: at most three windows' reservations
            assert per_window[first] + per_window[second] <= 3 * LIMIT, sorted(per_window.items())
    # the limit did the pacing: twelve messages took three windows, not one burst
    assert len(per_window) >= MESSAGES // LIMIT
    assert stamped.times[-1] - start >= (MESSAGES // LIMIT - 1) - 0.1
