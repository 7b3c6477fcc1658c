"""Templates on the wire: create, update, read, versions and preview."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, field_validator

from postroom.schemas.base import ApiModel, PublicModel
from postroom.schemas.email import BodyText, HeaderText, JsonObject, Text
from postroom.templates.variables import Variable, check_declarations
from postroom.types import EmailType


class TemplateContent(ApiModel):
    html: BodyText | None = None
    text: BodyText | None = None


def _declarations(value: list[Variable] | None) -> list[Variable] | None:
    if value is not None:
        check_declarations(value)
    return value


class TemplateCreate(ApiModel):
    name: Annotated[HeaderText, Field(min_length=1, max_length=255)]
    description: Text | None = None
    type: EmailType = EmailType.TRANSACTIONAL
    #: a Jinja2 template that renders to one line
    subject: Annotated[Text, Field(min_length=1, max_length=500)]
    content: TemplateContent
    variables: list[Variable] = Field(default_factory=list, max_length=200)
    enabled: bool = True

    _vars = field_validator("variables")(_declarations)


class TemplateUpdate(ApiModel):
    """Only the fields given change; a change of subject, content or variables is a new version."""

    name: Annotated[HeaderText, Field(min_length=1, max_length=255)] | None = None
    description: Text | None = None
    type: EmailType | None = None
    subject: Annotated[Text, Field(min_length=1, max_length=500)] | None = None
    content: TemplateContent | None = None
    variables: Annotated[list[Variable], Field(max_length=200)] | None = None
    enabled: bool | None = None

    _vars = field_validator("variables")(_declarations)


class TemplateVersionPublic(PublicModel):
    template_id: str
    version: int
    subject: str
    content: dict[str, Any]
    variables: list[dict[str, Any]]
    created_at: datetime


class TemplatePublic(PublicModel):
    id: str
    name: str
    description: str | None = None
    type: str
    subject: str
    content: dict[str, Any]
    variables: list[dict[str, Any]]
    enabled: bool
    #: the current (newest) version
    version: int
    created_at: datetime
    updated_at: datetime
    archived_at: datetime | None = None


class TemplateList(PublicModel):
    templates: list[TemplatePublic]


class VersionList(PublicModel):
    versions: list[TemplateVersionPublic]


class TemplateDeleted(PublicModel):
    id: str
    archived: bool
    detail: str


class PreviewRequest(ApiModel):
    #: the data to render with; absent: each variable's example (or default)
    template_data: JsonObject | None = None
    #: which version; absent: the current one
    version: Annotated[int, Field(ge=1)] | None = None


class PreviewResult(PublicModel):
    version: int
    subject: str
    html: str | None = None
    text: str | None = None
