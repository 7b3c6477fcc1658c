"""Queue rows for tests."""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from postroom.app import Postroom
from postroom.services.router import queues_t

#: the spec's own schedule (2, 4, 8 s): for tests about failover, not about timing
SPEC_RETRY = {"maxAttempts": 5, "baseDelaySeconds": 1}


async def set_retry(postroom: Postroom, retry: dict[str, Any], queue: str | None = None) -> None:
    """Set the ``retry`` config of one queue (by name) or of all of them."""
    stmt = update(queues_t).values(retry=retry)
    if queue is not None:
        stmt = stmt.where(queues_t.c.name == queue)
    async with postroom.engine.begin() as conn:
        await conn.execute(stmt)
    postroom.queues.invalidate()
