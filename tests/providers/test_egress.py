"""The SSRF guard every HTTP adapter shares: at send time each one refuses
loopback, private, link-local, unique-local and IPv4-mapped addresses unless its
``allowNetworks`` lets them through, and connects to the address it checked."""

from __future__ import annotations

import asyncio
import importlib.abc
import ipaddress
import re
import sys
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from postroom.errors import ProviderRejected
from postroom.providers import registry
from postroom.providers.base import OutgoingMessage, ProviderSpec
from postroom.providers.egress import (
    AddressGuard,
    ClientPerRequest,
    GuardedTransport,
    IPAddress,
    parse_networks,
)
from postroom.providers.http import HTTPProvider
from postroom.providers.registry import ProviderContext
from tests.providers.fake_esp import LOOPBACK, FakeESP

#: type -> (its fake server fixture, the config key of its URL, extra config, credentials)
ADAPTERS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any]]] = {
    "sendgrid": ("sendgrid_esp", "baseUrl", {}, {"apiKey": "SG.test-key"}),
    "mailgun": ("mailgun_esp", "baseUrl", {"domain": "mg.example.com"}, {"apiKey": "key-test"}),
    "postmark": ("postmark_esp", "baseUrl", {}, {"serverToken": "pm-server-token"}),
    "ses": (
        "ses_esp",
        "endpoint",
        {"region": "eu-west-1"},
        {
            "accessKeyId": "AKIDEXAMPLE",
            "secretAccessKey": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        },
    ),
    "custom": ("custom_esp", "url", {}, {"secret": "whsec-test"}),
}


def spec(ptype: str, url: str, **config: Any) -> ProviderSpec:
    _, key, extra, auth = ADAPTERS[ptype]
    if ptype == "custom":
        url += "/hooks/postroom"
    return ProviderSpec(
        id=f"prv-{ptype}",
        name=f"{ptype}-guarded",
        type=ptype,
        config={key: url, "socketTimeout": 5000, **extra, **config},
        authentication=auth,
    )


def resolver_for(*answers: str) -> Any:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in answers]

    return resolve


async def send(
    built: Any, message: OutgoingMessage, resolver: Callable[..., Any] | None = None
) -> None:
    assert isinstance(built, HTTPProvider)
    if resolver is not None:
        built.guard.resolver = resolver
    try:
        await built.send(message)
    finally:
        await built.aclose()


@pytest.fixture(params=sorted(ADAPTERS))
def esp(request: pytest.FixtureRequest) -> tuple[str, FakeESP]:
    ptype = request.param
    fake: FakeESP = request.getfixturevalue(ADAPTERS[ptype][0])
    return ptype, fake


async def test_the_fake_servers_answer_once_loopback_is_allowed(
    esp: tuple[str, FakeESP], provider_context: ProviderContext, outgoing: OutgoingMessage
) -> None:
    ptype, fake = esp
    await send(
        registry.build(spec(ptype, fake.base_url, allowNetworks=LOOPBACK), provider_context),
        outgoing,
    )
    assert len(fake.requests) == 1


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("localhost", "loopback"),  # a name, resolved by the system
        ("[::1]", "loopback"),
        ("[::ffff:127.0.0.1]", "loopback"),  # IPv4-mapped IPv6
    ],
)
async def test_loopback_is_refused_without_allow_networks(
    esp: tuple[str, FakeESP],
    provider_context: ProviderContext,
    outgoing: OutgoingMessage,
    host: str,
    reason: str,
) -> None:
    ptype, fake = esp
    built = registry.build(spec(ptype, f"http://{host}:{fake.port}"), provider_context)
    with pytest.raises(ProviderRejected, match=f"a {reason} address; add its network"):
        await send(built, outgoing)
    assert fake.requests == []


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("10.0.0.7", "private"),
        ("192.168.1.10", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fd00::1", "private"),  # IPv6 unique-local
        ("fe80::1", "link-local"),
        ("::ffff:10.0.0.1", "private"),
        ("100.64.0.1", "non-global"),
    ],
)
async def test_names_resolving_to_forbidden_addresses_are_refused(
    esp: tuple[str, FakeESP],
    provider_context: ProviderContext,
    outgoing: OutgoingMessage,
    answer: str,
    reason: str,
) -> None:
    ptype, fake = esp
    built = registry.build(
        spec(ptype, f"http://api.esp.test:{fake.port}", allowNetworks=LOOPBACK), provider_context
    )
    shown = re.escape(str(ipaddress.ip_address(answer)))
    with pytest.raises(ProviderRejected, match=f"resolves to {shown}, a {reason} address"):
        await send(built, outgoing, resolver_for(answer))
    assert fake.requests == []


