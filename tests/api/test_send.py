"""POST /send and GET /status: validation, durability, idempotency, auth."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import Table, func, select

from postroom.app import Postroom
from postroom.db.models import EmailJob, EmailRecord
from tests.support.payloads import email as email_body

SEND = "/api/system/email/send"
jobs_t = cast(Table, EmailJob.__table__)
records_t = cast(Table, EmailRecord.__table__)


async def count(postroom: Postroom, table: Table) -> int:
    async with postroom.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


async def test_send_queues_one_job_and_a_record_per_recipient(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    body = email_body(
        to=[
            {"email": "ann@example.com", "name": "Ann"},
            {"email": "bob@example.com", "type": "cc"},
            {"email": "eve@example.com", "type": "bcc"},
        ]
    )
    response = await client.post(SEND, json=body)

    assert response.status_code == 202, response.text
    result = response.json()
    assert result["status"] == "queued"
    assert result["id"] == result["jobId"]
    assert result["queueId"] and result["createdAt"]
    async with postroom.engine.connect() as conn:
        job = (await conn.execute(select(jobs_t))).one()
        recs = (await conn.execute(select(records_t).order_by(records_t.c.recipient_email))).all()
    assert str(job.id) == result["id"]
    assert job.status == "pending"
    assert [(r.recipient_email, r.recipient_type, r.status) for r in recs] == [
        ("ann@example.com", "to", "queued"),
        ("bob@example.com", "cc", "queued"),
        ("eve@example.com", "bcc", "queued"),
    ]


async def test_status_follows_the_email_to_sent(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    created = (await client.post(SEND, json=email_body())).json()

    queued = (await client.get(f"/api/system/email/status/{created['id']}")).json()
    assert queued["status"] == "queued"
    worker = postroom.worker()
    assert await worker.drain() == 1
    await worker.aclose()

    response = await client.get(f"/api/system/email/status/{created['id']}")
    assert response.status_code == 200
    status = response.json()
    assert status["status"] == "sent"
    assert status["attempts"] == 1
    assert status["provider"] == "Development outbox"
    assert status["recipients"][0]["status"] == "sent"
    assert status["recipients"][0]["messageId"].endswith("@example.com>")
    assert [a["outcome"] for a in status["attemptLog"]] == ["sent"]
    eml = tmp_path / "var" / "outbox" / f"{created['id']}.eml"
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "Hello"
    assert message["To"] == "Ann <ann@example.com>"


async def test_idempotency_key_returns_the_first_result_and_creates_nothing(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    headers = {"Idempotency-Key": "order-42-receipt"}
    first = await client.post(SEND, json=email_body(), headers=headers)
    second = await client.post(SEND, json=email_body(), headers=headers)

    assert first.status_code == second.status_code == 202
    assert second.json() == first.json()
    assert await count(postroom, jobs_t) == 1
    assert await count(postroom, records_t) == 1


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"subject": "Hi\r\nBcc: x@evil.example"}, "subject", "line breaks"),
        ({"to": [{"email": "not-an-address"}]}, "to.0.email", "not a valid email"),
        ({"content": {}}, "content", "needs text or html"),
        ({"subject": "x" * 501}, "subject", "at most 500"),
        ({"to": []}, "to", "at least 1"),
        ({"from": {"email": "a@example.com", "name": "A\nB"}}, "from.name", "line breaks"),
        ({"headers": {"X-Tag": "a\r\nBcc: x@evil.example"}}, "headers", "line breaks"),
        ({"headers": {"Bcc": "x@evil.example"}}, "headers", "set by Postroom"),
        ({"priority": 9}, "priority", "less than or equal to 5"),
    ],
)
async def test_bad_input_is_422_problem_json_and_nothing_is_queued(
    client: httpx.AsyncClient, postroom: Postroom, change: dict[str, Any], field: str, words: str
) -> None:
    response = await client.post(SEND, json=email_body(**change))

    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422
    matching = [e for e in problem["errors"] if e["field"] == field]
    assert matching and words in matching[0]["message"], problem
    assert await count(postroom, jobs_t) == 0


async def test_every_error_is_listed_at_once(client: httpx.AsyncClient) -> None:
    body = email_body(to=[{"email": "bad"}], subject="a\rb", content={})
    problem = (await client.post(SEND, json=body)).json()
    assert {e["field"] for e in problem["errors"]} == {"to.0.email", "subject", "content"}


async def test_size_limit(client: httpx.AsyncClient, postroom: Postroom) -> None:
    postroom.settings.max_message_bytes = 2048
    response = await client.post(SEND, json=email_body(content={"text": "x" * 4096}))
    assert response.status_code == 422
    assert "limit" in response.json()["detail"]


async def test_malformed_json_is_a_clear_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        SEND, content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]


async def test_idn_addresses_are_accepted(client: httpx.AsyncClient, postroom: Postroom) -> None:
    response = await client.post(SEND, json=email_body(to=[{"email": "jürgen@münchen.de"}]))
    assert response.status_code == 202
    worker = postroom.worker()
    await worker.drain()
    await worker.aclose()
    status = (await client.get(f"/api/system/email/status/{response.json()['id']}")).json()
    assert status["status"] == "sent"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer pr_nope_nope"}, {"Authorization": "Basic abc"}],
)
async def test_without_a_valid_key_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    client.headers.pop("Authorization")
    response = await client.post(SEND, json=email_body(), headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_revoked_key_and_missing_scope(client: httpx.AsyncClient, postroom: Postroom) -> None:
    read_key, info = await postroom.keys.create("reader", ["read"])
    response = await client.post(
        SEND, json=email_body(), headers={"Authorization": f"Bearer {read_key}"}
    )
    assert response.status_code == 403

    send_key, info = await postroom.keys.create("sender", ["send"])
    ok = await client.post(SEND, json=email_body(), headers={"Authorization": f"Bearer {send_key}"})
    assert ok.status_code == 202
    await postroom.keys.revoke(info.prefix)
    revoked = await client.post(
        SEND, json=email_body(), headers={"Authorization": f"Bearer {send_key}"}
    )
    assert revoked.status_code == 401
    assert "revoked" in revoked.json()["detail"]


async def test_unknown_status_is_404(client: httpx.AsyncClient) -> None:
    for ident in ("00000000-0000-0000-0000-000000000000", "not-a-uuid"):
        response = await client.get(f"/api/system/email/status/{ident}")
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"


async def test_healthz_needs_no_key(client: httpx.AsyncClient) -> None:
    client.headers.pop("Authorization")
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_openapi_documents_the_request(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()
    assert "/api/system/email/send" in schema["paths"]
    assert "from" in schema["components"]["schemas"]["EmailRequest"]["properties"]


async def test_a_request_may_pin_a_provider_even_the_outbox(
    client: httpx.AsyncClient, postroom: Postroom, tmp_path: Path
) -> None:
    from tests.support.providers import add_provider

    await add_provider(postroom, name="relay", type="fake")  # a real provider is enabled
    routed = (await client.post(SEND, json=email_body())).json()
    pinned = (await client.post(SEND, json=email_body(provider="Development outbox"))).json()
    worker = postroom.worker()
    try:
        assert await worker.drain() == 2
    finally:
        await worker.aclose()

    assert (await postroom.status(routed["id"])).provider == "relay"
    assert (await postroom.status(pinned["id"])).provider == "Development outbox"
    outbox = tmp_path / "var" / "outbox"
    assert [p.stem for p in outbox.glob("*.eml")] == [pinned["id"]]

    unknown = await client.post(SEND, json=email_body(provider="nope"))
    assert unknown.status_code == 422
    assert unknown.json()["errors"] == [
        {"field": "provider", "message": "there is no provider 'nope'"}
    ]


async def test_an_unexpected_error_is_a_500_problem_not_a_traceback(
    postroom: Postroom, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from postroom.api.app import create_app

    async def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("database exploded: secret internals")

    monkeypatch.setattr(postroom.sender, "send", broken)
    # as a real server does: answer, then let the error reach the server's log
    transport = httpx.ASGITransport(app=create_app(postroom, workers=0), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as client:
        response = await client.post(
            SEND, json=email_body(), headers={"Authorization": f"Bearer {admin_key}"}
        )
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    assert "secret internals" not in response.text and "Traceback" not in response.text
    assert response.json()["type"] == "urn:postroom:problem:internal"


async def test_database_outage_is_503_problem_and_says_retry(
    postroom: Postroom, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    from postroom.api.app import create_app

    async def down(*_args: object, **_kwargs: object) -> None:
        raise OperationalError("INSERT ...", {}, ConnectionRefusedError("refused"))

    monkeypatch.setattr(postroom.sender, "send", down)
    transport = httpx.ASGITransport(app=create_app(postroom, workers=0), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://postroom.test") as client:
        response = await client.post(
            SEND, json=email_body(), headers={"Authorization": f"Bearer {admin_key}"}
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert response.json()["type"] == "urn:postroom:problem:unavailable"


async def test_send_answers_other_methods_with_405_and_its_allow(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/system/email/send")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.headers["content-type"] == "application/problem+json"


async def test_send_checks_body_then_key_then_shape(client: httpx.AsyncClient) -> None:
    # the order FastAPI's route would take: content type and JSON, key, scope, shape
    send = "/api/system/email/send"
    bad_key = {"Authorization": "Bearer pr_00000000_nope"}
    response = await client.post(send, content=b"[]", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415
    response = await client.post(send, content=b"{", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    response = await client.post(send, json=[], headers=bad_key)
    assert response.status_code == 401
    response = await client.post(send, json=[])
    assert response.status_code == 422
    assert response.json()["errors"] == [{"field": "body", "message": "must be a JSON object"}]
