"""POST /send refuses what it cannot honour: unsupported fields, bad text, unsafe headers,
out-of-range times, over-long addresses and duplicate recipients; and routes by time."""

from __future__ import annotations

import email
import email.policy
import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import Table, func, select

from postroom.app import Postroom
from postroom.clock import ManualClock
from postroom.db.models import EmailJob, EmailQueue
from tests.support.payloads import email as email_body

SEND = "/api/system/email/send"
jobs_t = cast(Table, EmailJob.__table__)
queues_t = cast(Table, EmailQueue.__table__)
ATTACHMENT = {"filename": "a.txt", "content": "aGk=", "contentType": "text/plain"}


async def post(client: httpx.AsyncClient, body: dict[str, Any]) -> httpx.Response:
    """POST ``body`` as ASCII JSON, so lone surrogates travel as ``\\ud800`` escapes."""
    return await client.post(
        SEND, content=json.dumps(body), headers={"content-type": "application/json"}
    )


async def job_count(postroom: Postroom) -> int:
    async with postroom.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(jobs_t))).scalar_one())


async def refused(
    client: httpx.AsyncClient, postroom: Postroom, body: dict[str, Any], field: str, words: str
) -> dict[str, Any]:
    """Assert a 422 problem whose error for ``field`` says ``words``; nothing more queued."""
    before = await job_count(postroom)
    response = await post(client, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem: dict[str, Any] = response.json()
    matching = [e for e in problem["errors"] if e["field"] == field]
    assert matching and words in matching[0]["message"], problem
    assert await job_count(postroom) == before
    return problem


async def sent_message(postroom: Postroom, tmp_path: Path, email_id: str) -> Any:
    worker = postroom.worker()
    try:
        assert await worker.drain() == 1
    finally:
        await worker.aclose()
    status = await postroom.status(email_id)
    assert status.status == "sent", status
    raw = (tmp_path / "var" / "outbox" / f"{email_id}.eml").read_bytes()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    return email.message_from_bytes(raw, policy=email.policy.default)


# -- nothing accepted is ignored ----------------------------------------------------------


@pytest.mark.parametrize("flag", [False, True])
async def test_tracking_flags_are_accepted(client: httpx.AsyncClient, flag: bool) -> None:
    body = email_body(trackOpens=flag, trackClicks=flag, trackDelivery=flag)
    response = await post(client, body)
    assert response.status_code == 202, response.text


async def test_unknown_top_level_keys_are_refused_by_name(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    body = email_body(sendAt="tomorrow", bcc=["x@example.com"])
    problem = await refused(client, postroom, body, "sendAt", "not permitted")
    assert {e["field"] for e in problem["errors"]} == {"sendAt", "bcc"}


# -- text that cannot be encoded ---------------------------------------------------------

SURROGATE = "\ud800"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"headers": {"X-Tag": f"a{SURROGATE}"}}, "headers"),
        ({"headers": {f"X-{SURROGATE}": "a"}}, "headers"),
        ({"from": {"email": "app@example.com", "name": SURROGATE}}, "from.name"),
        (
            {"attachments": [{**ATTACHMENT, "filename": f"{SURROGATE}.txt"}]},
            "attachments.0.filename",
        ),
        ({"attachments": [{**ATTACHMENT, "cid": f"logo{SURROGATE}"}]}, "attachments.0.cid"),
        ({"subject": f"Hi {SURROGATE}"}, "subject"),
        ({"to": [{"email": f"ann{SURROGATE}@example.com"}]}, "to.0.email"),
        ({"replyTo": {"email": f"ann{SURROGATE}@example.com"}}, "replyTo.email"),
        ({"to": [{"email": "ann@example.com", "metadata": {"k": [SURROGATE]}}]}, "to.0.metadata"),
        ({"content": {"text": SURROGATE}}, "content.text"),
        ({"content": {"html": SURROGATE}}, "content.html"),
        ({"metadata": {"a": {SURROGATE: 1}}}, "metadata"),
        ({"tags": [SURROGATE]}, "tags.0"),
        ({"source": SURROGATE}, "source"),
        ({"userId": SURROGATE}, "userId"),
        ({"queue": SURROGATE}, "queue"),
        ({"provider": SURROGATE}, "provider"),
    ],
)
async def test_lone_surrogates_are_refused_wherever_they_are(
    client: httpx.AsyncClient, postroom: Postroom, change: dict[str, Any], field: str
) -> None:
    # pydantic refuses some first ("unable to parse raw data as a unicode string")
    words = "valid string" if field.endswith("email") else "valid Unicode"
    await refused(client, postroom, email_body(**change), field, words)


