"""The spec's ``EmailRequest`` and its parts, with every check done at the edge.

Header-bound text (subject, names, addresses, header names and values, filenames)
must not carry CR, LF or other control characters: that is how header injection
(``"Hi\\r\\nBcc: x@evil.example"``) is refused before anything is queued.

No text anywhere in a request may hold a lone surrogate (JSON ``"\\ud800"``): it is
not a character, cannot be encoded as UTF-8, and PostgreSQL refuses it in JSON.

Nothing accepted is ignored: fields of the spec that Postroom does not act on yet
(none today). A templated request (``templateId`` or ``content.template``) takes its
subject and body from the template, so giving them as well is refused rather than
silently overridden.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email
from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator
from pydantic.config import JsonDict

from postroom.compose import headers as header_policy
from postroom.schemas.base import ApiModel
from postroom.types import EmailType, RecipientType

#: C0 and C1 controls, DEL, and Unicode line/paragraph separators
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
#: RFC 5321: at most 64 octets before the @
MAX_LOCAL_PART_OCTETS = 64

#: what ``base64.b64decode(validate=True)`` accepts
BASE64_PATTERN = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


def _any_case(text: str) -> str:
    """A JSON Schema (ECMA 262) pattern matching ``text`` in any letter case."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else re.escape(c) for c in text)


_FIELD = "[!-9;-~]"
#: names a request may set: X-* but not X-Postroom-*, List-*, and the standard ones
_ALLOWED_NAME = (
    f"^(?=.{{1,{header_policy.MAX_NAME_LENGTH}}}$)(?:"
    f"{_any_case('x-')}(?!{_any_case('postroom-')}){_FIELD}+"
    f"|{_any_case('list-')}{_FIELD}+"
    f"|{'|'.join(_any_case(n) for n in header_policy.ALLOWED_NAMES)})$"
)
#: structured values: printable ASCII, no run without a space longer than a folded line allows
_STRUCTURED_VALUE = f"^[ \\t]*(?:[!-~]{{1,{header_policy.MAX_WORD_LENGTH}}}(?:[ \\t]+|$))*$"
_STRUCTURED_NAME = (
    f"^(?:{_any_case('list-')}{_FIELD}+|"
    + "|".join(
        _any_case(n)
        for n in header_policy.ALLOWED_NAMES
        if n.lower() not in header_policy.UNSTRUCTURED
    )
    + ")$"
)
#: the OpenAPI document's form of the ``headers`` policy (compose/headers.py)
HEADERS_SCHEMA: JsonDict = {
    "maxProperties": header_policy.MAX_HEADERS,
    "propertyNames": {"pattern": _ALLOWED_NAME},
    "patternProperties": {
        _STRUCTURED_NAME: {
            "type": "string",
            "maxLength": header_policy.MAX_VALUE_LENGTH,
            "pattern": _STRUCTURED_VALUE,
        }
    },
    "additionalProperties": {
        "type": "string",
        "maxLength": header_policy.MAX_VALUE_LENGTH,
        "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$",
    },
}

#: the size limit used when validation is not given one in its context
DEFAULT_MAX_MESSAGE_BYTES = 25 * 1024 * 1024


