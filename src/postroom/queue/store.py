"""All SQL that touches ``email_jobs`` (and the records and attempts that move with them).

One module so that the queue's correctness can be read in one place:

- ``enqueue`` writes a job and its records in the caller's transaction
  (transactional outbox: a 202 is answered only after both are committed).
- ``claim`` leases due jobs in claim order (priority desc, scheduled_at, id):
  ``FOR UPDATE SKIP LOCKED`` on PostgreSQL; on SQLite the same ``UPDATE …
  RETURNING`` runs inside ``BEGIN IMMEDIATE`` (see ``db.engine``), which
  serializes writers.
- Every write-back is fenced on ``(id, locked_by)``: each claim gets a fresh
  lease token, so a worker whose lease expired cannot overwrite the job's newer
  state.
- ``reap`` returns expired leases to ``pending``; any worker runs it.
"""

from __future__ import annotations

import os
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    DateTime,
    Integer,
    Row,
    String,
    Table,
    Uuid,
    and_,
    any_,
    bindparam,
    case,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy import (
    cast as cast_,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.db.engine import asyncpg_connection, reader, write_transaction
from postroom.db.models import EmailJob, EmailJobAttempt, EmailProvider, EmailQueue, EmailRecord
from postroom.db.types import JSONType
from postroom.events import outbox, subscriptions
from postroom.queue.jobs import Job, Result
from postroom.tracking import rejections
from postroom.types import JobStatus, RecordStatus

#: leaves the claim's index walk and primary-key lookups as the only plans PostgreSQL
#: may pick, for one transaction (``claim_statement``): one round trip for both settings
CLAIM_PLAN = text(
    "SELECT set_config('enable_sort', 'off', true), set_config('enable_seqscan', 'off', true)"
)

jobs = cast(Table, EmailJob.__table__)
records = cast(Table, EmailRecord.__table__)
attempts_t = cast(Table, EmailJobAttempt.__table__)
queues = cast(Table, EmailQueue.__table__)
providers = cast(Table, EmailProvider.__table__)

#: results written per statement: bounds the size of the fenced ``IN`` list
FINISH_CHUNK = 500

#: a job whose leases keep expiring (its worker crashes on it) is failed after
#: this many more attempts than its budget, so one poison message cannot loop forever
CRASH_ALLOWANCE = 5

_CLAIM_COLUMNS = (
    jobs.c.id,
    jobs.c.queue_id,
    jobs.c.type,
    jobs.c.priority,
    jobs.c.attempts,
    jobs.c.max_attempts,
    jobs.c.data,
    jobs.c.scheduled_at,
    jobs.c.locked_by,
    jobs.c.error,
)


@dataclass(frozen=True, kw_only=True, slots=True)
class NewJob:
    id: uuid.UUID
    queue_id: uuid.UUID
    type: str
    priority: int
    max_attempts: int
    data: dict[str, Any]
    scheduled_at: datetime
    created_at: datetime
    idempotency_key: str | None = None
    #: the API key that sent it; None for the in-process facade
    api_key_id: uuid.UUID | None = None
    #: fingerprint of the request, compared when an idempotency key is reused
    request_hash: str | None = None
    #: CANCELLED when every recipient is suppressed: nothing to send
    status: str = JobStatus.PENDING


@dataclass(frozen=True, kw_only=True, slots=True)
class NewRecord:
    recipient_email: str
    recipient_type: str
    recipient_name: str | None
    sender_email: str
    subject: str
    type: str
    metadata: dict[str, Any]
    #: SUPPRESSED for a recipient on the suppression list: never attempted
    status: str = RecordStatus.QUEUED
    bulk_id: uuid.UUID | None = None
    #: the analytics dimensions: campaign tag (the first tag) and template rendered from
    tag: str | None = None
    template_id: uuid.UUID | None = None


#: PostgreSQL channel on which enqueues wake idle workers (delivered at commit)
NOTIFY_CHANNEL = "postroom_jobs"


async def enqueue(conn: AsyncConnection, job: NewJob, new_records: Sequence[NewRecord]) -> None:
    """Insert a pending job and its records in the caller's transaction."""
    await enqueue_many(conn, [(job, new_records)])


async def enqueue_many(
    conn: AsyncConnection, items: Sequence[tuple[NewJob, Sequence[NewRecord]]]
) -> None:
    """Insert pending jobs and their records in the caller's transaction.

    One multi-row INSERT per table, whatever the number of jobs. On PostgreSQL
    this also queues a NOTIFY per queue that got due work, which the server
    delivers only if the transaction commits: a worker never wakes for a job it
    cannot see yet.
    """
    if not items:
        return
    await conn.execute(
        insert(jobs),
        [
            {
                "id": job.id,
                "queue_id": job.queue_id,
                "type": job.type,
                "priority": job.priority,
                "status": job.status,
                "attempts": 0,
                "max_attempts": job.max_attempts,
                "data": job.data,
                "scheduled_at": job.scheduled_at,
                "created_at": job.created_at,
                "idempotency_key": job.idempotency_key,
                "api_key_id": job.api_key_id,
                "request_hash": job.request_hash,
            }
            for job, _ in items
        ],
    )
    await conn.execute(
        insert(records),
        record_rows := [
            {
                "id": uuid.uuid4(),
                "job_id": job.id,
                "queue_id": job.queue_id,
                "recipient_email": r.recipient_email,
                "recipient_type": r.recipient_type,
                "recipient_name": r.recipient_name,
                "sender_email": r.sender_email,
                "subject": r.subject,
                "type": r.type,
                "status": r.status,
                "attempts": 0,
                "metadata": r.metadata,
                "created_at": job.created_at,
                "bulk_id": r.bulk_id,
                "tag": r.tag,
                "template_id": r.template_id,
            }
            for job, new_records in items
            for r in new_records
        ],
    )
    await outbox.records_added(conn, lambda: record_rows)
    if conn.dialect.name == "postgresql":
        due = sorted({str(job.queue_id) for job, _ in items if job.scheduled_at <= job.created_at})
        for queue_id in due:
            await conn.execute(select(func.pg_notify(NOTIFY_CHANNEL, queue_id)))


@dataclass(frozen=True, kw_only=True, slots=True)
class BulkFixed:
    """What every job and record of one bulk send shares."""

    bulk_id: uuid.UUID
    #: the campaign tag and template every record carries (analytics count by them)
    tag: str | None
    template_id: uuid.UUID | None
    queue_id: uuid.UUID
    type: str
    priority: int
    max_attempts: int
    scheduled_at: datetime
    created_at: datetime
    api_key_id: uuid.UUID | None
    sender_email: str

    def columns(self) -> dict[str, Any]:
        """The fields by name (shallow: ``asdict`` would copy every value)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, kw_only=True, slots=True)
class BulkRows(BulkFixed):
    """One bulk send's jobs and records, one of each per recipient, pre-encoded.

    What every row shares is given once; what differs is in parallel lists of
    ready-made column text: ids as 32 hex digits, JSON as text. Building these
    (rather than a ``NewJob`` and ``NewRecord`` each) is most of what makes a
    100,000-recipient request cheap.
    """

    job_ids: Sequence[str]
    job_data: Sequence[str]
    record_ids: Sequence[str]
    emails: Sequence[str]
    names: Sequence[str | None]
    subjects: Sequence[str]
    metadata: Sequence[str]


JOB_COLUMNS = (
    "id", "data", "queue_id", "type", "priority", "status", "attempts", "max_attempts",
    "scheduled_at", "created_at", "api_key_id",
)  # fmt: skip
RECORD_COLUMNS = (
    "id", "job_id", "recipient_email", "recipient_name", "subject", "metadata", "queue_id",
    "recipient_type", "sender_email", "type", "status", "attempts", "created_at", "bulk_id",
    "tag", "template_id",
)  # fmt: skip


async def enqueue_bulk(conn: AsyncConnection, rows: BulkRows) -> None:
    """Insert a bulk send's pending jobs and queued records in the caller's transaction,
    on SQLite: ``executemany`` of ready tuples, bypassing the per-value type processing
    of Core INSERTs. (PostgreSQL streams them with COPY: ``services.bulkcopy``.)"""
    if conn.dialect.name == "postgresql":
        raise ValueError("bulk rows go through services.bulkcopy on PostgreSQL")
    await _insert_bulk(conn, rows)
    await outbox.bulk_queued(conn, rows.bulk_id, rows.created_at)


async def _insert_bulk(conn: AsyncConnection, rows: BulkRows) -> None:
    def bound(column: Any, value: Any) -> Any:
        """A constant as the column's type stores it on this database."""
        process = column.type.bind_processor(conn.dialect)
        return process(value) if process is not None else value

    queue_id = bound(jobs.c.queue_id, rows.queue_id)
    scheduled_at = bound(jobs.c.scheduled_at, rows.scheduled_at)
    created_at = bound(jobs.c.created_at, rows.created_at)
    api_key_id = bound(jobs.c.api_key_id, rows.api_key_id)
    bulk_id = bound(records.c.bulk_id, rows.bulk_id)
    template_id = bound(records.c.template_id, rows.template_id)
    pending = JobStatus.PENDING.value
    job_tail = (scheduled_at, created_at, api_key_id)
    record_tail = (queue_id, "to", rows.sender_email, rows.type, RecordStatus.QUEUED.value, 0,
                   created_at, bulk_id, rows.tag, template_id)  # fmt: skip
    job_values = [
        (job_id, data, queue_id, rows.type, rows.priority, pending, 0, rows.max_attempts, *job_tail)
        for job_id, data in zip(rows.job_ids, rows.job_data, strict=True)
    ]
    record_values = [
        (record_id, job_id, email, name, subject, meta, *record_tail)
        for record_id, job_id, email, name, subject, meta in zip(
            rows.record_ids,
            rows.job_ids,
            rows.emails,
            rows.names,
            rows.subjects,
            rows.metadata,
            strict=True,
        )
    ]
    for table, columns, values in (
        ("email_jobs", JOB_COLUMNS, job_values),
        ("email_records", RECORD_COLUMNS, record_values),
    ):
        marks = ", ".join("?" * len(columns))
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
        await conn.exec_driver_sql(sql, values)


def time_ordered_ids(count: int, now: datetime) -> list[str]:
    """``count`` UUIDs of version 7 (RFC 9562) as 32 hex digits, in ascending order.

    They share ``now``'s millisecond and 12 random bits, and count up from a random
    62-bit start (the RFC's monotonic method): index inserts append to the right
    edge of the primary key instead of touching random pages, and making one costs
    a format rather than a ``uuid4()`` call.
    """
    ms = int(now.timestamp() * 1000) & ((1 << 48) - 1)
    seed = int.from_bytes(os.urandom(10))
    high = (ms << 16) | (0x7 << 12) | (seed >> 68)
    low = (0b10 << 62) | (seed & ((1 << 61) - 1))  # headroom: the count never carries
    prefix = f"{high:016x}"
    return [f"{prefix}{low + i:016x}" for i in range(count)]


async def job_by_idempotency_key(conn: AsyncConnection, key: str) -> Row[Any] | None:
    result = await conn.execute(select(jobs).where(jobs.c.idempotency_key == key))
    return result.first()


async def release_idempotency_key(engine: AsyncEngine, job_id: uuid.UUID, key: str) -> None:
    """Free an expired idempotency key so a new request may take it; the job stays."""
    async with engine.begin() as conn:
        await conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.idempotency_key == key)
            .values(idempotency_key=None)
        )


