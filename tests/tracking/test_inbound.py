"""DSN, plain-text bounce and ARF samples of several real-world shapes, through
``POST /inbound/raw``: classified, matched to their record, applied once."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from postroom.app import Postroom
from postroom.tracking.inbound import NotAReport, parse_report
from tests.tracking.conftest import API, record, send_and_drain

SAMPLES = Path(__file__).parent / "samples"

CASES = [
    # sample, event, bounce type, reason class, suppression reason
    ("postfix_user_unknown", "bounced", "hard", "invalid-mailbox", "hard-bounce"),
    ("postfix_spamhaus_block", "bounced", "soft", "reputation-block", None),
    ("postfix_delayed", "deferred", "soft", "network", None),
    ("exim_plain", "bounced", "hard", "invalid-mailbox", "hard-bounce"),
    ("gmail_no_such_user", "bounced", "hard", "invalid-mailbox", "hard-bounce"),
    ("outlook_mailbox_full", "bounced", "soft", "mailbox-full", None),
    ("yahoo_arf_abuse", "complained", None, None, "complaint"),
    ("microsoft_arf_rcpt", "complained", None, None, "complaint"),
]


@pytest.mark.parametrize(("sample", "event", "bounce_type", "reason", "suppressed"), CASES)
async def test_report_samples_are_classified_and_applied(
    client: httpx.AsyncClient,
    postroom: Postroom,
    sample: str,
    event: str,
    bounce_type: str | None,
    reason: str | None,
    suppressed: str | None,
) -> None:
    (sent,) = await send_and_drain(client, postroom, to=[{"email": "ann@example.com"}])
    raw = (
        (SAMPLES / f"{sample}.eml")
        .read_text()
        .format(recipient=sent.recipient, message_id=sent.message_id, postroom_id=sent.email_id)
        .replace("\n", "\r\n")
        .encode()
    )

    response = await client.post(
        f"{API}/inbound/raw", content=raw, headers={"content-type": "message/rfc822"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["recorded"] == 1, response.json()
    tracking = (await client.get(f"{API}/tracking/{sent.record_id}")).json()
    (ev,) = tracking["events"]
    assert ev["type"] == event
    assert ev["data"].get("bounceType") == bounce_type
    assert ev["data"].get("reason") == reason
    listed = (await client.get(f"{API}/suppressions")).json()["suppressions"]
    assert [s["reason"] for s in listed] == ([suppressed] if suppressed else [])
    # the same report again changes nothing
    again = (await client.post(f"{API}/inbound/raw", content=raw)).json()
    assert again["recorded"] == 0 and again["duplicates"] == 1
    expected = {"deferred": "sent"}.get(event, event)
    assert (await record(postroom, sent.record_id)).status == expected


async def test_a_report_for_one_of_several_recipients_finds_that_one(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    ann, bob = await send_and_drain(
        client, postroom, to=[{"email": "ann@example.com"}, {"email": "bob@example.com"}]
    )
    raw = (
        (SAMPLES / "postfix_user_unknown.eml")
        .read_text()
        .format(recipient=bob.recipient, message_id=bob.message_id, postroom_id=bob.email_id)
    )
    assert (await client.post(f"{API}/inbound/raw", content=raw.encode())).json()["recorded"] == 1
    assert (await record(postroom, bob.record_id)).status == "bounced"
    assert (await record(postroom, ann.record_id)).status == "sent"


async def test_a_message_that_is_no_report_is_refused(client: httpx.AsyncClient) -> None:
    plain = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\n\r\nJust a letter.\r\n"
    response = await client.post(f"{API}/inbound/raw", content=plain)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    with pytest.raises(NotAReport):
        parse_report(plain)
