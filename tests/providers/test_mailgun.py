from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from postroom.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderRejected,
    ProviderTransientError,
)
from postroom.providers import registry
from postroom.providers.base import ProviderSpec
from postroom.providers.mailgun import MailgunProvider
from tests.providers.fake_esp import LOOPBACK
from tests.providers.http_contract import HTTPProviderContract

if TYPE_CHECKING:
    from tests.providers.fake_esp import MailgunFake


def spec_for(esp: MailgunFake, **config: Any) -> ProviderSpec:
    return ProviderSpec(
        id="prv-mailgun",
        name="mailgun-main",
        type="mailgun",
        config={
            "domain": "mg.example.com",
            "baseUrl": esp.base_url,
            "allowNetworks": LOOPBACK,
            "socketTimeout": 5000,
            **config,
        },
        authentication={"apiKey": "key-test"},
    )


@pytest.fixture
async def provider(mailgun_esp, provider_context) -> AsyncIterator[MailgunProvider]:
    built = registry.build(spec_for(mailgun_esp), provider_context)
    assert isinstance(built, MailgunProvider)
    yield built
    await built.aclose()


async def test_send_posts_the_mime_with_every_envelope_recipient(provider, mailgun_esp, outgoing):
    result = await provider.send(outgoing)

    assert result.provider == "mailgun-main"
    assert result.provider_message_id.endswith("@mg.example.com>")
    assert result.response == "Queued. Thank you."
    request = mailgun_esp.last
    assert (request.method, request.path) == ("POST", "/v3/mg.example.com/messages.mime")
    expected_auth = base64.b64encode(b"api:key-test").decode()
    assert request.headers["authorization"] == f"Basic {expected_auth}"
    fields = [(p.name, p.content.decode()) for p in request.form() if p.name != "message"]
    assert fields == [
        ("to", "ann@example.org"),
        ("to", "bob@example.org"),
        ("to", "cat@example.org"),
        ("to", "dan@example.org"),
        ("o:tag", "orders"),
        ("o:tag", "shipping"),
        ("v:order_id", "A-1001"),
        ("v:attempt", "2"),
    ]
    (mime,) = [p for p in request.form() if p.name == "message"]
    assert mime.filename == "message.mime"
    assert mime.content_type == "message/rfc822"
    assert mime.content == outgoing.mime  # byte for byte
    assert b"dan@example.org" not in mime.content  # Bcc only in the envelope


async def test_id_from_json_is_the_provider_message_id(provider, mailgun_esp, outgoing):
    mailgun_esp.script(200, {"id": "<abc.123@mg.example.com>", "message": "Queued. Thank you."})
    result = await provider.send(outgoing)
    assert result.provider_message_id == "<abc.123@mg.example.com>"


async def test_tags_are_capped_at_three(provider, mailgun_esp, make_message):
    await provider.send(make_message(tags=("a", "b", "c", "d"), metadata={}))
    tags = [p.content for p in mailgun_esp.last.form() if p.name == "o:tag"]
    assert tags == [b"a", b"b", b"c"]


async def test_region_selects_the_documented_host(provider_context):
    async def base_url(**config: Any) -> str:
        spec = ProviderSpec(
            id="x",
            name="mg",
            type="mailgun",
            config={"domain": "mg.example.com", **config},
            authentication={"apiKey": "k"},
        )
        provider = MailgunProvider.from_spec(spec, provider_context)
        await provider.aclose()
        return provider.base_url

    assert await base_url() == "https://api.mailgun.net"
    assert await base_url(region="us") == "https://api.mailgun.net"
    assert await base_url(region="EU") == "https://api.eu.mailgun.net"
    assert await base_url(region="eu", baseUrl="http://127.0.0.1:9") == "http://127.0.0.1:9"
    with pytest.raises(ConfigError, match="region"):
        await base_url(region="ap")


async def test_400_is_rejected(provider, mailgun_esp, outgoing):
    mailgun_esp.script(400, {"message": "'to' parameter is not a valid address."})
    with pytest.raises(ProviderRejected) as info:
        await provider.send(outgoing)
    assert "not a valid address" in (info.value.response_excerpt or "")


async def test_wrong_api_key_is_an_auth_error(mailgun_esp, provider_context, outgoing):
    spec = replace(spec_for(mailgun_esp), authentication={"apiKey": "key-wrong"})
    provider = registry.build(spec, provider_context)
    try:
        with pytest.raises(ProviderAuthError) as info:
            await provider.send(outgoing)
        assert info.value.status == 401
    finally:
        await provider.aclose()


async def test_unknown_domain_is_an_auth_error(mailgun_esp, provider_context, outgoing):
    provider = registry.build(spec_for(mailgun_esp, domain="other.example.com"), provider_context)
    try:
        with pytest.raises(ProviderAuthError, match=r"other\.example\.com"):
            await provider.send(outgoing)
        assert mailgun_esp.last.path == "/v3/other.example.com/messages.mime"
        assert not (await provider.check()).ok
    finally:
        await provider.aclose()


async def test_429_is_transient_with_retry_after(provider, mailgun_esp, outgoing):
    mailgun_esp.script(429, {"message": "Too many requests"}, headers={"Retry-After": "12"})
    with pytest.raises(ProviderTransientError) as info:
        await provider.send(outgoing)
    assert info.value.retry_after == 12.0


async def test_check_reads_the_domain(provider, mailgun_esp):
    health = await provider.check()
    assert health.ok and "active" in health.detail
    request = mailgun_esp.last
    assert (request.method, request.path) == ("GET", "/v4/domains/mg.example.com")


async def test_check_is_unhealthy_for_a_disabled_domain(provider, mailgun_esp):
    mailgun_esp.domain_state = "disabled"
    health = await provider.check()
    assert not health.ok and "disabled" in health.detail


async def test_check_is_unhealthy_with_a_wrong_key(mailgun_esp, provider_context):
    spec = replace(spec_for(mailgun_esp), authentication={"apiKey": "key-wrong"})
    provider = registry.build(spec, provider_context)
    try:
        health = await provider.check()
        assert not health.ok and "401" in health.detail
    finally:
        await provider.aclose()


class TestContract(HTTPProviderContract):
    esp_fixture = "mailgun_esp"
    spec_for = staticmethod(spec_for)
