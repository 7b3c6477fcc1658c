"""The spec's ``EmailRequest`` and its parts, with every check done at the edge.

Header-bound text (subject, names, addresses, header names and values, filenames)
must not carry CR, LF or other control characters: that is how header injection
(``"Hi\\r\\nBcc: x@evil.example"``) is refused before anything is queued.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic.config import JsonDict

from postroom.schemas.base import ApiModel
from postroom.types import EmailType, RecipientType

#: C0 and C1 controls, DEL, and Unicode line/paragraph separators
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: RFC 5322 field name: printable ASCII except colon
_HEADER_NAME = re.compile(r"^[!-9;-~]+$")
#: headers Postroom writes itself; a request may not set them
RESERVED_HEADERS = frozenset(
    {
        "from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id",
        "mime-version", "content-type", "content-transfer-encoding", "sender",
        "return-path", "received",
    }
)  # fmt: skip

#: what ``base64.b64decode(validate=True)`` accepts
BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
#: the OpenAPI document's form of the ``headers`` checks (names case-insensitively)
_RESERVED = "|".join(
    "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else c for c in name)
    for name in sorted(RESERVED_HEADERS)
)
HEADERS_SCHEMA: JsonDict = {
    "propertyNames": {"pattern": f"^(?!(?:{_RESERVED})$)[!-9;-~]+$"},
    "additionalProperties": {
        "type": "string",
        "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$",
    },
}

#: the size limit used when validation is not given one in its context
DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024


def no_control_chars(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain line breaks or other control characters")
    return value


def valid_address(value: str) -> str:
    no_control_chars(value)
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from None
    return result.normalized


#: the OpenAPI document states what ``no_control_chars`` enforces
NO_CONTROL_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"


def _no_control_schema(schema: dict[str, Any]) -> None:
    schema.setdefault("pattern", NO_CONTROL_PATTERN)  # a stricter pattern of its own wins


HeaderText = Annotated[
    str, AfterValidator(no_control_chars), Field(json_schema_extra=_no_control_schema)
]
#: email-validator refuses these domains (and their subdomains)
_SPECIAL_USE = "|".join(
    "".join(f"[{c.lower()}{c.upper()}]" for c in name) for name in SPECIAL_USE_DOMAIN_NAMES
)
EmailAddress = Annotated[
    str,
    Field(
        max_length=254,
        json_schema_extra={"format": "email", "pattern": f"^(?!.*[.@]({_SPECIAL_USE})$)"},
    ),
    AfterValidator(valid_address),
]


class EmailSender(ApiModel):
    email: EmailAddress
    name: Annotated[HeaderText, Field(max_length=255)] | None = None


class EmailRecipient(EmailSender):
    type: RecipientType = RecipientType.TO
    metadata: dict[str, Any] | None = None


class EmailAttachment(ApiModel):
    filename: Annotated[HeaderText, Field(min_length=1, max_length=255)]
    #: base64-encoded bytes
    content: Annotated[
        str, Field(json_schema_extra={"pattern": BASE64_PATTERN, "contentEncoding": "base64"})
    ]
    content_type: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.+-]+/[A-Za-z0-9_.+-]+$")] = (
        "application/octet-stream"
    )
    disposition: Literal["attachment", "inline"] = "attachment"
    cid: Annotated[HeaderText, Field(max_length=255)] | None = None

    @field_validator("content")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64-encoded") from None
        return value

    def decoded(self) -> bytes:
        return base64.b64decode(self.content)

    @property
    def decoded_size(self) -> int:
        return len(self.content) * 3 // 4


class EmailContent(ApiModel):
    text: str | None = None
    html: str | None = None
    template: dict[str, Any] | None = None


class EmailRequest(ApiModel):
    """What a client asks Postroom to send (the spec's ``EmailRequest``)."""

    to: Annotated[list[EmailRecipient], Field(min_length=1, max_length=1000)]
    from_: EmailSender | None = Field(default=None, alias="from")
    reply_to: EmailSender | None = None
    subject: Annotated[HeaderText, Field(max_length=500)]
    # before ``content``, whose check needs to see it
    template_id: str | None = None
    content: EmailContent
    type: EmailType = EmailType.TRANSACTIONAL
    priority: Annotated[int, Field(ge=1, le=5)] | None = None
    scheduled_at: datetime | None = None
    track_delivery: bool | None = None
    track_opens: bool | None = None
    track_clicks: bool | None = None
    tags: Annotated[list[Annotated[HeaderText, Field(max_length=100)]], Field(max_length=50)] = (
        Field(default_factory=list)
    )
    metadata: dict[str, Any] | None = None
    template_data: dict[str, Any] | None = None
    attachments: list[EmailAttachment] = Field(default_factory=list)
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None
    source: Annotated[str, Field(max_length=100)] | None = None
    user_id: Annotated[str, Field(max_length=255)] | None = None
    #: extension: extra message headers
    headers: dict[str, str] = Field(default_factory=dict, json_schema_extra=HEADERS_SCHEMA)
    #: extension: put the job on this queue (by name or id) instead of routing by type
    queue: Annotated[str, Field(max_length=255)] | None = None
    #: extension: send only through this provider (by name or id), no failover
    provider: Annotated[str, Field(max_length=255)] | None = None

    @field_validator("scheduled_at")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # a time without zone is taken as UTC
        return value

    @field_validator("content")
    @classmethod
    def _has_body(cls, value: EmailContent, info: ValidationInfo) -> EmailContent:
        if not (value.text or value.html or value.template or info.data.get("template_id")):
            raise ValueError("content needs text or html (or a template)")
        return value

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.match(name):
                raise ValueError(f"header name {name!r} is not a valid field name")
            if name.lower() in RESERVED_HEADERS:
                raise ValueError(f"header {name!r} is set by Postroom and cannot be given")
            if _CONTROL.search(text):
                raise ValueError(f"header {name!r} must not contain line breaks")
        return value

    @model_validator(mode="after")
    def _size(self, info: ValidationInfo) -> EmailRequest:
        limit = (info.context or {}).get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
        size = self.estimated_size()
        if size > limit:
            raise ValueError(f"message is {size} bytes, over the {limit}-byte limit")
        return self

    def estimated_size(self) -> int:
        """Bytes of content and attachments, before MIME encoding."""
        content = self.content
        size = len(self.subject.encode())
        size += len((content.text or "").encode()) + len((content.html or "").encode())
        return size + sum(a.decoded_size for a in self.attachments)

    def recipients(self, kind: RecipientType) -> list[EmailRecipient]:
        return [r for r in self.to if r.type == kind]
