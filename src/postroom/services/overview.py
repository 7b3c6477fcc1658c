"""The dashboard's overview: is mail flowing, and how well.

Queue and provider figures come from their services (``QueueManager``,
``ProviderService``), so the overview says exactly what the API says; only the
figures no service has yet are counted here, from the recipient records and the
attempt log:

- *sent today / yesterday*: recipients whose message a provider accepted, per UTC day;
- *delivery rate (24 h)*: of the recipients queued in the last 24 hours whose
  message is finished, the share a provider accepted (failed, bounced and
  complained count against it);
- *success rate (24 h)*: of the emails finished in the last 24 hours, the share
  sent (the queues' completed / completed + failed);
- *average send time*: mean duration of the successful attempts in the last 24 hours.

The system status is ``down`` when no provider is enabled or every enabled one is
down, ``degraded`` when any enabled provider is not healthy or any queue is failing
or backlogged, and ``operational`` otherwise; ``reason`` names the cause.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import Table, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.clock import Clock
from postroom.db.engine import reader
from postroom.db.models import EmailJobAttempt, EmailRecord
from postroom.schemas.providers import ProviderPublic
from postroom.schemas.queues import QueueStatus
from postroom.services.providers import ProviderService
from postroom.services.queues import QueueManager
from postroom.types import RecordStatus

records_t = cast(Table, EmailRecord.__table__)
attempts_t = cast(Table, EmailJobAttempt.__table__)

WINDOW = timedelta(hours=24)
#: a provider accepted the message for these recipients
ACCEPTED = (RecordStatus.SENT, RecordStatus.DELIVERED, RecordStatus.OPENED, RecordStatus.CLICKED)
#: the message is finished for these recipients, and did not reach them
LOST = (RecordStatus.FAILED, RecordStatus.BOUNCED, RecordStatus.COMPLAINED)

SystemState = Literal["operational", "degraded", "down"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Overview:
    status: SystemState
    reason: str
    providers: list[ProviderPublic]
    queues: list[QueueStatus]
    sent_today: int
    sent_yesterday: int
    backlog: int
    #: fractions 0..1; None when there is nothing to divide yet
    success_rate: float | None
    delivery_rate: float | None
    average_send_ms: float | None
    generated_at: datetime

    @property
    def active_providers(self) -> int:
        return sum(1 for p in self.providers if p.enabled)

    @property
    def change_vs_yesterday(self) -> float | None:
        """Today's sends against yesterday's, in percent (None without sends yesterday)."""
        if not self.sent_yesterday:
            return None
        return (self.sent_today - self.sent_yesterday) / self.sent_yesterday * 100


def system_state(
    providers: list[ProviderPublic], queues: list[QueueStatus]
) -> tuple[SystemState, str]:
    enabled = [p for p in providers if p.enabled]
    if not enabled:
        return "down", "no provider is enabled"
    down = [p for p in enabled if p.health.status == "down"]
    if len(down) == len(enabled):
        return "down", "every enabled provider is down: " + _names(down)
    unwell = [p for p in enabled if p.health.status != "healthy"]
    if unwell:
        first = unwell[0]
        return "degraded", f"{first.name} is {first.health.status}: {first.health.reason}"
    troubled = [q for q in queues if q.health != "healthy"]
    if troubled:
        return "degraded", "; ".join(f"queue {q.name} is {q.health}" for q in troubled)
    return "operational", "mail flows"


def _names(providers: list[ProviderPublic]) -> str:
    return ", ".join(p.name for p in providers)


class OverviewReader:
    def __init__(
        self, engine: AsyncEngine, clock: Clock, queues: QueueManager, providers: ProviderService
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._queues = queues
        self._providers = providers

    async def read(self) -> Overview:
        now = self._clock.now()
        providers = await self._providers.list_all()
        queues = await self._queues.list_queues()
        counts = await self._counts(now)
        finished = sum(q.stats.total_processed for q in queues)
        completed = sum(q.stats.completed for q in queues)
        accepted, lost = counts["accepted_24h"], counts["lost_24h"]
        status, reason = system_state(providers, queues)
        return Overview(
            status=status,
            reason=reason,
            providers=providers,
            queues=queues,
            sent_today=counts["today"],
            sent_yesterday=counts["yesterday"],
            backlog=sum(q.stats.pending for q in queues),
            success_rate=completed / finished if finished else None,
            delivery_rate=accepted / (accepted + lost) if accepted + lost else None,
            average_send_ms=counts["avg_ms"],
            generated_at=now,
        )

    async def _counts(self, now: datetime) -> dict[str, Any]:
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        yesterday = today - timedelta(days=1)
        sent = records_t.c.sent_at

        def count_if(cond: Any) -> Any:
            return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

        days = select(
            count_if(and_(sent >= today, sent <= now)).label("today"),
            count_if(sent < today).label("yesterday"),
        ).where(sent >= yesterday)
        window = select(
            count_if(records_t.c.status.in_(ACCEPTED)).label("accepted"),
            count_if(records_t.c.status.in_(LOST)).label("lost"),
        ).where(records_t.c.created_at >= now - WINDOW)
        avg = select(func.avg(attempts_t.c.duration_ms)).where(
            attempts_t.c.finished_at >= now - WINDOW, attempts_t.c.outcome == "sent"
        )
        async with reader(self._engine).connect() as conn:
            day_row = (await conn.execute(days)).one()
            window_row = (await conn.execute(window)).one()
            avg_ms = (await conn.execute(avg)).scalar()
        return {
            "today": int(day_row.today),
            "yesterday": int(day_row.yesterday),
            "accepted_24h": int(window_row.accepted),
            "lost_24h": int(window_row.lost),
            "avg_ms": None if avg_ms is None else float(avg_ms),
        }
