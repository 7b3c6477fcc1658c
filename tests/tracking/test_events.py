"""The event model: status precedence in any arrival order, dedupe, GET /tracking."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from postroom.app import Postroom
from postroom.tracking.events import NewEvent, record_event
from tests.tracking.conftest import API, record, send_and_drain

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


async def put(postroom: Postroom, record_id: str, kind: str, minutes: int, **kw: object) -> bool:
    event = NewEvent(
        record_id=uuid.UUID(record_id),
        type=kind,
        timestamp=T0 + timedelta(minutes=minutes),
        **kw,  # type: ignore[arg-type]
    )
    async with postroom.engine.begin() as conn:
        return await record_event(conn, event) is not None


@pytest.mark.parametrize(
    "order",
    list(itertools.permutations(["delivered", "opened", "clicked"]))[::2],
)
async def test_status_is_the_strongest_event_whatever_the_order(
    client: httpx.AsyncClient, postroom: Postroom, order: tuple[str, ...]
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    minute = {"delivered": 1, "opened": 2, "clicked": 3}
    for kind in order:
        assert await put(postroom, sent.record_id, kind, minute[kind])

    rec = await record(postroom, sent.record_id)
    assert rec.status == "clicked"
    assert rec.delivered_at == T0 + timedelta(minutes=1)
    assert rec.opened_at == T0 + timedelta(minutes=2)
    assert rec.clicked_at == T0 + timedelta(minutes=3)


async def test_a_bounce_outranks_everything_even_when_it_arrives_first(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    await put(postroom, sent.record_id, "bounced", 5, data={"bounceType": "hard"})
    await put(postroom, sent.record_id, "delivered", 1)
    await put(postroom, sent.record_id, "complained", 7)
    await put(postroom, sent.record_id, "deferred", 0)

    assert (await record(postroom, sent.record_id)).status == "bounced"


async def test_a_repeated_event_is_stored_once(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    assert await put(postroom, sent.record_id, "delivered", 1, event_id="esp-1")
    assert not await put(postroom, sent.record_id, "delivered", 1, event_id="esp-1")
    # without an ESP id, the same content is the same event
    assert await put(postroom, sent.record_id, "opened", 2, data={"ip": "x"})
    assert not await put(postroom, sent.record_id, "opened", 2, data={"ip": "x"})

    body = (await client.get(f"{API}/tracking/{sent.record_id}")).json()
    assert [e["type"] for e in body["events"]] == ["delivered", "opened"]


async def test_machine_opens_are_counted_apart_and_do_not_move_the_status(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    await put(postroom, sent.record_id, "delivered", 1)
    await put(postroom, sent.record_id, "opened", 2, machine=True)

    body = (await client.get(f"{API}/tracking/{sent.record_id}")).json()
    assert body["status"] == "delivered"
    assert body["summary"]["openedTotal"] == 1
    assert body["summary"]["openedHuman"] == 0


async def test_get_tracking_and_status_show_events(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    await put(postroom, sent.record_id, "delivered", 1)
    await put(postroom, sent.record_id, "opened", 2, user_agent="Mozilla/5.0")

    for ident in (sent.record_id, sent.email_id, sent.message_id):
        response = await client.get(f"{API}/tracking/{ident}")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "opened"
        assert body["recipient"] == sent.recipient
        assert [t["type"] for t in body["timeline"]] == ["delivered", "opened"]
        assert body["events"][1]["userAgent"] == "Mozilla/5.0"
        assert body["summary"]["delivered"] == 1

    status = (await client.get(f"{API}/status/{sent.email_id}")).json()
    assert status["deliveryStatus"] == "opened"
    assert [e["type"] for e in status["trackingEvents"]] == ["delivered", "opened"]
    assert status["recipients"][0]["openedAt"].startswith("2026-11-30T12:02")


async def test_unknown_tracking_is_404_problem(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{API}/tracking/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
