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

On PostgreSQL a batch of ``Screening`` work (``POST /send``) that no webhook
endpoint wants ``queued`` or ``suppressed`` events of is written straight through
asyncpg: prepared statements, one ``executemany`` per table. Through SQLAlchemy
Core the same statements cost a third of the API process's CPU (statement cache
keys, parameter processing per row); the rows and the transaction are the same.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.db.engine import asyncpg_connection, json_dumps, write_turn
from postroom.events import subscriptions
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
        self._postgres = engine.dialect.name == "postgresql"
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
            if self._postgres and await _direct(conn, batch):
                jobs = await _write_postgres(conn, batch)
            else:
                async with write_turn(self._engine), conn.begin():
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
                async with write_turn(self._engine), conn.begin():
                    (job,) = await _write(conn, [p])
            except Exception as exc:
                done.append((p, exc))
            else:
                done.append((p, job))
        return done


async def _write(conn: AsyncConnection, batch: Sequence[_Pending]) -> list[store.NewJob]:
    """Screen the batch's recipients, then insert it; the jobs as inserted."""
    screenings = [p.work for p in batch if isinstance(p.work, Screening)]

    async def lookup(wanted: set[str], email_type: str, now: datetime) -> dict[str, str]:
        return await suppressions.suppressed(conn, wanted, email_type, now)

    applied = iter(await _screened(screenings, lookup))
    raw = [p.work for p in batch if p.screen and not isinstance(p.work, Screening)]
    screened = iter(await suppressions.screen(conn, raw) if raw else [])
    items: list[Item] = []
    for p in batch:
        if isinstance(p.work, Screening):
            items.append(next(applied))
        else:
            items.append(next(screened) if p.screen else p.work)
    await store.enqueue_many(conn, items)
    return [job for job, _ in items]


#: suppressed addresses among lower-case ``wanted`` for mail of a type at a time:
#: lower-case address -> reason
_Lookup = Callable[[set[str], str, datetime], Awaitable[dict[str, str]]]


async def _screened(screenings: Sequence[Screening], lookup: _Lookup) -> list[Item]:
    """Each screening's job and records without its suppressed recipients, with at most
    one ``lookup`` for other mail and one for marketing mail."""
    found: tuple[dict[str, str], dict[str, str]] = ({}, {})
    for marketing in (False, True):
        group = [s for s in screenings if (s.email_type == EmailType.MARKETING) is marketing]
        wanted = {address.strip().lower() for s in group for address in s.recipients}
        if wanted:
            now = max(s.now for s in group)
            email_type = EmailType.MARKETING if marketing else EmailType.TRANSACTIONAL
            found[marketing].update(await lookup(wanted, email_type, now))
    items: list[Item] = []
    for work in screenings:
        blocked = found[work.email_type == EmailType.MARKETING]
        addresses = (r.strip().lower() for r in work.recipients)
        items.append(work.apply({a: blocked[a] for a in addresses if a in blocked}))
    return items


# -- PostgreSQL, straight through asyncpg ----------------------------------------------


def _columns(table: Any, names: Sequence[str]) -> tuple[str, str]:
    """``(col, …)`` and ``($1, …)`` for an INSERT of ``names`` (checked against the table)."""
    if missing := [n for n in names if n not in table.c]:
        raise RuntimeError(f"{table.name} has no column {missing}")
    marks = ", ".join(f"${n}" for n in range(1, len(names) + 1))
    return ", ".join(names), marks


