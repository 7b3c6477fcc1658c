"""A custom HTTP endpoint: Postroom POSTs each message as signed JSON to a URL.

The receiver verifies ``X-Postroom-Signature: t=<unix ts>,v1=<hex>``, an
HMAC-SHA256 with the shared secret over ``f"{t}.{raw body}"`` (the timestamp lets
it refuse replays). The JSON carries the structured message and its full MIME
(base64) so the receiver can use either.

The URL is operator-supplied, so it goes through the SSRF guard every HTTP
provider shares (:mod:`postroom.providers.egress`): at every send the host is
resolved, any answer that is not a public address outside ``allowNetworks`` is
refused, and the connection goes to that checked address with the name kept for
``Host`` and TLS SNI (no DNS rebinding). Redirects are never followed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import httpx

from postroom.errors import ConfigError, ProviderError
from postroom.providers.base import Address, HealthResult, OutgoingMessage, ProviderSpec, SendResult
from postroom.providers.egress import (
    IPAddress,
    Resolver,
    parse_networks,
    parse_url,
    refusal_reason,
    resolve_host,
)
from postroom.providers.http import (
    HTTP_CONFIG_KEYS,
    HTTPOptions,
    HTTPProvider,
    b64,
    json_body,
    require,
)
from postroom.providers.registry import ProviderContext

__all__ = [
    "SIGNATURE_HEADER",
    "CustomProvider",
    "IPAddress",
    "refusal_reason",
    "resolve_host",
    "signature",
]

SIGNATURE_HEADER = "X-Postroom-Signature"
#: headers the adapter sets itself; config may not override them
RESERVED_HEADERS = frozenset(
    {"host", "content-length", "content-type", "transfer-encoding", SIGNATURE_HEADER.lower()}
)


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Postroom-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


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
    config_keys: ClassVar[frozenset[str]] = HTTP_CONFIG_KEYS | {"url", "headers", "healthUrl"}
    authentication_keys: ClassVar[frozenset[str]] = frozenset({"secret", "headers"})
    url_fields: ClassVar[tuple[str, ...]] = ("config.url", "config.healthUrl")

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
        self.url = self._parse_url(name, url, "config.url")
        self.health_url = (
            self._parse_url(name, health_url, "config.healthUrl") if health_url else None
        )
        try:
            allow = parse_networks(list(allow_networks))
        except ConfigError as exc:
            raise ConfigError(f"provider {name!r} (custom): {exc.message}", **exc.context) from exc
        options = options or HTTPOptions()
        # ``allow_networks`` adds to what the options (``config.allowNetworks``) allow
        options = dataclasses.replace(options, allow_networks=(*options.allow_networks, *allow))
        self._secret = secret
        self._clock = clock
        super().__init__(
            name=name,
            base_url="",
            options=options,
            headers=headers,
            resolver=resolver,
            verify=verify,
        )

    @classmethod
    def from_spec(cls, spec: ProviderSpec, context: ProviderContext) -> CustomProvider:
        return cls(
            name=spec.name,
            url=require(spec, "config", "url"),
            secret=require(spec, "authentication", "secret"),
            headers=_headers(spec),
            health_url=spec.config.get("healthUrl") or None,
            options=HTTPOptions.from_spec(spec),  # allowNetworks included
        )

    @staticmethod
    def _parse_url(name: str, url: str, field: str) -> httpx.URL:
        try:
            return parse_url(url, field)
        except ConfigError as exc:
            raise ConfigError(f"provider {name!r} (custom): {exc.message}", **exc.context) from exc

    async def signed_request(self, method: str, url: httpx.URL, body: bytes) -> httpx.Response:
        """Send ``body`` signed; the guarded transport pins the checked address."""
        timestamp = int(self._clock())
        headers = {SIGNATURE_HEADER: signature(self._secret, timestamp, body)}
        if body:
            headers["Content-Type"] = "application/json"
        return await self.request(method, str(url), content=body, headers=headers)

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
        response = await self.signed_request("POST", self.url, body)
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
                await self.signed_request("GET", self.health_url, b"")
                detail = f"{self.health_url.host} answered"
            else:
                ip = await self.guard.checked_address(self.url)
                detail = f"{self.url.host} resolves to allowed address {ip}"
        except (ProviderError, ConfigError) as exc:
            latency = (time.perf_counter() - start) * 1000
            return HealthResult(ok=False, latency_ms=latency, detail=str(exc))
        latency = (time.perf_counter() - start) * 1000
        return HealthResult(ok=True, latency_ms=latency, detail=detail)
