"""The provider seam: what every adapter takes, returns and raises.

An adapter receives an :class:`OutgoingMessage` that is already composed: addresses
parsed, template rendered, MIME built. SMTP and SES send ``mime`` as is; HTTP APIs
that want structured JSON read the structured fields. Adapters translate every
vendor exception into :mod:`postroom.errors` at their edge.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable


@dataclass(frozen=True, kw_only=True, slots=True)
class Address:
    email: str
    name: str | None = None

    def formatted(self) -> str:
        """RFC 5322 form, e.g. ``Ann <ann@example.com>`` (names encoded when needed)."""
        from email.headerregistry import Address as _Address

        if not self.name:
            return self.email
        return str(_Address(display_name=self.name, addr_spec=self.email))


@dataclass(frozen=True, kw_only=True, slots=True)
class Attachment:
    filename: str
    content: bytes
    content_type: str = "application/octet-stream"
    disposition: Literal["attachment", "inline"] = "attachment"
    cid: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OutgoingMessage:
    """A composed message, ready for any provider."""

    #: Postroom's id of the email (== its job id); stable across retries
    email_id: str
    #: the Message-ID header value, with angle brackets
    message_id: str
    from_: Address
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    subject: str = ""
    text: str | None = None
    html: str | None = None
    #: extra headers, already validated (no CR/LF)
    headers: Mapping[str, str] = field(default_factory=dict)
    attachments: tuple[Attachment, ...] = ()
    tags: tuple[str, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)
    #: the full RFC 5322 message (headers + body), CRLF line endings
    mime: bytes = b""
    #: the envelope sender (Return-Path) when it is not the From address (VERP)
    return_path: str | None = None

    @property
    def envelope_from(self) -> str:
        return self.return_path or self.from_.email

    @property
    def envelope_to(self) -> tuple[str, ...]:
        """Every recipient address: To, Cc and Bcc (Bcc appears only here)."""
        return tuple(a.email for a in (*self.to, *self.cc, *self.bcc))

    @property
    def size(self) -> int:
        return len(self.mime)


@dataclass(frozen=True, kw_only=True, slots=True)
class SendResult:
    """What a provider said when it accepted a message."""

    provider: str
    #: the provider's id for the message (ESP message id, or the Message-ID for SMTP)
    provider_message_id: str
    #: recipients the provider refused while accepting the rest: address -> reason
    rejected: Mapping[str, str] = field(default_factory=dict)
    response: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class HealthResult:
    ok: bool
    latency_ms: float | None = None
    detail: str = ""


@runtime_checkable
class Provider(Protocol):
    """One delivery service. Instances are long-lived and reused across messages."""

    #: the provider type slug (``smtp``, ``sendgrid``, ...)
    type: ClassVar[str]
    #: the configured provider's name, used in results and errors
    name: str

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Hand one message to the service.

        Raises:
            ProviderTransientError: try again later (maybe elsewhere).
            ProviderRejected: this message will never be accepted.
            ProviderAuthError: the credentials were refused.
        """
        ...

    async def check(self) -> HealthResult:
        """Probe the service cheaply (connect and authenticate; no mail sent)."""
        ...

    async def aclose(self) -> None:
        """Release connections and clients."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class ProviderSpec:
    """A configured provider as stored in ``email_providers``, secrets decrypted."""

    id: str
    name: str
    type: str
    priority: int = 100
    #: non-secret settings, camelCase keys as in the spec's ``ProviderConfig``
    config: Mapping[str, Any] = field(default_factory=dict)
    #: decrypted credentials (``user``, ``password``, ``apiKey``, ...)
    authentication: Mapping[str, Any] = field(default_factory=dict)
    encryption: Mapping[str, Any] = field(default_factory=dict)
    limits: Mapping[str, Any] = field(default_factory=dict)
