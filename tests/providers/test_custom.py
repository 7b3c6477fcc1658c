from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from postroom.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderTransientError,
)
from postroom.providers import registry
from postroom.providers.base import ProviderSpec
from postroom.providers.custom import CustomProvider, IPAddress, refusal_reason, signature
from tests.providers.http_contract import HTTPProviderContract

if TYPE_CHECKING:
    from tests.providers.fake_esp import CustomFake

NOW = 1_767_225_600  # 2026-01-01T00:00:00Z
LOOPBACK = ["127.0.0.0/8"]


def spec_for(esp: CustomFake, **config: Any) -> ProviderSpec:
    return ProviderSpec(
        id="prv-custom",
        name="custom-hook",
        type="custom",
        config={
            "url": f"{esp.base_url}/hooks/postroom",
            "allowNetworks": LOOPBACK,
            "socketTimeout": 5000,
            **config,
        },
        authentication={"secret": "whsec-test"},
    )


def resolver_for(answers: dict[str, list[str]], calls: list[str] | None = None) -> Any:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        if calls is not None:
            calls.append(host)
        return [ipaddress.ip_address(a) for a in answers[host]]

    return resolve


@pytest.fixture
async def provider(custom_esp, provider_context) -> AsyncIterator[CustomProvider]:
    built = registry.build(spec_for(custom_esp), provider_context)
    assert isinstance(built, CustomProvider)
    yield built
    await built.aclose()


@pytest.fixture
async def direct() -> AsyncIterator[Callable[..., CustomProvider]]:
    """Build CustomProviders with a scripted resolver and a fixed clock; closed after."""
    made: list[CustomProvider] = []

    def build(url: str, **kwargs: Any) -> CustomProvider:
        kwargs.setdefault("allow_networks", LOOPBACK)
        kwargs.setdefault("clock", lambda: NOW)
        made.append(CustomProvider(name="custom-hook", url=url, secret="whsec-test", **kwargs))
        return made[-1]

    yield build
    for item in made:
        await item.aclose()


async def test_send_posts_signed_json(custom_esp, outgoing):
    provider = CustomProvider(
        name="custom-hook",
        url=f"{custom_esp.base_url}/hooks/postroom",
        secret="whsec-test",
        allow_networks=LOOPBACK,
        clock=lambda: NOW,
    )
    try:
        result = await provider.send(outgoing)
    finally:
        await provider.aclose()

    assert result.provider == "custom-hook"
    assert result.provider_message_id.startswith("rcv-")
    request = custom_esp.last
    assert (request.method, request.path) == ("POST", "/hooks/postroom")
    assert request.headers["content-type"] == "application/json"
    mac = hmac.new(b"whsec-test", f"{NOW}.".encode() + request.body, hashlib.sha256)
    assert request.headers["x-postroom-signature"] == f"t={NOW},v1={mac.hexdigest()}"
    assert request.json() == {
        "id": outgoing.email_id,
        "messageId": outgoing.message_id,
        "from": {"email": "news@example.com", "name": "Example News"},
        "to": [
            {"email": "ann@example.org", "name": "Ann Lee"},
            {"email": "bob@example.org", "name": None},
        ],
        "cc": [{"email": "cat@example.org", "name": None}],
        "bcc": [{"email": "dan@example.org", "name": None}],
        "replyTo": [{"email": "help@example.com", "name": "Help Desk"}],
        "subject": "Your order ✓",
        "text": "Hello Ann\nYour order shipped.",
        "html": '<p>Hello Ann</p><img src="cid:logo">',
        "headers": {"X-Campaign": "spring", "List-Unsubscribe": "<https://example.com/u/1>"},
        "tags": ["orders", "shipping"],
        "metadata": {"order_id": "A-1001", "attempt": 2},
        "mime": base64.b64encode(outgoing.mime).decode(),
    }


def test_signature_helper_matches_the_documented_scheme():
    mac = hmac.new(b"s3cret", b"1700000000.{}", hashlib.sha256).hexdigest()
    assert signature("s3cret", 1_700_000_000, b"{}") == f"t=1700000000,v1={mac}"