@pytest.mark.parametrize("field", ["text", "html"])
async def test_nul_in_the_body_is_refused(
    client: httpx.AsyncClient, postroom: Postroom, field: str
) -> None:
    body = email_body(content={field: "a\x00b"})
    await refused(client, postroom, body, f"content.{field}", "NUL")


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00+01:00"])
async def test_scheduled_at_beyond_the_calendar_is_422_not_500(
    client: httpx.AsyncClient, postroom: Postroom, when: str
) -> None:
    await refused(client, postroom, email_body(scheduledAt=when), "scheduledAt", "out of range")


# -- header policy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "DKIM-Signature", "ARC-Seal", "ARC-Authentication-Results", "Authentication-Results",
        "Received", "Received-SPF", "Resent-From", "Resent-To", "Delivered-To", "Errors-To",
        "Return-Path", "Content-Type", "Content-Disposition", "Content-Language",
        "X-Postroom-Id", "x-postroom-id", "X-Postroom-Anything", "Sender", "bcc",
    ],
)  # fmt: skip
async def test_headers_a_receiver_trusts_or_postroom_writes_are_refused(
    client: httpx.AsyncClient, postroom: Postroom, name: str
) -> None:
    problem = await refused(client, postroom, email_body(headers={name: "x"}), "headers", name)
    assert "allowed" in problem["detail"] or "set by Postroom" in problem["detail"]


async def test_allowed_headers_reach_the_message(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    headers = {
        "X-Campaign": "spring",
        "List-Unsubscribe": "<https://example.com/u/1>, <mailto:u@example.com>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        "List-Id": "News <news.example.com>",
        "In-Reply-To": "<a@example.com>",
        "References": " ".join(f"<message-{n}@example.com>" for n in range(100)),
        "Precedence": "bulk",
        "Auto-Submitted": "auto-generated",
        "Organization": "Zoë & Co",
        "X-Long-Token": "t" * 5000,
    }
    response = await post(client, email_body(headers=headers))
    assert response.status_code == 202, response.text

    message = await sent_message(postroom, tmp_path, response.json()["id"])
    for name, value in headers.items():
        assert message[name] == value, name
    assert message["X-Postroom-Id"] == response.json()["id"]


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ({"X-" + "a" * 4998: "x"}, "at most 76"),
        ({"X-A": "1", "x-a": "2"}, "given twice"),
        ({"References": "<" + "a" * 1000 + "@example.com>"}, "cannot be folded"),
        ({"List-Id": "Liste für Freunde <l.example.com>"}, "must be ASCII"),
        ({"X-Big": "x " * 4001}, "at most 8000"),
        ({f"X-H{n}": "x" for n in range(101)}, "at most 100"),
        ({"X Space": "x"}, "not a valid field name"),
    ],
)
async def test_header_limits(
    client: httpx.AsyncClient, postroom: Postroom, headers: dict[str, str], words: str
) -> None:
    await refused(client, postroom, email_body(headers=headers), "headers", words)


# -- attachments -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"contentType": "text/" + "x" * 10_000}, "attachments.0.contentType", "at most 255"),
        ({"contentType": "text/" + "x" * 200}, "attachments.0.contentType", "type/subtype"),
        ({"contentType": "tëxt/plain"}, "attachments.0.contentType", "type/subtype"),
        ({"contentType": "text/plain; charset=utf-8"}, "attachments.0.contentType", "type/sub"),
        ({"contentType": "text"}, "attachments.0.contentType", "type/subtype"),
        ({"cid": "my logo"}, "attachments.0.cid", "without spaces"),
        ({"cid": "lögo"}, "attachments.0.cid", "ASCII"),
    ],
)
async def test_malformed_attachment_headers_are_refused(
    client: httpx.AsyncClient,
    postroom: Postroom,
    change: dict[str, Any],
    field: str,
    words: str,
) -> None:
    body = email_body(attachments=[{**ATTACHMENT, **change}])
    await refused(client, postroom, body, field, words)


# -- addresses ---------------------------------------------------------------------------


