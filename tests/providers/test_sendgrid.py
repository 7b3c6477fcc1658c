from __future__ import annotations

import base64
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from postroom.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderRejected,
    ProviderTimeout,
    ProviderTransientError,
    ProviderUnavailable,
    UnsupportedFeature,
)
from postroom.providers import registry
from postroom.providers.base import Address, Provider, ProviderSpec
from postroom.providers.http import HTTPOptions
from postroom.providers.sendgrid import SendGridProvider
from tests.providers.fake_esp import LOOPBACK
from tests.providers.http_contract import HTTPProviderContract

if TYPE_CHECKING:
    from tests.providers.fake_esp import SendGridFake


def spec_for(esp: SendGridFake, **config: Any) -> ProviderSpec:
    return ProviderSpec(
        id="prv-sendgrid",
        name="sendgrid-main",
        type="sendgrid",
        config={
            "baseUrl": esp.base_url,
            "allowNetworks": LOOPBACK,
            "socketTimeout": 5000,
            **config,
        },
        authentication={"apiKey": "SG.test-key"},
    )


@pytest.fixture
async def provider(sendgrid_esp, provider_context) -> AsyncIterator[SendGridProvider]:
    built = registry.build(spec_for(sendgrid_esp), provider_context)
    assert isinstance(built, SendGridProvider)
    yield built
    await built.aclose()


async def test_send_posts_the_documented_request_and_maps_the_message_id(
    provider, sendgrid_esp, outgoing
):
    sendgrid_esp.script(202, headers={"X-Message-Id": "W4nfW2WqQ2aQyRkx7vNq"})

    result = await provider.send(outgoing)

    assert result.provider == "sendgrid-main"
    assert result.provider_message_id == "W4nfW2WqQ2aQyRkx7vNq"
    request = sendgrid_esp.last
    assert (request.method, request.path) == ("POST", "/v3/mail/send")
    assert request.headers["authorization"] == "Bearer SG.test-key"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "personalizations": [
            {
                "to": [
                    {"email": "ann@example.org", "name": "Ann Lee"},
                    {"email": "bob@example.org"},
                ],
                "cc": [{"email": "cat@example.org"}],
                "bcc": [{"email": "dan@example.org"}],
            }
        ],
        "from": {"email": "news@example.com", "name": "Example News"},
        "subject": "Your order ✓",
        "content": [
            {"type": "text/plain", "value": "Hello Ann\nYour order shipped."},
            {"type": "text/html", "value": '<p>Hello Ann</p><img src="cid:logo">'},
        ],
        "reply_to_list": [{"email": "help@example.com", "name": "Help Desk"}],
        "attachments": [
            {
                "content": base64.b64encode(b"%PDF-1.4 fake").decode(),
                "type": "application/pdf",
                "filename": "invoice.pdf",
                "disposition": "attachment",
            },
            {
                "content": base64.b64encode(b"\x89PNG fake").decode(),
                "type": "image/png",
                "filename": "logo.png",
                "disposition": "inline",
                "content_id": "logo",
            },
        ],
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<https://example.com/u/1>"},
        "categories": ["orders", "shipping"],
        "custom_args": {"order_id": "A-1001", "attempt": "2"},
    }


async def test_default_answer_carries_a_message_id(provider, sendgrid_esp, outgoing):
    result = await provider.send(outgoing)
    assert result.provider_message_id.startswith("sg-")
    assert result.response == "202 Accepted"


async def test_payload_respects_sendgrid_limits(provider, sendgrid_esp, make_message):
    message = make_message(
        cc=(Address(email="ANN@example.org"), Address(email="eve@example.org")),
        bcc=(Address(email="eve@example.org"),),
        html=None,
        headers={"X-Ok": "1", "Reply-To": "x@example.com", "Content-Type": "text/plain"},
        tags=tuple(f"t{i}" for i in range(12)),
    )

    await provider.send(message)

    body = sendgrid_esp.last.json()
    assert body["personalizations"] == [
        {
            "to": [{"email": "ann@example.org", "name": "Ann Lee"}, {"email": "bob@example.org"}],
            "cc": [{"email": "eve@example.org"}],
        }
    ]
    assert body["content"] == [{"type": "text/plain", "value": "Hello Ann\nYour order shipped."}]
    assert body["headers"] == {"X-Ok": "1"}
    assert body["categories"] == [f"t{i}" for i in range(10)]


async def test_html_only_message(provider, sendgrid_esp, make_message):
    await provider.send(make_message(text=None, attachments=(), tags=(), metadata={}))
    body = sendgrid_esp.last.json()
    assert body["content"] == [
        {"type": "text/html", "value": '<p>Hello Ann</p><img src="cid:logo">'}
    ]
    assert "attachments" not in body and "categories" not in body and "custom_args" not in body


async def test_without_to_recipient_is_unsupported(provider, sendgrid_esp, make_message):
    with pytest.raises(UnsupportedFeature):
        await provider.send(make_message(to=()))
    assert sendgrid_esp.requests == []


