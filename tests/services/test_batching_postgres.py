"""The group commit's asyncpg path on PostgreSQL writes what the SQLAlchemy path writes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from typing import Any, cast

import pytest
from sqlalchemy import Table, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from postroom.api import dbfailure
from postroom.app import Postroom
from postroom.db.models import EmailJob, EmailRecord
from postroom.services import batching
from postroom.tracking import suppressions
from tests.support.payloads import email

pytestmark = pytest.mark.postgres

jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)


@pytest.fixture
def direct_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the batches written through asyncpg."""
    sizes: list[int] = []
    original = batching._write_postgres

    async def counted(conn: AsyncConnection, batch: Sequence[Any]) -> Any:
        sizes.append(len(batch))
        return await original(conn, batch)

    monkeypatch.setattr(batching, "_write_postgres", counted)
    return sizes


async def rows(postroom: Postroom, job_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    async with postroom.engine.connect() as conn:
        job = (await conn.execute(select(jobs_t).where(jobs_t.c.id == uuid.UUID(job_id)))).one()
        recs = (
            await conn.execute(
                select(records_t)
                .where(records_t.c.job_id == uuid.UUID(job_id))
                .order_by(records_t.c.recipient_email)
            )
        ).all()
    return dict(job._mapping), [dict(r._mapping) for r in recs]


def comparable(row: dict[str, Any], *varying: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in varying}


async def test_both_paths_write_the_same_rows(
    postroom: Postroom, direct_batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    now = postroom.clock.now()
    async with postroom.engine.begin() as conn:
        await suppressions.add(conn, "gone@example.com", scope="global", reason="manual", now=now)
    body = email(
        to=[
            {"email": "ann@example.com", "name": "Ann", "metadata": {"n": 1}},
            {"email": "Gone@Example.com", "type": "cc"},
        ],
        metadata={"order": "A-1", "big": 2**70},
        tags=["receipts"],
        priority=2,
    )
    fast = await postroom.send(body, idempotency_key="direct")
    assert direct_batches == [1]
    monkeypatch.setattr(batching, "_direct", _never)
    core = await postroom.send(body, idempotency_key="core")
    assert direct_batches == [1]

    (fast_job, fast_recs), (core_job, core_recs) = (
        await rows(postroom, fast.id),
        await rows(postroom, core.id),
    )
    assert fast_job["data"]["request"]["to"] == [
        {"email": "ann@example.com", "name": "Ann", "type": "to", "metadata": {"n": 1}}
    ]
    assert fast_job["idempotency_key"].endswith(":direct")
    assert comparable(fast_job, "id", "idempotency_key") == comparable(
        core_job, "id", "idempotency_key"
    )
    assert [comparable(r, "id", "job_id") for r in fast_recs] == [
        comparable(r, "id", "job_id") for r in core_recs
    ]
    assert [r["status"] for r in fast_recs] == ["suppressed", "queued"]  # Gone, ann
    assert fast_recs[0]["metadata"] == {"order": "A-1", "big": 2**70, "suppressed": "manual"}


async def _never(_conn: AsyncConnection, _batch: Sequence[Any]) -> bool:
    return False


async def test_concurrent_sends_share_direct_commits(
    postroom: Postroom, direct_batches: list[int]
) -> None:
    results = await asyncio.gather(*(postroom.send(email()) for _ in range(60)))
    assert len({r.id for r in results}) == 60
    assert sum(direct_batches) == 60
    assert len(direct_batches) < 60  # some sends shared a transaction
    async with postroom.engine.connect() as conn:
        ids = set((await conn.execute(select(jobs_t.c.id))).scalars())
    assert {uuid.UUID(r.id) for r in results} <= ids


async def test_a_repeated_key_in_a_direct_batch_does_not_fail_the_others(
    postroom: Postroom, direct_batches: list[int]
) -> None:
    sends = [postroom.send(email(), idempotency_key=f"k{n}") for n in range(20)]
    sends += [postroom.send(email(), idempotency_key="k3"), postroom.send(email())]
    results = await asyncio.gather(*sends)
    assert direct_batches  # (the retry one by one goes through SQLAlchemy)
    assert results[20].id == results[3].id
    assert len({r.id for r in results}) == 21


async def test_a_batch_with_webhook_subscribers_writes_its_events(
    postroom: Postroom, direct_batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def queued_wanted(_conn: AsyncConnection) -> frozenset[str]:
        return frozenset({"queued"})

    monkeypatch.setattr(batching.subscriptions, "wanted", queued_wanted)
    await postroom.send(email())
    assert direct_batches == []


async def test_a_terminated_connection_fails_the_batch_as_unavailable(
    postroom: Postroom, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = batching._screened

    async def terminated(screenings: Any, lookup: Any) -> Any:
        # every other backend of the test database: the batch's connection among them
        async with postroom.engine.connect() as other:
            await other.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        return await original(screenings, lookup)

    monkeypatch.setattr(batching, "_screened", terminated)
    with pytest.raises(DBAPIError) as info:
        await postroom.send(email())
    failure = dbfailure.classify(info.value)
    assert failure is not None and failure.http_status == 503
    monkeypatch.setattr(batching, "_screened", original)
    assert (await postroom.send(email())).status == "queued"  # a fresh connection
