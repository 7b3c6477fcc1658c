"""Group commit for enqueues: concurrent sends share one transaction.

Every accepted message must be committed before its 202, and a commit costs a
disk flush: on SQLite one writer at a time pays it in full, on PostgreSQL each
connection waits for its own. While one batch commits, the sends that arrive
queue up and the next transaction takes them all, so under load many messages
share each flush, and at low load a send commits alone, as fast as before.

The suppression list is read in the same transaction, with one query for the
whole batch: per request it would cost a pooled connection, a transaction and a
round trip to the database before the insert.
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
    work: Item | Screening
    future: asyncio.Future[store.NewJob]


class EnqueueBatcher:
    """Commits submitted jobs in shared transactions; ``submit`` returns once committed."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 128) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._pending: list[_Pending] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, work: Item | Screening) -> store.NewJob:
        """Commit a job and its records (with whatever else is waiting): given, or built
        by a ``Screening`` in the transaction; returns the job as inserted.

        Raises what the insert raised, e.g. IntegrityError for a repeated
        idempotency key: a batch that fails is retried item by item, so one
        bad item never fails the others.
        """
        future: asyncio.Future[store.NewJob] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(work, future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        # shield: a caller that goes away must not cancel a commit others wait for
        return await asyncio.shield(future)

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                async with self._engine.begin() as conn:
                    done = await _write(conn, batch)
            except IntegrityError as exc:
                if len(batch) == 1:
                    _fail(batch, exc)
                else:
                    await self._one_by_one(batch)
                continue
            except Exception as exc:
                _fail(batch, exc)
                continue
            for pending, job in zip(batch, done, strict=True):
                if not pending.future.done():
                    pending.future.set_result(job)

    async def _one_by_one(self, batch: list[_Pending]) -> None:
        for pending in batch:
            try:
                async with self._engine.begin() as conn:
                    (job,) = await _write(conn, [pending])
            except Exception as exc:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            else:
                if not pending.future.done():
                    pending.future.set_result(job)


async def _write(conn: AsyncConnection, batch: Sequence[_Pending]) -> list[store.NewJob]:
    """Screen the batch's recipients, then insert it; the jobs as inserted."""
    screenings = [p.work for p in batch if isinstance(p.work, Screening)]
    blocked = await _suppressed(conn, screenings) if screenings else ({}, {})
    items: list[Item] = []
    for pending in batch:
        work = pending.work
        if not isinstance(work, Screening):
            items.append(work)
            continue
        found = blocked[work.email_type == EmailType.MARKETING]
        addresses = (r.strip().lower() for r in work.recipients)
        items.append(work.apply({a: found[a] for a in addresses if a in found}))
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


def _fail(batch: Sequence[_Pending], exc: BaseException) -> None:
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
