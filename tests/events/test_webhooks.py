"""Event webhooks end to end: API → queue → worker → SMTP server, events → signed POSTs
to a real HTTP receiver on loopback, with retries on the injectable clock."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import Table, event, func, select

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.db.models import EmailRecord, WebhookOutbox
from postroom.events import deliveries as delivery_sql
from postroom.events import retry
from postroom.events.dispatcher import LOG_RETENTION
from postroom.events.endpoints import endpoints_t
from postroom.tracking.events import NewEvent, record_event
from postroom.types import EventType
from tests.events.conftest import (
    ENDPOINTS,
    Receiver,
    create_endpoint,
    deliveries,
    dispatch,
    drain_mail,
    verify,
)
from tests.providers.smtp_server import SMTPServer
from tests.support.payloads import email

SEND = "/api/system/email/send"
outbox_t = cast(Table, WebhookOutbox.__table__)
records_t = cast(Table, EmailRecord.__table__)


async def test_each_sent_message_posts_a_signed_sent_event(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer, receiver: Receiver
) -> None:
    created = await create_endpoint(client, receiver.url, eventTypes=["email.sent"])
    secret = created["secret"]
    assert (
        secret.startswith("whsec_")
        and "secret" not in (await client.get(f"{ENDPOINTS}/{created['id']}")).json()
    )
    ids = []
    for n in range(3):
        sent = await client.post(SEND, json=email(to=[{"email": f"r{n}@example.com"}]))
        assert sent.status_code == 202
        ids.append(sent.json()["id"])
    assert await drain_mail(postroom) == 3
    assert len(smtp.received) == 3

    assert await dispatch(postroom) == 3
    assert len(receiver.requests) == 3
    bodies = [verify(secret, r) for r in receiver.requests]
    assert {b["type"] for b in bodies} == {"email.sent"}
    assert sorted(b["data"]["emailId"] for b in bodies) == sorted(ids)
    assert {b["data"]["recipient"] for b in bodies} == {f"r{n}@example.com" for n in range(3)}
    assert {b["data"]["provider"] for b in bodies} == {"relay"}
    for body, request in zip(bodies, receiver.requests, strict=True):
        assert body["data"]["messageId"] == f"<{body['data']['emailId']}@example.com>"
        assert body["timestamp"].endswith("Z")
        assert request.headers["webhook-id"].startswith("msg_")
        assert request.headers["content-type"] == "application/json"
    log = await deliveries(client, created["id"])
    assert {d["status"] for d in log} == {"delivered"}
    assert all(d["attemptLog"][0]["statusCode"] == 204 for d in log)


async def test_posts_in_flight_each_keep_a_connection_for_the_next(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer, receiver: Receiver
) -> None:
    """A POST takes an idle client of its endpoint (or makes one) and gives it back:
    two rounds of deliveries, ten at a time, open no more connections than ten."""
    created = await create_endpoint(client, receiver.url, eventTypes=["email.sent"])
    worker = postroom.worker()
    try:
        for round_ in range(2):
            for n in range(30):
                to = [{"email": f"r{round_}-{n}@example.com"}]
                assert (await client.post(SEND, json=email(to=to))).status_code == 202
            assert await drain_mail(postroom) == 30
            assert await worker.webhooks.drain() == 30
    finally:
        await worker.aclose()
    assert len(receiver.requests) == 60
    assert all(verify(created["secret"], r)["type"] == "email.sent" for r in receiver.requests)
    assert 1 <= len({r.peer for r in receiver.requests}) <= 10


async def test_event_type_filter_and_disabled_endpoint(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer, receiver: Receiver
) -> None:
    everything = await create_endpoint(client, receiver.url + "/all")
    queued_only = await create_endpoint(client, receiver.url + "/q", eventTypes=["email.queued"])
    disabled = await create_endpoint(client, receiver.url + "/off", enabled=False)
    await client.post(SEND, json=email())
    await drain_mail(postroom)
    await dispatch(postroom)

    by_path: dict[str, list[str]] = {}
    for request in receiver.requests:
        by_path.setdefault(request.path, []).append(request.json()["type"])
    assert sorted(by_path["/hooks/all"]) == ["email.queued", "email.sent"]
    assert by_path["/hooks/q"] == ["email.queued"]
    assert "/hooks/off" not in by_path
    assert await deliveries(client, disabled["id"]) == []
    for request in receiver.requests:
        verify((everything if request.path == "/hooks/all" else queued_only)["secret"], request)


async def test_a_failing_endpoint_is_retried_with_backoff_then_succeeds(
    client: httpx.AsyncClient,
    postroom: Postroom,
    clock: ManualClock,
    smtp: SMTPServer,
    receiver: Receiver,
) -> None:
    created = await create_endpoint(client, receiver.url, eventTypes=["email.sent"])
    receiver.script(500, body=b"down for maintenance")
    receiver.script(503)
    await client.post(SEND, json=email())
    await drain_mail(postroom)

    assert await dispatch(postroom) == 1
    [pending] = await deliveries(client, created["id"])
    assert pending["status"] == "pending" and pending["lastStatusCode"] == 500
    assert pending["lastError"] == "HTTP 500: down for maintenance"
    assert await dispatch(postroom) == 0  # not due yet: backoff
    clock.advance(retry.delay_s(1))
    assert await dispatch(postroom) == 1
    assert await dispatch(postroom) == 0
    clock.advance(retry.delay_s(2) - 1)
    assert await dispatch(postroom) == 0
    clock.advance(1)
    assert await dispatch(postroom) == 1

    [done] = await deliveries(client, created["id"])
    assert done["status"] == "delivered" and done["attempts"] == 3
    log = done["attemptLog"]
    assert [a["attempt"] for a in log] == [1, 2, 3]
    assert [a["statusCode"] for a in log] == [500, 503, 204]
    assert [a["outcome"] for a in log] == ["retry", "retry", "delivered"]
    assert all(a["latencyMs"] is not None and a["latencyMs"] >= 0 for a in log)
    assert log[2]["error"] is None and log[1]["error"] == "HTTP 503"
    # the same message every time: one webhook-id, valid signatures
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    for request in receiver.requests:
        verify(created["secret"], request)


async def test_gives_up_after_the_last_attempt_and_redelivers_on_request(
    client: httpx.AsyncClient,
    postroom: Postroom,
    clock: ManualClock,
    smtp: SMTPServer,
    receiver: Receiver,
) -> None:
    created = await create_endpoint(client, receiver.url, eventTypes=["email.sent"])
    for _ in range(retry.MAX_ATTEMPTS):
        receiver.script(500)
    await client.post(SEND, json=email())
    await drain_mail(postroom)
    for attempt in range(1, retry.MAX_ATTEMPTS + 1):
        assert await dispatch(postroom) == 1
        clock.advance(retry.delay_s(attempt))
    [failed] = await deliveries(client, created["id"])
    assert failed["status"] == "failed" and failed["attempts"] == retry.MAX_ATTEMPTS
    assert failed["attemptLog"][-1]["outcome"] == "failed"
    assert failed["finishedAt"] is not None

    url = f"{ENDPOINTS}/{created['id']}/deliveries/{failed['id']}/retry"
    again = await client.post(url)
    assert again.status_code == 202 and again.json()["status"] == "pending"
    assert await dispatch(postroom) == 1
    [done] = await deliveries(client, created["id"])
    assert done["status"] == "delivered" and done["attempts"] == retry.MAX_ATTEMPTS + 1
    assert len(receiver.requests) == retry.MAX_ATTEMPTS + 1
    verify(created["secret"], receiver.last)

    # a delivered one can be sent again too
    assert (await client.post(url)).status_code == 202
    assert await dispatch(postroom) == 1
    assert len(receiver.requests) == retry.MAX_ATTEMPTS + 2
    assert receiver.requests[-1].body == receiver.requests[0].body


async def test_nothing_is_lost_when_a_dispatcher_stops_mid_way(
    client: httpx.AsyncClient,
    postroom: Postroom,
    clock: ManualClock,
    smtp: SMTPServer,
    receiver: Receiver,
) -> None:
    created = await create_endpoint(client, receiver.url, eventTypes=["email.sent"])
    ids = [(await client.post(SEND, json=email())).json()["id"] for _ in range(5)]
    await drain_mail(postroom)
    # a dispatcher fans out and leases three deliveries, then dies before posting them
    await delivery_sql.fan_out(postroom.engine, now=clock.now(), limit=100)
    leased = await delivery_sql.claim(
        postroom.engine, token="dead#1", limit=3, now=clock.now(), lease_s=60
    )
    assert len(leased) == 3
    # a new one delivers the other two at once, the leased three once the lease runs out
    assert await dispatch(postroom) == 2
    clock.advance(61)
    assert await dispatch(postroom) == 3
    got = sorted(verify(created["secret"], r)["data"]["emailId"] for r in receiver.requests)
    assert got == sorted(ids)
    log = await deliveries(client, created["id"])
    assert {d["status"] for d in log} == {"delivered"} and len(log) == 5


async def test_events_wait_in_the_outbox_for_a_dispatcher(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer, receiver: Receiver
) -> None:
    """Events written while no dispatcher runs are delivered by the next one."""
    created = await create_endpoint(client, receiver.url)
    await client.post(SEND, json=email(to=[{"email": "a@example.com"}, {"email": "b@example.com"}]))
    await drain_mail(postroom)
    async with postroom.engine.connect() as conn:
        waiting = (await conn.execute(select(func.count()).select_from(outbox_t))).scalar()
    assert waiting == 4  # queued and sent, for each of the two recipients
    assert await dispatch(postroom) == 4
    async with postroom.engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(outbox_t))).scalar() == 0
    kinds = sorted(verify(created["secret"], r)["type"] for r in receiver.requests)
    assert kinds == ["email.queued", "email.queued", "email.sent", "email.sent"]


async def test_tracking_events_are_posted(
    client: httpx.AsyncClient,
    postroom: Postroom,
    clock: ManualClock,
    smtp: SMTPServer,
    receiver: Receiver,
) -> None:
    created = await create_endpoint(
        client, receiver.url, eventTypes=["email.opened", "email.bounced"]
    )
    await client.post(SEND, json=email())
    await drain_mail(postroom)
    async with postroom.engine.begin() as conn:
        record_id = (await conn.execute(select(records_t.c.id))).scalar_one()
        await record_event(
            conn,
            NewEvent(
                record_id=record_id,
                type=EventType.OPENED,
                timestamp=clock.now(),
                user_agent="Mail/1.0",
            ),
        )
    await dispatch(postroom)
    [request] = receiver.requests
    body = verify(created["secret"], request)
    assert body["type"] == "email.opened"
    assert body["data"]["recordId"] == str(record_id)
    assert body["data"]["details"] == {"machine": False, "userAgent": "Mail/1.0"}


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://169.254.169.254/"]
)
async def test_a_private_address_is_refused_without_allow_networks(
    client: httpx.AsyncClient, url: str
) -> None:
    response = await client.post(ENDPOINTS, json={"url": url})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "allowNetworks" in response.text and "refusing" in response.text
    allowed = await client.post(ENDPOINTS, json={"url": url, "allowNetworks": ["0.0.0.0/0"]})
    assert allowed.status_code == 201


async def test_the_guard_also_holds_at_delivery_time(
    client: httpx.AsyncClient,
    postroom: Postroom,
    smtp: SMTPServer,
    receiver: Receiver,
) -> None:
    """An endpoint whose allowNetworks no longer covers its address gets nothing."""
    created = await create_endpoint(client, receiver.url, eventTypes=["email.sent"])
    async with postroom.engine.begin() as conn:
        await conn.execute(endpoints_t.update().values(allow_networks=[]))
    await client.post(SEND, json=email())
    await drain_mail(postroom)
    assert await dispatch(postroom) == 1
    assert receiver.requests == []
    [attempted] = await deliveries(client, created["id"])
    assert attempted["status"] == "pending" and "loopback" in attempted["lastError"]
    assert "config." not in attempted["lastError"] and "allowNetworks" in attempted["lastError"]


async def test_endpoint_crud_rotation_and_scopes(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    first = await create_endpoint(client, "http://127.0.0.1/a", description="orders")
    clock.advance(1)
    second = await create_endpoint(client, "http://127.0.0.1/b", eventTypes=["email.bounced"])
    page = (await client.get(ENDPOINTS, params={"limit": 1})).json()
    assert [e["id"] for e in page["endpoints"]] == [first["id"]]
    rest = (await client.get(ENDPOINTS, params={"cursor": page["nextCursor"]})).json()
    assert [e["id"] for e in rest["endpoints"]] == [second["id"]] and rest["nextCursor"] is None
    naive = base64.urlsafe_b64encode(f"2026-01-01T00:00:00|{first['id']}".encode()).decode()
    for forged in ("not-a-cursor", naive):
        refused = await client.get(ENDPOINTS, params={"cursor": forged})
        assert refused.status_code == 422, refused.text
        assert refused.json()["errors"][0]["field"] == "cursor"

    changed = await client.put(
        f"{ENDPOINTS}/{first['id']}",
        json={"enabled": False, "eventTypes": ["email.opened", "email.clicked"]},
    )
    assert changed.status_code == 200
    assert changed.json()["enabled"] is False
    assert changed.json()["eventTypes"] == ["email.clicked", "email.opened"]
    assert changed.json()["description"] == "orders"
    refused = await client.put(f"{ENDPOINTS}/{first['id']}", json={"allowNetworks": []})
    assert refused.status_code == 422

    rotated = (await client.post(f"{ENDPOINTS}/{first['id']}/rotate-secret")).json()
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != first["secret"]
    assert len(base64.b64decode(rotated["secret"].removeprefix("whsec_"))) == 32

    reader_key, _ = await postroom.keys.create("reader", ["read"])
    headers = {"Authorization": f"Bearer {reader_key}"}
    assert (await client.get(ENDPOINTS, headers=headers)).status_code == 200
    denied = await client.post(ENDPOINTS, json={"url": "http://x.example/"}, headers=headers)
    assert denied.status_code == 403

    assert (await client.delete(f"{ENDPOINTS}/{first['id']}")).status_code == 204
    assert (await client.get(f"{ENDPOINTS}/{first['id']}")).status_code == 404
    assert (await client.delete(f"{ENDPOINTS}/{first['id']}")).status_code == 404
    bad = await client.post(ENDPOINTS, json={"url": "http://x.example/", "eventTypes": ["sent"]})
    assert bad.status_code == 422


async def test_no_endpoint_costs_no_query_per_message(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer
) -> None:
    """With no endpoint, the send path and write-back read the endpoints at most once
    per refresh and write nothing to the outbox."""
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(postroom.engine.sync_engine, "before_cursor_execute", seen)
    try:
        for _ in range(20):
            await client.post(SEND, json=email())
        await drain_mail(postroom)
    finally:
        event.remove(postroom.engine.sync_engine, "before_cursor_execute", seen)
    endpoint_reads = [s for s in statements if "webhook_endpoints" in s]
    assert len(endpoint_reads) <= 2
    assert not [s for s in statements if "webhook_outbox" in s]


async def test_the_worker_loop_delivers_events(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer, receiver: Receiver
) -> None:
    """``postroom worker`` runs the dispatcher beside the send loop."""
    created = await create_endpoint(client, receiver.url, eventTypes=["email.sent"])
    sent = (await client.post(SEND, json=email())).json()
    worker = postroom.worker()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        for _ in range(200):
            if receiver.requests:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    [request] = receiver.requests
    assert verify(created["secret"], request)["data"]["emailId"] == sent["id"]


async def test_an_idle_dispatcher_only_reads(postroom: Postroom) -> None:
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    worker = postroom.worker()
    event.listen(postroom.engine.sync_engine, "before_cursor_execute", seen)
    try:
        assert await worker.webhooks.step() == 0
    finally:
        event.remove(postroom.engine.sync_engine, "before_cursor_execute", seen)
        await worker.aclose()
    # one SELECT, in a deferred (not IMMEDIATE) transaction on SQLite: no write lock
    queries = [s for s in statements if s != "BEGIN"]
    assert len(queries) == 1 and queries[0].lstrip().upper().startswith("SELECT")
    assert "BEGIN IMMEDIATE" not in statements


async def test_finished_deliveries_are_pruned_after_the_retention(
    client: httpx.AsyncClient,
    postroom: Postroom,
    clock: ManualClock,
    smtp: SMTPServer,
    receiver: Receiver,
) -> None:
    created = await create_endpoint(client, receiver.url, eventTypes=["email.sent"])
    receiver.script(500)
    await client.post(SEND, json=email())
    await client.post(SEND, json=email())
    await drain_mail(postroom)
    await dispatch(postroom)  # one delivered, one waiting for its retry
    clock.advance(LOG_RETENTION.total_seconds() + 1)
    assert await delivery_sql.prune(postroom.engine, before=clock.now() - LOG_RETENTION) == 1
    [left] = await deliveries(client, created["id"])
    assert left["status"] == "pending" and left["attemptLog"][0]["statusCode"] == 500


async def test_a_bulk_send_reports_each_recipient(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer, receiver: Receiver
) -> None:
    """The bulk path (COPY on PostgreSQL) writes its events set-based too."""
    created = await create_endpoint(client, receiver.url, eventTypes=["email.queued"])
    people = [{"email": f"p{n}@example.com"} for n in range(3)]
    body = {
        "from": {"email": "news@example.com"},
        "subject": "Maintenance tonight",
        "content": {"text": "We will be down 22:00-23:00."},
        "recipients": people,
    }
    accepted = await client.post("/api/system/email/bulk", json=body)
    assert accepted.status_code == 202, accepted.text
    assert await dispatch(postroom) == 3
    events = [verify(created["secret"], r) for r in receiver.requests]
    assert {e["type"] for e in events} == {"email.queued"}
    assert sorted(e["data"]["recipient"] for e in events) == [p["email"] for p in people]
    assert {e["data"]["bulkId"] for e in events} == {accepted.json()["id"]}
