"""Prometheus metrics, read from the database at scrape time.

Every figure is counted from the tables all processes write (jobs, the attempt log,
webhook receipts), so a scrape of any API process is right however many worker
processes run, needs no shared multiprocess directory, and survives restarts; the
price is a few aggregate queries per scrape (the attempt log is read in one pass).
Counters are monotonic as long as the attempt log is not pruned; Prometheus treats a
drop after a prune as a counter reset.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, cast

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from sqlalchemy import Table, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from postroom.db.engine import reader
from postroom.db.models import EmailJob, EmailJobAttempt, EmailQueue, WebhookReceipt
from postroom.types import JobStatus

jobs = cast(Table, EmailJob.__table__)
queues = cast(Table, EmailQueue.__table__)
attempts = cast(Table, EmailJobAttempt.__table__)
receipts = cast(Table, WebhookReceipt.__table__)

#: send latency histogram bucket bounds, in seconds
BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _sum_if(cond: Any) -> Any:
    return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)


class _Snapshot(Collector):
    """Yields metric families computed beforehand (collect() cannot await)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


async def collect(engine: AsyncEngine, now: datetime) -> list[Metric]:
    depth = GaugeMetricFamily(
        "postroom_queue_depth",
        "Jobs waiting in the queue (pending, due or scheduled)",
        labels=["queue"],
    )
    oldest = GaugeMetricFamily(
        "postroom_queue_oldest_pending_age_seconds",
        "Seconds the oldest due pending job has waited (0: none due)",
        labels=["queue"],
    )
    in_flight = GaugeMetricFamily(
        "postroom_worker_in_flight",
        "Jobs leased by workers right now (all processes)",
        labels=["queue"],
    )
    paused = GaugeMetricFamily(
        "postroom_queue_paused", "1 when the queue is paused", labels=["queue"]
    )
    sends = CounterMetricFamily(
        "postroom_sends", "Send attempts by provider and outcome", labels=["provider", "outcome"]
    )
    deferrals = CounterMetricFamily(
        "postroom_rate_limit_deferrals",
        "Sends deferred because a provider's rate limit was reached",
        labels=["provider"],
    )
    latency = HistogramMetricFamily(
        "postroom_send_duration_seconds", "Duration of send attempts", labels=["provider"]
    )
    webhooks = CounterMetricFamily(
        "postroom_webhook_events", "Provider webhook deliveries received", labels=["provider_type"]
    )

    pending = jobs.c.status == JobStatus.PENDING
    due = and_(pending, jobs.c.scheduled_at <= now)
    per_queue = (
        select(
            queues.c.name,
            queues.c.paused,
            _sum_if(pending).label("pending"),
            _sum_if(jobs.c.status == JobStatus.PROCESSING).label("processing"),
            func.min(case((due, jobs.c.scheduled_at))).label("oldest"),
        )
        .select_from(
            queues.outerjoin(
                jobs,
                and_(
                    jobs.c.queue_id == queues.c.id,
                    jobs.c.status.in_((JobStatus.PENDING, JobStatus.PROCESSING)),
                ),
            )
        )
        .group_by(queues.c.name, queues.c.paused)
    )
    seconds = attempts.c.duration_ms / 1000.0
    provider = func.coalesce(attempts.c.provider_name, "")
    per_attempt = select(
        provider.label("provider"),
        attempts.c.outcome,
        func.count().label("n"),
        func.count(attempts.c.duration_ms).label("timed"),
        func.coalesce(func.sum(seconds), 0).label("seconds"),
        *(_sum_if(seconds <= b).label(f"le{i}") for i, b in enumerate(BUCKETS)),
    ).group_by(provider, attempts.c.outcome)
    per_receipt = select(receipts.c.provider_type, func.count().label("n")).group_by(
        receipts.c.provider_type
    )
    async with reader(engine).connect() as conn:
        queue_rows = (await conn.execute(per_queue)).all()
        attempt_rows = (await conn.execute(per_attempt)).all()
        receipt_rows = (await conn.execute(per_receipt)).all()

    for r in queue_rows:
        depth.add_metric([r.name], int(r.pending))
        in_flight.add_metric([r.name], int(r.processing))
        paused.add_metric([r.name], 1 if r.paused else 0)
        oldest_at = r.oldest
        if isinstance(oldest_at, str):  # SQLite's MIN over a CASE loses the column type
            oldest_at = datetime.fromisoformat(oldest_at).replace(tzinfo=now.tzinfo)
        elif oldest_at is not None and oldest_at.tzinfo is None:
            oldest_at = oldest_at.replace(tzinfo=now.tzinfo)
        oldest.add_metric(
            [r.name], max(0.0, (now - oldest_at).total_seconds()) if oldest_at else 0.0
        )

    hist: dict[str, list[float]] = {}
    for r in attempt_rows:
        sends.add_metric([r.provider, r.outcome], int(r.n))
        if r.outcome == "deferred":
            deferrals.add_metric([r.provider], int(r.n))
        h = hist.setdefault(r.provider, [0.0] * (len(BUCKETS) + 2))
        for i in range(len(BUCKETS)):
            h[i] += int(getattr(r, f"le{i}"))
        h[-2] += int(r.timed)
        h[-1] += float(r.seconds)
    for name, h in sorted(hist.items()):
        buckets = [(str(b), h[i]) for i, b in enumerate(BUCKETS)] + [("+Inf", h[-2])]
        latency.add_metric([name], buckets, sum_value=h[-1])
    for r in receipt_rows:
        webhooks.add_metric([r.provider_type], int(r.n))
    return [depth, oldest, in_flight, paused, sends, deferrals, latency, webhooks]


async def render(engine: AsyncEngine, now: datetime) -> bytes:
    """The Prometheus text exposition of ``collect``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(await collect(engine, now)))
    return generate_latest(registry)
