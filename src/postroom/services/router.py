"""Which queue a request goes to: ``EmailRequest.type`` decides, unless it names a queue."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.db.engine import reader
from postroom.db.models import EmailQueue
from postroom.errors import MessageError
from postroom.types import EmailType

queues_t = cast(Table, EmailQueue.__table__)

#: EmailType -> default queue name (DESIGN.md "Queue semantics")
QUEUE_FOR_TYPE: dict[str, str] = {
    EmailType.TRANSACTIONAL: "transactional",
    EmailType.MARKETING: "bulk",
    EmailType.SYSTEM: "immediate",
    EmailType.NOTIFICATION: "immediate",
}

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


class QueueDirectory:
    """Queue names and ids, cached briefly: every send needs one, and they rarely change."""

    def __init__(self, engine: AsyncEngine, ttl_s: float = 2.0) -> None:
        self._engine = engine
        self._ttl_s = ttl_s
        self._by_key: dict[str, QueueRef] = {}
        self._loaded = 0.0

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
            await self._load()
        return self._by_key.get(key)

    async def for_request(self, email_type: str, queue: str | None) -> QueueRef:
        """The queue for a request; MessageError if it does not exist or is disabled."""
        key = queue or QUEUE_FOR_TYPE.get(email_type, "transactional")
        ref = await self.get(key)
        if ref is None:
            raise MessageError(f"queue {key!r} does not exist", field="queue")
        if not ref.enabled:
            raise MessageError(f"queue {ref.name!r} is disabled and accepts no mail", field="queue")
        return ref