def _has_surrogate(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def valid_unicode(value: str) -> str:
    if _has_surrogate(value):
        raise ValueError("must be valid Unicode text (a lone surrogate such as \\ud800 is not)")
    return value


def no_control_chars(value: str) -> str:
    valid_unicode(value)
    if _CONTROL.search(value):
        raise ValueError("must not contain line breaks or other control characters")
    return value


def body_text(value: str) -> str:
    valid_unicode(value)
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _surrogate_path(value: Any, path: str) -> str | None:
    """Where in a JSON value a key or string holds a lone surrogate, if anywhere."""
    if isinstance(value, str):
        return path if _has_surrogate(value) else None
    items: Any = ()
    if isinstance(value, dict):
        for key in value:
            if _has_surrogate(str(key)):
                return f"{path}.{key!r}" if path else repr(key)
        items = ((f"{path}.{key}" if path else str(key), v) for key, v in value.items())
    elif isinstance(value, list):
        items = ((f"{path}.{i}" if path else str(i), v) for i, v in enumerate(value))
    for sub_path, item in items:
        found = _surrogate_path(item, sub_path)
        if found is not None:
            return found
    return None


def json_text(value: dict[str, Any]) -> dict[str, Any]:
    found = _surrogate_path(value, "")
    if found is not None:
        raise ValueError(f"{found}: must be valid Unicode text (a lone surrogate is not)")
    return value


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PLAIN = re.compile(rf"({_ATOM}(?:\.{_ATOM})*)@((?:{_LABEL}\.)+[A-Za-z]{{2,63}})")
#: all single labels, and a plain address has a dot in its domain: a special-use
#: domain (or a subdomain of one) is one whose last label is in this set
_SPECIAL = frozenset(SPECIAL_USE_DOMAIN_NAMES)
assert all("." not in name for name in _SPECIAL)


def plain_address(value: str) -> str | None:
    """The normalized form of a plain ``local@domain.tld`` address, exactly as
    ``email-validator`` normalizes it; None for anything else (which it must decide)."""
    m = _PLAIN.fullmatch(value)
    if m is not None and len(value) <= 254 and len(m[1]) <= 64:
        domain = m[2].lower()
        if domain.rpartition(".")[2] not in _SPECIAL:
            return f"{m[1]}@{domain}"
    return None


@functools.lru_cache(maxsize=4096)  # senders and frequent recipients repeat; it is pure
def valid_address(value: str) -> str:
    """The normalized address, or ValueError saying why it is not one.

    Plain ``local@domain.tld`` ASCII addresses (nearly all of them) are decided by
    ``plain_address``, which agrees with ``email-validator`` on them at a tenth of
    the cost; ``email-validator`` decides everything else.
    """
    if (plain := plain_address(value)) is not None:
        return plain
    no_control_chars(value)
    try:
        result = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"{value!r} is not a valid email address: {exc}") from None
    octets = len(result.local_part.encode())
    if octets > MAX_LOCAL_PART_OCTETS:
        raise ValueError(
            f"{value!r} is not a valid email address: the part before the @ is {octets} "
            f"octets; at most {MAX_LOCAL_PART_OCTETS} (RFC 5321)"
        )
    return result.normalized


def _address_key(address: str) -> str:
    """Addresses that differ only in letter case reach the same mailbox in practice."""
    local, _, domain = address.rpartition("@")
    return f"{local.casefold()}@{domain.lower()}"


#: the OpenAPI document states what ``no_control_chars`` enforces
NO_CONTROL_PATTERN = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*$"


def _no_control_schema(schema: dict[str, Any]) -> None:
    schema.setdefault("pattern", NO_CONTROL_PATTERN)  # a stricter pattern of its own wins


Text = Annotated[str, AfterValidator(valid_unicode)]
HeaderText = Annotated[
    str, AfterValidator(no_control_chars), Field(json_schema_extra=_no_control_schema)
]
BodyText = Annotated[str, AfterValidator(body_text)]
JsonObject = Annotated[dict[str, Any], AfterValidator(json_text)]
#: email-validator refuses these domains (and their subdomains)
_SPECIAL_USE = "|".join(
    "".join(f"[{c.lower()}{c.upper()}]" for c in name) for name in SPECIAL_USE_DOMAIN_NAMES
)
#: the OpenAPI document's form of ``valid_address`` (what JSON Schema can say of it)
ADDRESS_SCHEMA: JsonDict = {"format": "email", "pattern": f"^(?!.*[.@]({_SPECIAL_USE})$)"}
EmailAddress = Annotated[
    str,
    Field(
        max_length=254,
        json_schema_extra=ADDRESS_SCHEMA,
    ),
    AfterValidator(valid_address),
]


