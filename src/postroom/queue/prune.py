"""Retention: delete finished mail older than a window, in short batches.

Only jobs in a final state go: ``completed`` and ``cancelled`` whose completion,
and ``failed`` whose failure, is older than the cutoff. Pending (including
scheduled), processing and recently failed jobs are never touched, whatever their
age. A job goes with its records and attempts; tracking rows follow their records
through ``ON DELETE CASCADE``.

Each batch is its own short transaction. On PostgreSQL the batch's jobs are locked
with ``FOR UPDATE SKIP LOCKED``, so a concurrent ``queues retry`` (failed back to
pending) either waits for the batch or has already changed the status, which the
batch then re-checks; on SQLite ``BEGIN IMMEDIATE`` serializes writers.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, and_, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql.elements import ColumnElement

from postroom.db.engine import reader
from postroom.db.models import EmailJob, EmailJobAttempt, EmailRecord
from postroom.types import JobStatus

jobs = cast(Table, EmailJob.__table__)
records = cast(Table, EmailRecord.__table__)
attempts = cast(Table, EmailJobAttempt.__table__)

#: jobs deleted per transaction: keeps each lock short and each ``IN`` list small
DEFAULT_BATCH = 500

#: the shortest window ``prune`` accepts: mail that just failed stays inspectable
MIN_WINDOW = timedelta(days=1)

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")


def parse_window(text: str) -> timedelta:
    """``30d``, ``12h``, ``2w``, ``90m`` as a timedelta; at least :data:`MIN_WINDOW`."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 2w or 90m")
    window = timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if window < MIN_WINDOW:
        raise ValueError(f"{text!r} is shorter than the minimum window of 1d")
    return window


@dataclass(frozen=True)
class PruneResult:
    """What a prune deleted (or, for a dry run, would delete)."""

    jobs: int = 0
    records: int = 0
    attempts: int = 0

    def __add__(self, other: PruneResult) -> PruneResult:
        return PruneResult(
            self.jobs + other.jobs, self.records + other.records, self.attempts + other.attempts
        )


def finished_before(cutoff: datetime) -> ColumnElement[bool]:
    """Jobs in a final state whose end is older than ``cutoff``."""
    done = func.coalesce(jobs.c.completed_at, jobs.c.failed_at, jobs.c.created_at)
    return or_(
        and_(jobs.c.status == JobStatus.FAILED, jobs.c.failed_at < cutoff),
        and_(jobs.c.status.in_([JobStatus.COMPLETED, JobStatus.CANCELLED]), done < cutoff),
    )


async def prune(
    engine: AsyncEngine,
    *,
    cutoff: datetime,
    batch: int = DEFAULT_BATCH,
    dry_run: bool = False,
) -> PruneResult:
    """Delete finished jobs older than ``cutoff`` with their rows, ``batch`` jobs at a time."""
    if dry_run:
        return await _count(engine, cutoff)
    total = PruneResult()
    while True:
        async with engine.begin() as conn:
            done = await _prune_batch(conn, cutoff, batch)
        total += done
        if done.jobs < batch:
            return total


async def _prune_batch(conn: AsyncConnection, cutoff: datetime, batch: int) -> PruneResult:
    query = select(jobs.c.id).where(finished_before(cutoff)).limit(batch)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids: list[uuid.UUID] = list((await conn.scalars(query)).all())
    if not ids:
        return PruneResult()
    gone_records = await conn.execute(delete(records).where(records.c.job_id.in_(ids)))
    gone_attempts = await conn.execute(delete(attempts).where(attempts.c.job_id.in_(ids)))
    gone_jobs = await conn.execute(
        # the status is checked again: the rows are locked, but say so in the statement
        delete(jobs).where(jobs.c.id.in_(ids), finished_before(cutoff))
    )
    return PruneResult(gone_jobs.rowcount, gone_records.rowcount, gone_attempts.rowcount)


async def _count(engine: AsyncEngine, cutoff: datetime) -> PruneResult:
    old = select(jobs.c.id).where(finished_before(cutoff)).scalar_subquery()
    async with reader(engine).connect() as conn:
        n_jobs = await conn.scalar(
            select(func.count()).select_from(jobs).where(finished_before(cutoff))
        )
        n_records = await conn.scalar(
            select(func.count()).select_from(records).where(records.c.job_id.in_(old))
        )
        n_attempts = await conn.scalar(
            select(func.count()).select_from(attempts).where(attempts.c.job_id.in_(old))
        )
    return PruneResult(n_jobs or 0, n_records or 0, n_attempts or 0)
