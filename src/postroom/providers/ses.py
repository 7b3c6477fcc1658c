"""Amazon SES through the SES API v2 ``SendEmail`` operation with raw MIME content.

The composed MIME goes out as is (``Content.Raw``), so DKIM, tracking and
List-Unsubscribe headers survive; ``Destination`` lists every envelope recipient,
Bcc included, because SES does not read recipients from the raw headers when
``Destination`` is given. Requests are signed with SigV4 (service ``ses``).

Error mapping (SES puts the reason in ``x-amzn-ErrorType`` / the JSON body):

- throttling (``TooManyRequestsException``, ``ThrottlingException``, HTTP 429) and
  the sending quota (``LimitExceededException``): transient, retried later;
- ``MessageRejected``, ``MailFromDomainNotVerifiedException``, ``BadRequestException``,
  ``NotFoundException``: rejected, this message will not go;
- ``AccountSuspendedException``, ``SendingPausedException``: :class:`ProviderAuthError`.
  The account, not the message, is refused: the message fails over to another provider
  and the breaker opens so this account is not hammered until someone resumes it;
- signature and key failures (``InvalidSignatureException``, ``UnrecognizedClientException``,
  ``AccessDeniedException``, ``ExpiredTokenException``, ...) and HTTP 401/403: auth.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from datetime import UTC, datetime
from typing import Any, ClassVar

import httpx

from postroom.errors import (
    ProviderAuthError,
    ProviderError,
    ProviderRejected,
    ProviderTransientError,
)
from postroom.providers import sigv4
from postroom.providers.base import HealthResult, OutgoingMessage, ProviderSpec, SendResult
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

__all__ = ["SESProvider"]

TRANSIENT_ERRORS = frozenset(
    {"TooManyRequestsException", "ThrottlingException", "Throttling", "LimitExceededException"}
)
REJECTED_ERRORS = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "BadRequestException",
        "NotFoundException",
    }
)
AUTH_ERRORS = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "AccessDeniedException",
        "ExpiredTokenException",
        "IncompleteSignatureException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "MissingAuthenticationTokenException",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)


class SigV4Auth(httpx.Auth):
    """Signs each request just before it is sent, over its final URL and body."""

    requires_request_body = True

    def __init__(
        self,
        credentials: sigv4.Credentials,
        region: str,
        clock: Callable[[], datetime],
        service: str = "ses",
    ) -> None:
        self.credentials = credentials
        self.region = region
        self.service = service
        self.clock = clock

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        to_sign = {"Host": request.headers["Host"]}
        if "Content-Type" in request.headers:
            to_sign["Content-Type"] = request.headers["Content-Type"]
        added = sigv4.sign(
            method=request.method,
            url=str(request.url.copy_with(fragment=None)),
            headers=to_sign,
            body=request.content,
            credentials=self.credentials,
            region=self.region,
            service=self.service,
            now=self.clock(),
        )
        request.headers.update(added)
        yield request


class SESProvider(HTTPProvider):
    type: ClassVar[str] = "ses"
    config_keys: ClassVar[frozenset[str]] = HTTP_CONFIG_KEYS | {
        "region",
        "endpoint",
        "baseUrl",
        "configurationSetName",
    }
    authentication_keys: ClassVar[frozenset[str]] = frozenset(
        {"accessKeyId", "secretAccessKey", "sessionToken"}
    )
    url_fields: ClassVar[tuple[str, ...]] = ("config.endpoint", "config.baseUrl")

    def __init__(
        self,
        *,
        name: str,
        region: str,
        credentials: sigv4.Credentials,
        endpoint: str | None = None,
        configuration_set: str | None = None,
        options: HTTPOptions | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.region = region
        self.configuration_set = configuration_set
        super().__init__(
            name=name,
            base_url=endpoint or f"https://email.{region}.amazonaws.com",
            options=options,
            headers={"Accept": "application/json"},
            auth=SigV4Auth(credentials, region, clock or (lambda: datetime.now(UTC))),
        )

    @classmethod
    def from_spec(cls, spec: ProviderSpec, context: ProviderContext) -> SESProvider:
        credentials = sigv4.Credentials(
            access_key_id=require(spec, "authentication", "accessKeyId"),
            secret_access_key=require(spec, "authentication", "secretAccessKey"),
            session_token=spec.authentication.get("sessionToken") or None,
        )
        return cls(
            name=spec.name,
            region=require(spec, "config", "region"),
            credentials=credentials,
            endpoint=spec.config.get("endpoint") or spec.config.get("baseUrl"),
            configuration_set=spec.config.get("configurationSetName") or None,
            options=HTTPOptions.from_spec(spec),
        )

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        """The SendEmail request body."""
        destination = {
            key: [a.email for a in addresses]
            for key, addresses in (
                ("ToAddresses", message.to),
                ("CcAddresses", message.cc),
                ("BccAddresses", message.bcc),
            )
            if addresses
        }
        body: dict[str, Any] = {
            "FromEmailAddress": message.from_.email,
            "Destination": destination,
            "Content": {"Raw": {"Data": b64(message.mime)}},
        }
        if self.configuration_set:
            body["ConfigurationSetName"] = self.configuration_set
        return body

    async def send(self, message: OutgoingMessage) -> SendResult:
        response = await self.request(
            "POST", "/v2/email/outbound-emails", json=self.payload(message)
        )
        data = json_body(response)
        message_id = data.get("MessageId") if isinstance(data, dict) else None
        if not isinstance(message_id, str) or not message_id:
            raise ProviderTransientError(
                f"{self.name}: SES accepted the request but returned no MessageId",
                provider=self.name,
                status=response.status_code,
                response_excerpt=excerpt(response),
            )
        return SendResult(provider=self.name, provider_message_id=message_id, response=message_id)

    async def check(self) -> HealthResult:
        result, data = await self.probe("GET", "/v2/email/account")
        if not result.ok or not isinstance(data, dict):
            return result
        quota = data.get("SendQuota") or {}
        detail = (
            f"sent {quota.get('SentLast24Hours', '?')} of {quota.get('Max24HourSend', '?')}"
            f" in 24h, {quota.get('MaxSendRate', '?')}/s"
        )
        if data.get("SendingEnabled") is False:
            return HealthResult(
                ok=False, latency_ms=result.latency_ms, detail=f"sending is paused; {detail}"
            )
        return HealthResult(ok=True, latency_ms=result.latency_ms, detail=detail)

    def classify(self, response: httpx.Response) -> ProviderError:
        generic = super().classify(response)
        code = error_type(response)
        if code is None:
            return generic
        data = json_body(response)
        reason = (data.get("message") or data.get("Message")) if isinstance(data, dict) else None
        text = f"{self.name}: {code}" + (f": {reason}" if reason else "")
        fields: dict[str, Any] = {
            "provider": self.name,
            "status": response.status_code,
            "response_excerpt": excerpt(response),
        }
        if code in TRANSIENT_ERRORS:
            return ProviderTransientError(
                text, retry_after=generic.retry_after, rate_limited=True, **fields
            )
        if code in AUTH_ERRORS:
            return ProviderAuthError(text, **fields)
        if code in REJECTED_ERRORS:
            return ProviderRejected(text, **fields)
        return type(generic)(text, retry_after=generic.retry_after, **generic.context, **fields)


def error_type(response: httpx.Response) -> str | None:
    """SES's error code, from ``x-amzn-ErrorType`` or the body's ``__type`` / ``code``."""
    header = response.headers.get("x-amzn-ErrorType")
    if header:
        return header.split(":", 1)[0].strip() or None
    data = json_body(response)
    if isinstance(data, dict):
        for key in ("__type", "code", "Code"):
            value = data.get(key)
            if isinstance(value, str) and value:
                return value.rsplit("#", 1)[-1]
    return None