async def test_400_is_rejected(provider, sendgrid_esp, outgoing):
    sendgrid_esp.script(400, {"errors": [{"message": "Invalid from email", "field": "from"}]})
    with pytest.raises(ProviderRejected) as info:
        await provider.send(outgoing)
    assert info.value.status == 400
    assert "Invalid from email" in (info.value.response_excerpt or "")


async def test_wrong_api_key_is_an_auth_error(sendgrid_esp, provider_context, outgoing):
    spec = replace(spec_for(sendgrid_esp), authentication={"apiKey": "SG.wrong"})
    provider = registry.build(spec, provider_context)
    try:
        with pytest.raises(ProviderAuthError) as info:
            await provider.send(outgoing)
        assert info.value.status == 401
        health = await provider.check()
        assert not health.ok and "401" in health.detail
    finally:
        await provider.aclose()


async def test_429_is_transient_with_retry_after(provider, sendgrid_esp, outgoing):
    sendgrid_esp.script(
        429, {"errors": [{"message": "too many requests"}]}, headers={"Retry-After": "7"}
    )
    with pytest.raises(ProviderTransientError) as info:
        await provider.send(outgoing)
    assert info.value.retry_after == 7.0
    assert info.value.retryable


async def test_check_is_healthy_with_mail_send_scope(provider, sendgrid_esp):
    health = await provider.check()
    assert health.ok and health.latency_ms is not None
    request = sendgrid_esp.last
    assert (request.method, request.path) == ("GET", "/v3/scopes")
    assert request.headers["authorization"] == "Bearer SG.test-key"


async def test_check_is_unhealthy_without_mail_send_scope(provider, sendgrid_esp):
    sendgrid_esp.script(200, {"scopes": ["user.profile.read"]})
    health = await provider.check()
    assert not health.ok and "mail.send" in health.detail


async def test_check_is_unhealthy_on_server_error(provider, sendgrid_esp):
    sendgrid_esp.script(500, {"errors": []})
    assert not (await provider.check()).ok


def test_api_key_is_required(provider_context):
    spec = ProviderSpec(id="x", name="sg", type="sendgrid")
    with pytest.raises(ConfigError, match=r"authentication\.apiKey"):
        registry.build(spec, provider_context)


# -- the shared HTTP base (exercised through SendGrid) ------------------------------


async def test_connection_refused_is_transient(provider_context, outgoing):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spec = ProviderSpec(
        id="x",
        name="sg",
        type="sendgrid",
        config={"baseUrl": f"http://127.0.0.1:{port}", "allowNetworks": LOOPBACK},
        authentication={"apiKey": "SG.k"},
    )
    provider = registry.build(spec, provider_context)
    try:
        with pytest.raises(ProviderTransientError, match="ConnectError") as info:
            await provider.send(outgoing)
        assert not isinstance(info.value, ProviderTimeout)
        # nothing was sent: a deferral and failover, not an attempt
        assert isinstance(info.value, ProviderUnavailable)
        assert not (await provider.check()).ok
    finally:
        await provider.aclose()


async def test_unsupported_url_scheme_is_a_config_error(provider_context, outgoing):
    spec = ProviderSpec(
        id="x",
        name="sg",
        type="sendgrid",
        config={"baseUrl": "ftp://api.sendgrid.example"},
        authentication={"apiKey": "SG.k"},
    )
    provider = registry.build(spec, provider_context)
    try:
        with pytest.raises(ConfigError, match="bad URL"):
            await provider.send(outgoing)
    finally:
        await provider.aclose()


def test_client_settings_come_from_config():
    spec = ProviderSpec(
        id="x",
        name="sg",
        type="sendgrid",
        config={"connectionTimeout": 2500, "socketTimeout": 12000, "maxConnections": 4},
    )
    assert HTTPOptions.from_spec(spec) == HTTPOptions(
        connect_timeout_s=2.5, socket_timeout_s=12.0, max_connections=4
    )
    with pytest.raises(ConfigError, match="invalid HTTP client setting"):
        HTTPOptions.from_spec(replace(spec, config={"socketTimeout": "soon"}))


@pytest.mark.parametrize(
    ("provider_type", "config", "authentication"),
    [
        ("sendgrid", {}, {"apiKey": "k"}),
        ("mailgun", {"domain": "mg.example.com"}, {"apiKey": "k"}),
        ("ses", {"region": "eu-west-1"}, {"accessKeyId": "a", "secretAccessKey": "s"}),
        ("postmark", {}, {"serverToken": "t"}),
        ("custom", {"url": "https://hooks.example.com/postroom"}, {"secret": "s"}),
    ],
)
async def test_every_http_adapter_is_a_provider(
    provider_context, provider_type, config, authentication
):
    spec = ProviderSpec(
        id="x", name="p", type=provider_type, config=config, authentication=authentication
    )
    provider = registry.build(spec, provider_context)
    try:
        assert isinstance(provider, Provider)
        assert type(provider).type == provider_type
        assert provider.name == "p"
    finally:
        await provider.aclose()


class TestContract(HTTPProviderContract):
    esp_fixture = "sendgrid_esp"
    spec_for = staticmethod(spec_for)
