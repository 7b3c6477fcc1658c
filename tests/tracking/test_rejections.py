"""Synchronous SMTP rejections become classified bounce events (real aiosmtpd server)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from postroom.app import Postroom
from tests.providers.smtp_server import SMTPServer
from tests.support.providers import only_smtp_provider
from tests.tracking.conftest import API, send_and_drain


@pytest.fixture
async def smtp(postroom: Postroom) -> AsyncIterator[SMTPServer]:
    async with only_smtp_provider(postroom, "relay") as server:
        yield server


async def test_a_refused_recipient_bounces_and_is_suppressed_while_the_other_is_sent(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer
) -> None:
    smtp.script("RCPT", "550 5.1.1 <bob@example.com>: user unknown", address="bob@example.com")
    recs = await send_and_drain(
        client, postroom, to=[{"email": "ann@example.com"}, {"email": "bob@example.com"}]
    )
    status = (await client.get(f"{API}/status/{recs[0].email_id}")).json()
    by_email = {r["email"]: r["status"] for r in status["recipients"]}
    assert by_email == {"ann@example.com": "sent", "bob@example.com": "bounced"}
    (event,) = status["trackingEvents"]
    assert event["data"]["reason"] == "invalid-mailbox" and event["data"]["synchronous"]
    listed = (await client.get(f"{API}/suppressions")).json()["suppressions"]
    assert [(s["email"], s["reason"]) for s in listed] == [("bob@example.com", "hard-bounce")]


async def test_a_reputation_block_is_a_soft_bounce_and_suppresses_nobody(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer
) -> None:
    smtp.script("RCPT", "550 5.7.1 Client host rejected: listed at zen.spamhaus.org")
    (rec,) = await send_and_drain(client, postroom, maxAttempts=1)
    body = (await client.get(f"{API}/tracking/{rec.record_id}")).json()
    # the whole job failed: the record stays failed (a queue retry sends it again)
    assert body["status"] == "failed"
    assert body["events"][0]["type"] == "bounced"
    assert body["events"][0]["data"]["bounceType"] == "soft"
    assert body["events"][0]["data"]["reason"] == "reputation-block"
    assert (await client.get(f"{API}/suppressions")).json()["suppressions"] == []
