"""From the API through the queue and worker to a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from postroom.app import Postroom
from postroom.clock import ManualClock
from tests.providers.smtp_server import HANG, SMTPServer
from tests.support.payloads import email
from tests.support.providers import only_smtp_provider

SEND = "/api/system/email/send"


@pytest.fixture
async def smtp(postroom: Postroom) -> AsyncIterator[SMTPServer]:
    async with only_smtp_provider(postroom, "relay") as server:
        yield server


async def drain(postroom: Postroom) -> int:
    worker = postroom.worker()
    try:
        return await worker.drain()
    finally:
        await worker.aclose()


async def test_message_arrives_with_envelope_and_headers(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer
) -> None:
    body = email(
        to=[
            {"email": "ann@example.com", "name": "Ann"},
            {"email": "bob@example.com", "type": "cc"},
            {"email": "eve@example.com", "type": "bcc"},
        ],
        replyTo={"email": "help@example.com"},
        subject="Your receipt",
    )
    created = (await client.post(SEND, json=body)).json()
    assert await drain(postroom) == 1

    [received] = smtp.received
    assert received.mail_from == "app@example.com"
    assert sorted(received.rcpt_tos) == ["ann@example.com", "bob@example.com", "eve@example.com"]
    message = received.message()
    assert message["Subject"] == "Your receipt"
    assert message["From"] == "App <app@example.com>"
    assert message["To"] == "Ann <ann@example.com>"
    assert message["Cc"] == "bob@example.com"
    assert message["Reply-To"] == "help@example.com"
    assert message["Message-ID"] == f"<{created['id']}@example.com>"
    assert message["Date"] is not None
    assert "Bcc" not in message and b"eve@example.com" not in received.data
    assert message.get_body(("plain",)).get_content().strip() == "Hello Ann"  # type: ignore[union-attr]

    status = (await client.get(f"/api/system/email/status/{created['id']}")).json()
    assert status["status"] == "sent" and status["provider"] == "relay"
    assert {r["messageId"] for r in status["recipients"]} == {message["Message-ID"]}


async def test_one_connection_serves_many_messages(postroom: Postroom, smtp: SMTPServer) -> None:
    for _ in range(10):
        await postroom.send(email())
    assert await drain(postroom) == 10
    assert len(smtp.received) == 10
    assert smtp.connections <= postroom.settings.worker.concurrency


async def test_451_three_times_then_delivered_on_attempt_4(
    postroom: Postroom, smtp: SMTPServer, clock: ManualClock
) -> None:
    smtp.script("DATA", "451 4.3.0 try again later", times=3)
    result = await postroom.send(email(maxAttempts=5))
    for _ in range(4):
        await drain(postroom)
        clock.advance(300)  # past the default backoff: 1, 2, 4 minutes
    status = await postroom.status(result.id)
    assert (status.status, status.attempts) == ("sent", 4)
    assert [a.outcome for a in status.attempt_log] == ["retry", "retry", "retry", "sent"]
    assert "451" in (status.attempt_log[0].error or "")
    # every attempt transmitted the message; the server refused the first three
    assert len({r.message()["Message-ID"] for r in smtp.received}) == 1
    assert len(smtp.received) == 4


async def test_550_fails_after_one_attempt(postroom: Postroom, smtp: SMTPServer) -> None:
    smtp.script("RCPT", "550 5.1.1 no such user")
    result = await postroom.send(email(maxAttempts=5))
    await drain(postroom)
    status = await postroom.status(result.id)
    assert (status.status, status.attempts) == ("failed", 1)
    assert status.error is not None and status.error["code"] == "provider-rejected"
    assert "5.1.1" in status.error["message"]
    assert smtp.received == []


async def test_shutdown_waits_for_sends_then_gives_back_the_rest(
    postroom: Postroom, smtp: SMTPServer
) -> None:
    smtp.script("DATA", HANG)  # the first message never gets its DATA reply
    postroom.settings.worker.shutdown_grace_s = 0.3
    result = await postroom.send(email())
    worker = postroom.worker()
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await smtp.wait_for("DATA")
    stop.set()
    await asyncio.wait_for(task, timeout=5)

    status = await postroom.status(result.id)
    assert status.job_status == "pending"  # released, not lost, not stuck in processing
    assert status.attempt_log[-1].error_code == "shutdown"
    assert await drain(postroom) == 1
    assert (await postroom.status(result.id)).status == "sent"


async def test_throttling_defers_without_spending_attempts(
    postroom: Postroom, smtp: SMTPServer, clock: ManualClock
) -> None:
    smtp.script("MAIL", "454 4.7.0 Throttling failure: Maximum sending rate exceeded", times=3)
    result = await postroom.send(email(maxAttempts=1))
    for _ in range(4):
        await drain(postroom)
        clock.advance(60)
    status = await postroom.status(result.id)
    assert status.status == "sent"
    assert [a.outcome for a in status.attempt_log] == ["deferred"] * 3 + ["sent"]
