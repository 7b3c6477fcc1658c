"""SendGrid through the v3 Web API (``POST /v3/mail/send``, JSON, Bearer API key).

SendGrid builds the MIME itself from structured fields, so this adapter maps the
message's parts: one personalization holding To/Cc/Bcc, ``text/plain`` before
``text/html`` (SendGrid's required order), attachments (inline ones with
``content_id``), extra headers, tags as ``categories`` and metadata as
``custom_args``. SendGrid answers ``202`` with the message id in ``X-Message-Id``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, ClassVar

from postroom.errors import UnsupportedFeature
from postroom.providers.base import (
    Address,
    Attachment,
    HealthResult,
    OutgoingMessage,
    ProviderSpec,
    SendResult,
)
from postroom.providers.http import HTTP_CONFIG_KEYS, HTTPOptions, HTTPProvider, b64, require
from postroom.providers.registry import ProviderContext

__all__ = ["SendGridProvider"]

DEFAULT_BASE_URL = "https://api.sendgrid.com"
#: SendGrid allows at most 10 categories per message
MAX_CATEGORIES = 10
#: headers SendGrid refuses in ``headers`` (set through structured fields or by SendGrid)
RESERVED_HEADERS = frozenset(
    {
        "x-sg-id",
        "x-sg-eid",
        "received",
        "dkim-signature",
        "content-type",
        "content-transfer-encoding",
        "to",
        "from",
        "subject",
        "reply-to",
        "cc",
        "bcc",
    }
)


def _address(address: Address) -> dict[str, str]:
    return (
        {"email": address.email, "name": address.name} if address.name else {"email": address.email}
    )


def _unique(addresses: Iterable[Address], seen: set[str]) -> list[dict[str, str]]:
    """SendGrid rejects an address repeated across to/cc/bcc; keep the first."""
    out = []
    for address in addresses:
        key = address.email.lower()
        if key not in seen:
            seen.add(key)
            out.append(_address(address))
    return out


def _attachment(attachment: Attachment) -> dict[str, str]:
    item = {
        "content": b64(attachment.content),
        "type": attachment.content_type,
        "filename": attachment.filename,
        "disposition": "attachment",
    }
    # SendGrid requires content_id with an inline disposition
    if attachment.disposition == "inline" and attachment.cid:
        item["disposition"] = "inline"
        item["content_id"] = attachment.cid.strip("<>")
    return item


class SendGridProvider(HTTPProvider):
    type: ClassVar[str] = "sendgrid"
    config_keys: ClassVar[frozenset[str]] = HTTP_CONFIG_KEYS | {"baseUrl"}
    authentication_keys: ClassVar[frozenset[str]] = frozenset({"apiKey"})
    url_fields: ClassVar[tuple[str, ...]] = ("config.baseUrl",)

    def __init__(
        self,
        *,
        name: str,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        options: HTTPOptions | None = None,
    ) -> None:
        super().__init__(
            name=name,
            base_url=base_url,
            options=options,
            headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
        )

    @classmethod
    def from_spec(cls, spec: ProviderSpec, context: ProviderContext) -> SendGridProvider:
        return cls(
            name=spec.name,
            api_key=require(spec, "authentication", "apiKey"),
            base_url=spec.config.get("baseUrl") or DEFAULT_BASE_URL,
            options=HTTPOptions.from_spec(spec),
        )

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The mail/send request body."""
        if not message.to:
            raise UnsupportedFeature("SendGrid needs at least one To recipient")
        content = [
            {"type": mime_type, "value": value}
            for mime_type, value in (("text/plain", message.text), ("text/html", message.html))
            if value
        ]
        if not content:
            raise UnsupportedFeature("SendGrid needs a text or HTML body")

        seen: set[str] = set()
        personalization: dict[str, Any] = {"to": _unique(message.to, seen)}
        for key, addresses in (("cc", message.cc), ("bcc", message.bcc)):
            if unique := _unique(addresses, seen):
                personalization[key] = unique

        body: dict[str, Any] = {
            "personalizations": [personalization],
            "from": _address(message.from_),
            "subject": message.subject,
            "content": content,
        }
        if message.reply_to:
            body["reply_to_list"] = [_address(a) for a in message.reply_to]
        if message.attachments:
            body["attachments"] = [_attachment(a) for a in message.attachments]
        headers = {k: v for k, v in message.headers.items() if k.lower() not in RESERVED_HEADERS}
        if headers:
            body["headers"] = headers
        if message.tags:
            body["categories"] = list(dict.fromkeys(message.tags))[:MAX_CATEGORIES]
        if message.metadata:
            # custom_args values must be strings
            body["custom_args"] = {
                k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
                for k, v in message.metadata.items()
            }
        return body

    async def send(self, message: OutgoingMessage) -> SendResult:
        response = await self.request("POST", "/v3/mail/send", json=self.payload(message))
        message_id = response.headers.get("X-Message-Id") or message.message_id
        return SendResult(
            provider=self.name,
            provider_message_id=message_id,
            response=f"{response.status_code} {response.reason_phrase}",
        )

    async def check(self) -> HealthResult:
        result, data = await self.probe("GET", "/v3/scopes")
        if not result.ok:
            return result
        scopes = data.get("scopes") if isinstance(data, dict) else None
        if isinstance(scopes, list) and "mail.send" not in scopes:
            return HealthResult(
                ok=False, latency_ms=result.latency_ms, detail="API key lacks the mail.send scope"
            )
        return HealthResult(ok=True, latency_ms=result.latency_ms, detail="API key accepted")