def extra_headers(value: dict[str, str]) -> dict[str, str]:
    """A request's own headers, by the policy of ``compose.headers``."""
    for name, text in value.items():
        if _has_surrogate(name) or _has_surrogate(text):
            raise ValueError(
                f"header {name!r} must be valid Unicode text (a lone surrogate is not)"
            )
    if problems := header_policy.problems(value):
        raise ValueError("; ".join(problems))
    return value


#: extra message headers (``/send``, ``/bulk``), checked and documented as one policy
ExtraHeaders = Annotated[
    dict[str, str], AfterValidator(extra_headers), Field(json_schema_extra=HEADERS_SCHEMA)
]


class EmailSender(ApiModel):
    email: EmailAddress
    name: Annotated[HeaderText, Field(max_length=255)] | None = None


class EmailRecipient(EmailSender):
    type: RecipientType = RecipientType.TO
    metadata: JsonObject | None = None


class EmailAttachment(ApiModel):
    filename: Annotated[HeaderText, Field(min_length=1, max_length=255)]
    #: base64-encoded bytes
    content: Annotated[
        str, Field(json_schema_extra={"pattern": BASE64_PATTERN, "contentEncoding": "base64"})
    ]
    #: ``type/subtype`` (RFC 6838), without parameters
    content_type: Annotated[
        str,
        Field(max_length=255, json_schema_extra={"pattern": header_policy.CONTENT_TYPE.pattern}),
    ] = "application/octet-stream"
    disposition: Literal["attachment", "inline"] = "attachment"
    cid: (
        Annotated[
            HeaderText,
            Field(max_length=250, json_schema_extra={"pattern": header_policy.CONTENT_ID.pattern}),
        ]
        | None
    ) = None

    @field_validator("content")
    @classmethod
    def _base64(cls, value: str) -> str:
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be base64-encoded") from None
        return value

    @field_validator("content_type")
    @classmethod
    def _content_type(cls, value: str) -> str:
        if problems := header_policy.attachment_problems(value, None):
            raise ValueError(problems[0])
        return value

    @field_validator("cid")
    @classmethod
    def _cid(cls, value: str | None) -> str | None:
        if value is not None and (problems := header_policy.attachment_problems("a/b", value)):
            raise ValueError(problems[0])
        return value

    def decoded(self) -> bytes:
        return base64.b64decode(self.content)

    @property
    def decoded_size(self) -> int:
        return len(self.content) * 3 // 4


class TemplateRef(ApiModel):
    """``content.template``: the same as ``templateId``/``templateData``/``templateVersion``."""

    id: Annotated[Text, Field(min_length=1, max_length=255)]
    data: JsonObject | None = None
    version: Annotated[int, Field(ge=1)] | None = None


class EmailContent(ApiModel):
    text: BodyText | None = None
    html: BodyText | None = None
    template: TemplateRef | None = None


def _utf8_len(text: str) -> int:
    """``len(text.encode())`` without the copy for ASCII text (most mail bodies)."""
    return len(text) if text.isascii() else len(text.encode())


