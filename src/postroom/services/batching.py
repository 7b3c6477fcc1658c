"""Group commit for enqueues: concurrent sends share one transaction.

Every accepted message must be committed before its 202, and a commit costs a
disk flush: on SQLite one writer at a time pays it in full, on PostgreSQL each
connection waits for its own. While one batch commits, the sends that arrive
queue up and the next transaction takes them all, so under load many messages
share each flush, and at low load a send commits alone, as fast as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.queue import store

Item = tuple[store.NewJob, Sequence[store.NewRecord]]


class EnqueueBatcher:
    """Commits submitted jobs in shared transactions; ``submit`` returns once committed."""

    def __init__(self, engine: AsyncEngine, *, max_batch: int = 128) -> None:
        self._engine = engine
        self._max_batch = max_batch
        self._pending: list[tuple[Item, asyncio.Future[None]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, job: store.NewJob, new_records: Sequence[store.NewRecord]) -> None:
        """Commit ``job`` and its records (with whatever else is waiting).

        Raises what the insert raised, e.g. IntegrityError for a repeated
        idempotency key: a batch that fails is retried item by item, so one
        bad item never fails the others.
        """
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(((job, new_records), future))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        # shield: a caller that goes away must not cancel a commit others wait for
        await asyncio.shield(future)

    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self._max_batch]
            del self._pending[: self._max_batch]
            try:
                async with self._engine.begin() as conn:
                    await store.enqueue_many(conn, [item for item, _ in batch])
            except IntegrityError as exc:
                if len(batch) == 1:
                    _fail(batch, exc)
                else:
                    await self._one_by_one(batch)
                continue
            except Exception as exc:
                _fail(batch, exc)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _one_by_one(self, batch: list[tuple[Item, asyncio.Future[None]]]) -> None:
        for item, future in batch:
            try:
                async with self._engine.begin() as conn:
                    await store.enqueue_many(conn, [item])
            except Exception as exc:
                if not future.done():
                    future.set_exception(exc)
            else:
                if not future.done():
                    future.set_result(None)


def _fail(batch: list[tuple[Item, asyncio.Future[None]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)
