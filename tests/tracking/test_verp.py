"""VERP: with a bounce domain, mail leaves with ``bounces+<token>@<domain>`` as its
envelope sender, and a bounce sent back to that address finds its record even
when it returns nothing of the original message."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from postroom.app import Postroom
from postroom.compose.message import compose
from postroom.config import Settings, WorkerSettings
from postroom.tracking.context import TrackingContext
from postroom.tracking.inbound import Inbound
from tests.support.payloads import email as email_body
from tests.tracking.conftest import API, record, send_and_drain

BOUNCE_DOMAIN = "bounce.example.com"

#: a DSN to the VERP address: no X-Postroom-Id, no Message-ID, no returned headers
DSN = """\
Return-Path: <>
Date: Mon, 30 Nov 2026 10:00:03 +0000
From: MAILER-DAEMON@mx.example.net (Mail Delivery System)
Subject: Undelivered Mail Returned to Sender
To: {verp}
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="b1"

--b1
Content-Type: text/plain; charset=us-ascii

Your message could not be delivered.

--b1
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: Recipient address rejected: User unknown

--b1--
"""


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        worker=WorkerSettings(concurrency=8, batch_size=16, poll_interval_s=0.05, lease_s=30),
        bounce_domain=BOUNCE_DOMAIN,
    )


def test_composed_mail_has_a_signed_verp_envelope_sender(settings: Settings) -> None:
    ctx = TrackingContext.from_settings(settings)
    email_id = str(uuid.uuid4())
    message = compose(
        email_id,
        email_body(),
        now=datetime.now(UTC),
        message_id_domain="example.com",
        tracking=ctx,
    )
    local, _, domain = message.envelope_from.partition("@")
    assert domain == BOUNCE_DOMAIN
    assert re.fullmatch(r"bounces\+[a-z2-7]{42}", local) and len(local) <= 64
    assert message.from_.email != message.envelope_from  # the From header is left alone
    assert ctx.email_of_return_path(message.envelope_from.upper()) == uuid.UUID(email_id)
    # another email's token, a changed token, another domain: no email
    # (not the last character: its low bits are base32 padding, not part of the token)
    forged = local[:-2] + ("a" if local[-2] != "a" else "b") + local[-1]
    for address in (f"{forged}@{BOUNCE_DOMAIN}", f"{local}@other.example", "bounces@x"):
        assert ctx.email_of_return_path(address) is None
    # off without a bounce domain
    plain = TrackingContext.from_settings(settings.model_copy(update={"bounce_domain": ""}))
    assert plain.return_path(email_id) is None


async def test_a_dsn_to_the_verp_address_without_the_original_is_matched(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    sent = await send_and_drain(
        client, postroom, to=[{"email": "ann@example.com"}, {"email": "bob@example.com"}]
    )
    bob = next(s for s in sent if s.recipient == "bob@example.com")
    verp = TrackingContext.from_settings(postroom.settings).return_path(bob.email_id)
    assert verp is not None
    raw = DSN.format(verp=verp, recipient=bob.recipient).replace("\n", "\r\n").encode()

    response = await client.post(
        f"{API}/inbound/raw", content=raw, headers={"content-type": "message/rfc822"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1, response.json()
    assert (await record(postroom, bob.record_id)).status == "bounced"
    tracking = (await client.get(f"{API}/tracking/{bob.record_id}")).json()
    (ev,) = tracking["events"]
    assert ev["type"] == "bounced"
    assert ev["data"]["bounceType"] == "hard" and ev["data"]["reason"] == "invalid-mailbox"
    other = next(s for s in sent if s.recipient == "ann@example.com")
    assert (await record(postroom, other.record_id)).status != "bounced"


async def test_the_envelope_recipient_of_an_mta_pipe_is_read_too(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    (sent,) = await send_and_drain(client, postroom, to=[{"email": "ann@example.com"}])
    ctx = TrackingContext.from_settings(postroom.settings)
    verp = ctx.return_path(sent.email_id)
    assert verp is not None
    # the report's headers name some alias; the MTA tells the VERP address it was for
    raw = DSN.format(verp="postmaster@example.com", recipient=sent.recipient).encode()
    inbound = Inbound(postroom.engine, postroom.clock, soft_limit=3, tracking=ctx)

    assert (await inbound.receive(raw))["unmatched"] == 1
    assert (await inbound.receive(raw, envelope_to=verp))["recorded"] == 1
    assert (await record(postroom, sent.record_id)).status == "bounced"
