"""Shared model configuration: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel


class ApiModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        str_strip_whitespace=False,
    )

    def dump(self) -> dict[str, object]:
        """JSON-ready dict with the spec's camelCase names."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class PublicModel(ApiModel):
    """Response models: extra fields from the server side are not a client error."""

    model_config = ConfigDict(extra="ignore")
