"""POST /send/raw: finished MIME into the same queue, with the same edge checks."""

from __future__ import annotations

import base64
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import cast

import httpx
import pytest
from sqlalchemy import Table, func, select

from postroom.app import Postroom
from postroom.db.models import EmailJob, EmailRecord
from postroom.tracking.context import CLICK_PATH, PIXEL_PATH

RAW = "/api/system/email/send/raw"
jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)

MESSAGE = (
    b"From: App <app@example.com>\r\n"
    b"To: ann@example.com\r\n"
    b"Cc: bob@example.com\r\n"
    b"Bcc: eve@example.com\r\n"
    b"Subject: Raw hello\r\n"
    b"Message-ID: <raw1@example.com>\r\n"
    b"Date: Thu, 01 Jan 2026 12:00:00 +0000\r\n"
    b"\r\n"
    b"Hello Ann\r\n"
)
WITHOUT_BCC = MESSAGE.replace(b"Bcc: eve@example.com\r\n", b"")


async def count(postroom: Postroom, table: Table) -> int:
    async with postroom.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def drain(postroom: Postroom) -> int:
    worker = postroom.worker()
    try:
        return await worker.drain()
    finally:
        await worker.aclose()


async def test_rfc822_body_with_envelope_recipients_is_sent_as_is(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    response = await client.post(
        RAW,
        content=MESSAGE,
        headers={"Content-Type": "message/rfc822"},
        params={"to": ["ann@example.com", "zed@example.com"]},
    )
    assert response.status_code == 202, response.text
    result = response.json()
    assert result["status"] == "queued" and result["recipients"] == 2

    status = (await client.get(f"/api/system/email/status/{result['id']}")).json()
    assert status["subject"] == "Raw hello"
    assert sorted((r["email"], r["type"]) for r in status["recipients"]) == [
        ("ann@example.com", "to"),
        ("zed@example.com", "bcc"),
    ]

    assert await drain(postroom) == 1  # the default dev outbox provider
    eml = postroom.settings.outbox_dir / f"{result['id']}.eml"
    assert eml.read_bytes() == WITHOUT_BCC
    status = (await client.get(f"/api/system/email/status/{result['id']}")).json()
    assert status["status"] == "sent"
    assert {r["messageId"] for r in status["recipients"]} == {"<raw1@example.com>"}


async def test_json_body_takes_recipients_from_the_header_fields(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    response = await client.post(
        RAW, json={"raw": base64.b64encode(MESSAGE).decode(), "queue": "bulk"}
    )
    assert response.status_code == 202, response.text
    async with postroom.engine.connect() as conn:
        recs = (await conn.execute(select(records_t).order_by(records_t.c.recipient_email))).all()
        job = (await conn.execute(select(jobs_t))).one()
    assert [(r.recipient_email, r.recipient_type) for r in recs] == [
        ("ann@example.com", "to"),
        ("bob@example.com", "cc"),
        ("eve@example.com", "bcc"),
    ]
    assert job.data["raw"]["mailFrom"] == "app@example.com"
    assert base64.b64decode(job.data["raw"]["mime"]) == WITHOUT_BCC
    assert job.data["metadata"]["source"] == "api"


async def test_line_endings_normalized_and_missing_headers_added(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    bare = b"From: app@example.com\nTo: ann@example.com\nSubject: lf\n\nline one\nline two\n"
    response = await client.post(RAW, content=bare, headers={"Content-Type": "message/rfc822"})
    assert response.status_code == 202, response.text
    email_id = response.json()["id"]
    assert await drain(postroom) == 1
    sent = (postroom.settings.outbox_dir / f"{email_id}.eml").read_bytes()
    assert sent.startswith(f"Message-ID: <{email_id}@example.com>\r\nDate: ".encode())
    assert sent.endswith(bare.replace(b"\n", b"\r\n"))


@pytest.mark.parametrize(
    ("params", "content", "fragment"),
    [
        # CR/LF in an envelope address: the SMTP command injection of raw sending
        ({"to": "ann@example.com\r\nRCPT TO:<x@evil.example>"}, MESSAGE, "to"),
        ({"from": "app@example.com\r\nRCPT TO:<x@evil.example>"}, MESSAGE, "from"),
        ({"to": "not an address"}, MESSAGE, "to"),
        # a bare CR hides a header from some parsers and not others
        ({}, b"From: app@example.com\r\nSubject: a\rBcc: x@evil.example\r\n\r\nhi", "bare CR"),
        ({}, b"From: app@example.com\r\nnot a header\r\n\r\nhi", "Name: value"),
        ({}, b"To: ann@example.com\r\nSubject: no sender\r\n\r\nhi", "From"),
        ({}, b"From: app@example.com\r\nSubject: nobody\r\n\r\nhi", "no recipients"),
    ],
)
async def test_unsafe_messages_are_refused_and_nothing_is_stored(
    client: httpx.AsyncClient,
    postroom: Postroom,
    params: dict[str, str],
    content: bytes,
    fragment: str,
) -> None:
    response = await client.post(
        RAW, content=content, params=params, headers={"Content-Type": "message/rfc822"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert fragment in response.text
    assert await count(postroom, jobs_t) == 0


async def test_size_and_recipient_limits(client: httpx.AsyncClient, postroom: Postroom) -> None:
    postroom.settings.max_message_bytes = 2048
    big = MESSAGE + b"x" * 2048
    for response in (
        await client.post(RAW, content=big, headers={"Content-Type": "message/rfc822"}),
        await client.post(RAW, json={"raw": base64.b64encode(big).decode()}),
    ):
        assert response.status_code == 422, response.text
        assert "limit" in response.text
    many = [f"r{n}@example.com" for n in range(1001)]
    response = await client.post(RAW, json={"raw": base64.b64encode(MESSAGE).decode(), "to": many})
    assert response.status_code == 422
    assert await count(postroom, jobs_t) == 0


async def test_bad_bodies_are_clear_errors(client: httpx.AsyncClient, postroom: Postroom) -> None:
    response = await client.post(RAW, json={"raw": "***"})
    assert response.status_code == 422 and "base64" in response.text
    response = await client.post(RAW, content=b"{", headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.text
    response = await client.post(RAW, content=b"x", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415 and "message/rfc822" in response.text
    assert await count(postroom, jobs_t) == 0


async def test_idempotency_key_returns_the_first_result(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    headers = {"Content-Type": "message/rfc822", "Idempotency-Key": "raw-1"}
    first = await client.post(RAW, content=MESSAGE, headers=headers)
    again = await client.post(RAW, content=MESSAGE, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert await count(postroom, jobs_t) == 1


async def test_needs_a_key_with_the_send_scope(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    headers = {"Content-Type": "message/rfc822"}
    response = await client.post(RAW, content=MESSAGE, headers={**headers, "Authorization": ""})
    assert response.status_code == 401
    read_key, _ = await postroom.keys.create("reader", ["read"])
    response = await client.post(
        RAW, content=MESSAGE, headers={**headers, "Authorization": f"Bearer {read_key}"}
    )
    assert response.status_code == 403
    assert await count(postroom, jobs_t) == 0


async def test_openapi_documents_both_bodies(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    body = spec["paths"][RAW]["post"]["requestBody"]["content"]
    assert set(body) == {"message/rfc822", "application/json"}
    assert "$ref" not in str(body) and "$defs" not in str(body)
    assert "transactional" in body["application/json"]["schema"]["properties"]["type"]["enum"]


HTML_MESSAGE = (
    b"From: News <news@example.com>\r\n"
    b"To: ann@example.com\r\n"
    b"Subject: Our news\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/alternative; boundary="b1"\r\n'
    b"\r\n"
    b"--b1\r\n"
    b'Content-Type: text/plain; charset="utf-8"\r\n'
    b"\r\n"
    b"Read it at https://example.com/news\r\n"
    b"--b1\r\n"
    b'Content-Type: text/html; charset="utf-8"\r\n'
    b"\r\n"
    b'<html><body><p><a href="https://example.com/news">Read</a>'
    b' <a href="mailto:ann@example.com">mail</a></p></body></html>\r\n'
    b"--b1--\r\n"
)


async def test_marketing_raw_mail_is_tracked_as_composed_mail_is(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    body = {"raw": base64.b64encode(HTML_MESSAGE).decode(), "type": "marketing"}
    email_id = (await client.post(RAW, json=body)).json()["id"]
    signed = b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s1; b=abc\r\n" + HTML_MESSAGE
    body = {"raw": base64.b64encode(signed).decode(), "type": "marketing"}
    signed_id = (await client.post(RAW, json=body)).json()["id"]
    assert await drain(postroom) == 2

    sent = (postroom.settings.outbox_dir / f"{email_id}.eml").read_bytes()
    msg = BytesParser(policy=policy.default).parsebytes(sent)
    html = cast(EmailMessage, msg.get_body(preferencelist=("html",))).get_content()
    assert 'href="https://example.com/news"' not in html  # the link now goes through /t/c
    assert CLICK_PATH in html and PIXEL_PATH in html
    assert 'href="mailto:ann@example.com"' in html  # mailto links are left alone
    text = cast(EmailMessage, msg.get_body(preferencelist=("plain",))).get_content()
    assert text == "Read it at https://example.com/news"  # the text part as it was
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["Subject"] == "Our news"
    # signed by the client: changing a byte would break the signature (Message-ID and
    # Date, added on acceptance, go above it)
    assert (postroom.settings.outbox_dir / f"{signed_id}.eml").read_bytes().endswith(signed)
