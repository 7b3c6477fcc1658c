"""Group commit: concurrent sends share transactions without mixing their fates."""

from __future__ import annotations

import asyncio
import uuid
from typing import cast

from sqlalchemy import Table, event, func, select, update

from postroom.app import Postroom
from postroom.db.models import EmailJob, EmailRecord
from postroom.services.sending import legacy_fingerprint, request_fingerprint
from postroom.tracking import suppressions
from tests.support.payloads import email

jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)


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


async def test_one_batch_screens_each_send_by_its_own_type(postroom: Postroom) -> None:
    now = postroom.clock.now()
    async with postroom.engine.begin() as conn:
        await suppressions.add(conn, "Gone@Example.com", scope="global", reason="manual", now=now)
        await suppressions.add(
            conn, "promo@example.com", scope="marketing", reason="unsubscribe", now=now
        )
    pair = [{"email": "gone@example.com"}, {"email": "ok@example.com"}]
    results = await asyncio.gather(
        postroom.send(email(to=pair)),
        postroom.send(email(to=[{"email": "GONE@example.com"}])),
        postroom.send(email(to=[{"email": "promo@example.com"}], type="marketing")),
        postroom.send(email(to=[{"email": "promo@example.com"}], type="transactional")),
    )
    assert [r.status for r in results] == ["queued", "suppressed", "suppressed", "queued"]
    async with postroom.engine.connect() as conn:
        rows = (
            await conn.execute(
                select(records_t.c.job_id, records_t.c.recipient_email, records_t.c.status)
            )
        ).all()
        sent_to = (
            await conn.execute(select(jobs_t.c.data).where(jobs_t.c.id == uuid.UUID(results[0].id)))
        ).scalar_one()["request"]["to"]
    status = {(str(r.job_id), r.recipient_email.lower()): r.status for r in rows}
    assert status[(results[0].id, "gone@example.com")] == "suppressed"
    assert status[(results[0].id, "ok@example.com")] == "queued"
    assert status[(results[3].id, "promo@example.com")] == "queued"
    assert [r["email"] for r in sent_to] == ["ok@example.com"]


async def test_a_repeat_matches_a_fingerprint_stored_by_an_older_version(
    postroom: Postroom,
) -> None:
    body = email(metadata={"ratio": 1e-05})
    first = await postroom.send(body, idempotency_key="old")
    dumped = postroom.parse_request(body).model_dump(mode="json", by_alias=True, exclude_none=True)
    assert legacy_fingerprint(dumped) != request_fingerprint(dumped)  # 1e-05 vs 0.00001
    async with postroom.engine.begin() as conn:
        await conn.execute(
            update(jobs_t)
            .where(jobs_t.c.id == uuid.UUID(first.id))
            .values(request_hash=legacy_fingerprint(dumped))
        )
    again = await postroom.send(body, idempotency_key="old")
    assert again.id == first.id