def _uuid_array(aggregate: Any) -> Any:
    """``(SELECT array_agg(…))`` as one array value, so ``= ANY`` is a one-time array
    test rather than a per-row ``ANY (subquery)``."""
    return cast_(aggregate.scalar_subquery(), ARRAY(Uuid))


def claim_statement(
    dialect: str,
    *,
    token: str,
    limit: int,
    now: datetime,
    lease_s: float,
    queue_ids: Sequence[uuid.UUID] | None = None,
) -> Any:
    """The claim's ``UPDATE … RETURNING``; on PostgreSQL run it after ``CLAIM_PLAN``.

    On PostgreSQL the plan must not depend on table statistics: a queue filled in
    a burst is claimed before autovacuum analyses it, and stale statistics (taken
    when the queue was empty) make the planner bitmap-scan every pending row and
    sort them, once per claim, so a claim of 100 read the whole backlog. So the
    claim walks ``idx_email_jobs_claim`` in order (sorts and sequential scans are
    disabled for its transaction, which leaves the index as the only way to the
    order), the queue filter and the claimed ids are one-time arrays (``= ANY``)
    rather than semi-joins, and the outer ``UPDATE`` finds its rows by primary key.
    """
    pg = dialect == "postgresql"
    open_queues = [queues.c.paused.is_(False)]
    if queue_ids is not None:
        open_queues.append(queues.c.id.in_(queue_ids))
    in_runnable = (
        jobs.c.queue_id
        == any_(_uuid_array(select(func.array_agg(queues.c.id)).where(*open_queues)))
        if pg
        else jobs.c.queue_id.in_(select(queues.c.id).where(*open_queues).scalar_subquery())
    )
    due = (
        select(jobs.c.id)
        .where(
            jobs.c.status == JobStatus.PENDING,
            jobs.c.scheduled_at <= now,
            in_runnable,
        )
        .order_by(jobs.c.priority.desc(), jobs.c.scheduled_at, jobs.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    chosen = (
        jobs.c.id == any_(_uuid_array(select(func.array_agg(due.subquery().c.id))))
        if pg
        else jobs.c.id.in_(due.scalar_subquery())
    )
    return (
        update(jobs)
        .where(chosen)
        .values(
            status=JobStatus.PROCESSING,
            locked_by=token,
            locked_until=now + timedelta(seconds=lease_s),
            attempts=jobs.c.attempts + 1,
            processed_at=now,
        )
        .returning(*_CLAIM_COLUMNS)
    )


async def claim(
    engine: AsyncEngine,
    *,
    token: str,
    limit: int,
    now: datetime,
    lease_s: float,
    queue_ids: Sequence[uuid.UUID] | None = None,
) -> list[Job]:
    """Lease up to ``limit`` due jobs from unpaused queues; each gets ``locked_by=token``."""
    if engine.dialect.name == "postgresql":
        claimed = await _claim_pg(
            engine, token=token, limit=limit, now=now, lease_s=lease_s, queue_ids=queue_ids
        )
    else:
        stmt = claim_statement(
            engine.dialect.name,
            token=token,
            limit=limit,
            now=now,
            lease_s=lease_s,
            queue_ids=queue_ids,
        )
        async with write_transaction(engine) as conn:
            rows = (await conn.execute(stmt)).all()
        claimed = [Job.from_row(row) for row in rows]
    claimed.sort(key=lambda j: (-j.priority, j.scheduled_at, j.id))
    return claimed


#: ``claim_statement`` on PostgreSQL written out once, for the driver's prepared
#: statement: a worker claims several times a second, and building, compiling and
#: reading the SQLAlchemy statement cost more of its CPU than the database's work.
#: $1 token, $2 lease end, $3 now, $4 limit, $5 queue ids (NULL: every queue).
PG_CLAIM = """
UPDATE email_jobs SET status = 'processing', attempts = email_jobs.attempts + 1,
    processed_at = $3, locked_by = $1, locked_until = $2
WHERE email_jobs.id = ANY (CAST((SELECT array_agg(due.id) FROM (
    SELECT email_jobs.id FROM email_jobs
    WHERE email_jobs.status = 'pending' AND email_jobs.scheduled_at <= $3
      AND email_jobs.queue_id = ANY (CAST((
          SELECT array_agg(email_queues.id) FROM email_queues
          WHERE email_queues.paused IS false
            AND ($5::uuid[] IS NULL OR email_queues.id = ANY ($5::uuid[]))) AS UUID[]))
    ORDER BY email_jobs.priority DESC, email_jobs.scheduled_at, email_jobs.id
    LIMIT $4 FOR UPDATE SKIP LOCKED) AS due) AS UUID[]))
RETURNING email_jobs.id, email_jobs.queue_id, email_jobs.type, email_jobs.priority,
    email_jobs.attempts, email_jobs.max_attempts, email_jobs.data, email_jobs.scheduled_at,
    email_jobs.locked_by, email_jobs.error
"""
#: ``CLAIM_PLAN`` for the driver
PG_CLAIM_PLAN = "SET LOCAL enable_sort = off; SET LOCAL enable_seqscan = off"


async def _claim_pg(
    engine: AsyncEngine,
    *,
    token: str,
    limit: int,
    now: datetime,
    lease_s: float,
    queue_ids: Sequence[uuid.UUID] | None,
) -> list[Job]:
    """The claim through asyncpg on a pooled connection (JSON decoded by the engine's
    codec), in its own transaction."""
    async with engine.connect() as conn:
        pg: Any = await asyncpg_connection(conn)
        async with pg.transaction():
            await pg.execute(PG_CLAIM_PLAN)
            rows = await pg.fetch(
                PG_CLAIM,
                token,
                now + timedelta(seconds=lease_s),
                now,
                limit,
                None if queue_ids is None else list(queue_ids),
            )
    return [Job.from_row(row) for row in rows]


async def heartbeat(
    engine: AsyncEngine, tokens: Iterable[str], *, now: datetime, lease_s: float
) -> int:
    """Extend the leases held under ``tokens``; returns how many jobs were extended."""
    token_list = list(tokens)
    if not token_list:
        return 0
    async with engine.begin() as conn:
        result = await conn.execute(
            update(jobs)
            .where(jobs.c.status == JobStatus.PROCESSING, jobs.c.locked_by.in_(token_list))
            .values(locked_until=now + timedelta(seconds=lease_s))
        )
    return result.rowcount


async def reap(engine: AsyncEngine, *, now: datetime) -> int:
    """Return jobs whose lease expired to ``pending`` (or fail crash-looping ones).

    The attempt the dead worker started stays counted, but a lost lease alone
    never fails a job within its budget plus ``CRASH_ALLOWANCE``.
    """
    expired = and_(jobs.c.status == JobStatus.PROCESSING, jobs.c.locked_until < now)
    return await _take_back(
        engine,
        expired,
        now=now,
        code="lease-expired",
        message="the worker's lease expired before it reported back",
    )


async def lease_holders(engine: AsyncEngine) -> set[str]:
    """The lease tokens of every job being processed now."""
    stmt = select(jobs.c.locked_by).where(jobs.c.status == JobStatus.PROCESSING).distinct()
    async with reader(engine).connect() as conn:
        return {token for token in (await conn.execute(stmt)).scalars() if token}


async def release_dead(engine: AsyncEngine, tokens: Iterable[str], *, now: datetime) -> int:
    """Take back at once the jobs leased under ``tokens``: their worker process is gone.

    Treated like an expired lease: the attempt stays counted (the send may have
    happened before the process died).
    """
    token_list = sorted(set(tokens))
    if not token_list:
        return 0
    held = and_(jobs.c.status == JobStatus.PROCESSING, jobs.c.locked_by.in_(token_list))
    return await _take_back(
        engine,
        held,
        now=now,
        code="worker-gone",
        message="the worker process holding the lease no longer exists",
    )


async def _take_back(
    engine: AsyncEngine, held: Any, *, now: datetime, code: str, message: str
) -> int:
    crash_looping = jobs.c.attempts >= jobs.c.max_attempts + CRASH_ALLOWANCE
    async with engine.begin() as conn:
        rows = (
            await conn.execute(
                update(jobs)
                .where(held)
                .values(
                    status=case((crash_looping, JobStatus.FAILED), else_=JobStatus.PENDING),
                    failed_at=case((crash_looping, now), else_=jobs.c.failed_at),
                    locked_by=None,
                    locked_until=None,
                    last_error_code=code,
                )
                .returning(jobs.c.id, jobs.c.attempts, jobs.c.status)
            )
        ).all()
        if rows:
            await conn.execute(
                insert(attempts_t),
                [
                    {
                        "id": uuid.uuid4(),
                        "job_id": row.id,
                        "attempt": row.attempts,
                        "finished_at": now,
                        "outcome": "released",
                        "error_code": code,
                        "error_message": message,
                    }
                    for row in rows
                ],
            )
            failed = [row.id for row in rows if row.status == JobStatus.FAILED]
            if failed:
                await _fail_records(conn, failed)
                await outbox.for_jobs(
                    conn,
                    "failed",
                    RecordStatus.FAILED,
                    lambda: (
                        (job_id, now, {"error": code, "message": message}) for job_id in failed
                    ),
                )
    return len(rows)


async def release(engine: AsyncEngine, held: Sequence[Job], *, now: datetime) -> int:
    """Give claimed-but-unstarted jobs back (shutdown); their attempt is not counted."""
    if not held:
        return 0
    async with engine.begin() as conn:
        result = await conn.execute(
            update(jobs)
            .where(
                jobs.c.status == JobStatus.PROCESSING,
                tuple_(jobs.c.id, jobs.c.locked_by).in_([(j.id, j.locked_by) for j in held]),
            )
            .values(
                status=JobStatus.PENDING,
                attempts=jobs.c.attempts - 1,
                locked_by=None,
                locked_until=None,
                scheduled_at=now,
            )
        )
    return result.rowcount


async def finish(engine: AsyncEngine, results: Sequence[Result]) -> set[uuid.UUID]:
    """Write a batch of results back in one transaction; returns the job ids written.

    A result whose lease was lost (the job was reaped and maybe re-claimed) is
    dropped: its job row no longer carries the token.
    """
    if not results:
        return set()
    if engine.dialect.name == "postgresql" and all(
        r.outcome == "sent" and not r.rejected for r in results
    ):
        fast = await _finish_sent_pg(engine, results)
        if fast is not None:
            return fast
    written: set[uuid.UUID] = set()
    async with write_transaction(engine) as conn:
        for start in range(0, len(results), FINISH_CHUNK):
            chunk = await _without_deleted_providers(conn, results[start : start + FINISH_CHUNK])
            by_outcome: dict[str, list[Result]] = defaultdict(list)
            for r in chunk:
                by_outcome[r.outcome].append(r)
            done: set[uuid.UUID] = set()
            for outcome, group in by_outcome.items():
                done |= await _finish_group(conn, outcome, group)
            accepted = [r for r in chunk if r.job.id in done]
            if accepted:
                await conn.execute(insert(attempts_t), [_attempt_row(r) for r in accepted])
            written |= done
    return written


#: a batch of sent jobs on PostgreSQL in one statement: the fenced jobs completed, their
#: records marked sent and their attempts logged, for the rows the fence let through.
#: $1 job ids, $2 lease tokens, $3 provider ids, $4 provider names, $5 message ids,
#: $6 started, $7 finished, $8 attempt numbers, $9 attempt ids, $10 durations (ms),
#: $11 the batch's completion time. ``error`` is JSON null, as the general path writes it.
#: Run after ``PG_CLAIM_PLAN``: each job is then found by its primary key from the
#: batch's rows. (The status test is written so that no index matches it: through
#: idx_email_jobs_claim the planner, misled by statistics of a quieter moment, read
#: every job being processed, thousands for a batch of a hundred.)
PG_FINISH_SENT = """
WITH sent AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::text[], $5::text[],
        $6::timestamptz[], $7::timestamptz[], $8::int[], $9::uuid[], $10::float8[])
    AS s(job_id, token, provider_id, provider_name, message_id, started_at, finished_at,
        attempt, attempt_id, duration_ms)
), done AS (
    UPDATE email_jobs SET status = 'completed', completed_at = $11, error = 'null'::jsonb,
        locked_by = NULL, locked_until = NULL
    FROM sent
    WHERE email_jobs.id = sent.job_id AND email_jobs.locked_by = sent.token
      AND (email_jobs.status = 'processing') IS TRUE
    RETURNING email_jobs.id
), marked AS (
    UPDATE email_records SET status = 'sent', provider_id = sent.provider_id,
        message_id = sent.message_id, delivery_id = sent.message_id,
        sent_at = sent.finished_at, attempts = sent.attempt
    FROM sent JOIN done ON done.id = sent.job_id
    WHERE email_records.job_id = ANY ($1::uuid[]) AND email_records.job_id = sent.job_id
      AND email_records.status <> 'suppressed'
), logged AS (
    INSERT INTO email_job_attempts (id, job_id, attempt, provider_id, provider_name,
        started_at, finished_at, outcome, duration_ms)
    SELECT sent.attempt_id, sent.job_id, sent.attempt, sent.provider_id, sent.provider_name,
        sent.started_at, sent.finished_at, 'sent', sent.duration_ms
    FROM sent JOIN done ON done.id = sent.job_id
)
SELECT id FROM done
"""
#: the providers still there, locked (KEY SHARE) until commit: see _without_deleted_providers
PG_PROVIDERS_PRESENT = "SELECT id FROM email_providers WHERE id = ANY ($1::uuid[]) FOR KEY SHARE"


async def _finish_sent_pg(engine: AsyncEngine, results: Sequence[Result]) -> set[uuid.UUID] | None:
    """``finish`` for a batch of sent results without refused recipients, on PostgreSQL:
    one statement per chunk through the driver. None when an event endpoint wants
    ``sent`` events: the general path writes those."""
    kinds = subscriptions.cached(engine)
    if kinds is None:  # a refresh, at most every few seconds
        async with reader(engine).connect() as conn:
            kinds = await subscriptions.wanted(conn)
    if "sent" in kinds:
        return None
    written: set[uuid.UUID] = set()
    async with engine.connect() as conn:
        pg: Any = await asyncpg_connection(conn)
        async with pg.transaction():
            await pg.execute(PG_CLAIM_PLAN)
            for start in range(0, len(results), FINISH_CHUNK):
                chunk = results[start : start + FINISH_CHUNK]
                wanted = list({r.provider_id for r in chunk if r.provider_id is not None})
                present = (
                    {row[0] for row in await pg.fetch(PG_PROVIDERS_PRESENT, wanted)}
                    if wanted
                    else set()
                )
                logged = [_attempt_row(r) for r in chunk]
                rows = await pg.fetch(
                    PG_FINISH_SENT,
                    [a["job_id"] for a in logged],
                    [r.job.locked_by for r in chunk],
                    [a["provider_id"] if a["provider_id"] in present else None for a in logged],
                    [a["provider_name"] for a in logged],
                    [r.message_id for r in chunk],
                    [a["started_at"] for a in logged],
                    [a["finished_at"] for a in logged],
                    [a["attempt"] for a in logged],
                    [a["id"] for a in logged],
                    [a["duration_ms"] for a in logged],
                    max(r.finished_at for r in chunk),
                )
                written.update(row[0] for row in rows)
    return written


async def _without_deleted_providers(
    conn: AsyncConnection, chunk: Sequence[Result]
) -> Sequence[Result]:
    """Clear the provider of results whose provider was deleted while they were sent.

    The attempt and its records keep the provider's name; only the link goes, as
    ``ON DELETE SET NULL`` does for rows written earlier. On PostgreSQL the
    providers still there are locked (KEY SHARE) until commit, so a delete cannot
    slip in between this check and the insert.
    """
    wanted = {r.provider_id for r in chunk if r.provider_id is not None}
    if not wanted:
        return chunk
    stmt = select(providers.c.id).where(providers.c.id.in_(wanted))
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update(key_share=True)
    present = set((await conn.execute(stmt)).scalars())
    if present == wanted:
        return chunk
    return [
        replace(r, provider_id=None) if r.provider_id not in (None, *present) else r for r in chunk
    ]


def _fenced(group: Sequence[Result]) -> Any:
    return and_(
        jobs.c.status == JobStatus.PROCESSING,
        tuple_(jobs.c.id, jobs.c.locked_by).in_([(r.job.id, r.job.locked_by) for r in group]),
    )


async def _finish_group(conn: AsyncConnection, outcome: str, group: list[Result]) -> set[uuid.UUID]:
    now = max(r.finished_at for r in group)
    released = {"locked_by": None, "locked_until": None}
    if outcome == "sent":
        stmt = (
            update(jobs)
            .where(_fenced(group))
            .values(status=JobStatus.COMPLETED, completed_at=now, error=None, **released)
        )
        ids = {row.id for row in (await conn.execute(stmt.returning(jobs.c.id))).all()}
        sent = [r for r in group if r.job.id in ids]
        if sent and conn.dialect.name == "postgresql":
            await conn.execute(_SENT_RECORDS, _sent_arrays(sent))
        elif sent:
            await conn.execute(
                update(records)
                .where(
                    records.c.job_id == bindparam("b_job_id"),
                    records.c.status != RecordStatus.SUPPRESSED,
                )
                .values(
                    status=RecordStatus.SENT,
                    provider_id=bindparam("b_provider_id"),
                    message_id=bindparam("b_message_id"),
                    delivery_id=bindparam("b_message_id"),
                    sent_at=bindparam("b_sent_at"),
                    attempts=bindparam("b_attempts"),
                ),
                [
                    {
                        "b_job_id": r.job.id,
                        "b_provider_id": r.provider_id,
                        "b_message_id": r.message_id,
                        "b_sent_at": r.finished_at,
                        "b_attempts": r.job.attempts,
                    }
                    for r in sent
                ],
            )
        if sent:  # on either database
            rejected = [(r, addr) for r in sent for addr in r.rejected]
            for r, addr in rejected:
                await conn.execute(
                    update(records)
                    .where(records.c.job_id == r.job.id, records.c.recipient_email == addr)
                    .values(status=RecordStatus.FAILED)
                )
            # a refused recipient is a (synchronous) bounce
            await rejections.record(
                conn, [(r.job.id, addr, r.rejected[addr], r.finished_at) for r, addr in rejected]
            )
            await outbox.for_jobs(conn, "sent", RecordStatus.SENT, lambda: _job_events(sent))
        return ids
    # retry, deferred, failed: lock the rows still ours, then one executemany
    mine_ids = set(
        (await conn.execute(select(jobs.c.id).where(_fenced(group)).with_for_update())).scalars()
    )
    mine = [r for r in group if r.job.id in mine_ids]
    if not mine:
        return set()
    await conn.execute(
        update(jobs)
        .where(jobs.c.id == bindparam("b_id"))
        .values(
            status=bindparam("b_status"),
            scheduled_at=bindparam("b_scheduled_at"),
            failed_at=bindparam("b_failed_at"),
            # a deferral was not a real attempt: give it back
            attempts=jobs.c.attempts - bindparam("b_give_back"),
            last_error_code=bindparam("b_code"),
            error=bindparam("b_error", type_=JSONType),
            **released,
        ),
        [
            {
                "b_id": r.job.id,
                "b_status": JobStatus.FAILED if outcome == "failed" else JobStatus.PENDING,
                # a failed job keeps the time it was due (status shows it as scheduledAt)
                "b_scheduled_at": r.retry_at or r.job.scheduled_at,
                "b_failed_at": r.finished_at if outcome == "failed" else None,
                "b_give_back": 1 if outcome == "deferred" else 0,
                "b_code": r.error_code,
                "b_error": _error_json(r),
            }
            for r in mine
        ],
    )
    record_values: dict[str, Any] = {"attempts": bindparam("b_attempts")}
    if outcome == "failed":
        record_values["status"] = RecordStatus.FAILED
    await conn.execute(
        update(records)
        .where(records.c.job_id == bindparam("b_job_id"), records.c.status == RecordStatus.QUEUED)
        .values(**record_values),
        [
            {
                "b_job_id": r.job.id,
                "b_attempts": r.job.attempts - (1 if outcome == "deferred" else 0),
            }
            for r in mine
        ],
    )
    if outcome != "deferred":  # a retry is a deferral; a failure, final
        kind, status = ("failed", RecordStatus.FAILED)
        if outcome == "retry":
            kind, status = ("deferred", RecordStatus.QUEUED)
        await outbox.for_jobs(conn, kind, status, lambda: _job_events(mine))
    if outcome == "failed":  # refused for good: a bounce event for every recipient
        await rejections.record(
            conn,
            [
                (r.job.id, None, r.error_message or "", r.finished_at)
                for r in mine
                if r.error_code == "provider-rejected"
            ],
            moves_status=False,
        )
    return mine_ids


def _job_events(results: Sequence[Result]) -> Iterable[outbox.JobEvent]:
    """Each result as an event about its job's records (``events.outbox``)."""
    for r in results:
        data: dict[str, Any] = {"provider": r.provider_name, "attempt": r.job.attempts}
        if r.message_id:
            data["messageId"] = r.message_id
        if r.error_code:
            data |= {"error": r.error_code, "message": r.error_message}
        if r.retry_at and r.outcome == "retry":
            data["retryAt"] = r.retry_at.isoformat()
        yield r.job.id, r.finished_at, data


#: on PostgreSQL the records of every sent job in one statement, joined to arrays: one
#: plan and one execution per batch instead of one per job (an ``executemany``)
_SENT = (
    func.unnest(
        bindparam("b_job_ids", type_=ARRAY(Uuid())),
        bindparam("b_provider_ids", type_=ARRAY(Uuid())),
        bindparam("b_message_ids", type_=ARRAY(String())),
        bindparam("b_sent_at", type_=ARRAY(DateTime(timezone=True))),
        bindparam("b_attempts", type_=ARRAY(Integer())),
    )
    .table_valued("job_id", "provider_id", "message_id", "sent_at", "attempts")
    .render_derived(name="sent")
)
_SENT_RECORDS = (
    update(records)
    .where(
        # the same ids again as an indexable condition: the planner then reads the
        # batch's records through idx_email_records_job, never the whole table
        records.c.job_id == func.any(bindparam("b_job_ids", type_=ARRAY(Uuid()))),
        records.c.job_id == _SENT.c.job_id,
        records.c.status != RecordStatus.SUPPRESSED,
    )
    .values(
        status=RecordStatus.SENT,
        provider_id=_SENT.c.provider_id,
        message_id=_SENT.c.message_id,
        delivery_id=_SENT.c.message_id,
        sent_at=_SENT.c.sent_at,
        attempts=_SENT.c.attempts,
    )
)


def _sent_arrays(sent: Sequence[Result]) -> dict[str, list[Any]]:
    return {
        "b_job_ids": [r.job.id for r in sent],
        "b_provider_ids": [r.provider_id for r in sent],
        "b_message_ids": [r.message_id for r in sent],
        "b_sent_at": [r.finished_at for r in sent],
        "b_attempts": [r.job.attempts for r in sent],
    }


def _error_json(r: Result) -> dict[str, Any] | None:
    if not r.error_code:
        return None
    return {
        "code": r.error_code,
        "message": r.error_message,
        "provider": r.provider_name,
        "providerId": str(r.provider_id) if r.provider_id else None,
        "attempts": r.job.attempts,
        "timestamp": r.finished_at.isoformat(),
        **r.error_detail,
    }


async def _fail_records(conn: AsyncConnection, job_ids: Sequence[uuid.UUID]) -> None:
    await conn.execute(
        update(records)
        .where(records.c.job_id.in_(job_ids), records.c.status == RecordStatus.QUEUED)
        .values(status=RecordStatus.FAILED)
    )


def _attempt_row(r: Result) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "job_id": r.job.id,
        "attempt": r.job.attempts,
        "provider_id": r.provider_id,
        "provider_name": r.provider_name,
        "started_at": r.started_at,
        "finished_at": r.finished_at,
        "outcome": r.outcome,
        "error_code": r.error_code,
        "error_message": (r.error_message or "")[:2000] or None,
        "duration_ms": r.duration_ms,
    }


# -- queue management ---------------------------------------------------------------


async def set_paused(engine: AsyncEngine, queue_id: uuid.UUID, paused: bool, now: datetime) -> bool:
    async with engine.begin() as conn:
        result = await conn.execute(
            update(queues).where(queues.c.id == queue_id).values(paused=paused, updated_at=now)
        )
    return result.rowcount > 0


async def retry_failed(engine: AsyncEngine, queue_id: uuid.UUID, *, now: datetime) -> int:
    """Failed jobs of a queue back to pending with a fresh attempt budget."""
    async with engine.begin() as conn:
        ids = [
            row.id
            for row in (
                await conn.execute(
                    update(jobs)
                    .where(jobs.c.queue_id == queue_id, jobs.c.status == JobStatus.FAILED)
                    .values(
                        status=JobStatus.PENDING,
                        attempts=0,
                        scheduled_at=now,
                        failed_at=None,
                        locked_by=None,
                        locked_until=None,
                    )
                    .returning(jobs.c.id)
                )
            ).all()
        ]
        if ids:
            await conn.execute(
                update(records)
                .where(records.c.job_id.in_(ids), records.c.status == RecordStatus.FAILED)
                .values(status=RecordStatus.QUEUED)
            )
    return len(ids)


async def queue_counts(
    conn: AsyncConnection, *, since: datetime, hour_ago: datetime
) -> dict[uuid.UUID, dict[str, Any]]:
    """Per queue: pending and processing now, completed and failed since ``since``,
    completed in the last hour, and the average send time."""
    recent_done = and_(jobs.c.status == JobStatus.COMPLETED, jobs.c.completed_at >= since)
    recent_failed = and_(jobs.c.status == JobStatus.FAILED, jobs.c.failed_at >= since)
    last_hour = and_(jobs.c.status == JobStatus.COMPLETED, jobs.c.completed_at >= hour_ago)
    active = or_(
        jobs.c.status.in_([JobStatus.PENDING, JobStatus.PROCESSING]), recent_done, recent_failed
    )

    def count_if(cond: Any) -> Any:
        return func.sum(case((cond, 1), else_=0))

    stmt = (
        select(
            jobs.c.queue_id,
            count_if(jobs.c.status == JobStatus.PENDING).label("pending"),
            count_if(jobs.c.status == JobStatus.PROCESSING).label("processing"),
            count_if(recent_done).label("completed"),
            count_if(recent_failed).label("failed"),
            count_if(last_hour).label("last_hour"),
        )
        .where(active)
        .group_by(jobs.c.queue_id)
    )
    out: dict[uuid.UUID, dict[str, Any]] = {}
    for row in (await conn.execute(stmt)).all():
        out[row.queue_id] = {k: int(getattr(row, k) or 0) for k in row._fields if k != "queue_id"}
    avg = (
        select(attempts_t.c.job_id, jobs.c.queue_id, attempts_t.c.duration_ms)
        .join(jobs, jobs.c.id == attempts_t.c.job_id)
        .where(attempts_t.c.finished_at >= since, attempts_t.c.outcome == literal("sent"))
        .subquery()
    )
    avg_stmt = select(avg.c.queue_id, func.avg(avg.c.duration_ms)).group_by(avg.c.queue_id)
    for queue_id, avg_ms in (await conn.execute(avg_stmt)).all():
        out.setdefault(queue_id, {})["avg_ms"] = float(avg_ms or 0.0)
    return out


async def purge_attempts(conn: AsyncConnection, *, before: datetime) -> int:
    result = await conn.execute(delete(attempts_t).where(attempts_t.c.finished_at < before))
    return result.rowcount


# -- queue management: backlog and activity (queue status) --------------------------

#: attempts that tried a provider: they count as processing activity
_TRIED_OUTCOMES = ("sent", "retry", "failed")


async def queue_activity(
    conn: AsyncConnection, *, now: datetime, since: datetime
) -> dict[uuid.UUID, dict[str, Any]]:
    """Per queue: pending jobs due now (``due``), the oldest one's ``scheduled_at``
    (``oldest_due``: how long the backlog has waited), and when a send attempt last
    finished since ``since`` (``last_attempt_at``).

    Future-scheduled jobs are not backlog, so they are left out of ``due``.
    """
    out: dict[uuid.UUID, dict[str, Any]] = {}
    due_stmt = (
        select(
            jobs.c.queue_id,
            func.count().label("due"),
            func.min(jobs.c.scheduled_at).label("oldest_due"),
        )
        .where(jobs.c.status == JobStatus.PENDING, jobs.c.scheduled_at <= now)
        .group_by(jobs.c.queue_id)
    )
    for row in (await conn.execute(due_stmt)).all():
        out.setdefault(row.queue_id, {}).update(due=int(row.due), oldest_due=row.oldest_due)
    last_stmt = (
        select(jobs.c.queue_id, func.max(attempts_t.c.finished_at).label("last_attempt_at"))
        .select_from(attempts_t.join(jobs, jobs.c.id == attempts_t.c.job_id))
        .where(attempts_t.c.finished_at >= since, attempts_t.c.outcome.in_(_TRIED_OUTCOMES))
        .group_by(jobs.c.queue_id)
    )
    for row in (await conn.execute(last_stmt)).all():
        out.setdefault(row.queue_id, {})["last_attempt_at"] = row.last_attempt_at
    return out
