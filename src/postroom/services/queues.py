"""Queue management: the spec's ``getQueueStatus`` for each queue, pause, resume and
"retry failed". A queue is addressed by its id or its name (``bulk``).

Statistics are read from the jobs and their attempts, so they hold across all
worker processes; the 24-hour and one-hour windows end at the injected clock's now.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from postroom.clock import Clock
from postroom.db.engine import reader
from postroom.db.lookup import as_uuid, by_name_or_id
from postroom.db.models import EmailQueue
from postroom.errors import NotFound
from postroom.queue import store
from postroom.queue.retry import RetryConfig
from postroom.schemas import queues as schemas
from postroom.services.router import QueueDirectory
from postroom.types import ProcessorStatus, QueuePriority

queues_t = cast(Table, EmailQueue.__table__)

#: completed, failed, average time, processed jobs: counted over this window
STATS_WINDOW = timedelta(hours=24)
#: throughput: completed jobs over this window, reported per minute
THROUGHPUT_WINDOW = timedelta(hours=1)

#: queues are listed most urgent first, then by name
_PRIORITY_RANK: dict[str, int] = {
    QueuePriority.CRITICAL: 0,
    QueuePriority.HIGH: 1,
    QueuePriority.NORMAL: 2,
    QueuePriority.LOW: 3,
}


def health(
    stats: schemas.QueueStats, *, oldest_due: datetime | None, now: datetime
) -> schemas.QueueHealth:
    """The queue's health from its stats; the rules are ``schemas.queues.HEALTH_RULES``.

    Failures outrank a backlog: a failing provider also makes jobs wait, and the
    failures are the cause to look at.
    """
    if (
        stats.failed >= schemas.FAILING_MIN_FAILED
        and stats.failed >= schemas.FAILING_RATIO * stats.total_processed
    ):
        return "failing"
    if oldest_due is not None and (now - oldest_due).total_seconds() > schemas.BACKLOG_AGE_S:
        return "backlogged"
    return "healthy"


def processor_status(*, enabled: bool, paused: bool, processing: int) -> ProcessorStatus:
    """stopped (disabled) before paused before processing before idle.

    A paused queue may still show processing jobs: pausing stops new claims, it
    does not interrupt sends already under way.
    """
    if not enabled:
        return ProcessorStatus.STOPPED
    if paused:
        return ProcessorStatus.PAUSED
    if processing:
        return ProcessorStatus.PROCESSING
    return ProcessorStatus.IDLE


class QueueManager:
    """Read and steer the queues; every method takes a queue's id or name."""

    def __init__(
        self,
        engine: AsyncEngine,
        clock: Clock,
        directory: QueueDirectory | None = None,
        *,
        default_concurrency: int = 100,
        retry_defaults: RetryConfig | None = None,
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._directory = directory
        #: a queue without ``processor.concurrency`` runs at the worker's own limit
        self._default_concurrency = default_concurrency
        #: what a queue's ``retry`` config does not say
        self._retry_defaults = retry_defaults or RetryConfig()

    async def list_queues(self) -> list[schemas.QueueStatus]:
        """Every queue with its status, most urgent first."""
        async with reader(self._engine).connect() as conn:
            rows = (await conn.execute(select(queues_t))).all()
            statuses = await self._statuses(conn, rows)
        return sorted(statuses, key=lambda q: (_PRIORITY_RANK.get(q.priority, 9), q.name))

    async def status(self, key: str) -> schemas.QueueStatus:
        """One queue's status; NotFound when no queue has that id or name."""
        async with reader(self._engine).connect() as conn:
            row = await self._find(conn, key)
            (status,) = await self._statuses(conn, [row])
        return status

    async def pause(self, key: str) -> schemas.QueueStatus:
        """Stop workers claiming from the queue; it still accepts mail."""
        return await self._set_paused(key, paused=True)

    async def resume(self, key: str) -> schemas.QueueStatus:
        """Let workers claim from the queue again."""
        return await self._set_paused(key, paused=False)

    async def retry_failed(self, key: str) -> schemas.RetryResult:
        """Move the queue's failed jobs back to pending, each with a fresh attempt budget."""
        async with reader(self._engine).connect() as conn:
            row = await self._find(conn, key)
        retried = await store.retry_failed(self._engine, row.id, now=self._clock.now())
        return schemas.RetryResult(queue_id=str(row.id), retried=retried)

    # -- helpers -----------------------------------------------------------------------

    async def _set_paused(self, key: str, *, paused: bool) -> schemas.QueueStatus:
        async with reader(self._engine).connect() as conn:
            row = await self._find(conn, key)
        if not await store.set_paused(self._engine, row.id, paused, self._clock.now()):
            raise _not_found(key)  # deleted in the meantime
        if self._directory is not None:
            # the directory caches queue rows for sending; keep it in step with them
            self._directory.invalidate()
        return await self.status(str(row.id))

    async def _find(self, conn: AsyncConnection, key: str) -> Any:
        rows = (
            await conn.execute(select(queues_t).where(by_name_or_id(queues_t, "name", key)))
        ).all()
        if not rows:
            raise _not_found(key)
        # an id is unambiguous; prefer it over a queue that happens to be named like one
        return next((r for r in rows if r.id == as_uuid(key)), rows[0])

    async def _statuses(
        self, conn: AsyncConnection, rows: Sequence[Any]
    ) -> list[schemas.QueueStatus]:
        now = self._clock.now()
        since = now - STATS_WINDOW
        counts = await store.queue_counts(conn, since=since, hour_ago=now - THROUGHPUT_WINDOW)
        activity = await store.queue_activity(conn, now=now, since=since)
        return [
            self._status(row, counts.get(row.id, {}), activity.get(row.id, {}), now) for row in rows
        ]

    def _status(
        self, row: Any, counts: dict[str, Any], activity: dict[str, Any], now: datetime
    ) -> schemas.QueueStatus:
        completed = int(counts.get("completed", 0))
        failed = int(counts.get("failed", 0))
        processing = int(counts.get("processing", 0))
        total = completed + failed
        per_minute = counts.get("last_hour", 0) / (THROUGHPUT_WINDOW.total_seconds() / 60)
        stats = schemas.QueueStats(
            pending=int(counts.get("pending", 0)),
            processing=processing,
            completed=completed,
            failed=failed,
            total_processed=total,
            average_processing_time=round(float(counts.get("avg_ms", 0.0)), 1),
            throughput=round(per_minute, 2),
        )
        processor = schemas.QueueProcessor(
            queue_id=str(row.id),
            status=processor_status(enabled=row.enabled, paused=row.paused, processing=processing),
            concurrency=int((row.processor or {}).get("concurrency") or self._default_concurrency),
            active_jobs=processing,
            processed_jobs=completed,
            failed_jobs=failed,
            error_rate=round(failed / total, 4) if total else 0.0,
            last_processed_at=activity.get("last_attempt_at"),
        )
        return schemas.QueueStatus(
            id=str(row.id),
            name=row.name,
            type=row.type,
            priority=row.priority,
            enabled=row.enabled,
            paused=row.paused,
            stats=stats,
            health=health(stats, oldest_due=activity.get("oldest_due"), now=now),
            processor=processor,
            retry=schemas.QueueRetry.of(
                RetryConfig.from_json(row.retry, defaults=self._retry_defaults)
            ),
            guardrail_trip=(row.monitoring or {}).get("guardrailTrip"),
        )


def _not_found(key: str) -> NotFound:
    return NotFound(f"no queue with the name or id {key!r}")
