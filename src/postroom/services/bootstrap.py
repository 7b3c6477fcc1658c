"""First start: the four default queues and the development outbox provider."""

from __future__ import annotations

import uuid
from typing import Any, cast

from sqlalchemy import Table, func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.db.models import EmailProvider, EmailQueue
from postroom.queue.retry import RetryConfig
from postroom.types import ProviderType, QueuePriority, QueueType

queues = cast(Table, EmailQueue.__table__)
providers = cast(Table, EmailProvider.__table__)

#: (name, type, priority, processor config). No per-queue concurrency by default:
#: each worker's own concurrency applies until an operator sets one.
DEFAULT_QUEUES: tuple[tuple[str, QueueType, QueuePriority, dict[str, Any]], ...] = (
    ("immediate", QueueType.IMMEDIATE, QueuePriority.CRITICAL, {}),
    ("transactional", QueueType.TRANSACTIONAL, QueuePriority.HIGH, {}),
    ("bulk", QueueType.BULK, QueuePriority.LOW, {}),
    ("scheduled", QueueType.SCHEDULED, QueuePriority.NORMAL, {}),
)


async def ensure_defaults(
    engine: AsyncEngine, clock: Clock, *, retry: RetryConfig | None = None
) -> None:
    """Create the default queues and, when there is no provider at all, the file outbox.

    Each new queue gets ``retry`` (default: 5 attempts, 30 s base, 1 h cap) written
    out in full, so its row shows the schedule it runs on.
    Idempotent, and safe when several processes start at once (names are unique).
    """
    retry = retry or RetryConfig()
    try:
        await _ensure(engine, clock, retry)
    except IntegrityError:  # another process created them at the same moment
        await _ensure(engine, clock, retry)


async def _ensure(engine: AsyncEngine, clock: Clock, retry: RetryConfig) -> None:
    now = clock.now()
    async with engine.begin() as conn:
        existing = set((await conn.execute(select(queues.c.name))).scalars())
        for name, qtype, priority, processor in DEFAULT_QUEUES:
            if name in existing:
                continue
            await conn.execute(
                insert(queues).values(
                    id=uuid.uuid4(),
                    name=name,
                    type=qtype,
                    priority=priority,
                    enabled=True,
                    paused=False,
                    config={},
                    processor=processor,
                    retry=retry.to_json(),
                    created_at=now,
                    updated_at=now,
                )
            )
        count = (await conn.execute(select(func.count()).select_from(providers))).scalar_one()
        if count == 0:
            await conn.execute(
                insert(providers).values(
                    id=uuid.uuid4(),
                    name="Development outbox",
                    type=ProviderType.FILE,
                    enabled=True,
                    priority=1,
                    config={"directory": "outbox"},
                    authentication={},
                    created_at=now,
                    updated_at=now,
                )
            )
