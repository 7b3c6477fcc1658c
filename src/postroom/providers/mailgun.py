"""Mailgun through the v3 messages API, sending the composed MIME (``messages.mime``).

Why MIME and not the structured ``/messages`` fields: the message is already
composed (tracking rewrites, List-Unsubscribe, DKIM, inline parts), and sending
those exact bytes keeps Mailgun's copy identical to what SMTP, SES and the outbox
send. Mailgun then takes the recipients from the ``to`` form field only, so it
carries every envelope recipient, Bcc included; Bcc never appears in the MIME
headers. Tags go as ``o:tag`` (Mailgun keeps at most 3) and metadata as ``v:``
variables, which Mailgun echoes back in its webhooks.

Auth is HTTP basic with user ``api`` and the API key. US and EU accounts live on
different hosts (``region``); a 404 on send means the domain is not on this
account, so it is treated like refused credentials (fail over, open the breaker).
"""

from __future__ import annotations

import json
from typing import ClassVar
from urllib.parse import quote

import httpx

from postroom.errors import ConfigError, ProviderAuthError, ProviderError
from postroom.providers.base import HealthResult, OutgoingMessage, ProviderSpec, SendResult
from postroom.providers.http import (
    HTTP_CONFIG_KEYS,
    HTTPOptions,
    HTTPProvider,
    excerpt,
    json_body,
    require,
)
from postroom.providers.registry import ProviderContext

__all__ = ["MailgunProvider"]

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}
#: Mailgun keeps at most three tags per message
MAX_TAGS = 3


class MailgunProvider(HTTPProvider):
    type: ClassVar[str] = "mailgun"
    config_keys: ClassVar[frozenset[str]] = HTTP_CONFIG_KEYS | {"domain", "region", "baseUrl"}
    authentication_keys: ClassVar[frozenset[str]] = frozenset({"apiKey"})
    url_fields: ClassVar[tuple[str, ...]] = ("config.baseUrl",)

    def __init__(
        self,
        *,
        name: str,
        api_key: str,
        domain: str,
        base_url: str = REGIONS["us"],
        options: HTTPOptions | None = None,
    ) -> None:
        self.domain = domain
        super().__init__(
            name=name,
            base_url=base_url,
            options=options,
            headers={"Accept": "application/json"},
            auth=httpx.BasicAuth("api", api_key),
        )

    @classmethod
    def from_spec(cls, spec: ProviderSpec, context: ProviderContext) -> MailgunProvider:
        region = str(spec.config.get("region") or "us").lower()
        base_url = spec.config.get("baseUrl")
        if not base_url:
            if region not in REGIONS:
                raise ConfigError(
                    f"provider {spec.name!r} (mailgun): region must be 'us' or 'eu', not {region!r}"
                )
            base_url = REGIONS[region]
        return cls(
            name=spec.name,
            api_key=require(spec, "authentication", "apiKey"),
            domain=require(spec, "config", "domain"),
            base_url=base_url,
            options=HTTPOptions.from_spec(spec),
        )

    @property
    def _domain_path(self) -> str:
        return quote(self.domain, safe="")

    def form(self, message: OutgoingMessage) -> dict[str, str | list[str]]:
        """The non-file fields of a ``messages.mime`` request (lists repeat the field)."""
        fields: dict[str, str | list[str]] = {"to": list(dict.fromkeys(message.envelope_to))}
        if message.tags:
            fields["o:tag"] = list(dict.fromkeys(message.tags))[:MAX_TAGS]
        for key, value in message.metadata.items():
            text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
            fields[f"v:{key}"] = text
        return fields

    async def send(self, message: OutgoingMessage) -> SendResult:
        response = await self.request(
            "POST",
            f"/v3/{self._domain_path}/messages.mime",
            data=self.form(message),
            files={"message": ("message.mime", message.mime, "message/rfc822")},
        )
        data = json_body(response)
        message_id = data.get("id") if isinstance(data, dict) else None
        if not isinstance(message_id, str) or not message_id:
            message_id = message.message_id
        reason = data.get("message") if isinstance(data, dict) else None
        return SendResult(
            provider=self.name, provider_message_id=message_id, response=reason or None
        )

    async def check(self) -> HealthResult:
        result, data = await self.probe("GET", f"/v4/domains/{self._domain_path}")
        if not result.ok:
            return result
        domain = data.get("domain") if isinstance(data, dict) else None
        state = domain.get("state") if isinstance(domain, dict) else None
        if state is not None and state != "active":
            return HealthResult(
                ok=False,
                latency_ms=result.latency_ms,
                detail=f"domain {self.domain} is {state}",
            )
        return HealthResult(
            ok=True, latency_ms=result.latency_ms, detail=f"domain {self.domain} is active"
        )

    def classify(self, response: httpx.Response) -> ProviderError:
        if response.status_code == 404:
            return ProviderAuthError(
                f"{self.name}: domain {self.domain!r} not found on this Mailgun account"
                " (check the domain and the region)",
                provider=self.name,
                status=404,
                response_excerpt=excerpt(response),
            )
        return super().classify(response)
