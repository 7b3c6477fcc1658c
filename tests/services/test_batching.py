"""Group commit: concurrent sends share transactions without mixing their fates."""

from __future__ import annotations

import asyncio
from typing import cast

from sqlalchemy import Table, event, func, select

from postroom.app import Postroom
from postroom.db.models import EmailJob
from tests.support.payloads import email

jobs_t = cast(Table, EmailJob.__table__)


async def job_count(postroom: Postroom) -> int:
    async with postroom.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(jobs_t))).scalar_one())


async def test_concurrent_sends_share_commits(postroom: Postroom) -> None:
    commits = 0

    def count(_conn: object) -> None:
        nonlocal commits
        commits += 1

    event.listen(postroom.engine.sync_engine, "commit", count)
    try:
        results = await asyncio.gather(*(postroom.send(email()) for _ in range(60)))
    finally:
        event.remove(postroom.engine.sync_engine, "commit", count)
    assert len({r.id for r in results}) == 60
    assert await job_count(postroom) == 60
    assert commits < 60  # some sends shared a transaction


async def test_a_repeated_key_in_a_batch_does_not_fail_the_others(postroom: Postroom) -> None:
    sends = [postroom.send(email(), idempotency_key=f"k{n}") for n in range(20)]
    sends += [postroom.send(email(), idempotency_key="k3"), postroom.send(email())]
    results = await asyncio.gather(*sends)
    assert results[20].id == results[3].id  # the repeat answers with the first
    assert len({r.id for r in results}) == 21
    assert await job_count(postroom) == 21