async def test_static_headers_are_sent(custom_esp, provider_context, outgoing):
    spec = replace(
        spec_for(custom_esp, headers={"X-Tenant": "acme"}),
        authentication={"secret": "whsec-test", "headers": {"Authorization": "Bearer t0k"}},
    )
    provider = registry.build(spec, provider_context)
    try:
        await provider.send(outgoing)
    finally:
        await provider.aclose()
    assert custom_esp.last.headers["x-tenant"] == "acme"
    assert custom_esp.last.headers["authorization"] == "Bearer t0k"


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ({"messageId": "ext-42"}, "ext-42"),
        ({"id": "ext-7", "messageId": "ignored"}, "ext-7"),
        ({"ok": True}, "<0b6e7c1e.postroom@example.com>"),
    ],
)
async def test_message_id_from_the_response(provider, custom_esp, outgoing, response, expected):
    custom_esp.script(200, response)
    assert (await provider.send(outgoing)).provider_message_id == expected


async def test_empty_2xx_falls_back_to_the_message_id(provider, custom_esp, outgoing):
    custom_esp.script(204)
    assert (await provider.send(outgoing)).provider_message_id == outgoing.message_id


# -- SSRF guard --------------------------------------------------------------------


async def test_loopback_is_refused_without_allow_networks(custom_esp, provider_context, outgoing):
    provider = registry.build(spec_for(custom_esp, allowNetworks=[]), provider_context)
    try:
        with pytest.raises(ProviderRejected, match=r"127\.0\.0\.1: it is a loopback address"):
            await provider.send(outgoing)
        health = await provider.check()
        assert not health.ok and "loopback" in health.detail
    finally:
        await provider.aclose()
    assert custom_esp.requests == []


async def test_localhost_name_is_refused_after_resolution(custom_esp, direct, outgoing):
    provider = direct(f"http://localhost:{custom_esp.port}/hooks/postroom", allow_networks=[])
    with pytest.raises(ProviderRejected, match="loopback"):
        await provider.send(outgoing)
    assert custom_esp.requests == []


async def test_name_resolving_to_a_private_address_is_refused(custom_esp, direct, outgoing):
    calls: list[str] = []
    resolver = resolver_for({"hooks.internal.test": ["10.0.0.7"]}, calls)
    provider = direct("https://hooks.internal.test/postroom", resolver=resolver)
    with pytest.raises(ProviderRejected, match=r"10\.0\.0\.7, a private address"):
        await provider.send(outgoing)
    assert calls == ["hooks.internal.test"]


async def test_connects_to_the_checked_address_with_the_original_host(custom_esp, direct, outgoing):
    calls: list[str] = []
    provider = direct(
        f"http://hooks.example.test:{custom_esp.port}/hooks/postroom",
        resolver=resolver_for({"hooks.example.test": ["127.0.0.1"]}, calls),
    )
    await provider.send(outgoing)
    await provider.send(outgoing)
    assert calls == ["hooks.example.test", "hooks.example.test"]  # checked at every send
    assert [r.headers["host"] for r in custom_esp.requests] == [
        f"hooks.example.test:{custom_esp.port}"
    ] * 2


async def test_rebinding_to_a_private_address_is_refused(custom_esp, direct, outgoing):
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in next(answers)]

    provider = direct(
        f"http://hooks.example.test:{custom_esp.port}/hooks/postroom", resolver=rebinding
    )
    await provider.send(outgoing)
    with pytest.raises(ProviderRejected, match="link-local"):
        await provider.send(outgoing)
    assert len(custom_esp.requests) == 1


async def test_tls_is_verified_against_the_name_not_the_address(tls_custom_esp, outgoing):
    esp, client_context = tls_custom_esp
    resolver = resolver_for(
        {"hooks.example.test": ["127.0.0.1"], "other.example.test": ["127.0.0.1"]}
    )
    good = CustomProvider(
        name="custom-hook",
        url=f"https://hooks.example.test:{esp.port}/hooks/postroom",
        secret="whsec-test",
        allow_networks=LOOPBACK,
        resolver=resolver,
        verify=client_context,
    )
    wrong_name = CustomProvider(
        name="custom-hook",
        url=f"https://other.example.test:{esp.port}/hooks/postroom",
        secret="whsec-test",
        allow_networks=LOOPBACK,
        resolver=resolver,
        verify=client_context,
    )
    try:
        result = await good.send(outgoing)
        with pytest.raises(ProviderTransientError, match="CERTIFICATE_VERIFY_FAILED"):
            await wrong_name.send(outgoing)
    finally:
        await good.aclose()
        await wrong_name.aclose()
    assert result.provider_message_id.startswith("rcv-")
    assert [r.headers["host"] for r in esp.requests] == [f"hooks.example.test:{esp.port}"]


