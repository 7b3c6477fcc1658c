"""Group commit for enqueues: concurrent sends share one transaction.

Every accepted message must be committed before its 202 (or the relay's 250),
and a commit costs a disk flush: on SQLite one writer at a time pays it in full,
on PostgreSQL each connection waits for its own. While one batch commits, the
sends that arrive queue up and the next transaction takes them all, so under
load many messages share each flush, and at low load a send commits alone, as
fast as before. Batches that follow each other without a pause run on one
connection: checking a connection out of the pool costs a ping (three round
trips with asyncpg), which would otherwise be paid per batch.

The suppression list is read in the same transaction, with one query for the
whole batch (per request it would cost a pooled connection, a transaction and a
round trip before the insert): API mail comes as a ``Screening`` that builds its
job once the suppressed addresses are known; raw MIME jobs ask to be screened
(``screen=True``, see ``suppressions.screen``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.queue import store
from postroom.tracking import suppressions
from postroom.types import EmailType

Item = tuple[store.NewJob, Sequence[store.NewRecord]]
#: given the suppressed recipients (lower-case address -> reason), the job and records
#: to insert
Screen = Callable[[dict[str, str]], Item]


@dataclass(frozen=True, slots=True)
class Screening:
    """What to look up on the suppression list for one submitted job."""

    email_type: str
    recipients: Sequence[str]
    #: when the request was accepted: suppressions that expired before it do not count
    now: datetime
    apply: Screen


@dataclass(slots=True)
class _Pending:
    #: a built job, or how to build it once the suppression list is read
    work: Item | Screening
    future: asyncio.Future[store.NewJob]
    #: a built job still to be checked against the suppression list
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

    async def submit(self, work: Item | Screening, *, screen: bool = False) -> store.NewJob:
        """Commit a job and its records (with whatever else is waiting): given, or built
        by a ``Screening`` in the transaction; returns the job as stored. ``screen``
        (a given job): suppressed recipients are marked first, and the job is
        ``cancelled`` if nobody is left.

        Raises what the insert raised, e.g. IntegrityError for a repeated
        idempotency key: a batch that fails is retried item by item, so one
        bad item never fails the others.
        """
        future: asyncio.Future[store.NewJob] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(work, future, screen))
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
                jobs = await _write(conn, batch)
        except IntegrityError as exc:
            if len(batch) == 1:
                return [(batch[0], exc)]
            return await self._one_by_one(conn, batch)
        return list(zip(batch, jobs, strict=True))

    async def _one_by_one(self, conn: AsyncConnection, batch: list[_Pending]) -> list[_Outcome]:
        done: list[_Outcome] = []
        for p in batch:
            try:
                async with conn.begin():
                    (job,) = await _write(conn, [p])
            except Exception as exc:
                done.append((p, exc))
            else:
                done.append((p, job))
        return done


async def _write(conn: AsyncConnection, batch: Sequence[_Pending]) -> list[store.NewJob]:
    """Screen the batch's recipients, then insert it; the jobs as inserted."""
    screenings = [p.work for p in batch if isinstance(p.work, Screening)]
    blocked = await _suppressed(conn, screenings) if screenings else ({}, {})
    raw = [p.work for p in batch if p.screen and not isinstance(p.work, Screening)]
    screened = iter(await suppressions.screen(conn, raw) if raw else [])
    items: list[Item] = []
    for p in batch:
        work = p.work
        if isinstance(work, Screening):
            found = blocked[work.email_type == EmailType.MARKETING]
            addresses = (r.strip().lower() for r in work.recipients)
            items.append(work.apply({a: found[a] for a in addresses if a in found}))
        else:
            items.append(next(screened) if p.screen else work)
    await store.enqueue_many(conn, items)
    return [job for job, _ in items]


async def _suppressed(
    conn: AsyncConnection, screenings: Sequence[Screening]
) -> tuple[dict[str, str], dict[str, str]]:
    """Suppressed addresses among the recipients: (for other mail, for marketing mail);
    at most one query for each."""
    found: tuple[dict[str, str], dict[str, str]] = ({}, {})
    for marketing in (False, True):
        group = [s for s in screenings if (s.email_type == EmailType.MARKETING) is marketing]
        wanted = {address for s in group for address in s.recipients}
        if wanted:
            now = max(s.now for s in group)
            email_type = EmailType.MARKETING if marketing else EmailType.TRANSACTIONAL
            found[marketing].update(await suppressions.suppressed(conn, wanted, email_type, now))
    return found


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
