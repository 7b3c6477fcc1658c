"""Provider guardrails: disable a provider whose recent mail bounces or draws
complaints too often, so the router stops sending through it.

The same verdict as the queue guardrails (``guardrails``), over the provider's last
N sends: per provider, ``monitoring.guardrail`` may set ``maxBounceRate`` (default
0.05), ``maxComplaintRate`` (0.001), ``window`` (500), ``minSends`` (100) and
``enabled`` (true). Bounces also count recipients of messages this provider refused
for good (the attempt log names it).

A trip disables the provider (one UPDATE guarded by ``enabled = true``, so of
several workers exactly one trips it; routers drop disabled providers at their next
reload), records why in ``monitoring.guardrailTrip`` (shown by ``GET /providers``)
and logs a warning. Enabling it again is deliberate (``POST
/providers/{provider}/enable``, ``postroom providers enable``); the next verdict
then looks only at sends after the trip.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import Table, and_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.analytics.guardrails import rates, tripped
from postroom.db.engine import reader
from postroom.db.models import EmailProvider

log = logging.getLogger(__name__)
providers = cast(Table, EmailProvider.__table__)


async def check(engine: AsyncEngine, now: datetime) -> list[str]:
    """Disable every enabled provider over its thresholds; returns the names disabled."""
    async with reader(engine).connect() as conn:
        rows = (
            await conn.execute(
                select(
                    providers.c.id,
                    providers.c.name,
                    providers.c.monitoring,
                    providers.c.updated_at,
                ).where(providers.c.enabled.is_(True))
            )
        ).all()
        verdicts = await tripped(
            rows,
            now,
            lambda row, window, since: rates(conn, None, window, since, provider_id=row.id),
        )
    disabled = []
    for row, record in verdicts:
        monitoring = {**(row.monitoring or {}), "guardrailTrip": record}
        # strictly later than the last change, so routers see a new version
        updated_at = max(now, row.updated_at + timedelta(microseconds=1))
        async with engine.begin() as conn:
            result = await conn.execute(
                update(providers)
                .where(and_(providers.c.id == row.id, providers.c.enabled.is_(True)))
                .values(enabled=False, monitoring=monitoring, updated_at=updated_at)
            )
        if result.rowcount:
            log.warning("provider %s disabled by its guardrail: %s", row.name, record["reason"])
            disabled.append(row.name)
    return disabled
