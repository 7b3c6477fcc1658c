"""A custom HTTP endpoint: Postroom POSTs each message as signed JSON to a URL.

The receiver verifies ``X-Postroom-Signature: t=<unix ts>,v1=<hex>``, an
HMAC-SHA256 with the shared secret over ``f"{t}.{raw body}"`` (the timestamp lets
it refuse replays). The JSON carries the structured message and its full MIME
(base64) so the receiver can use either.

The URL is operator-supplied, so the adapter guards against SSRF: at every send
the host is resolved and the request is refused when any resolved address is
private, loopback, link-local, multicast, reserved or unspecified, unless it is
inside ``allowNetworks``. The connection then goes to that same checked address
(``Host`` header and TLS SNI keep the name), so a second DNS answer cannot point
the request somewhere else (DNS rebinding). Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, ClassVar

import httpx

from postroom.errors import ConfigError, ProviderError, ProviderRejected, ProviderTransientError
from postroom.providers.base import Address, HealthResult, OutgoingMessage, ProviderSpec, SendResult
from postroom.providers.http import HTTPOptions, HTTPProvider, b64, json_body, require
from postroom.providers.registry import ProviderContext

__all__ = ["SIGNATURE_HEADER", "CustomProvider", "resolve_host", "signature"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

SIGNATURE_HEADER = "X-Postroom-Signature"
#: headers the adapter sets itself; config may not override them
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", SIGNATURE_HEADER.lower()}
)


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Every address ``host`` resolves to, in resolver order, without duplicates."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Postroom-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def refusal_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public unicast address, or None when it is."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return refusal_reason(ip.ipv4_mapped)
    for reason, flag in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
        ("non-global", not ip.is_global),
    ):
        if flag:
            return reason
    return None


def _addresses(addresses: Iterable[Address]) -> list[dict[str, str | None]]:
    return [{"email": a.email, "name": a.name} for a in addresses]


def _headers(spec: ProviderSpec) -> dict[str, str]:
    merged: dict[str, str] = {}
    for source in (spec.config.get("headers"), spec.authentication.get("headers")):
        if source is None:
            continue
        if not isinstance(source, Mapping):
            raise ConfigError(f"provider {spec.name!r} (custom): headers must be an object")
        for key, value in source.items():
            text = str(value)
            if str(key).lower() in RESERVED_HEADERS or any(c in text + key for c in "\r\n"):
                raise ConfigError(f"provider {spec.name!r} (custom): header {key!r} not allowed")
            merged[str(key)] = text
    return merged


class CustomProvider(HTTPProvider):
    type: ClassVar[str] = "custom"

    def __init__(
        self,
        *,
        name: str,
        url: str,
        secret: str,
        headers: Mapping[str, str] | None = None,
        allow_networks: Iterable[str] = (),
        health_url: str | None = None,
        options: HTTPOptions | None = None,
        resolver: Resolver = resolve_host,
        clock: Callable[[], float] = time.time,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.url = self._parse_url(name, url)
        self.health_url = self._parse_url(name, health_url) if health_url else None
        try:
            self.allow_networks: tuple[IPNetwork, ...] = tuple(
                ipaddress.ip_network(cidr, strict=False) for cidr in allow_networks
            )
        except ValueError as exc:
            raise ConfigError(f"provider {name!r} (custom): allowNetworks: {exc}") from exc
        self._secret = secret
        self._resolver = resolver
        self._clock = clock
        # trust_env=False: an environment proxy would bypass the address check
        super().__init__(
            name=name,
            base_url="",
            options=options,
            headers=headers,
            trust_env=False,
            verify=verify,
        )

    @classmethod
    def from_spec(cls, spec: ProviderSpec, context: ProviderContext) -> CustomProvider:
        allow = spec.config.get("allowNetworks") or ()
        if isinstance(allow, str) or not isinstance(allow, Iterable):
            raise ConfigError(f"provider {spec.name!r} (custom): allowNetworks must be a list")
        return cls(
            name=spec.name,
            url=require(spec, "config", "url"),
            secret=require(spec, "authentication", "secret"),
            headers=_headers(spec),
            allow_networks=[str(cidr) for cidr in allow],
            health_url=spec.config.get("healthUrl") or None,
            options=HTTPOptions.from_spec(spec),
        )

    @staticmethod
    def _parse_url(name: str, url: str) -> httpx.URL:
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise ConfigError(f"provider {name!r} (custom): invalid url {url!r}") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ConfigError(f"provider {name!r} (custom): url must be http(s)://host/...")
        return parsed

    def is_allowed(self, ip: IPAddress) -> bool:
        if any(ip.version == net.version and ip in net for net in self.allow_networks):
            return True
        return refusal_reason(ip) is None

    async def checked_address(self, url: httpx.URL) -> IPAddress:
        """Resolve ``url``'s host and return the address to connect to, or refuse."""
        host = url.raw_host.decode("ascii")
        try:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = await self._resolver(host, url.port or _default_port(url))
            except OSError as exc:
                raise ProviderTransientError(
                    f"{self.name}: cannot resolve {host}: {exc}", provider=self.name
                ) from exc
        if not addresses:
            raise ProviderTransientError(f"{self.name}: {host} has no address", provider=self.name)
        for ip in addresses:
            if not self.is_allowed(ip):
                raise ProviderRejected(
                    f"{self.name}: refusing {host}: it resolves to {ip}, a {refusal_reason(ip)}"
                    " address; add its network to config.allowNetworks to permit it",
                    provider=self.name,
                    address=str(ip),
                )
        return addresses[0]

    async def pinned_request(self, method: str, url: httpx.URL, body: bytes) -> httpx.Response:
        """Send to the checked address of ``url``, keeping its name for Host and SNI."""
        ip = await self.checked_address(url)
        timestamp = int(self._clock())
        headers = {
            "Host": url.netloc.decode("ascii"),
            SIGNATURE_HEADER: signature(self._secret, timestamp, body),
        }
        if body:
            headers["Content-Type"] = "application/json"
        extensions: dict[str, Any] = {}
        if url.scheme == "https":
            extensions["sni_hostname"] = url.raw_host.decode("ascii")
        return await self.request(
            method,
            str(url.copy_with(host=str(ip))),
            content=body,
            headers=headers,
            extensions=extensions,
        )

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The JSON document POSTed for one message."""
        return {
            "id": message.email_id,
            "messageId": message.message_id,
            "from": _addresses([message.from_])[0],
            "to": _addresses(message.to),
            "cc": _addresses(message.cc),
            "bcc": _addresses(message.bcc),
            "replyTo": _addresses(message.reply_to),
            "subject": message.subject,
            "text": message.text,
            "html": message.html,
            "headers": dict(message.headers),
            "tags": list(message.tags),
            "metadata": dict(message.metadata),
            "mime": b64(message.mime),
        }

    async def send(self, message: OutgoingMessage) -> SendResult:
        body = json.dumps(self.payload(message), separators=(",", ":")).encode("utf-8")
        response = await self.pinned_request("POST", self.url, body)
        data = json_body(response)
        message_id = None
        if isinstance(data, dict):
            message_id = next(
                (v for k in ("id", "messageId") if isinstance(v := data.get(k), str) and v), None
            )
        return SendResult(
            provider=self.name,
            provider_message_id=message_id or message.message_id,
            response=f"{response.status_code} {response.reason_phrase}",
        )

    async def check(self) -> HealthResult:
        start = time.perf_counter()
        try:
            if self.health_url is not None:
                await self.pinned_request("GET", self.health_url, b"")
                detail = f"{self.health_url.host} answered"
            else:
                ip = await self.checked_address(self.url)
                detail = f"{self.url.host} resolves to allowed address {ip}"
        except (ProviderError, ConfigError) as exc:
            latency = (time.perf_counter() - start) * 1000
            return HealthResult(ok=False, latency_ms=latency, detail=str(exc))
        latency = (time.perf_counter() - start) * 1000
        return HealthResult(ok=True, latency_ms=latency, detail=detail)


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80
