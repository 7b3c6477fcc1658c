"""The provider endpoints: CRUD, masked credentials, validation, health, the two tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any, cast

import httpx
import pytest
from sqlalchemy import Table, select

from postroom.api.app import create_app
from postroom.app import Postroom
from postroom.db.models import EmailProvider, EmailRecord
from postroom.providers import credentials
from tests.providers.smtp_server import SMTPServer
from tests.support.payloads import email
from tests.support.processes import free_port
from tests.support.providers import add_provider, disable_all

PROVIDERS = "/api/system/email/providers"
TEST = "/api/system/email/test"
SEND = "/api/system/email/send"
PASSWORD = "correct-horse-battery-staple"
providers_t = cast(Table, EmailProvider.__table__)
records_t = cast(Table, EmailRecord.__table__)


def smtp_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Primary SMTP",
        "type": "smtp",
        "priority": 200,
        "config": {"host": "smtp.example.com", "port": 587, "requireTLS": True},
        "authentication": {"user": "ann", "password": PASSWORD},
        "limits": {"rateLimit": 10, "hourly": 1000},
    }
    body.update(overrides)
    return body


async def create(client: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    response = await client.post(PROVIDERS, json=smtp_body(**overrides))
    assert response.status_code == 201, response.text
    assert PASSWORD not in response.text
    return cast(dict[str, Any], response.json())


async def stored_secrets(postroom: Postroom, provider_id: str) -> dict[str, Any]:
    async with postroom.engine.connect() as conn:
        stmt = select(providers_t.c.authentication).where(
            providers_t.c.id == uuid.UUID(provider_id)
        )
        row = (await conn.execute(stmt)).one()
    assert set(row.authentication) == {"encrypted"}  # nothing in clear at rest
    return credentials.decrypt(postroom.fernet, row.authentication)


async def by_name(client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
    response = await client.get(PROVIDERS)
    assert response.status_code == 200, response.text
    return {p["name"]: p for p in response.json()["providers"]}


# -- CRUD and masking ----------------------------------------------------------------


async def test_create_stores_credentials_encrypted_and_shows_them_masked(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    created = await create(client)

    assert created["authentication"] == {"user": "ann", "password": "****"}
    assert created["config"] == {"host": "smtp.example.com", "port": 587, "requireTLS": True}
    assert created["limits"] == {"rateLimit": 10, "hourly": 1000}
    assert (created["enabled"], created["priority"], created["type"]) == (True, 200, "smtp")
    assert created["health"]["status"] == "healthy"
    assert [u["kind"] for u in created["health"]["limits"]] == ["rate", "hourly"]
    assert (await stored_secrets(postroom, created["id"]))["password"] == PASSWORD
    for path in (PROVIDERS, f"{PROVIDERS}/{created['id']}", f"{PROVIDERS}/Primary SMTP"):
        response = await client.get(path)
        assert response.status_code == 200
        assert PASSWORD not in response.text and '"password":"****"' in response.text


async def test_spec_style_smtp_authentication_in_config_is_moved_and_encrypted(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    body = smtp_body(
        config={
            "host": "smtp.example.com",
            "authentication": {"user": "ann", "password": PASSWORD, "method": "login"},
        },
        authentication={},
    )
    response = await client.post(PROVIDERS, json=body)

    assert response.status_code == 201, response.text
    assert PASSWORD not in response.text
    created = response.json()
    assert "authentication" not in created["config"]
    assert created["authentication"]["method"] == "login"
    assert (await stored_secrets(postroom, created["id"]))["password"] == PASSWORD


async def test_put_changes_given_fields_and_keeps_masked_secrets(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    created = await create(client)
    url = f"{PROVIDERS}/{created['id']}"

    # what GET showed, sent back with one change: the masked password keeps its secret
    response = await client.put(
        url, json={"priority": 50, "authentication": created["authentication"]}
    )
    assert response.status_code == 200, response.text
    assert PASSWORD not in response.text
    assert response.json()["priority"] == 50
    assert response.json()["config"] == created["config"]
    assert (await stored_secrets(postroom, created["id"]))["password"] == PASSWORD

    response = await client.put(
        url, json={"authentication": {"user": "bob", "password": "a-brand-new-secret"}}
    )
    assert response.status_code == 200
    assert "a-brand-new-secret" not in response.text
    assert await stored_secrets(postroom, created["id"]) == {
        "user": "bob",
        "password": "a-brand-new-secret",
    }
    changed = datetime.fromisoformat(response.json()["updatedAt"])
    assert changed > datetime.fromisoformat(created["updatedAt"])  # workers see the change


async def test_enable_disable_through_put_reaches_the_router(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await disable_all(postroom)
    provider_id = await add_provider(postroom, name="Primary SMTP", type="fake")
    router = postroom.provider_router()
    try:
        await router.refresh(force=True)
        assert [c.spec.name for c in router.candidates] == ["Primary SMTP"]
        await client.put(f"{PROVIDERS}/{provider_id}", json={"enabled": False})
        await router.refresh(force=True)
        assert router.candidates == []
    finally:
        await router.aclose()


async def test_delete_a_provider_in_use_keeps_the_email_history(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await disable_all(postroom)
    created = {"id": str(await add_provider(postroom, name="Primary SMTP", type="fake"))}
    sent = (await client.post(SEND, json=email())).json()
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()

    response = await client.delete(f"{PROVIDERS}/{created['id']}")
    assert response.status_code == 204
    assert "Primary SMTP" not in await by_name(client)
    async with postroom.engine.connect() as conn:
        record = (await conn.execute(select(records_t))).one()
    assert record.provider_id is None and record.status == "sent"
    status = (await client.get(f"/api/system/email/status/{sent['id']}")).json()
    assert status["status"] == "sent"
    assert (await client.delete(f"{PROVIDERS}/{created['id']}")).status_code == 404


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"type": "carrier-pigeon"}, "type", "unknown provider type 'carrier-pigeon'"),
        ({"config": {"port": 25}}, "config", "smtp: host is required"),
        ({"config": {"host": "h", "port": "twenty-five"}}, "config", "port must be a number"),
        ({"authentication": {"user": "ann"}}, "config", "password is required"),
        ({"limits": {"ratelimit": 5}}, "limits.ratelimit", "unknown limits key 'ratelimit'"),
        ({"limits": {"rateLimit": 0}}, "limits.rateLimit", "whole number >= 1"),
        ({"limits": {"rateDelta": 500}}, "limits.rateDelta", "needs limits.rateLimit"),
        ({"monitoring": {"cooldownMs": "soon"}}, "monitoring.cooldownMs", "a number"),
        ({"config": {"host": "h", "apiKey": "k"}}, "config.apiKey", "looks like a secret"),
        ({"name": ""}, "name", "at least 1"),
        ({"priority": -1}, "priority", "greater than or equal to 0"),
    ],
)
async def test_bad_settings_are_422_with_a_clear_message(
    client: httpx.AsyncClient, change: dict[str, Any], field: str, words: str
) -> None:
    response = await client.post(PROVIDERS, json=smtp_body(**change))

    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert PASSWORD not in response.text
    problem = response.json()
    assert words in problem["detail"], problem
    assert any(e["field"] == field for e in problem["errors"]), problem
    assert "Primary SMTP" not in await by_name(client)


async def test_names_are_unique(client: httpx.AsyncClient) -> None:
    await create(client)
    response = await client.post(PROVIDERS, json=smtp_body())
    assert response.status_code == 409


@pytest.mark.parametrize(
    ("method", "suffix"),
    [("GET", ""), ("PUT", ""), ("DELETE", ""), ("POST", "/test")],
)
@pytest.mark.parametrize("ident", ["5b0f3c52-4c1e-4d1a-9a57-7e3f4f0a1b2c", "no-such-provider"])
async def test_unknown_provider_is_404(
    client: httpx.AsyncClient, method: str, suffix: str, ident: str
) -> None:
    kwargs: dict[str, Any] = {"json": {"priority": 1}} if method == "PUT" else {}
    response = await client.request(method, f"{PROVIDERS}/{ident}{suffix}", **kwargs)
    assert response.status_code == 404
    assert response.json()["type"].endswith(":not-found")


async def test_read_scope_lists_but_cannot_change(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    key, _ = await postroom.keys.create("reader", ["read"])
    headers = {"Authorization": f"Bearer {key}"}
    assert (await client.get(PROVIDERS, headers=headers)).status_code == 200
    response = await client.post(PROVIDERS, json=smtp_body(), headers=headers)
    assert response.status_code == 403
    assert (
        await client.post(TEST, json={"to": [{"email": "a@example.com"}]}, headers=headers)
    ).status_code == 403


# -- health --------------------------------------------------------------------------


async def test_health_reflects_what_the_workers_saw(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await disable_all(postroom)
    await add_provider(
        postroom,
        name="flaky",
        type="fake",
        config={"script": ["transient"] * 3},
        authentication={"apiKey": "sk-live-0123456789"},
        monitoring={"failureThreshold": 10},
    )
    for _ in range(3):
        await client.post(SEND, json=email(maxAttempts=5))
    worker = postroom.worker()
    try:
        await worker.router.refresh(force=True)
        await worker.drain()
    finally:
        await worker.aclose()  # writes the outcomes it counted

    response = await client.get(PROVIDERS)
    assert "sk-live-0123456789" not in response.text
    flaky = {p["name"]: p for p in response.json()["providers"]}["flaky"]
    assert flaky["authentication"] == {"apiKey": "****6789"}
    health = flaky["health"]
    assert health["status"] == "down", health
    assert health["failedLastHour"] == 3 and health["sentLastHour"] == 0
    assert health["lastError"].startswith("provider-transient: scripted transient")
    assert "none went through since" in health["reason"]


async def test_a_full_limit_shows_as_degraded_with_its_usage(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await disable_all(postroom)
    await add_provider(
        postroom, name="capped", type="fake", limits={"rateLimit": 2, "rateDelta": 60_000}
    )
    for _ in range(2):
        await client.post(SEND, json=email())
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()

    health = (await by_name(client))["capped"]["health"]
    assert health["status"] == "degraded"
    assert health["reason"].startswith("rate limited: rate limit of 2 reached")
    assert health["sentLastHour"] == 2
    [usage] = health["limits"]
    assert usage == {
        "kind": "rate",
        "limit": 2,
        "used": 2,
        "reserved": 2,
        "windowMs": 60_000,
        "resetsAt": "2026-01-01T12:01:00Z",
    }


async def test_usage_counts_messages_sent_and_reservations_apart(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="capped", type="fake", limits={"hourly": 1000})
    for _ in range(3):
        await client.post(SEND, json=email())
    worker = postroom.worker()
    try:
        await worker.drain()
    finally:
        await worker.aclose()

    health = (await by_name(client))["capped"]["health"]
    [usage] = health["limits"]
    # a worker reserves a batch of slots (1000 / 50 = 20) so as not to ask per message
    assert (usage["used"], usage["reserved"], usage["limit"]) == (3, 20, 1000)
    assert health["status"] == "healthy"


# -- the two tests -------------------------------------------------------------------


@pytest.fixture
async def smtp(postroom: Postroom) -> AsyncIterator[SMTPServer]:
    async with SMTPServer(users={"ann": PASSWORD}) as server:
        yield server


def relay_body(server: SMTPServer, **overrides: Any) -> dict[str, Any]:
    return smtp_body(
        name="relay",
        config={"host": server.host, "port": server.port, "socketTimeout": 2000},
        limits={},
        **overrides,
    )


async def test_provider_test_runs_the_check_and_records_it(
    client: httpx.AsyncClient, smtp: SMTPServer
) -> None:
    created = (await client.post(PROVIDERS, json=relay_body(smtp))).json()
    response = await client.post(f"{PROVIDERS}/relay/test")

    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is True and result["providerId"] == created["id"]
    assert "AUTH as ann" in result["detail"] and result["latencyMs"] > 0
    assert smtp.received == []  # a check sends nothing
    check = (await by_name(client))["relay"]["health"]["lastCheck"]
    assert check["ok"] is True and check["checkedAt"] == result["checkedAt"]


async def test_a_failed_check_is_ok_false_and_marks_the_provider_down(
    client: httpx.AsyncClient, smtp: SMTPServer
) -> None:
    body = relay_body(smtp, authentication={"user": "ann", "password": "not-the-password"})
    await client.post(PROVIDERS, json=body)
    response = await client.post(f"{PROVIDERS}/relay/test")

    assert response.status_code == 200
    result = response.json()
    assert result["ok"] is False and "535" in result["detail"]
    assert "not-the-password" not in response.text
    health = (await by_name(client))["relay"]["health"]
    assert health["status"] == "down" and health["reason"].startswith("the last check failed")


async def test_test_email_is_sent_at_once_through_the_chosen_provider(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer
) -> None:
    await client.post(PROVIDERS, json=relay_body(smtp))
    body = {"to": [{"email": "ops@example.com"}], "from": {"email": "app@example.com"}}

    response = await client.post(TEST, json=body)  # default: the highest priority provider
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is True and result["provider"] == "relay"
    assert PASSWORD not in response.text
    [received] = smtp.received
    assert received.rcpt_tos == ["ops@example.com"]
    assert received.message()["Subject"] == "Postroom test email (relay)"
    assert received.message()["Message-ID"] == result["messageId"]
    assert (await by_name(client))["relay"]["health"]["sentLastHour"] == 1

    # a named provider; the refusal is the provider's answer, not an API error
    smtp.script("MAIL", "550 5.7.1 sender rejected")
    response = await client.post(TEST, json={**body, "providerId": "relay"})
    assert response.status_code == 200
    result = response.json()
    assert result["ok"] is False
    assert result["error"]["code"] == "provider-rejected"
    assert "550 5.7.1 sender rejected" in result["error"]["message"]


async def test_test_email_goes_down_the_routing_order_and_reports_each_provider(
    client: httpx.AsyncClient, postroom: Postroom, smtp: SMTPServer
) -> None:
    await disable_all(postroom)
    await client.post(PROVIDERS, json=relay_body(smtp, priority=10))
    closed = {"host": "127.0.0.1", "port": free_port(), "socketTimeout": 2000}
    await add_provider(postroom, name="down", type="smtp", priority=50, config=closed)
    await add_provider(postroom, name="full", type="fake", priority=90, limits={"hourly": 1})
    body = {"to": [{"email": "ops@example.com"}], "from": {"email": "app@example.com"}}
    assert (await client.post(TEST, json={**body, "providerId": "full"})).json()["ok"]

    response = await client.post(TEST, json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ok"] is True and result["provider"] == "relay"
    tried = [(a["provider"], a["ok"], (a["error"] or {}).get("code")) for a in result["attempts"]]
    assert [t[:2] for t in tried] == [("full", False), ("down", False), ("relay", True)]
    assert tried[0][2] == "rate-limited" and tried[1][2] is not None
    [received] = smtp.received
    assert received.message()["Subject"] == "Postroom test email (relay)"

    # a refusal of the message itself is an answer: no failover past it
    smtp.script("MAIL", "550 5.7.1 sender rejected")
    await client.put(f"{PROVIDERS}/relay", json={"priority": 95})
    result = (await client.post(TEST, json=body)).json()
    assert result["ok"] is False and [a["provider"] for a in result["attempts"]] == ["relay"]


async def test_test_email_needs_a_sender_and_respects_limits(
    client: httpx.AsyncClient, postroom: Postroom
) -> None:
    await disable_all(postroom)
    await add_provider(postroom, name="capped", type="fake", limits={"hourly": 1})
    response = await client.post(TEST, json={"to": [{"email": "ops@example.com"}]})
    assert response.status_code == 422  # no from, no POSTROOM_DEFAULT_FROM

    body = {"to": [{"email": "ops@example.com"}], "from": {"email": "app@example.com"}}
    assert (await client.post(TEST, json=body)).json()["ok"] is True
    response = await client.post(TEST, json=body)
    assert response.status_code == 429
    assert "hourly limit" in response.json()["detail"]


async def test_openapi_lists_the_provider_endpoints(postroom: Postroom) -> None:
    app = create_app(postroom, workers=0)
    paths = app.openapi()["paths"]
    assert set(paths[PROVIDERS]) == {"get", "post"}
    assert set(paths[PROVIDERS + "/{provider}"]) == {"get", "put", "delete"}
    assert "post" in paths[PROVIDERS + "/{provider}/test"] and "post" in paths[TEST]