async def test_any_refused_answer_refuses_the_name(custom_esp, direct, outgoing):
    resolver = resolver_for({"hooks.example.test": ["127.0.0.1", "10.9.8.7"]})
    provider = direct(f"http://hooks.example.test:{custom_esp.port}/x", resolver=resolver)
    with pytest.raises(ProviderRejected, match="private"):
        await provider.send(outgoing)
    assert custom_esp.requests == []


async def test_resolution_failure_is_transient(direct, outgoing):
    async def failing(host: str, port: int) -> list[IPAddress]:
        raise OSError("Name or service not known")

    provider = direct("https://hooks.example.test/x", resolver=failing)
    with pytest.raises(ProviderTransientError, match="cannot resolve"):
        await provider.send(outgoing)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.1.10", "private"),
        ("172.16.0.1", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "non-global"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::", "unspecified"),
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_refusal_reasons(address, reason):
    assert refusal_reason(ipaddress.ip_address(address)) == reason


# -- errors ------------------------------------------------------------------------


async def test_bad_secret_is_an_auth_error(custom_esp, provider_context, outgoing):
    spec = replace(spec_for(custom_esp), authentication={"secret": "x"})
    provider = registry.build(spec, provider_context)
    try:
        with pytest.raises(ProviderAuthError) as info:
            await provider.send(outgoing)
        assert info.value.status == 401
    finally:
        await provider.aclose()


async def test_400_is_rejected(provider, custom_esp, outgoing):
    custom_esp.script(400, {"error": "bad recipient"})
    with pytest.raises(ProviderRejected):
        await provider.send(outgoing)


async def test_redirects_are_not_followed(provider, custom_esp, outgoing):
    custom_esp.script(302, headers={"Location": "http://169.254.169.254/latest/meta-data"})
    with pytest.raises(ProviderError):
        await provider.send(outgoing)
    assert len(custom_esp.requests) == 1


async def test_429_is_transient_with_retry_after(provider, custom_esp, outgoing):
    custom_esp.script(429, {"error": "slow down"}, headers={"Retry-After": "5"})
    with pytest.raises(ProviderTransientError) as info:
        await provider.send(outgoing)
    assert info.value.retry_after == 5.0


# -- health and configuration ------------------------------------------------------


async def test_check_without_health_url_checks_the_address(provider, custom_esp):
    health = await provider.check()
    assert health.ok and "127.0.0.1" in health.detail
    assert custom_esp.requests == []


async def test_check_calls_the_signed_health_url(custom_esp, provider_context):
    spec = spec_for(custom_esp, healthUrl=f"{custom_esp.base_url}/health")
    provider = registry.build(spec, provider_context)
    try:
        assert (await provider.check()).ok
        custom_esp.script(503, {"ok": False})
        assert not (await provider.check()).ok
    finally:
        await provider.aclose()
    assert [(r.method, r.path) for r in custom_esp.requests] == [("GET", "/health")] * 2
    assert custom_esp.requests[0].headers["x-postroom-signature"].startswith("t=")


@pytest.mark.parametrize(
    "config",
    [
        {"url": "ftp://example.com/x"},
        {"url": "not a url"},
        {"allowNetworks": ["10.0.0.0/33"]},
        {"allowNetworks": "10.0.0.0/8"},
        {"headers": {"X-Postroom-Signature": "forged"}},
        {"headers": {"Host": "elsewhere"}},
        {"headers": {"X-Evil": "a\r\nInjected: yes"}},
    ],
)
def test_bad_config_is_refused(custom_esp, provider_context, config):
    with pytest.raises(ConfigError):
        registry.build(spec_for(custom_esp, **config), provider_context)


class TestContract(HTTPProviderContract):
    esp_fixture = "custom_esp"
    spec_for = staticmethod(spec_for)
