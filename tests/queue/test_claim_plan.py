"""On PostgreSQL a claim reads the jobs it claims, not the backlog, whatever the statistics say."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text

from postroom.app import Postroom
from postroom.queue import store

BACKLOG = 20_000

#: heap tuples this transaction read from email_jobs, by sequential and index/bitmap scans
READ = text(
    "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
    " FROM pg_stat_xact_user_tables WHERE relname = 'email_jobs'"
)


@asynccontextmanager
async def planned_driver(postroom: Postroom) -> AsyncIterator[Any]:
    """The driver's connection in a transaction planned as the worker's statements are."""
    async with postroom.engine.connect() as conn:
        pg = (await conn.get_raw_connection()).driver_connection
        assert pg is not None
        async with pg.transaction():
            await pg.execute(store.PG_CLAIM_PLAN)
            yield pg


async def fill_backlog(postroom: Postroom) -> None:
    async with postroom.engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO email_jobs (id, queue_id, type, priority, status, attempts,"
                " max_attempts, data, scheduled_at, created_at)"
                " SELECT gen_random_uuid(), (SELECT id FROM email_queues WHERE name = 'bulk'),"
                " 'bulk', 1, 'pending', 0, 3, '{}'::jsonb,"
                " CAST(:now AS timestamptz) - g * interval '1 ms', :now"
                " FROM generate_series(1, :n) AS g"
            ),
            {"now": postroom.clock.now(), "n": BACKLOG},
        )


async def tuples_read_by_claim(postroom: Postroom, limit: int) -> tuple[int, int]:
    """The SQLAlchemy statement (SQLite's claim, and the plan's reference)."""
    stmt = store.claim_statement(
        "postgresql", token="w#1", limit=limit, now=postroom.clock.now(), lease_s=30
    )
    async with postroom.engine.begin() as conn:
        await conn.execute(store.CLAIM_PLAN)
        before = int(await conn.scalar(READ) or 0)
        claimed = len((await conn.execute(stmt)).all())
        read = int(await conn.scalar(READ) or 0) - before
    return claimed, read


async def tuples_read_by_driver_claim(postroom: Postroom, limit: int) -> tuple[int, int]:
    """The statement ``store.claim`` runs on PostgreSQL, through the driver."""
    now = postroom.clock.now()
    async with planned_driver(postroom) as pg:
        before = int(await pg.fetchval(str(READ)) or 0)
        rows = await pg.fetch(store.PG_CLAIM, "w#1", now + timedelta(seconds=30), now, limit, None)
        read = int(await pg.fetchval(str(READ)) or 0) - before
    return len(rows), read


@pytest.mark.postgres
@pytest.mark.parametrize("analysed", ["while empty", "when full"])
@pytest.mark.parametrize("statement", ["sqlalchemy", "driver"])
async def test_a_claim_reads_about_what_it_claims(
    postroom: Postroom, analysed: str, statement: str
) -> None:
    async with postroom.engine.connect() as conn:
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        if analysed == "while empty":
            await conn.execute(text("ANALYZE email_jobs"))
    await fill_backlog(postroom)
    if analysed == "when full":
        async with postroom.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("ANALYZE email_jobs"))

    measure = tuples_read_by_claim if statement == "sqlalchemy" else tuples_read_by_driver_claim
    claimed, read = await measure(postroom, limit=10)

    assert claimed == 10
    # the claimed rows, read once by the index walk and once by the UPDATE, plus slack:
    # a plan that scans or sorts the backlog reads all 20,000
    assert read <= 40, read


@pytest.mark.postgres
async def test_a_sent_batch_is_written_back_reading_only_its_jobs(postroom: Postroom) -> None:
    await fill_backlog(postroom)
    now = postroom.clock.now()
    # thousands being processed by others, as on a busy queue: the write-back's fence
    # must not walk them (the statistics say the table is nearly empty)
    await store.claim(postroom.engine, token="w#0", limit=5_000, now=now, lease_s=30)
    batch = await store.claim(postroom.engine, token="w#1", limit=10, now=now, lease_s=30)
    assert len(batch) == 10
    async with planned_driver(postroom) as pg:
        before = int(await pg.fetchval(str(READ)) or 0)
        n = len(batch)
        rows = await pg.fetch(
            store.PG_FINISH_SENT,
            [j.id for j in batch],
            [j.locked_by for j in batch],
            [None] * n,
            ["p"] * n,
            ["<m@example.com>"] * n,
            [now] * n,
            [now] * n,
            [j.attempts for j in batch],
            [uuid.uuid4() for _ in batch],
            [1.0] * n,
            now,
        )
        read = int(await pg.fetchval(str(READ)) or 0) - before
    assert len(rows) == 10
    assert read <= 20, read
