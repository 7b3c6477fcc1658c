"""Shared model configuration: camelCase on the wire, snake_case in Python."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_camel


def _json_number(value: Any) -> Any:
    """Refuse what JSON would not call a number (lax ints take true and "3")."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number")
    return value


#: put last in ``Annotated[int, Field(...), NOT_COERCED]``: an integer as JSON Schema
#: means it, 3 or 3.0, never true or "3"
NOT_COERCED = BeforeValidator(_json_number)


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
