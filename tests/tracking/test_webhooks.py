"""ESP webhooks with real signatures: events applied once, bounces suppress."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import insert, select, update

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.tracking.webhooks import intake
from tests.support.providers import add_provider
from tests.tracking.conftest import API, Sent, record, records_t, row_counts, send_and_drain
from tests.tracking.signing import (
    MAILGUN_KEY,
    POSTMARK_PASSWORD,
    POSTMARK_USER,
    SendGridKeys,
    basic,
    mailgun_body,
)

HOOK = f"{API}/webhook"


@pytest.fixture
def sendgrid_keys() -> SendGridKeys:
    return SendGridKeys()


@pytest.fixture
async def esps(postroom: Postroom, sendgrid_keys: SendGridKeys) -> None:
    await add_provider(
        postroom,
        name="mg",
        type="mailgun",
        config={"domain": "mg.example.com"},
        authentication={"apiKey": "k", "webhookSigningKey": MAILGUN_KEY},
        enabled=False,
    )
    await add_provider(
        postroom,
        name="sg",
        type="sendgrid",
        authentication={"apiKey": "k", "webhookPublicKey": sendgrid_keys.public_b64},
        enabled=False,
    )
    await add_provider(
        postroom,
        name="pm",
        type="postmark",
        authentication={
            "serverToken": "t",
            "webhookUser": POSTMARK_USER,
            "webhookPassword": POSTMARK_PASSWORD,
        },
        enabled=False,
    )


def mailgun_event(sent: Sent, event: str, **extra: Any) -> dict[str, Any]:
    return {
        "event": event,
        "id": f"mg-{event}-{extra.pop('n', 1)}",
        "timestamp": 1796040000.5,
        "recipient": sent.recipient,
        "message": {"headers": {"message-id": sent.message_id.strip("<>")}},
        **extra,
    }


async def as_sent_by_sendgrid(postroom: Postroom, x_message_id: str) -> None:
    """SendGrid answers a send with an X-Message-Id; its events carry it."""
    async with postroom.engine.begin() as conn:
        await conn.execute(update(records_t).values(message_id=x_message_id))


def now_s(clock: ManualClock) -> int:
    return int(clock.now().timestamp())


@pytest.mark.usefixtures("esps")
async def test_mailgun_hard_bounce_marks_bounced_and_suppresses(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    event = mailgun_event(
        sent,
        "failed",
        severity="permanent",
        reason="bounce",
        **{
            "delivery-status": {
                "code": 550,
                "description": "5.1.1 The email account does not exist",
            }
        },
    )
    body = mailgun_body(event, timestamp=now_s(clock))

    response = await client.post(
        f"{HOOK}/mg", content=body, headers={"content-type": "application/json"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1
    assert (await record(postroom, sent.record_id)).status == "bounced"
    tracking = (await client.get(f"{API}/tracking/{sent.record_id}")).json()
    assert tracking["events"][0]["data"]["bounceType"] == "hard"
    assert tracking["events"][0]["data"]["reason"] == "invalid-mailbox"
    listed = (await client.get(f"{API}/suppressions")).json()["suppressions"]
    assert [(s["email"], s["reason"]) for s in listed] == [("ann@example.com", "hard-bounce")]
    # the next send to the address is not attempted
    again = (await client.post(f"{API}/send", json={**_body()})).json()
    assert again["status"] == "suppressed"


@pytest.mark.usefixtures("esps")
async def test_mailgun_reputation_block_is_soft_and_does_not_suppress(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    event = mailgun_event(
        sent,
        "failed",
        severity="permanent",
        reason="generic",
        **{
            "delivery-status": {
                "code": 550,
                "description": "5.7.1 Service unavailable, client host blocked using Spamhaus",
            }
        },
    )
    body = mailgun_body(event, timestamp=now_s(clock))
    assert (await client.post(f"{HOOK}/mg", content=body)).status_code == 200
    tracking = (await client.get(f"{API}/tracking/{sent.record_id}")).json()
    assert tracking["events"][0]["data"]["reason"] == "reputation-block"
    assert tracking["events"][0]["data"]["bounceType"] == "soft"
    assert (await client.get(f"{API}/suppressions")).json()["suppressions"] == []


@pytest.mark.usefixtures("esps")
async def test_three_soft_bounces_in_a_row_suppress(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    for n in range(3):
        assert (await client.get(f"{API}/suppressions")).json()["suppressions"] == []
        (sent,) = await send_and_drain(client, postroom)
        event = mailgun_event(
            sent,
            "failed",
            n=n,
            severity="permanent",
            **{"delivery-status": {"code": 552, "description": "5.2.2 Mailbox full"}},
        )
        assert (
            await client.post(f"{HOOK}/mg", content=mailgun_body(event, timestamp=now_s(clock)))
        ).status_code == 200
    listed = (await client.get(f"{API}/suppressions")).json()["suppressions"]
    assert [(s["email"], s["reason"]) for s in listed] == [("ann@example.com", "soft-bounce")]


@pytest.mark.usefixtures("esps")
async def test_sendgrid_batch_with_duplicates_and_disorder(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock, sendgrid_keys: SendGridKeys
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    await as_sent_by_sendgrid(postroom, "14c5d75ce93")

    def ev(name: str, n: int, ts: int, **extra: Any) -> dict[str, Any]:
        return {
            "email": sent.recipient,
            "event": name,
            "timestamp": ts,
            "sg_event_id": f"sg-{n}",
            "sg_message_id": "14c5d75ce93.filterdrecv-p3las1-1-5B0E-1.0",
            **extra,
        }

    events = [
        ev("click", 3, 1796040300, url="https://example.com/x", useragent="Mozilla/5.0"),
        ev("open", 2, 1796040200),
        ev("delivered", 1, 1796040100),
        ev("open", 2, 1796040200),  # SendGrid delivers events more than once
        ev("open", 4, 1796040250, sg_machine_open=True),
    ]
    body = json.dumps(events).encode()
    response = await client.post(
        f"{HOOK}/sg", content=body, headers=sendgrid_keys.headers(body, now_s(clock))
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"received": 5, "recorded": 4, "duplicates": 1, "unmatched": 0}
    # the same events in a later request change nothing
    again = json.dumps(events[::-1]).encode()
    response = await client.post(
        f"{HOOK}?provider=sg", content=again, headers=sendgrid_keys.headers(again, now_s(clock))
    )
    assert response.json()["recorded"] == 0

    tracking = (await client.get(f"{API}/tracking/{sent.record_id}")).json()
    assert tracking["status"] == "clicked"
    assert [e["type"] for e in tracking["events"]] == ["delivered", "opened", "opened", "clicked"]
    assert tracking["summary"]["openedHuman"] == 1 and tracking["summary"]["openedTotal"] == 2


@pytest.mark.usefixtures("esps")
async def test_sendgrid_spam_report_suppresses(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock, sendgrid_keys: SendGridKeys
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    await as_sent_by_sendgrid(postroom, "x7Yz")
    body = json.dumps(
        [
            {
                "email": sent.recipient,
                "event": "spamreport",
                "timestamp": 1796040000,
                "sg_event_id": "sg-spam",
                "sg_message_id": "x7Yz.filter0001-1",
            }
        ]
    ).encode()
    response = await client.post(
        f"{HOOK}/sg", content=body, headers=sendgrid_keys.headers(body, now_s(clock))
    )
    assert response.status_code == 200
    assert (await record(postroom, sent.record_id)).status == "complained"
    listed = (await client.get(f"{API}/suppressions")).json()["suppressions"]
    assert [(s["scope"], s["reason"]) for s in listed] == [("global", "complaint")]


@pytest.mark.usefixtures("esps")
async def test_postmark_delivery_and_bounce(client: httpx.AsyncClient, postroom: Postroom) -> None:
    (sent,) = await send_and_drain(client, postroom)
    delivery = {
        "RecordType": "Delivery",
        "MessageID": sent.message_id,
        "Recipient": sent.recipient,
        "DeliveredAt": "2026-11-30T12:00:00Z",
    }
    bounce = {
        "RecordType": "Bounce",
        "ID": 42,
        "Type": "HardBounce",
        "MessageID": sent.message_id,
        "Email": sent.recipient,
        "BouncedAt": "2026-11-30T11:59:00Z",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist",
    }
    auth = basic(POSTMARK_USER, POSTMARK_PASSWORD)
    for doc in (delivery, bounce, bounce):
        response = await client.post(f"{HOOK}/pm", content=json.dumps(doc), headers=auth)
        assert response.status_code == 200, response.text
    assert (await record(postroom, sent.record_id)).status == "bounced"
    counts = await row_counts(postroom)
    assert counts["email_tracking_events"] == 2
    assert counts["webhook_receipts"] == 2


@pytest.mark.usefixtures("esps")
async def test_replay_reprocesses_stored_payloads_idempotently(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    from postroom.api.routes.webhooks import intake

    body_for_unknown = mailgun_body(
        {
            "event": "delivered",
            "id": "mg-early",
            "timestamp": 1796040000,
            "recipient": "ann@example.com",
            "message": {"headers": {"message-id": "not-yet@example.com"}},
        },
        timestamp=now_s(clock),
    )
    response = await client.post(f"{HOOK}/mg", content=body_for_unknown)
    assert response.json()["unmatched"] == 1
    totals = await intake(postroom).replay()
    assert totals["receipts"] == 1 and totals["recorded"] == 0 and totals["failed"] == 0
    (sent,) = await send_and_drain(client, postroom)
    # the event arrived before its record could be matched: replay applies it now ...
    async with postroom.engine.begin() as conn:
        await conn.execute(update(records_t).values(message_id="<not-yet@example.com>"))
    assert (await intake(postroom).replay(provider="mg"))["recorded"] == 1
    # ... and once only
    assert (await intake(postroom).replay())["recorded"] == 0
    assert (await record(postroom, sent.record_id)).status == "delivered"


def _body() -> dict[str, object]:
    return {
        "to": [{"email": "ann@example.com"}],
        "from": {"email": "app@example.com"},
        "subject": "Hi",
        "content": {"text": "Hi"},
    }


@pytest.mark.usefixtures("esps")
async def test_expired_nonces_are_purged_at_most_once_a_minute(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    (sent,) = await send_and_drain(client, postroom)
    nonces_t = intake.nonces_t

    async def post(n: int) -> None:
        body = mailgun_body(mailgun_event(sent, "delivered", n=n), timestamp=now_s(clock))
        response = await client.post(
            f"{HOOK}/mg", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 200, response.text

    async def nonces() -> set[str]:
        async with postroom.engine.connect() as conn:
            return set((await conn.execute(select(nonces_t.c.nonce))).scalars())

    async def add_expired(nonce: str) -> None:
        provider_id = (await client.get(f"{API}/providers/mg")).json()["id"]
        async with postroom.engine.begin() as conn:
            await conn.execute(
                insert(nonces_t).values(
                    provider_id=uuid.UUID(provider_id),
                    nonce=nonce,
                    seen_at=clock.now() - timedelta(days=1),
                )
            )

    await post(1)  # purges (the first request of this process to this database)
    await add_expired("old-1")
    clock.advance(30)
    await post(2)  # within the minute: no purge
    assert "old-1" in await nonces()
    clock.advance(31)
    await post(3)  # a minute later: the expired nonce goes, the fresh ones stay
    left = await nonces()
    assert "old-1" not in left and len(left) == 3
