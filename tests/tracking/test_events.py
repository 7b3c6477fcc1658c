"""The event model: status precedence in any arrival order, dedupe, GET /tracking."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import select, text

from postroom.app import Postroom
from postroom.tracking.events import (
    NewEvent,
    events_t,
    record_event,
    record_many,
    tracking_t,
)
from tests.support.databases import statements_naming
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


async def _tracking_updates(conn: Any, seen: list[str]) -> int:
    """Row updates of email_tracking in this transaction so far (PostgreSQL counts
    them itself; on SQLite the UPDATE statements are counted)."""
    if conn.dialect.name != "postgresql":
        return len(seen)
    stats = "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'email_tracking'"
    return int((await conn.execute(text(stats))).scalar_one())


async def test_a_tracking_row_made_by_a_batch_starts_at_its_status(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    """A record's first events make its tracking row with the batch's strongest status
    and that event's time (no second version of the new row); a row that existed is
    moved as before."""
    to = [{"email": f"r{i}@example.com"} for i in range(3)]
    fresh_a, fresh_b, existing = await send_and_drain(client, postroom, to=to)
    assert await put(postroom, existing.record_id, "delivered", 1)  # its row exists now
    seen = statements_naming(postroom.engine, "UPDATE email_tracking")
    events = [
        NewEvent(record_id=uuid.UUID(fresh_a.record_id), type="delivered", timestamp=T0),
        NewEvent(
            record_id=uuid.UUID(fresh_a.record_id),
            type="opened",
            timestamp=T0 + timedelta(minutes=2),
        ),
        NewEvent(
            record_id=uuid.UUID(fresh_b.record_id),
            type="opened",
            timestamp=T0 + timedelta(minutes=3),
            machine=True,
        ),
        NewEvent(  # another kind, so that SQLite would move it in a statement of its own
            record_id=uuid.UUID(existing.record_id),
            type="clicked",
            timestamp=T0 + timedelta(minutes=4),
            data={"url": "https://example.com/"},
        ),
    ]
    async with postroom.engine.begin() as conn:
        assert all(await record_many(conn, events))
        assert await _tracking_updates(conn, seen) == 1  # the existing row only
    rows = {str(r.email_id): r for r in (await _all(postroom, select(tracking_t)))}
    assert (rows[fresh_a.record_id].status, rows[fresh_a.record_id].updated_at) == (
        "opened",
        T0 + timedelta(minutes=2),
    )
    # a machine open moves nothing: the row starts as sent
    assert rows[fresh_b.record_id].status == "sent"
    assert (rows[existing.record_id].status, rows[existing.record_id].updated_at) == (
        "clicked",
        T0 + timedelta(minutes=4),
    )
    assert (await record(postroom, fresh_a.record_id)).status == "opened"
    assert (await record(postroom, fresh_b.record_id)).opened_any_at == T0 + timedelta(minutes=3)


async def _all(postroom: Postroom, stmt: Any) -> list[Any]:
    async with postroom.engine.connect() as conn:
        return list(await conn.execute(stmt))


@pytest.mark.parametrize("all_new", [False, True], ids=["deduplicated", "all-new"])
async def test_every_column_of_an_event_is_stored_as_given(
    client: httpx.AsyncClient, postroom: Postroom, all_new: bool
) -> None:
    """What a batch of events says arrives in the table unchanged, in both ways of
    storing one: an offset other than UTC, microseconds, text that needs escaping in
    JSON, an IPv6 address, NULLs; events known to be new (opens and clicks) are stored
    with no dedupe key, others with one."""
    (sent,) = await send_and_drain(client, postroom)
    at = datetime(2026, 11, 30, 14, 5, 6, 789012, tzinfo=timezone(timedelta(hours=7)))
    data = {"url": 'https://example.com/?q="ünï"\\n', "n": [1, 2.5, None], "deep": {"x": True}}
    events = [
        NewEvent(
            record_id=uuid.UUID(sent.record_id),
            type="clicked",
            timestamp=at,
            data=data,
            user_agent='Mozilla/5.0 "quoted" \u00e9\u4e2d',
            ip_address="2001:db8::1",
            machine=True,
        ),
        NewEvent(record_id=uuid.UUID(sent.record_id), type="opened", timestamp=at),
    ]
    async with postroom.engine.begin() as conn:
        ids = await record_many(conn, events, all_new=all_new)
    assert all(ids)
    rows = {
        r.id: r
        for r in await _all(
            postroom,
            select(events_t).join(tracking_t, tracking_t.c.id == events_t.c.tracking_id),
        )
    }
    click, opened = rows[ids[0]], rows[ids[1]]
    assert click.timestamp == at and opened.timestamp == at
    assert (click.type, click.data, click.machine) == ("clicked", data, True)
    assert click.user_agent == 'Mozilla/5.0 "quoted" \u00e9\u4e2d'
    assert str(click.ip_address) == "2001:db8::1"
    assert (opened.data, opened.user_agent, opened.ip_address, opened.machine) == (
        {},
        None,
        None,
        False,
    )
    keys = [click.dedupe_key, opened.dedupe_key]
    assert keys == [None, None] if all_new else all(keys)
