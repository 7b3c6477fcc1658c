"""Opens and clicks are committed a batch at a time, and only then answered."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import func, select

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.tracking import events, hits
from postroom.tracking.context import TrackingContext
from tests.tracking.conftest import record, send_and_drain

BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Thunderbird/133.0"


def _path(postroom: Postroom, clock: ManualClock, kind: str, payload: dict[str, Any]) -> str:
    signer = TrackingContext.from_settings(postroom.settings).signer
    token = signer.sign(kind, payload, expires=clock.now() + timedelta(days=1))
    return f"/t/o/{token}.gif" if kind == "o" else f"/t/c/{token}"


async def _count(postroom: Postroom, kind: str) -> int:
    async with postroom.engine.connect() as conn:
        stmt = (
            select(func.count()).select_from(events.events_t).where(events.events_t.c.type == kind)
        )
        return int((await conn.execute(stmt)).scalar_one())


async def _get_all(client: httpx.AsyncClient, paths: list[str]) -> list[httpx.Response]:
    return await asyncio.gather(*(client.get(p, headers={"user-agent": BROWSER}) for p in paths))


async def test_many_concurrent_pixels_store_exactly_as_many_events_in_few_commits(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    sent = await send_and_drain(
        client, postroom, to=[{"email": f"r{i}@example.com"} for i in range(5)]
    )
    clock.advance(60)  # long after delivery: people, not proxies on delivery
    paths = [_path(postroom, clock, "o", {"e": s.email_id, "r": s.recipient}) for s in sent] * 40
    before = postroom.link_events.batches

    responses = await _get_all(client, paths)

    assert [r.status_code for r in responses] == [200] * 200
    assert all(r.content.startswith(b"GIF89a") for r in responses)
    assert await _count(postroom, "opened") == 200
    assert postroom.link_events.batches - before < 50  # many events per transaction
    for s in sent:
        rec = await record(postroom, s.record_id)
        assert rec.status == "opened" and rec.opened_at is not None


async def test_a_failed_batch_answers_an_error_and_stores_nothing(
    client: httpx.AsyncClient,
    postroom: Postroom,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    clock.advance(60)

    async def broken(*args: Any) -> None:  # fails after the events and status moves
        raise RuntimeError("the database went away")

    # the last step of a batch: what the statements before it wrote (on PostgreSQL on
    # the driver's connection) must be rolled back with it
    monkeypatch.setattr(events, "_outbox", broken)
    pixel = _path(postroom, clock, "o", {"e": sent.email_id, "r": sent.recipient})
    click = _path(
        postroom, clock, "c", {"e": sent.email_id, "r": sent.recipient, "u": "https://a.example"}
    )

    responses = await _get_all(client, [pixel] * 10 + [click] * 10)

    assert {r.status_code for r in responses} == {503}
    assert all(r.headers["content-type"] == "application/problem+json" for r in responses)
    assert all("location" not in r.headers for r in responses)
    assert await _count(postroom, "opened") == await _count(postroom, "clicked") == 0
    assert (await record(postroom, sent.record_id)).status == "sent"

    monkeypatch.undo()  # the database is back: the same requests are recorded
    assert (await client.get(pixel, headers={"user-agent": BROWSER})).status_code == 200
    assert await _count(postroom, "opened") == 1


async def test_opens_and_clicks_in_one_batch_leave_the_strongest_status(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    clock.advance(60)
    payload = {"e": sent.email_id, "r": sent.recipient}
    pixel = _path(postroom, clock, "o", payload)
    click = _path(postroom, clock, "c", {**payload, "u": "https://a.example/p"})
    stranger = _path(postroom, clock, "o", {"e": str(uuid.uuid4()), "r": sent.recipient})

    responses = await _get_all(client, [pixel, click, pixel, stranger, click, pixel])

    assert [r.status_code for r in responses] == [200, 302, 200, 404, 302, 200]
    rec = await record(postroom, sent.record_id)
    assert rec.status == "clicked"
    assert rec.opened_at is not None and rec.clicked_at is not None
    tracking = (await client.get(f"/api/system/email/tracking/{sent.record_id}")).json()
    assert tracking["summary"]["openedHuman"] == 3
    assert tracking["summary"]["clickedHuman"] == 2

    # a later open never moves the status back down
    assert (await client.get(pixel, headers={"user-agent": BROWSER})).status_code == 200
    assert (await record(postroom, sent.record_id)).status == "clicked"


async def test_machine_and_human_opens_keep_each_first_time_and_the_status(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    clock.advance(60)
    payload = {"e": sent.email_id, "r": sent.recipient}
    pixel = _path(postroom, clock, "o", payload)
    click = _path(postroom, clock, "c", {**payload, "u": "https://a.example/p"})
    proxy_at = clock.now()
    proxy = {"user-agent": "Mozilla/5.0 (via ggpht.com GoogleImageProxy)"}
    assert (await client.get(pixel, headers=proxy)).status_code == 200
    scanner = {"user-agent": "Barracuda Sentinel (EE)"}
    assert (await client.get(click, headers=scanner)).status_code == 302

    rec = await record(postroom, sent.record_id)
    assert rec.status == "sent"  # machines do not move the status
    assert rec.opened_at is None and rec.clicked_at is None
    assert rec.opened_any_at == proxy_at and rec.clicked_any_at == proxy_at

    clock.advance(30)
    person_at = clock.now()
    assert (await client.get(pixel, headers={"user-agent": BROWSER})).status_code == 200
    rec = await record(postroom, sent.record_id)
    assert rec.status == "opened" and rec.opened_at == person_at
    assert rec.opened_any_at == proxy_at  # the first open of any kind stays the earliest

    clock.advance(30)
    assert (await client.get(click, headers={"user-agent": BROWSER})).status_code == 302
    rec = await record(postroom, sent.record_id)
    assert rec.status == "clicked" and rec.clicked_at == clock.now()
    assert rec.opened_at == person_at and rec.clicked_any_at == proxy_at


async def test_the_writer_keeps_its_connection_while_batches_come(
    client: httpx.AsyncClient,
    postroom: Postroom,
    clock: ManualClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    clock.advance(60)
    writer = cast(hits.Writer, postroom.link_events._write)
    writer.idle_s = 0.2
    pixel = _path(postroom, clock, "o", {"e": sent.email_id, "r": sent.recipient})
    before = writer.checkouts

    for _ in range(5):  # one batch each
        assert (await client.get(pixel, headers={"user-agent": BROWSER})).status_code == 200

    assert await _count(postroom, "opened") == 5
    if postroom.engine.dialect.name != "postgresql":  # SQLite: a connection per batch
        assert writer.checkouts == before == 0 and writer._conn is None
        return
    assert writer.checkouts - before <= 1 and writer._conn is not None
    await asyncio.sleep(0.5)  # idle: back to the pool
    assert writer._conn is None

    async def broken(*args: Any) -> None:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(events, "_apply_status", broken)
    assert (await client.get(pixel, headers={"user-agent": BROWSER})).status_code == 503
    assert writer._conn is None  # a failed batch's connection is not reused
    monkeypatch.undo()
    checkouts = writer.checkouts
    assert (await client.get(pixel, headers={"user-agent": BROWSER})).status_code == 200
    assert writer.checkouts == checkouts + 1
    assert await _count(postroom, "opened") == 6


async def test_several_links_clicked_at_once_are_a_scanner_across_batches(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    clock.advance(60)
    payload = {"e": sent.email_id, "r": sent.recipient}
    links = [
        _path(postroom, clock, "c", {**payload, "u": f"https://a.example/{i}"}) for i in range(3)
    ]
    person = {"user-agent": BROWSER}

    # one after another: each click's batch reads the clicks committed before it
    assert (await client.get(links[0], headers=person)).status_code == 302
    clock.advance(1)
    assert (await client.get(links[1], headers=person)).status_code == 302
    clock.advance(0.5)
    assert (await client.get(links[0], headers=person)).status_code == 302  # the same link
    clock.advance(5)  # past the burst window: a person again
    assert (await client.get(links[2], headers=person)).status_code == 302

    tracking = (await client.get(f"/api/system/email/tracking/{sent.record_id}")).json()
    clicks = [e for e in tracking["events"] if e["type"] == "clicked"]
    assert [(e["data"]["url"][-1], e["machine"]) for e in clicks] == [
        ("0", False),
        ("1", True),
        ("0", True),
        ("2", False),
    ]
    assert clicks[1]["data"]["machine"] == clicks[2]["data"]["machine"] == "all-links"