@pytest.mark.parametrize("url", ["http://169.254.169.254", "http://10.0.0.1", "http://[fd12::1]"])
async def test_literal_forbidden_addresses_are_refused_before_connecting(
    esp: tuple[str, FakeESP], provider_context: ProviderContext, outgoing: OutgoingMessage, url: str
) -> None:
    ptype, _ = esp
    with pytest.raises(ProviderRejected, match="refusing"):
        await send(registry.build(spec(ptype, url), provider_context), outgoing)


async def test_allow_networks_lets_only_its_networks_through(
    esp: tuple[str, FakeESP], provider_context: ProviderContext, outgoing: OutgoingMessage
) -> None:
    ptype, fake = esp
    built = registry.build(
        spec(ptype, fake.base_url, allowNetworks=["10.0.0.0/8"]), provider_context
    )
    with pytest.raises(ProviderRejected, match="loopback"):
        await send(built, outgoing)
    assert fake.requests == []


async def test_connects_to_the_checked_address_and_keeps_the_name(
    esp: tuple[str, FakeESP], provider_context: ProviderContext, outgoing: OutgoingMessage
) -> None:
    """The name is resolved once per request by the guard, which then connects to
    that very address (no second lookup to rebind), with Host left as the name."""
    ptype, fake = esp
    answers = iter([["127.0.0.1"], ["169.254.169.254"]])

    async def rebinding(host: str, port: int) -> list[IPAddress]:
        return [ipaddress.ip_address(a) for a in next(answers)]

    built = registry.build(
        spec(ptype, f"http://api.esp.test:{fake.port}", allowNetworks=LOOPBACK), provider_context
    )
    assert isinstance(built, HTTPProvider)
    built.guard.resolver = rebinding
    try:
        await built.send(outgoing)
        with pytest.raises(ProviderRejected, match="link-local"):
            await built.send(outgoing)
    finally:
        await built.aclose()
    assert [r.headers["host"] for r in fake.requests] == [f"api.esp.test:{fake.port}"]


async def test_environment_proxies_are_not_used(
    esp: tuple[str, FakeESP],
    provider_context: ProviderContext,
    outgoing: OutgoingMessage,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy would connect to a name the guard never checked."""
    ptype, fake = esp
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://192.0.2.1:3128")  # unroutable: a use would fail
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    built = registry.build(spec(ptype, fake.base_url, allowNetworks=LOOPBACK), provider_context)
    await send(built, outgoing)
    assert len(fake.requests) == 1


class _Lookups(importlib.abc.MetaPathFinder):
    """Records every module the import system is asked to find (and finds none)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> None:
        self.names.append(fullname)


async def test_a_request_asks_the_import_system_for_nothing(custom_esp: FakeESP) -> None:
    """httpcore imports ``sniffio`` inside each lock, event and cancel shield it makes;
    without ``sniffio`` installed every such import failed after searching ``sys.path``
    (a fifth of an outgoing webhook's CPU). It is a dependency for that reason."""
    guard = AddressGuard(provider="test", allow=parse_networks(["127.0.0.0/8", "::1/128"]))
    url = custom_esp.base_url + "/hooks/postroom"
    async with httpx.AsyncClient(transport=GuardedTransport(guard)) as client:
        await client.post(url, content=b"{}")  # the first use imports what it needs
        lookups = _Lookups()
        sys.meta_path.insert(0, lookups)
        try:
            for _ in range(3):
                await client.post(url, content=b"{}")
        finally:
            sys.meta_path.remove(lookups)
    assert lookups.names == []


async def test_requests_in_flight_each_have_a_connection_the_next_one_reuses(
    custom_esp: FakeESP,
) -> None:
    """``ClientPerRequest``: ten requests at once make ten clients, one connection
    each, and later requests take them again instead of opening new ones."""
    guard = AddressGuard(provider="test", allow=parse_networks(["127.0.0.0/8", "::1/128"]))
    clients = ClientPerRequest(guard, timeout=5.0)
    url = custom_esp.base_url + "/hooks/postroom"
    at_once = asyncio.Semaphore(10)

    async def post() -> None:
        async with at_once:
            with clients.client() as client:
                await client.post(url, content=b"{}")  # refused unsigned: any answer will do

    try:
        for _ in range(3):
            await asyncio.gather(*(post() for _ in range(20)))
    finally:
        await clients.aclose()
    assert len(custom_esp.requests) == 60
    assert 1 <= len({r.peer for r in custom_esp.requests}) <= 10
