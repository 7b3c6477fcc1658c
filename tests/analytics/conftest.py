"""The hand-counted rows the analytics and report tests read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.analytics.seed import Seeder, queue_ids
from tests.support.providers import add_provider

DAY_A = datetime(2026, 1, 8, tzinfo=UTC)  # closed: read from the rollups
TODAY = datetime(2026, 1, 10, tzinfo=UTC)  # live


def at(day: datetime, hour: int, minute: int = 0) -> datetime:
    return day + timedelta(hours=hour, minutes=minute)


@pytest.fixture
async def seeded(postroom: Postroom, clock: ManualClock) -> dict[str, Any]:
    """Day A: 4 sent by 'relay' (3 delivered, 1 bounced, 2 opened, 1 clicked, 1
    complaint), 2 marketing sent by 'esp' (1 delivered, 1 rejected). Today: the
    esp's delivered one unsubscribes, 1 recipient fails for good, 'relay' sends 2."""
    clock.set(at(TODAY, 12))
    relay = await add_provider(postroom, name="relay", type="smtp")
    esp = await add_provider(postroom, name="esp", type="sendgrid")
    queues = await queue_ids(postroom)
    s = Seeder(postroom)
    sent = at(DAY_A, 10)
    a = await s.message(
        queue_id=queues["transactional"],
        provider_id=relay,
        created=sent,
        tags=["welcome"],
        recipients=[
            {
                "status": "clicked",
                "sent_at": sent,
                "delivered_at": at(DAY_A, 10, 5),
                "opened_at": at(DAY_A, 11),
                "clicked_at": at(DAY_A, 11, 30),
            },
            {
                "status": "opened",
                "sent_at": sent,
                "delivered_at": at(DAY_A, 10, 5),
                "opened_at": at(DAY_A, 11),
            },
            {"status": "delivered", "sent_at": sent, "delivered_at": at(DAY_A, 10, 5)},
            {"status": "bounced", "sent_at": sent, "bounced_at": at(DAY_A, 10, 6)},
        ],
    )
    await s.event(a[2], "complained", at(DAY_A, 12))
    b = await s.message(
        queue_id=queues["bulk"],
        provider_id=esp,
        created=sent,
        type="marketing",
        tags=["promo", "x"],
        recipients=[
            {"status": "delivered", "sent_at": sent, "delivered_at": at(DAY_A, 10, 1)},
            {"status": "failed", "sent_at": sent},  # rejected while the other was accepted
        ],
    )
    await s.event(b[0], "unsubscribed", at(TODAY, 9))
    await s.message(
        queue_id=queues["bulk"],
        provider_id=None,
        created=at(TODAY, 7),
        type="marketing",
        job_status="failed",
        failed_at=at(TODAY, 8),
        recipients=[{"status": "failed"}],
    )
    await s.message(
        queue_id=queues["transactional"],
        provider_id=relay,
        created=at(TODAY, 9),
        recipients=[{"status": "sent", "sent_at": at(TODAY, 9)}] * 2,
    )
    return {"relay": relay, "esp": esp, "queues": queues}
