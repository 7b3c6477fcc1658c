"""``POST /bulk``: one shared message or template, up to 100,000 recipients.

Each recipient is its own email (own record, own job, own rendering), so the request
stores the shared part once and one small row per recipient. Addresses are checked
with a fast path for plain ASCII addresses (the common case) that gives the same
answer as ``email-validator``, which checks everything else: at 100,000 recipients the
full validator alone would cost seconds. For the same reason the recipients list has
a fast path of its own (``_quick_recipients``): recipients that are plainly valid are
built without pydantic's per-field machinery, and anything else (a doubtful address, an
unknown key, a name with control characters) sends the whole list through the full
validation, so every error reads exactly as it always does.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    Field,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from postroom.schemas.base import ApiModel, PublicModel
from postroom.schemas.email import (
    _CONTROL,
    ADDRESS_SCHEMA,
    EmailContent,
    EmailSender,
    ExtraHeaders,
    HeaderText,
    JsonObject,
    Text,
    _address_key,
    plain_address,
    valid_address,
)
from postroom.types import EmailType

MAX_RECIPIENTS = 100_000

BulkAddress = Annotated[
    str, Field(max_length=254, json_schema_extra=ADDRESS_SCHEMA), AfterValidator(valid_address)
]


class BulkRecipient(ApiModel):
    email: BulkAddress
    name: Annotated[HeaderText, Field(max_length=255)] | None = None
    #: this recipient's variables, over the request's shared ``templateData``
    template_data: JsonObject | None = None
    metadata: JsonObject | None = None


class BulkRequest(ApiModel):
    from_: EmailSender | None = Field(default=None, alias="from")
    reply_to: EmailSender | None = None
    subject: Annotated[HeaderText, Field(max_length=500)] | None = None
    content: EmailContent | None = None
    template_id: Annotated[Text, Field(min_length=1, max_length=255)] | None = None
    template_version: Annotated[int, Field(ge=1)] | None = None
    #: variables shared by every recipient (a recipient's own win)
    template_data: JsonObject | None = None
    type: EmailType = EmailType.MARKETING
    priority: Annotated[int, Field(ge=1, le=5)] | None = None
    scheduled_at: datetime | None = None
    tags: Annotated[list[Annotated[HeaderText, Field(max_length=100)]], Field(max_length=50)] = (
        Field(default_factory=list)
    )
    metadata: JsonObject | None = None
    headers: ExtraHeaders = Field(default_factory=dict)
    max_attempts: Annotated[int, Field(ge=1, le=100)] | None = None
    queue: Annotated[Text, Field(max_length=255)] | None = None
    provider: Annotated[Text, Field(max_length=255)] | None = None
    recipients: Annotated[list[BulkRecipient], Field(min_length=1, max_length=MAX_RECIPIENTS)]

    @field_validator("scheduled_at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None:
            return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value

    @field_validator("recipients", mode="wrap")
    @classmethod
    def _recipients(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> list[BulkRecipient]:
        quick = _quick_recipients(value)
        recipients: list[BulkRecipient] = handler(value) if quick is None else quick
        return _distinct(recipients)

    @model_validator(mode="after")
    def _message_or_template(self) -> BulkRequest:
        if self.template_id is not None:
            given = [f for f in ("subject", "content") if getattr(self, f) is not None]
            if given:
                raise ValueError(f"{' and '.join(given)} come from the template; do not give them")
            return self
        if self.template_data is not None or self.template_version is not None:
            raise ValueError("templateData and templateVersion need templateId")
        if any(r.template_data for r in self.recipients):
            raise ValueError("recipients' templateData needs templateId")
        if self.subject is None:
            raise ValueError("subject is required (or name a template with templateId)")
        if self.content is None or not (self.content.text or self.content.html):
            raise ValueError("content needs text or html (or name a template with templateId)")
        if self.content.template is not None:
            raise ValueError("use templateId for a templated bulk send")
        return self


def _distinct(value: list[BulkRecipient]) -> list[BulkRecipient]:
    first: dict[str, int] = {}
    repeats: list[str] = []
    for i, recipient in enumerate(value):
        j = first.setdefault(_address_key(recipient.email), i)
        if j != i:
            repeats.append(f"recipients.{i} repeats recipients.{j} ({recipient.email!r})")
    if repeats:
        shown = "; ".join(repeats[:50]) + (
            f"; and {len(repeats) - 50} more" if len(repeats) > 50 else ""
        )
        raise ValueError(f"each address may appear once: {shown}")
    return value


_QUICK_KEYS = frozenset({"email", "name", "templateData", "metadata"})
_FIELD_NAMES = {"email": "email", "name": "name", "templateData": "template_data",
                "metadata": "metadata"}  # fmt: skip
_new = object.__new__
_set = object.__setattr__


def _json_object(value: Any) -> bool:
    """A dict that ``JsonObject`` accepts as it is: orjson encodes only str keys and
    valid Unicode (no lone surrogate), and refuses anything it cannot encode."""
    if type(value) is not dict:
        return False
    try:
        orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return False
    return True


def _quick_recipients(value: Any) -> list[BulkRecipient] | None:
    """The recipients, when every one is plainly valid; None when any needs the full
    validation (which then reports every problem as usual).

    Plainly valid: a dict of the known keys (by alias), a plain ASCII address, a name
    of at most 255 characters without control characters or lone surrogates, and
    ``templateData``/``metadata`` objects of JSON values. The models are built as
    ``model_construct`` builds them, without its per-field overhead (~10x slower).
    """
    if type(value) is not list or not 1 <= len(value) <= MAX_RECIPIENTS:
        return None
    out: list[BulkRecipient] = []
    control = _CONTROL.search
    for item in value:
        if type(item) is not dict or not item.keys() <= _QUICK_KEYS:
            return None
        email = item.get("email")
        if type(email) is not str or (address := plain_address(email)) is None:
            return None
        name = item.get("name")
        if name is not None and (
            type(name) is not str
            or len(name) > 255
            or control(name) is not None
            or not (name.isascii() or _encodes(name))
        ):
            return None
        data = item.get("templateData")
        if data is not None and not _json_object(data):
            return None
        metadata = item.get("metadata")
        if metadata is not None and not _json_object(metadata):
            return None
        recipient = _new(BulkRecipient)
        _set(
            recipient,
            "__dict__",
            {"email": address, "name": name, "template_data": data, "metadata": metadata},
        )
        _set(recipient, "__pydantic_fields_set__", {_FIELD_NAMES[k] for k in item})
        _set(recipient, "__pydantic_extra__", None)
        _set(recipient, "__pydantic_private__", None)
        out.append(recipient)
    return out


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


class BulkAccepted(PublicModel):
    id: str
    status: str
    queue_id: str
    recipients: int
    created_at: datetime


class BulkProgress(PublicModel):
    id: str
    total: int
    queued: int
    sent: int
    failed: int
    suppressed: int
    #: every record status with its count (sent includes delivered, opened, ...)
    by_status: dict[str, int]
    created_at: datetime