_JOB_COLUMNS = (
    "id", "queue_id", "type", "priority", "status", "attempts", "max_attempts", "data",
    "scheduled_at", "created_at", "idempotency_key", "api_key_id", "request_hash",
)  # fmt: skip
_RECORD_COLUMNS = (
    "id", "job_id", "queue_id", "recipient_email", "recipient_type", "recipient_name",
    "sender_email", "subject", "type", "status", "attempts", "metadata", "created_at",
    "bulk_id", "tag", "template_id",
)  # fmt: skip
_INSERT_JOBS = "INSERT INTO {} ({}) VALUES ({})".format(
    store.jobs.name, *_columns(store.jobs, _JOB_COLUMNS)
)
_INSERT_RECORDS = "INSERT INTO {} ({}) VALUES ({})".format(
    store.records.name, *_columns(store.records, _RECORD_COLUMNS)
)
_SUPPRESSED = (
    f"SELECT email, reason FROM {suppressions.suppressions_t.name}"
    " WHERE email = ANY($1::text[]) AND scope = ANY($2::text[])"
    " AND (expires_at IS NULL OR expires_at > $3)"
)
_NOTIFY = "SELECT pg_notify($1, $2)"


async def _direct(conn: AsyncConnection, batch: Sequence[_Pending]) -> bool:
    """Whether ``batch`` may take the asyncpg path: only API mail (``Screening``), no
    outbox rows to write for it (those stay with ``outbox.records_added``), and nobody
    listening to the engine's statements (instrumentation, tests that inject faults)."""
    events = conn.sync_engine.dispatch
    hooks = (events.before_cursor_execute, events.after_cursor_execute, events.begin)
    if any(hooks) or events.commit or events.rollback:
        return False
    if not all(isinstance(p.work, Screening) for p in batch):
        return False
    kinds = await subscriptions.wanted(conn)  # cached; a refresh reads the endpoints
    if conn.in_transaction():
        await conn.commit()  # that read's transaction: the batch needs its own
    return "queued" not in kinds and "suppressed" not in kinds


async def _write_postgres(conn: AsyncConnection, batch: Sequence[_Pending]) -> list[store.NewJob]:
    """``_write`` for a batch of ``Screening`` work, in one asyncpg transaction; its
    errors come out as SQLAlchemy's (IntegrityError for a repeated idempotency key)."""
    pg: asyncpg.Connection = await asyncpg_connection(conn)
    if pg.is_in_transaction():  # a transaction of ours would only be a savepoint in it
        raise RuntimeError("the connection is already in a transaction")
    statement = _INSERT_JOBS
    try:
        async with pg.transaction():
            screenings = [p.work for p in batch if isinstance(p.work, Screening)]
            statement = _SUPPRESSED

            async def lookup(wanted: set[str], email_type: str, now: datetime) -> dict[str, str]:
                scopes = suppressions.scopes_for(email_type)
                rows = await pg.fetch(_SUPPRESSED, list(wanted), scopes, now)
                return {r["email"]: r["reason"] for r in rows}

            items = await _screened(screenings, lookup)
            statement = _INSERT_JOBS
            await pg.executemany(statement, [_job_row(job) for job, _ in items])
            statement = _INSERT_RECORDS
            await pg.executemany(
                statement,
                [_record_row(job, r) for job, new_records in items for r in new_records],
            )
            # delivered at commit only: a worker never wakes for a job it cannot see yet
            statement = _NOTIFY
            due = {str(job.queue_id) for job, _ in items if job.scheduled_at <= job.created_at}
            for queue_id in sorted(due):
                await pg.execute(statement, store.NOTIFY_CHANNEL, queue_id)
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(statement, None, exc) from exc
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DBAPIError(statement, None, exc) from exc
    return [job for job, _ in items]


def _job_row(job: store.NewJob) -> tuple[Any, ...]:
    return (
        job.id, job.queue_id, job.type, job.priority, job.status, 0, job.max_attempts,
        json_dumps(job.data), job.scheduled_at, job.created_at, job.idempotency_key,
        job.api_key_id, job.request_hash,
    )  # fmt: skip


def _record_row(job: store.NewJob, r: store.NewRecord) -> tuple[Any, ...]:
    return (
        uuid.uuid4(), job.id, job.queue_id, r.recipient_email, r.recipient_type,
        r.recipient_name, r.sender_email, r.subject, r.type, r.status, 0,
        json_dumps(r.metadata), job.created_at, r.bulk_id, r.tag, r.template_id,
    )  # fmt: skip


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