async def test_local_part_is_at_most_64_octets(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    ok = await post(client, email_body(to=[{"email": "a" * 64 + "@example.com"}]))
    assert ok.status_code == 202, ok.text
    await refused(
        client, postroom, email_body(to=[{"email": "a" * 65 + "@example.com"}]), "to.0.email", "64"
    )
    # octets, not characters: 33 times "ä" is 66 octets
    await refused(
        client, postroom, email_body(to=[{"email": "ä" * 33 + "@example.com"}]), "to.0.email", "64"
    )


async def test_local_part_limit_holds_for_from_and_reply_to(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    long = {"email": "a" * 65 + "@example.com"}
    body = email_body(**{"from": long, "replyTo": long})
    problem = await refused(client, postroom, body, "from.email", "64")
    assert "replyTo.email" in {e["field"] for e in problem["errors"]}


async def test_the_same_address_twice_in_any_letter_case_is_refused(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    body = email_body(
        to=[
            {"email": "ann@example.com"},
            {"email": "bob@example.com", "type": "cc"},
            {"email": "Ann@Example.COM", "type": "bcc"},
        ]
    )
    problem = await refused(client, postroom, body, "to", "only once")
    assert "to.2 'Ann@example.com' repeats to.0" in problem["errors"][0]["message"]


# -- queue routing -----------------------------------------------------------------------


async def routed(client: httpx.AsyncClient, postroom: Postroom, **change: Any) -> tuple[str, int]:
    response = await post(client, email_body(**change))
    assert response.status_code == 202, response.text
    async with postroom.engine.connect() as conn:
        row = (
            await conn.execute(
                select(queues_t.c.name, jobs_t.c.priority)
                .join(queues_t, queues_t.c.id == jobs_t.c.queue_id)
                .where(jobs_t.c.id == uuid.UUID(response.json()["jobId"]))
            )
        ).one()
    assert response.json()["queueId"]
    return str(row.name), int(row.priority)


async def test_future_mail_goes_to_the_scheduled_queue_with_its_type_priority(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    tomorrow = (clock.now() + timedelta(days=1)).isoformat()
    soon = (clock.now() + timedelta(seconds=30)).isoformat()
    past = (clock.now() - timedelta(days=1)).isoformat()

    assert await routed(client, postroom, scheduledAt=tomorrow) == ("scheduled", 4)
    assert await routed(client, postroom, scheduledAt=tomorrow, type="system") == ("scheduled", 5)
    assert await routed(client, postroom, scheduledAt=tomorrow, type="marketing") == (
        "scheduled",
        2,
    )
    assert await routed(client, postroom, scheduledAt=tomorrow, priority=1) == ("scheduled", 1)
    # within the threshold, or past: "now", routed by type
    assert await routed(client, postroom, scheduledAt=soon) == ("transactional", 4)
    assert await routed(client, postroom, scheduledAt=past, type="marketing") == ("bulk", 2)
    # an explicit queue always wins
    assert await routed(client, postroom, scheduledAt=tomorrow, queue="bulk") == ("bulk", 2)


async def test_scheduled_mail_waits_then_is_sent(
    client: httpx.AsyncClient, postroom: Postroom, clock: ManualClock
) -> None:
    later = (clock.now() + timedelta(hours=2)).isoformat()
    response = await post(client, email_body(scheduledAt=later))
    worker = postroom.worker()
    try:
        assert await worker.drain() == 0
        clock.advance(2 * 3600)
        assert await worker.drain() == 1
    finally:
        await worker.aclose()
    assert (await postroom.status(response.json()["id"])).status == "sent"


# -- line lengths, end to end ------------------------------------------------------------


async def test_a_thousand_recipients_and_long_lines_arrive_within_998_octets(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    to = [
        {"email": f"user{n}@example.com", "name": f"User {n}", "type": "cc" if n % 2 else "to"}
        for n in range(1000)
    ]
    line = "x" * 5000
    body = email_body(to=to, content={"text": line, "html": f"<p>{line}</p>"})
    response = await post(client, body)
    assert response.status_code == 202, response.text

    message = await sent_message(postroom, tmp_path, response.json()["id"])
    got = [a.addr_spec for a in message["To"].addresses + message["Cc"].addresses]
    assert sorted(got) == sorted(r["email"] for r in to)
    assert message.get_body(("plain",)).get_content().rstrip("\r\n") == line
