"""A restarted process takes back at once the jobs of this host's dead workers."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.queue import store
from tests.queue.test_worker import fake
from tests.support.payloads import email


def dead_pid() -> int:
    """The pid of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


async def test_a_new_worker_takes_back_the_leases_of_dead_local_processes_at_once(
    postroom: Postroom, clock: ManualClock
) -> None:
    await fake(postroom, [])
    ids = [(await postroom.send(email())).id for _ in range(3)]
    host, gone = socket.gethostname(), dead_pid()
    holders = [
        f"{host}:{gone}:a1b2c3#1",  # killed on this host: its jobs come back at once
        f"{host}:{os.getppid()}:a1b2c3#1",  # alive on this host: its lease is respected
        f"other-host.example:{gone}:a1b2c3#1",  # another host: left to its lease
    ]
    held = {}
    for token in holders:
        [job] = await store.claim(
            postroom.engine, token=token, limit=1, now=clock.now(), lease_s=60
        )
        held[token] = str(job.id)
    assert sorted(held.values()) == sorted(ids)

    worker = postroom.worker()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(200):  # the clock stands still: no lease can run out
            if (await postroom.status(held[holders[0]])).status == "sent":
                break
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
    restarted = await postroom.status(held[holders[0]])
    assert restarted.status == "sent"
    assert [(a.outcome, a.error_code) for a in restarted.attempt_log] == [
        ("released", "worker-gone"),
        ("sent", None),
    ]
    assert (await postroom.status(held[holders[1]])).status == "sending"
    assert (await postroom.status(held[holders[2]])).status == "sending"
