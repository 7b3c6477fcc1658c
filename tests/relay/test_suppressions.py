"""Suppressions apply to mail submitted through the relay (and ``POST /send/raw``)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from postroom.app import Postroom
from postroom.relay.server import Relay
from postroom.services.raw_sending import RawEnvelope
from postroom.tracking.suppressions import Suppressions
from postroom.types import EmailType
from tests.providers.smtp_server import SMTPServer
from tests.relay.conftest import drain
from tests.relay.test_submission import MESSAGE, QUEUED, submit
from tests.support.tls import Certs


async def suppress(postroom: Postroom, email: str, **kwargs: object) -> None:
    await Suppressions(postroom.engine).add(
        email,
        scope=str(kwargs.get("scope", "global")),
        reason=str(kwargs.get("reason", "hard-bounce")),
        now=postroom.clock.now(),
        expires_at=kwargs.get("expires_at"),  # type: ignore[arg-type]
    )


async def test_a_suppressed_envelope_recipient_is_not_sent_to(
    postroom: Postroom, relay: Relay, certs: Certs, send_key: str, provider: SMTPServer
) -> None:
    await suppress(postroom, "bob@example.com", reason="complaint")
    reply = await submit(relay, certs, send_key)  # to ann, bob (cc) and eve (bcc)
    match = QUEUED.search(reply)
    assert match, reply
    email_id = match.group(1)

    status = await postroom.status(email_id)
    assert status.status == "queued"
    by_email = {r.email: r for r in status.recipients}
    assert by_email["bob@example.com"].status == "suppressed"
    assert by_email["bob@example.com"].suppressed == "complaint"
    assert by_email["ann@example.com"].status == "queued"

    assert await drain(postroom) == 1
    [received] = provider.received
    assert sorted(received.rcpt_tos) == ["ann@example.com", "eve@example.com"]
    # the message itself is unchanged: its Cc field still names bob
    assert received.data == MESSAGE.replace(b"Bcc: eve@example.com\r\n", b"")
    status = await postroom.status(email_id)
    assert status.status == "sent"
    assert {r.email: r.status for r in status.recipients} == {
        "ann@example.com": "sent",
        "bob@example.com": "suppressed",
        "eve@example.com": "sent",
    }


async def test_every_recipient_suppressed_nothing_is_sent(
    postroom: Postroom, relay: Relay, certs: Certs, send_key: str, provider: SMTPServer
) -> None:
    for address in ("ANN@example.com", "bob@example.com", "eve@example.com"):
        await suppress(postroom, address)
    reply = await submit(relay, certs, send_key)
    match = QUEUED.search(reply)
    assert match, reply
    assert await drain(postroom) == 0
    assert provider.received == []
    status = await postroom.status(match.group(1))
    assert status.status == "suppressed"
    assert {r.status for r in status.recipients} == {"suppressed"}


async def test_scopes_and_expiry_as_for_api_mail(postroom: Postroom, provider: SMTPServer) -> None:
    await suppress(postroom, "ann@example.com", scope="marketing", reason="unsubscribe")
    await suppress(postroom, "bob@example.com", expires_at=postroom.clock.now() - timedelta(days=1))
    rcpts = ["ann@example.com", "bob@example.com"]
    receipt = await postroom.send_raw(MESSAGE, RawEnvelope(recipients=rcpts))
    news = await postroom.send_raw(MESSAGE, RawEnvelope(recipients=rcpts, type=EmailType.MARKETING))
    assert receipt.status == news.status == "queued"
    assert [r.status for r in (await postroom.status(receipt.id)).recipients] == [
        "queued",
        "queued",
    ]
    marketing = {r.email: r for r in (await postroom.status(news.id)).recipients}
    assert marketing["ann@example.com"].suppressed == "unsubscribe"
    assert marketing["bob@example.com"].status == "queued"

    assert await drain(postroom) == 2
    envelopes = sorted(sorted(m.rcpt_tos) for m in provider.received)
    assert envelopes == [["ann@example.com", "bob@example.com"], ["bob@example.com"]]


async def test_concurrent_submissions_are_screened_in_one_batch(
    postroom: Postroom, provider: SMTPServer
) -> None:
    await suppress(postroom, "x3@example.com")
    results = await asyncio.gather(
        *(
            postroom.send_raw(MESSAGE, RawEnvelope(recipients=[f"x{i}@example.com"]))
            for i in range(8)
        )
    )
    assert [r.status for r in results] == ["queued"] * 3 + ["suppressed"] + ["queued"] * 4
    assert await drain(postroom) == 7
    assert sorted(m.rcpt_tos[0] for m in provider.received) == [
        f"x{i}@example.com" for i in range(8) if i != 3
    ]
