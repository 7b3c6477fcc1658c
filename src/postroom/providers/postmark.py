"""Postmark through its Email API (``POST /email``, JSON, ``X-Postmark-Server-Token``).

Postmark takes structured fields (comma-joined formatted addresses, text and HTML
bodies, ``[{Name, Value}]`` headers, one ``Tag``, string ``Metadata``, base64
attachments) and answers ``200`` with ``MessageID``. Most refusals come back as
HTTP 422 with an ``ErrorCode``, mapped here from Postmark's documented API error
codes; HTTP 401/429/5xx go through the shared classifier.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import httpx

from postroom.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderTransientError,
)
from postroom.providers.base import (
    Address,
    Attachment,
    HealthResult,
    OutgoingMessage,
    ProviderSpec,
    SendResult,
)
from postroom.providers.http import (
    HTTP_CONFIG_KEYS,
    HTTPOptions,
    HTTPProvider,
    b64,
    excerpt,
    json_body,
    require,
)
from postroom.providers.registry import ProviderContext

__all__ = ["PostmarkProvider"]

DEFAULT_BASE_URL = "https://api.postmarkapp.com"
DEFAULT_STREAM = "outbound"

#: Postmark API error codes that mean the credentials or the account cannot send now:
#: 10 bad or missing server token, 405 not allowed to send (no credits), 412 account
#: pending, 413 account may not send. The message may go through another provider.
AUTH_CODES = frozenset({10, 405, 412, 413})
#: 100 maintenance, 429 rate limit exceeded: try again later.
TRANSIENT_CODES = frozenset({100, 429})
#: Everything else refuses this message: 300 invalid email request, 400/401 sender
#: signature missing or unconfirmed, 402/403/409 bad JSON, 406 inactive recipient,
#: 411 forbidden attachment type, ... so unknown codes are rejections too.


def _addresses(addresses: tuple[Address, ...]) -> str:
    return ", ".join(a.formatted() for a in addresses)


def _attachment(attachment: Attachment) -> dict[str, str]:
    item = {
        "Name": attachment.filename,
        "Content": b64(attachment.content),
        "ContentType": attachment.content_type,
    }
    if attachment.disposition == "inline" and attachment.cid:
        item["ContentID"] = f"cid:{attachment.cid.strip('<>')}"
    return item


class PostmarkProvider(HTTPProvider):
    type: ClassVar[str] = "postmark"
    config_keys: ClassVar[frozenset[str]] = HTTP_CONFIG_KEYS | {"messageStream", "baseUrl"}
    authentication_keys: ClassVar[frozenset[str]] = frozenset({"serverToken"})
    url_fields: ClassVar[tuple[str, ...]] = ("config.baseUrl",)

    def __init__(
        self,
        *,
        name: str,
        server_token: str,
        message_stream: str = DEFAULT_STREAM,
        base_url: str = DEFAULT_BASE_URL,
        options: HTTPOptions | None = None,
    ) -> None:
        self.message_stream = message_stream
        super().__init__(
            name=name,
            base_url=base_url,
            options=options,
            headers={"X-Postmark-Server-Token": server_token, "Accept": "application/json"},
        )

    @classmethod
    def from_spec(cls, spec: ProviderSpec, context: ProviderContext) -> PostmarkProvider:
        return cls(
            name=spec.name,
            server_token=require(spec, "authentication", "serverToken"),
            message_stream=spec.config.get("messageStream") or DEFAULT_STREAM,
            base_url=spec.config.get("baseUrl") or DEFAULT_BASE_URL,
            options=HTTPOptions.from_spec(spec),
        )

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The ``/email`` request body."""
        body: dict[str, Any] = {"From": message.from_.formatted(), "To": _addresses(message.to)}
        if message.cc:
            body["Cc"] = _addresses(message.cc)
        if message.bcc:
            body["Bcc"] = _addresses(message.bcc)
        body["Subject"] = message.subject
        if message.text:
            body["TextBody"] = message.text
        if message.html:
            body["HtmlBody"] = message.html
        if message.reply_to:
            body["ReplyTo"] = _addresses(message.reply_to)
        if message.headers:
            body["Headers"] = [{"Name": k, "Value": v} for k, v in message.headers.items()]
        if message.tags:
            body["Tag"] = message.tags[0]
        if message.metadata:
            body["Metadata"] = {
                k: v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
                for k, v in message.metadata.items()
            }
        if message.attachments:
            body["Attachments"] = [_attachment(a) for a in message.attachments]
        body["MessageStream"] = self.message_stream
        return body

    async def send(self, message: OutgoingMessage) -> SendResult:
        response = await self.request("POST", "/email", json=self.payload(message))
        data = json_body(response)
        if not isinstance(data, dict):
            data = {}
        if data.get("ErrorCode", 0) != 0:  # defensive: an error inside a 200
            raise self.from_error_code(response, data)
        message_id = data.get("MessageID")
        if not isinstance(message_id, str) or not message_id:
            message_id = message.message_id
        return SendResult(
            provider=self.name,
            provider_message_id=message_id,
            response=str(data.get("Message") or "OK"),
        )

    async def check(self) -> HealthResult:
        result, data = await self.probe("GET", "/server")
        if result.ok and isinstance(data, dict) and data.get("Name"):
            return HealthResult(
                ok=True, latency_ms=result.latency_ms, detail=f"server {data['Name']}"
            )
        return result

    def classify(self, response: httpx.Response) -> ProviderError:
        data = json_body(response)
        if isinstance(data, dict) and isinstance(data.get("ErrorCode"), int):
            return self.from_error_code(response, data, super().classify(response))
        return super().classify(response)

    def from_error_code(
        self,
        response: httpx.Response,
        data: dict[str, Any],
        generic: ProviderError | None = None,
    ) -> ProviderError:
        """The error for a Postmark ``{"ErrorCode": n, "Message": ...}`` answer."""
        code = data["ErrorCode"]
        text = f"{self.name}: Postmark error {code}: {data.get('Message') or 'no message'}"
        fields: dict[str, Any] = {
            "provider": self.name,
            "status": response.status_code,
            "response_excerpt": excerpt(response),
            "error_code": code,
        }
        if code in AUTH_CODES:
            return ProviderAuthError(text, **fields)
        if code in TRANSIENT_CODES:
            retry_after = generic.retry_after if generic is not None else None
            return ProviderTransientError(
                text, retry_after=retry_after, rate_limited=code == 429, **fields
            )
        if response.status_code == 422 or response.is_success or generic is None:
            return ProviderRejected(text, **fields)
        # an ErrorCode on a 401/429/5xx: the HTTP status decides the class
        return type(generic)(text, retry_after=generic.retry_after, **generic.context, **fields)
