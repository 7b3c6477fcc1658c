"""Group commit for enqueues: concurrent sends share one transaction.

Every accepted message must be committed before its 202 (or the relay's 250),
and a commit costs a disk flush: on SQLite one writer at a time pays it in full,
on PostgreSQL each connection waits for its own. While one batch commits, the
sends that arrive queue up and the next transaction takes them all, so under
load many messages share each flush, and at low load a send commits alone, as
fast as before. Batches that follow each other without a pause run on one
connection: checking a connection out of the pool costs a ping (three round
trips with asyncpg), which would otherwise be paid per batch.

Raw MIME jobs ask to be screened against the suppression list; that is one
query per batch too, in the transaction that stores them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.queue import store
from postroom.tracking import suppressions


@dataclass(slots=True)
class _Pending:
    job: store.NewJob
    records: Sequence[store.NewRecord]
    #: the job as committed (screening may have changed it)
    future: asyncio.Future[store.NewJob]
    #: still to be checked against the suppression list
    screen: bool


#: a submitter's answer: the job as stored, or why it was not
_Outcome = tuple[_Pending, store.NewJob | Exception]


class EnqueueBatcher:
    """Commits submitted jobs in shared transactions; ``submit`` returns once committed."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 128) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(
        self, job: store.NewJob, new_records: Sequence[store.NewRecord], *, screen: bool = False
    ) -> store.NewJob:
        """Commit ``job`` and its records (with whatever else is waiting); returns the
        job as stored. ``screen``: suppressed recipients are marked first (see
        ``suppressions.screen``), and the job is ``cancelled`` if nobody is left.

        Raises what the insert raised, e.g. IntegrityError for a repeated
        idempotency key: a batch that fails is retried item by item, so one
        bad item never fails the others.
        """
        future: asyncio.Future[store.NewJob] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(job, new_records, future, screen))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        # a caller that goes away cancels only its own future, never the commit
        return await future

    def _take(self) -> list[_Pending]:
        batch = self._pending[: self._max_batch]
        del self._pending[: self._max_batch]
        return batch

    async def _run(self) -> None:
        while self._pending:
            batch = self._take()
            done: list[_Outcome] = []
            try:
                async with self._engine.connect() as conn:
                    while True:
                        done = await self._commit(conn, batch)
                        if not self._pending:
                            break  # answered once the connection is back in the pool
                        _answer(done)
                        done, batch = [], self._take()
            except Exception as exc:  # no connection, or it broke
                if not done:  # (else only giving the connection back failed)
                    _fail(batch, exc)
            _answer(done)

    async def _commit(self, conn: AsyncConnection, batch: list[_Pending]) -> list[_Outcome]:
        """Commit ``batch`` in one transaction; what each of its submitters gets. An
        error other than an item's own (IntegrityError) is raised."""
        try:
            async with conn.begin():
                await _screen(conn, batch)
                await store.enqueue_many(conn, [(p.job, p.records) for p in batch])
        except IntegrityError as exc:
            if len(batch) == 1:
                return [(batch[0], exc)]
            return await self._one_by_one(conn, batch)
        return [(p, p.job) for p in batch]

    async def _one_by_one(self, conn: AsyncConnection, batch: list[_Pending]) -> list[_Outcome]:
        done: list[_Outcome] = []
        for p in batch:
            try:
                async with conn.begin():
                    await _screen(conn, [p])
                    await store.enqueue_many(conn, [(p.job, p.records)])
            except Exception as exc:
                done.append((p, exc))
            else:
                done.append((p, p.job))
        return done


async def _screen(conn: AsyncConnection, batch: list[_Pending]) -> None:
    """Mark the suppressed recipients of the jobs that asked for it (once per job)."""
    wanted = [p for p in batch if p.screen]
    if not wanted:
        return
    screened = await suppressions.screen(conn, [(p.job, p.records) for p in wanted])
    for p, (job, records) in zip(wanted, screened, strict=True):
        p.job, p.records, p.screen = job, records, False


def _answer(done: list[_Outcome]) -> None:
    for p, outcome in done:
        if p.future.done():
            continue
        if isinstance(outcome, BaseException):
            p.future.set_exception(outcome)
        else:
            p.future.set_result(outcome)


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(exc)