class EmailRequest(ApiModel):
    """What a client asks Postroom to send (the spec's ``EmailRequest``)."""

    to: Annotated[list[EmailRecipient], Field(min_length=1, max_length=1000)]
    from_: EmailSender | None = Field(default=None, alias="from")
    reply_to: EmailSender | None = None
    #: required unless the request names a template (whose subject is then used)
    subject: Annotated[HeaderText, Field(max_length=500)] | None = None
    #: a stored template's id or name; its pinned version renders subject and body
    template_id: Annotated[Text, Field(min_length=1, max_length=255)] | None = None
    #: extension: the template version to use (default: the current one, pinned at enqueue)
    template_version: Annotated[int, Field(ge=1)] | None = None
    #: required unless the request names a template
    content: EmailContent | None = None
    type: EmailType = EmailType.TRANSACTIONAL
    priority: Annotated[int, Field(ge=1, le=5)] | None = None
    scheduled_at: datetime | None = None
    track_delivery: bool | None = Field(
        default=None,
        description="delivery events (ESP webhooks, DSNs) are always recorded; accepted either way",
    )
    track_opens: bool | None = Field(
        default=None, description="add an open pixel (absent: the email type's default)"
    )
    track_clicks: bool | None = Field(
        default=None, description="rewrite links to count clicks (absent: the type's default)"
    )
    tags: Annotated[list[Annotated[HeaderText, Field(max_length=100)]], Field(max_length=50)] = (
        Field(default_factory=list)
    )
    metadata: JsonObject | None = None
    #: the template's variables (checked against its declarations before queueing)
    template_data: JsonObject | None = None
    attachments: list[EmailAttachment] = Field(default_factory=list)
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None
    source: Annotated[Text, Field(max_length=100)] | None = None
    user_id: Annotated[Text, Field(max_length=255)] | None = None
    #: extension: extra message headers (see ``compose.headers`` for which)
    headers: ExtraHeaders = Field(default_factory=dict)
    #: extension: put the job on this queue (by name or id) instead of routing by type
    queue: Annotated[Text, Field(max_length=255)] | None = None
    #: extension: send only through this provider (by name or id), no failover
    provider: Annotated[Text, Field(max_length=255)] | None = None

    @field_validator("scheduled_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # a time without zone is taken as UTC
        try:
            return value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range: in UTC it falls outside years 1 to 9999") from None

    @field_validator("to")
    @classmethod
    def _distinct(cls, value: list[EmailRecipient]) -> list[EmailRecipient]:
        first: dict[str, int] = {}
        repeats: list[str] = []
        for i, recipient in enumerate(value):
            j = first.setdefault(_address_key(recipient.email), i)
            if j != i:
                repeats.append(f"to.{i} {recipient.email!r} repeats to.{j} {value[j].email!r}")
        if repeats:
            raise ValueError(
                "each address may be a recipient only once (letter case aside): "
                + "; ".join(repeats)
            )
        return value

    @field_validator("content")
    @classmethod
    def _has_body(cls, value: EmailContent | None) -> EmailContent | None:
        if value is not None and not (value.text or value.html or value.template):
            raise ValueError("content needs text or html")
        return value

    @model_validator(mode="after")
    def _body_or_template(self) -> EmailRequest:
        ref = self.content.template if self.content is not None else None
        if ref is not None:
            if self.template_id is not None or self.template_data is not None:
                raise ValueError("give content.template or templateId/templateData, not both")
            if self.template_version is not None:
                raise ValueError("give the version as content.template.version")
            self.template_id, self.template_data = ref.id, ref.data
            self.template_version = ref.version
            body = self.content
            self.content = body if body is not None and (body.text or body.html) else None
        if self.template_id is not None:
            given = [f for f in ("subject", "content") if getattr(self, f) is not None]
            if given:
                raise ValueError(
                    f"{' and '.join(given)} come from the template; do not give them with it"
                )
            return self
        if self.template_data is not None or self.template_version is not None:
            raise ValueError("templateData and templateVersion need templateId")
        if self.subject is None:
            raise ValueError("subject is required (or name a template with templateId)")
        if self.content is None or not (self.content.text or self.content.html):
            raise ValueError("content needs text or html (or name a template with templateId)")
        return self

    @model_validator(mode="after")
    def _size(self, info: ValidationInfo) -> EmailRequest:
        limit = (info.context or {}).get("max_message_bytes", DEFAULT_MAX_MESSAGE_BYTES)
        size = self.estimated_size()
        if size > limit:
            raise ValueError(f"message is {size} bytes, over the {limit}-byte limit")
        return self

    def estimated_size(self) -> int:
        """Bytes of content and attachments, before MIME encoding."""
        size = _utf8_len(self.subject or "")
        if (content := self.content) is not None:
            size += _utf8_len(content.text or "") + _utf8_len(content.html or "")
        if self.template_data:
            size += len(json.dumps(self.template_data, ensure_ascii=False).encode())
        else:
            size += 2  # "{}", as before
        return size + sum(a.decoded_size for a in self.attachments)

    def recipients(self, kind: RecipientType) -> list[EmailRecipient]:
        return [r for r in self.to if r.type == kind]
