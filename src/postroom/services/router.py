"""Which queue a request goes to.

An explicit ``queue`` always wins. Otherwise a request whose ``scheduledAt`` lies
more than :data:`SCHEDULED_AFTER` ahead goes to the ``scheduled`` queue, so the
queue list shows what waits for later; everything else goes by ``EmailRequest.type``.
Mail routed to ``scheduled`` by its time keeps its type's default job priority, so
a scheduled password reset still overtakes a marketing backlog when it is due.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.db.engine import reader
from postroom.db.models import EmailQueue
from postroom.errors import MessageError
from postroom.shared_reads import SharedReads
from postroom.types import EmailType

queues_t = cast(Table, EmailQueue.__table__)

#: EmailType -> default queue name (DESIGN.md "Queue semantics")
QUEUE_FOR_TYPE: dict[str, str] = {
    EmailType.TRANSACTIONAL: "transactional",
    EmailType.MARKETING: "bulk",
    EmailType.SYSTEM: "immediate",
    EmailType.NOTIFICATION: "immediate",
}

#: the queue for mail that waits for later
SCHEDULED_QUEUE = "scheduled"
#: how far ahead ``scheduledAt`` must be to route a request to the scheduled queue
#: (a time a few seconds ahead, e.g. from a slow client clock, is "now")
SCHEDULED_AFTER = timedelta(seconds=60)

#: queue priority -> default job priority, so system mail overtakes a marketing backlog
JOB_PRIORITY_FOR_QUEUE: dict[str, int] = {"critical": 5, "high": 4, "normal": 3, "low": 2}


@dataclass(frozen=True, kw_only=True, slots=True)
class QueueRef:
    id: uuid.UUID
    name: str
    type: str
    enabled: bool
    max_attempts: int | None
    #: the queue's priority (critical, high, normal, low)
    priority: str = "normal"

    @property
    def default_job_priority(self) -> int:
        """Job priority for requests that give none: the queue's, on the 1..5 scale."""
        return JOB_PRIORITY_FOR_QUEUE.get(self.priority, 3)


@dataclass(frozen=True, kw_only=True, slots=True)
class Route:
    """Where a request goes, and the job priority it takes when it gives none."""

    queue: QueueRef
    default_priority: int


class QueueDirectory:
    """Queue names and ids, cached briefly: every send needs one, and they rarely change."""

    def __init__(self, engine: AsyncEngine, ttl_s: float = 2.0) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._by_key: dict[str, QueueRef] = {}
        self._loaded = 0.0
        #: a load under way: the sends that find the cache stale together share it
        self._loading: SharedReads[str, None] = SharedReads()

    async def _load(self) -> None:
        async with reader(self._engine).connect() as conn:
            rows = (await conn.execute(select(queues_t))).all()
        by_key: dict[str, QueueRef] = {}
        for row in rows:
            ref = QueueRef(
                id=row.id,
                name=row.name,
                type=row.type,
                enabled=row.enabled,
                max_attempts=(row.retry or {}).get("maxAttempts"),
                priority=row.priority,
            )
            by_key[row.name] = ref
            by_key[str(row.id)] = ref
        self._by_key = by_key
        self._loaded = time.monotonic()

    def invalidate(self) -> None:
        self._loaded = 0.0

    async def get(self, key: str) -> QueueRef | None:
        if time.monotonic() - self._loaded > self._ttl_s or key not in self._by_key:
            await self._loading.get("queues", self._load)
        return self._by_key.get(key)

    async def for_request(
        self,
        email_type: str,
        queue: str | None,
        *,
        scheduled_at: datetime | None = None,
        now: datetime | None = None,
    ) -> Route:
        """The route for a request; MessageError if its queue does not exist or is disabled."""
        by_type = QUEUE_FOR_TYPE.get(email_type, "transactional")
        later = (
            queue is None
            and scheduled_at is not None
            and now is not None
            and scheduled_at > now + SCHEDULED_AFTER
        )
        key = queue or (SCHEDULED_QUEUE if later else by_type)
        ref = await self.get(key)
        if ref is None:
            raise MessageError(f"queue {key!r} does not exist", field="queue")
        if not ref.enabled:
            raise MessageError(f"queue {ref.name!r} is disabled and accepts no mail", field="queue")
        priority = ref.default_job_priority
        if later:
            type_ref = await self.get(by_type)
            priority = type_ref.default_job_priority if type_ref else priority
        return Route(queue=ref, default_priority=priority)
