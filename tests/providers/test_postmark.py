from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from postroom.errors import (
    ProviderAuthError,
    ProviderRejected,
    ProviderTransientError,
)
from postroom.providers import registry
from postroom.providers.base import ProviderSpec
from postroom.providers.postmark import PostmarkProvider
from tests.providers.fake_esp import LOOPBACK
from tests.providers.http_contract import HTTPProviderContract

if TYPE_CHECKING:
    from tests.providers.fake_esp import PostmarkFake


def spec_for(esp: PostmarkFake, **config: Any) -> ProviderSpec:
    return ProviderSpec(
        id="prv-postmark",
        name="postmark-main",
        type="postmark",
        config={
            "baseUrl": esp.base_url,
            "allowNetworks": LOOPBACK,
            "socketTimeout": 5000,
            **config,
        },
        authentication={"serverToken": "pm-server-token"},
    )


@pytest.fixture
async def provider(postmark_esp, provider_context) -> AsyncIterator[PostmarkProvider]:
    built = registry.build(spec_for(postmark_esp), provider_context)
    assert isinstance(built, PostmarkProvider)
    yield built
    await built.aclose()


async def test_send_posts_the_documented_request(provider, postmark_esp, outgoing):
    postmark_esp.script(
        200,
        {
            "To": "ann@example.org",
            "SubmittedAt": "2026-01-01T10:00:00Z",
            "MessageID": "0a129aee-e1cd-480d-b08d-4f48548ff48d",
            "ErrorCode": 0,
            "Message": "OK",
        },
    )

    result = await provider.send(outgoing)

    assert result.provider == "postmark-main"
    assert result.provider_message_id == "0a129aee-e1cd-480d-b08d-4f48548ff48d"
    request = postmark_esp.last
    assert (request.method, request.path) == ("POST", "/email")
    assert request.headers["x-postmark-server-token"] == "pm-server-token"
    assert request.headers["accept"] == "application/json"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "From": "Example News <news@example.com>",
        "To": "Ann Lee <ann@example.org>, bob@example.org",
        "Cc": "cat@example.org",
        "Bcc": "dan@example.org",
        "Subject": "Your order ✓",
        "TextBody": "Hello Ann\nYour order shipped.",
        "HtmlBody": '<p>Hello Ann</p><img src="cid:logo">',
        "ReplyTo": "Help Desk <help@example.com>",
        "Headers": [
            {"Name": "X-Campaign", "Value": "spring"},
            {"Name": "List-Unsubscribe", "Value": "<https://example.com/u/1>"},
        ],
        "Tag": "orders",
        "Metadata": {"order_id": "A-1001", "attempt": "2"},
        "Attachments": [
            {
                "Name": "invoice.pdf",
                "Content": base64.b64encode(b"%PDF-1.4 fake").decode(),
                "ContentType": "application/pdf",
            },
            {
                "Name": "logo.png",
                "Content": base64.b64encode(b"\x89PNG fake").decode(),
                "ContentType": "image/png",
                "ContentID": "cid:logo",
            },
        ],
        "MessageStream": "outbound",
    }


async def test_message_stream_comes_from_config(postmark_esp, provider_context, make_message):
    provider = registry.build(spec_for(postmark_esp, messageStream="broadcast"), provider_context)
    try:
        result = await provider.send(make_message(cc=(), bcc=(), reply_to=(), tags=()))
    finally:
        await provider.aclose()
    body = postmark_esp.last.json()
    assert body["MessageStream"] == "broadcast"
    assert not {"Cc", "Bcc", "ReplyTo", "Tag"} & set(body)
    assert result.provider_message_id.startswith("b7bc2f4a-")


@pytest.mark.parametrize(
    ("error_code", "expected"),
    [
        (300, ProviderRejected),  # invalid email request
        (406, ProviderRejected),  # inactive recipient
        (411, ProviderRejected),  # forbidden attachment type
        (401, ProviderRejected),  # sender signature not confirmed
        (10, ProviderAuthError),  # bad or missing server token
        (405, ProviderAuthError),  # not allowed to send (no credits)
        (412, ProviderAuthError),  # account pending
        (429, ProviderTransientError),  # rate limit exceeded
        (100, ProviderTransientError),  # maintenance
    ],
)
async def test_422_error_codes_are_mapped(provider, postmark_esp, outgoing, error_code, expected):
    postmark_esp.script(422, {"ErrorCode": error_code, "Message": f"error {error_code}"})
    with pytest.raises(expected) as info:
        await provider.send(outgoing)
    assert type(info.value) is expected
    assert info.value.status == 422
    assert info.value.context["error_code"] == error_code


async def test_fake_refuses_a_message_without_body(provider, postmark_esp, make_message):
    with pytest.raises(ProviderRejected, match="error 300"):
        await provider.send(make_message(text=None, html=None))


async def test_400_is_rejected(provider, postmark_esp, outgoing):
    postmark_esp.script(400, body=b"Bad Request")
    with pytest.raises(ProviderRejected):
        await provider.send(outgoing)


async def test_wrong_token_is_an_auth_error(postmark_esp, provider_context, outgoing):
    spec = replace(spec_for(postmark_esp), authentication={"serverToken": "wrong"})
    provider = registry.build(spec, provider_context)
    try:
        with pytest.raises(ProviderAuthError) as info:
            await provider.send(outgoing)
        assert info.value.status == 401
        assert not (await provider.check()).ok
    finally:
        await provider.aclose()


async def test_429_is_transient_with_retry_after(provider, postmark_esp, outgoing):
    postmark_esp.script(
        429, {"ErrorCode": 429, "Message": "Rate limit exceeded"}, headers={"Retry-After": "30"}
    )
    with pytest.raises(ProviderTransientError) as info:
        await provider.send(outgoing)
    assert info.value.retry_after == 30.0


async def test_check_reads_the_server(provider, postmark_esp):
    health = await provider.check()
    assert health.ok and health.detail == "server Postroom Test"
    request = postmark_esp.last
    assert (request.method, request.path) == ("GET", "/server")
    assert request.headers["x-postmark-server-token"] == "pm-server-token"


async def test_check_is_unhealthy_on_server_error(provider, postmark_esp):
    postmark_esp.script(500, body=b"oops")
    assert not (await provider.check()).ok


class TestContract(HTTPProviderContract):
    esp_fixture = "postmark_esp"
    spec_for = staticmethod(spec_for)
