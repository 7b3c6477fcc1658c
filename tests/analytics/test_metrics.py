"""``GET /metrics``: parsed with the Prometheus text parser; figures from the database,
so jobs handled by separate workers (separate Postroom instances here) all count."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.config import Settings
from tests.analytics.seed import jobs_t
from tests.support.payloads import email as email_body
from tests.support.providers import add_provider, disable_all

SEND = "/api/system/email/send"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_metrics_count_what_every_worker_did(
    client: httpx.AsyncClient, postroom: Postroom, settings: Settings, clock: ManualClock
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="steady", type="fake", config={"script": ["rejected"]})
    for _ in range(3):
        assert (await client.post(SEND, json=email_body())).status_code == 202
    # another process's worker: its own Postroom on the same database
    other = Postroom(settings, clock=clock)
    await other.start(migrate_schema=False)
    try:
        worker = other.worker()
        await worker.router.refresh(force=True)
        await worker.drain()
        await worker.aclose()
    finally:
        await other.aclose()
    # two more: one waiting since 90 s, one held by a worker
    for _ in range(2):
        assert (await client.post(SEND, json=email_body())).status_code == 202
    clock.advance(90)
    async with postroom.engine.begin() as conn:
        await conn.execute(
            update(jobs_t)
            .where(
                jobs_t.c.id
                == jobs_t.select()
                .with_only_columns(jobs_t.c.id)
                .where(jobs_t.c.status == "pending")
                .limit(1)
                .scalar_subquery()
            )
            .values(status="processing", locked_by="w-elsewhere")
        )

    response = await client.get("/metrics")

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    got = samples(response.text)
    q = (("queue", "transactional"),)
    assert got[("postroom_queue_depth", q)] == 1
    assert got[("postroom_worker_in_flight", q)] == 1
    assert got[("postroom_queue_oldest_pending_age_seconds", q)] == 90
    assert got[("postroom_queue_paused", q)] == 0
    assert got[("postroom_sends_total", (("outcome", "sent"), ("provider", "steady")))] >= 1
    sent = sum(
        v
        for (n, labels), v in got.items()
        if n == "postroom_sends_total" and ("outcome", "sent") in labels
    )
    assert sent == 2
    assert got[("postroom_sends_total", (("outcome", "failed"), ("provider", "steady")))] == 1
    count = got[("postroom_send_duration_seconds_count", (("provider", "steady"),))]
    inf = got[("postroom_send_duration_seconds_bucket", (("le", "+Inf"), ("provider", "steady")))]
    assert count == inf >= 1


async def test_metrics_need_a_read_key(client: httpx.AsyncClient, postroom: Postroom) -> None:
    assert (await client.get("/metrics", headers={"Authorization": ""})).status_code == 401
    key, _ = await postroom.keys.create("scraper", ["read"])
    assert (
        await client.get("/metrics", headers={"Authorization": f"Bearer {key}"})
    ).status_code == 200
    sender, _ = await postroom.keys.create("sender", ["send"])
    assert (
        await client.get("/metrics", headers={"Authorization": f"Bearer {sender}"})
    ).status_code == 403
